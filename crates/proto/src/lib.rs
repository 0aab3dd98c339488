//! Courseway's wire protocol, sans IO.
//!
//! Peers talk over QUIC with ALPN [`ALPN`]. Each request opens one bidirectional stream: the
//! client writes one request frame; the server answers with one response frame, followed for
//! [`Response::Chunk`] by the chunk's raw bytes, and for [`Request::Subscribe`] by a frame per
//! announcement for as long as the stream stays open.
//!
//! A frame is a 6-byte [`FrameHeader`] (protocol version, frame kind, payload length) and a
//! payload in the canonical encoding of [`courseway_content::encoding`]. Every kind has a
//! payload limit ([`FrameKind::max_payload`]) that is checked on the header alone, before any
//! payload byte is read or buffered, so a peer cannot make a node allocate by lying about a
//! length. Decoding never panics: malformed input is a [`FrameError`], which maps to the
//! [`ErrorCode`] sent back before the stream is closed.
//!
//! This crate has no sockets, no clock and no async runtime; the IO edge (crates/net) reads
//! `HEADER_LEN` bytes, calls [`FrameHeader::parse`], reads `payload_len` more bytes and calls
//! [`decode_request`] or [`decode_response`].

mod error_code;
mod frame;
mod messages;

pub use error_code::ErrorCode;
pub use frame::{
    decode_request, decode_response, encode_request, encode_response, try_decode_request, try_decode_response,
    FrameError, FrameHeader, FrameKind, HEADER_LEN, PROTOCOL_VERSION,
};
pub use messages::{
    Announcement, CatalogReply, ChunkHeader, ErrorReply, GetCatalog, GetChunk, GetManifest, Health, Hello, LessonState,
    LessonStatus, ManifestReply, Report, ReportAck, ReportId, Request, Response, Role, Subscribe, Topic, Viewing,
    Welcome, MAX_HEALTH_LESSONS, MAX_REASON_LEN, MAX_VIEWINGS,
};

/// The QUIC ALPN token of this protocol version.
pub const ALPN: &[u8] = b"courseway/1";
