//! A small HTTP/1.1 server (hyper) for what a node serves over HTTP: `/metrics` on every role
//! today; the station's LAN page and the origin's admin API build on it.
//!
//! Each connection runs in its own task, owned by the server: dropping the [`HttpServer`] stops
//! accepting and ends every connection. A client that does not send its request headers within
//! [`HEADER_TIMEOUT`] is disconnected, so idle sockets cannot pile up.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::task::AbortOnDrop;

/// How long a client may take to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A response body: the whole body in memory (metrics pages and JSON answers are small).
pub type Body = Full<Bytes>;

/// Answers requests. Cloned into every connection.
pub trait Handler: Clone + Send + Sync + 'static {
    fn handle(&self, request: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// The client's address, put in every request's extensions by the server (for per-address
/// limits and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr(pub SocketAddr);

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for HTTP on {addr}: {source}; check that the address is this machine's and the port is free")]
pub struct HttpBindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// A running HTTP server.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    _accept: AbortOnDrop,
}

impl HttpServer {
    /// Listens on `addr` and answers every request with `handler`.
    pub async fn bind<H: Handler>(addr: SocketAddr, handler: H) -> Result<Self, HttpBindError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpBindError { addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| HttpBindError { addr, source })?;
        let accept = tokio::spawn(accept_loop(listener, handler));
        Ok(Self {
            local_addr,
            _accept: AbortOnDrop::new(accept),
        })
    }

    /// Where the server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

async fn accept_loop<H: Handler>(listener: TcpListener, handler: H) {
    // Connections live in this set: they end when the accept loop is aborted.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little rather than spin.
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let handler = handler.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                        let handler = handler.clone();
                        req.extensions_mut().insert(RemoteAddr(peer));
                        async move { Ok::<_, Infallible>(handler.handle(req).await) }
                    });
                    let result = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A plain-text response.
pub fn text(status: hyper::StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .expect("a status and one header always make a valid response")
}
