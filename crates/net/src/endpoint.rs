//! QUIC endpoints: a [`Client`] that connects to named nodes, a [`Server`] that accepts
//! enrolled peers, and [`serve_requests`], the per-connection loop that reads one request per
//! bidirectional stream and hands it to a handler.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use courseway_content::NodeName;
use courseway_proto::{ChunkHeader, ErrorCode, FrameKind, GetChunk, Request, Response};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::ca::Enrollment;
use crate::error::NetError;
use crate::framing::{read_chunk_body, read_request, read_response, reply_error, send_request};
use crate::identity::PeerIdentity;
use crate::tls;
use crate::transport::TransportConfig;

/// The QUIC application close code for a connection closed on purpose.
const CLOSE_NORMAL: VarInt = VarInt::from_u32(0);
/// The QUIC application close code for a peer whose certificate has no usable identity (the
/// number of `ErrorCode::Unauthorized`).
const CLOSE_UNAUTHORIZED: VarInt = VarInt::from_u32(5);

/// An established, mutually authenticated connection and who is at the other end.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    pub peer: PeerIdentity,
    pub connection: Connection,
}

impl PeerConnection {
    /// Reads the peer's identity from a connection whose handshake completed.
    pub fn from_connection(connection: Connection) -> Result<Self, NetError> {
        let peer = peer_identity(&connection)?;
        Ok(Self { peer, connection })
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }

    /// Sends `request` on a new stream and reads the response frame. An error reply from the
    /// peer is [`NetError::Refused`]. The receive stream is returned for what follows the frame
    /// (a chunk's body, a subscription's announcements).
    pub async fn request(&self, request: &Request) -> Result<(Response, RecvStream), NetError> {
        let (mut send, mut recv) = self.connection.open_bi().await.map_err(|source| NetError::Connection {
            context: format!("to {} failed while opening a stream", self.peer),
            source,
        })?;
        let sent = send_request(&mut send, request).await;
        // The peer may refuse before reading all of the request (and stop our send side); its
        // error reply is then on the way, so read it before reporting the write failure.
        let _ = send.finish();
        let response = match (sent, read_response(&mut recv).await) {
            (_, Ok(response)) => response,
            (Err(send_error), Err(_)) => return Err(send_error),
            (Ok(()), Err(read_error)) => return Err(read_error),
        };
        match response {
            Response::Error(reply) => Err(NetError::Refused(reply)),
            response => Ok((response, recv)),
        }
    }

    /// Fetches a chunk's bytes from `offset` on. The bytes are NOT verified here: the caller
    /// checks them against the chunk id (after joining them to any earlier part).
    pub async fn fetch_chunk(&self, get: GetChunk) -> Result<(ChunkHeader, Vec<u8>), NetError> {
        let (response, mut recv) = self.request(&Request::GetChunk(get)).await?;
        let Response::Chunk(header) = response else {
            return Err(NetError::UnexpectedResponse {
                request: FrameKind::GetChunk,
                got: response_kind(&response),
            });
        };
        if header.id != get.id || header.offset != get.offset {
            return Err(NetError::UnexpectedResponse {
                request: FrameKind::GetChunk,
                got: FrameKind::Chunk,
            });
        }
        let body = read_chunk_body(&mut recv, &header).await?;
        Ok((header, body))
    }

    /// Closes the connection.
    pub fn close(&self, reason: &str) {
        self.connection.close(CLOSE_NORMAL, reason.as_bytes());
    }
}

fn response_kind(response: &Response) -> FrameKind {
    match response {
        Response::Welcome(_) => FrameKind::Welcome,
        Response::Chunk(_) => FrameKind::Chunk,
        Response::Manifest(_) => FrameKind::Manifest,
        Response::Catalog(_) => FrameKind::Catalog,
        Response::Announce(_) => FrameKind::Announce,
        Response::ReportAck(_) => FrameKind::ReportAck,
        Response::Error(_) => FrameKind::Error,
    }
}

/// The identity in the peer's certificate. The certificate was verified against the deployment
/// CA during the handshake; this only reads it.
pub fn peer_identity(connection: &Connection) -> Result<PeerIdentity, NetError> {
    let any = connection.peer_identity().ok_or_else(|| NetError::PeerIdentity {
        reason: "the peer presented no certificate".into(),
    })?;
    let certs = any
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| NetError::PeerIdentity {
            reason: "the TLS layer returned an identity that is not a certificate chain".into(),
        })?;
    let end_entity = certs.first().ok_or_else(|| NetError::PeerIdentity {
        reason: "the peer's certificate chain is empty".into(),
    })?;
    PeerIdentity::from_certificate_der(end_entity)
}

/// Connects to other nodes as this node.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    enrollment: Arc<Enrollment>,
    transport: Arc<quinn::TransportConfig>,
}

