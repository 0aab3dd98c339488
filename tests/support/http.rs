//! A plain HTTP/1.1 client for the tests (hyper's client connection, one request per
//! connection), with a chosen local address so one machine can be several LAN "devices"
//! (127.0.0.2, 127.0.0.3, … are all loopback on Linux).

use std::net::{IpAddr, SocketAddr};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

/// An answer: status, headers, whole body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One device on the LAN: its address and its user agent.
#[derive(Debug, Clone)]
pub struct Device {
    pub from: IpAddr,
    pub user_agent: String,
}

impl Device {
    pub fn new(from: [u8; 4], user_agent: &str) -> Self {
        Self {
            from: IpAddr::from(from),
            user_agent: user_agent.to_string(),
        }
    }

    /// `GET path`.
    pub async fn get(&self, server: SocketAddr, path: &str) -> Answer {
        self.send(server, Method::GET, path, &[], Bytes::new()).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, server: SocketAddr, path: &str, body: &serde_json::Value) -> Answer {
        self.send(
            server,
            Method::POST,
            path,
            &[("content-type", "application/json")],
            Bytes::from(body.to_string()),
        )
        .await
    }

    /// Any request, with extra headers and a body.
    pub async fn send(
        &self,
        server: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Answer {
        let socket = if server.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .expect("a socket");
        socket
            .bind(SocketAddr::new(self.from, 0))
            .unwrap_or_else(|e| panic!("bind {}: {e}", self.from));
        let stream = socket
            .connect(server)
            .await
            .unwrap_or_else(|e| panic!("connect {server}: {e}"));
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        let connection = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, server.to_string())
            .header(hyper::header::USER_AGENT, &self.user_agent);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = sender
            .send_request(request.body(Full::new(body)).expect("a valid request"))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("body of {path}: {e}"))
            .to_bytes();
        connection.abort();
        Answer { status, headers, body }
    }
}
