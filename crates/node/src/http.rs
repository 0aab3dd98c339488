//! A small HTTP/1.1 server (hyper) for what a node serves over HTTP: `/metrics` on every role
//! today; the station's LAN page and the origin's admin API build on it.
//!
//! Each connection runs in its own task, owned by the server: dropping the [`HttpServer`] stops
//! accepting and ends every connection. A client that does not send its request headers within
//! [`HEADER_TIMEOUT`] is disconnected, so idle sockets cannot pile up.
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
                let service = service.clone();
                connections.spawn(async move {
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