impl Client {
    /// A client endpoint on `bind` (e.g. `0.0.0.0:0`, or `127.0.0.1:0` in tests).
    pub fn bind(enrollment: Enrollment, transport: &TransportConfig, bind: SocketAddr) -> Result<Self, NetError> {
        let transport = Arc::new(transport.to_quinn()?);
        let endpoint = Endpoint::client(bind).map_err(|source| NetError::Bind { addr: bind, source })?;
        Ok(Self {
            endpoint,
            enrollment: Arc::new(enrollment),
            transport,
        })
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.endpoint.local_addr().map_err(NetError::LocalAddr)
    }

    /// Connects to the node `node` at `addr`: the server must present a certificate from the
    /// deployment CA naming `node`, and we present ours.
    pub async fn connect(&self, addr: SocketAddr, node: &NodeName) -> Result<PeerConnection, NetError> {
        let crypto = tls::client_config(&self.enrollment, node)?;
        let quic = QuicClientConfig::try_from(crypto).map_err(NetError::tls)?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(self.transport.clone());
        let connecting = self
            .endpoint
            .connect_with(config, addr, tls::server_name_for(node))
            .map_err(|source| NetError::Connect {
                node: node.to_string(),
                addr,
                source,
            })?;
        let connection = connecting.await.map_err(|source| NetError::Connection {
            context: format!("to {node} at {addr} failed during the handshake"),
            source,
        })?;
        let peer = PeerConnection::from_connection(connection)?;
        tracing::debug!(peer = %peer.peer, %addr, "connected");
        let revocations = self.enrollment.revocations().clone();
        let (who, connection) = (peer.peer.clone(), peer.connection.clone());
        tokio::spawn(async move { revocations.watch_connection(who, connection).await });
        Ok(peer)
    }

    /// Closes every connection of this endpoint and waits until they are closed.
    pub async fn shutdown(&self) {
        self.endpoint.close(CLOSE_NORMAL, b"shutting down");
        self.endpoint.wait_idle().await;
    }
}

/// Accepts connections from enrolled nodes.
#[derive(Debug, Clone)]
pub struct Server {
    endpoint: Endpoint,
    enrollment: Arc<Enrollment>,
    transport: Arc<quinn::TransportConfig>,
}

impl Server {
    /// A server endpoint on `bind`. Only clients with a certificate from the deployment CA
    /// complete the handshake.
    pub fn bind(enrollment: Enrollment, transport: &TransportConfig, bind: SocketAddr) -> Result<Self, NetError> {
        let transport = Arc::new(transport.to_quinn()?);
        let crypto = tls::server_config(&enrollment)?;
        let quic = QuicServerConfig::try_from(crypto).map_err(NetError::tls)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(transport.clone());
        let endpoint = Endpoint::server(config, bind).map_err(|source| NetError::Bind { addr: bind, source })?;
        tracing::info!(node = %enrollment.identity(), addr = ?endpoint.local_addr().ok(), "listening");
        Ok(Self {
            endpoint,
            enrollment: Arc::new(enrollment),
            transport,
        })
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.endpoint.local_addr().map_err(NetError::LocalAddr)
    }

    /// A client that shares this server's socket (a relay reaching its parent from the port it
    /// serves on).
    pub fn client(&self) -> Client {
        Client {
            endpoint: self.endpoint.clone(),
            enrollment: self.enrollment.clone(),
            transport: self.transport.clone(),
        }
    }

    /// Waits for the next connection and completes its handshake. `None` once the server is
    /// closed; `Some(Err(_))` for a peer refused at the handshake (e.g. a certificate from
    /// another CA). Handshakes are done one at a time here; [`Server::serve`] does them
    /// concurrently.
    pub async fn accept(&self) -> Option<Result<PeerConnection, NetError>> {
        let incoming = self.endpoint.accept().await?;
        Some(handshake(incoming).await)
    }

    /// The accept loop: completes each handshake in its own task and hands the authenticated
    /// connection to `handler`, in that task too. Returns when the server is closed; dropping
    /// the future aborts every connection task it started.
    pub async fn serve<H, F>(&self, handler: H)
    where
        H: Fn(PeerConnection) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let mut tasks = JoinSet::new();
        while let Some(incoming) = self.endpoint.accept().await {
            while tasks.try_join_next().is_some() {}
            let handler = handler.clone();
            let remote = incoming.remote_address();
            let revocations = self.enrollment.revocations().clone();
            tasks.spawn(
                async move {
                    match handshake(incoming).await {
                        Ok(conn) => {
                            let span = tracing::info_span!("peer", peer = %conn.peer);
                            let watch = revocations.watch_connection(conn.peer.clone(), conn.connection.clone());
                            // The handler ends when the connection does; the watcher closes it
                            // once the peer is revoked.
                            tokio::join!(handler(conn).instrument(span), watch);
                        }
                        Err(e) => tracing::warn!(error = %e, "handshake refused"),
                    }
                }
                .instrument(tracing::debug_span!("incoming", %remote)),
            );
        }
        tracing::info!("server closed; stopping the accept loop");
    }

    /// Closes the endpoint: the accept loop ends and connections are closed.
    pub fn close(&self) {
        self.endpoint.close(CLOSE_NORMAL, b"shutting down");
    }
}

