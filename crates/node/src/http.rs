//! A small HTTP/1.1 server (hyper) for what a node serves over HTTP: `/metrics` on every role
//! today; the station's LAN page and the origin's admin API build on it.
//!
//! Each connection runs in its own task, owned by the server: dropping the [`HttpServer`] stops
//! accepting and ends every connection. A client that does not send its request headers within
//! [`HEADER_TIMEOUT`] is disconnected, so idle sockets cannot pile up; at most
//! [`MAX_CONNECTIONS`] are open at once, [`MAX_CONNECTIONS_PER_CLIENT`] from one address.
//!
//! A [`Handler`] answers with a body held in memory; a [`StreamingHandler`] (bound with
//! [`HttpServer::bind_streaming`]) may send a body as it is produced, for files too large to
//! hold. Every request carries the client's address as a [`PeerAddr`] extension.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::task::AbortOnDrop;

/// How long a client may take to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections open at once; more are closed as they come (each may hold a streamed body's
/// read-ahead: this bounds what clients that do not read can pin in memory).
pub const MAX_CONNECTIONS: usize = 128;

/// Connections one client address may hold open at once; more are closed as they come, so one
/// device on a village LAN cannot take every connection.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 32;

/// Who holds how many connections.
#[derive(Debug, Default)]
struct Connections {
    total: usize,
    per_client: std::collections::HashMap<std::net::IpAddr, usize>,
}

/// One admitted connection; leaves the count when dropped (however its task ends).
struct Admitted(std::sync::Arc<parking_lot::Mutex<Connections>>, std::net::IpAddr);

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = self.0.lock();
        c.total -= 1;
        if let std::collections::hash_map::Entry::Occupied(mut e) = c.per_client.entry(self.1) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// Admits a connection from `client` if neither limit is reached.
fn admit(connections: &std::sync::Arc<parking_lot::Mutex<Connections>>, client: std::net::IpAddr) -> Option<Admitted> {
    let mut c = connections.lock();
    let mine = c.per_client.get(&client).copied().unwrap_or(0);
    if c.total >= MAX_CONNECTIONS || mine >= MAX_CONNECTIONS_PER_CLIENT {
        return None;
    }
    c.total += 1;
    *c.per_client.entry(client).or_insert(0) += 1;
    Some(Admitted(connections.clone(), client))
}

/// A response body: the whole body in memory (metrics pages and JSON answers are small).
pub type Body = Full<Bytes>;

/// Answers requests. Cloned into every connection.
pub trait Handler: Clone + Send + Sync + 'static {
    fn handle(&self, request: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// A response body sent as it is produced; an `Err` ends the connection mid-body (the client
/// sees a short body against its `Content-Length`).
pub type StreamingBody = BoxBody<Bytes, std::io::Error>;

/// Answers requests with bodies that may be streamed. Cloned into every connection.
pub trait StreamingHandler: Clone + Send + Sync + 'static {
    fn handle(&self, request: Request<Incoming>) -> impl Future<Output = Response<StreamingBody>> + Send;
}

/// A whole in-memory body as a [`StreamingBody`].
pub fn full_body(bytes: impl Into<Bytes>) -> StreamingBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// The client's address, added to every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

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
        Self::listen(addr, move |request| {
            let handler = handler.clone();
            async move { handler.handle(request).await }
        })
        .await
    }

    /// Listens on `addr` and answers every request with `handler`, whose bodies may stream.
    pub async fn bind_streaming<H: StreamingHandler>(addr: SocketAddr, handler: H) -> Result<Self, HttpBindError> {
        Self::listen(addr, move |request| {
            let handler = handler.clone();
            async move { handler.handle(request).await }
        })
        .await
    }

    async fn listen<S, F, B>(addr: SocketAddr, service: S) -> Result<Self, HttpBindError>
    where
        S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpBindError { addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| HttpBindError { addr, source })?;
        let accept = tokio::spawn(accept_loop(listener, service));
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

async fn accept_loop<S, F, B>(listener: TcpListener, service: S)
where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Connections live in this set: they end when the accept loop is aborted.
    let mut connections = JoinSet::new();
    let counts = std::sync::Arc::new(parking_lot::Mutex::new(Connections::default()));
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
                let Some(admitted) = admit(&counts, peer.ip()) else {
                    tracing::debug!(%peer, "HTTP connection refused: too many open");
                    drop(stream);
                    continue;
                };
                let service = service.clone();
                connections.spawn(async move {
                    let _admitted = admitted;
                    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                        req.extensions_mut().insert(PeerAddr(peer));
                        let answer = service(req);
                        async move { Ok::<_, Infallible>(answer.await) }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_per_client_and_in_all_and_given_back() {
        let counts = std::sync::Arc::new(parking_lot::Mutex::new(Connections::default()));
        let a: std::net::IpAddr = "192.168.1.20".parse().unwrap();
        let held: Vec<_> = (0..MAX_CONNECTIONS_PER_CLIENT)
            .map(|_| admit(&counts, a).expect("under the per-client cap"))
            .collect();
        assert!(admit(&counts, a).is_none(), "one device cannot take more");
        let others: Vec<_> = (0..MAX_CONNECTIONS - MAX_CONNECTIONS_PER_CLIENT)
            .map(|i| {
                admit(
                    &counts,
                    std::net::IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8]),
                )
                .unwrap()
            })
            .collect();
        assert!(
            admit(&counts, "10.9.9.9".parse().unwrap()).is_none(),
            "the total is capped"
        );
        drop(held);
        assert!(admit(&counts, a).is_some(), "closed connections are given back");
        drop(others);
        assert_eq!(counts.lock().total, 0);
        assert!(counts.lock().per_client.is_empty());
    }
}