async fn handshake(incoming: quinn::Incoming) -> Result<PeerConnection, NetError> {
    let remote = incoming.remote_address();
    let connection = incoming.await.map_err(|source| NetError::Connection {
        context: format!("from {remote} refused during the handshake"),
        source,
    })?;
    match PeerConnection::from_connection(connection.clone()) {
        Ok(conn) => {
            tracing::debug!(peer = %conn.peer, %remote, "accepted");
            Ok(conn)
        }
        Err(e) => {
            connection.close(CLOSE_UNAUTHORIZED, b"certificate carries no courseway identity");
            Err(e)
        }
    }
}

/// How [`serve_requests`] treats each stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// How long a peer has to send a whole request frame once it opened a stream. Generous: a
    /// 4 MiB report over a slow village line takes tens of seconds.
    pub request_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// One decoded request and the stream to answer it on.
#[derive(Debug)]
pub struct IncomingRequest {
    pub peer: Arc<PeerIdentity>,
    pub request: Request,
    /// Where the response goes; the handler finishes it (or resets it).
    pub send: SendStream,
    /// The rest of the request stream: the client finishes it after the request frame. Kept so
    /// a subscription handler notices when the client goes away.
    pub recv: RecvStream,
}

/// Serves one connection: every bidirectional stream the peer opens carries one request, read
/// and checked here, then handed to `handler` in a task of its own. A stream with a bad frame
/// gets an error reply with the frame's error code and is closed; the connection and its other
/// streams carry on. Returns when the connection closes; dropping the future aborts its
/// request tasks.
pub async fn serve_requests<H, F>(conn: PeerConnection, config: ServeConfig, handler: H)
where
    H: Fn(IncomingRequest) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), NetError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let peer = Arc::new(conn.peer.clone());
    let mut tasks = JoinSet::new();
    loop {
        let (send, recv) = match conn.connection.accept_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                tracing::debug!(peer = %peer, reason = %e, "connection ended");
                break;
            }
        };
        while tasks.try_join_next().is_some() {}
        tasks.spawn(serve_stream(
            peer.clone(),
            send,
            recv,
            config.request_timeout,
            handler.clone(),
        ));
    }
}

async fn serve_stream<H, F>(
    peer: Arc<PeerIdentity>,
    mut send: SendStream,
    mut recv: RecvStream,
    timeout: Duration,
    handler: Arc<H>,
) where
    H: Fn(IncomingRequest) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), NetError>> + Send + 'static,
{
    let stream = send.id();
    let (code, message) = match tokio::time::timeout(timeout, read_request(&mut recv)).await {
        Ok(Ok(request)) => {
            let incoming = IncomingRequest {
                peer: peer.clone(),
                request,
                send,
                recv,
            };
            match handler(incoming).await {
                Ok(()) => {}
                // The child no longer wants the answer (a newer catalog replaced its pass, it
                // took the chunk from another parent, it is shutting down): nothing went wrong.
                Err(
                    e @ NetError::Write {
                        source: quinn::WriteError::Stopped(_) | quinn::WriteError::ConnectionLost(_),
                        ..
                    },
                ) => tracing::debug!(%peer, %stream, error = %e, "the peer stopped reading the answer"),
                Err(e) => tracing::warn!(%peer, %stream, error = %e, "request handler failed"),
            }
            return;
        }
        Ok(Err(NetError::Frame(e))) => (e.code(), e.to_string()),
        Ok(Err(e @ NetError::EndedEarly { .. })) => (ErrorCode::Malformed, e.to_string()),
        Ok(Err(e)) => {
            // The stream or the connection failed under us: nobody to answer.
            tracing::debug!(%peer, %stream, error = %e, "request stream failed");
            return;
        }
        Err(_) => (
            ErrorCode::Malformed,
            format!("no complete request within {timeout:?}; send the whole request frame at once"),
        ),
    };
    tracing::warn!(%peer, %stream, %code, %message, "refusing a bad request frame");
    if let Err(e) = reply_error(&mut send, &mut recv, code, message).await {
        tracing::debug!(%peer, %stream, error = %e, "could not send the error reply");
    }
}
