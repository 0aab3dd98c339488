//! Frames: a fixed header, then a payload whose size the header declares and whose kind bounds.

use courseway_content::encoding::{Decode, DecodeError, Decoder, Encode};
use courseway_content::lesson::MAX_MANIFEST_SIZE;
use thiserror::Error;

use crate::error_code::ErrorCode;
use crate::messages::*;

/// The protocol version carried in every frame header.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes in a frame header: version (1), kind (1), payload length (4, big-endian).
pub const HEADER_LEN: usize = 6;

/// Largest catalog or announcement frame: a catalog of tens of thousands of lessons.
const MAX_CATALOG_FRAME: u32 = 16 << 20;

/// The kind of a frame, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    Hello,
    GetChunk,
    GetManifest,
    GetCatalog,
    Subscribe,
    Report,
    Welcome,
    Chunk,
    Manifest,
    Catalog,
    Announce,
    ReportAck,
    Error,
}

impl FrameKind {
    const ALL: [FrameKind; 13] = [
        FrameKind::Hello,
        FrameKind::GetChunk,
        FrameKind::GetManifest,
        FrameKind::GetCatalog,
        FrameKind::Subscribe,
        FrameKind::Report,
        FrameKind::Welcome,
        FrameKind::Chunk,
        FrameKind::Manifest,
        FrameKind::Catalog,
        FrameKind::Announce,
        FrameKind::ReportAck,
        FrameKind::Error,
    ];

    /// The kind's wire value. Requests are below 0x80, responses at or above.
    pub fn to_u8(self) -> u8 {
        match self {
            FrameKind::Hello => 0x01,
            FrameKind::GetChunk => 0x02,
            FrameKind::GetManifest => 0x03,
            FrameKind::GetCatalog => 0x04,
            FrameKind::Subscribe => 0x05,
            FrameKind::Report => 0x06,
            FrameKind::Welcome => 0x81,
            FrameKind::Chunk => 0x82,
            FrameKind::Manifest => 0x83,
            FrameKind::Catalog => 0x84,
            FrameKind::Announce => 0x85,
            FrameKind::ReportAck => 0x86,
            FrameKind::Error => 0xff,
        }
    }

    /// The kind for a wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.to_u8() == v)
    }

    /// Whether clients send this kind (otherwise servers do).
    pub fn is_request(self) -> bool {
        self.to_u8() < 0x80
    }

    /// The largest payload a frame of this kind may declare.
    pub fn max_payload(self) -> u32 {
        match self {
            FrameKind::Hello | FrameKind::Welcome => 256,
            FrameKind::GetChunk | FrameKind::GetManifest | FrameKind::GetCatalog => 64,
            FrameKind::Chunk | FrameKind::ReportAck => 64,
            FrameKind::Subscribe => 40 * 1024,
            FrameKind::Report => 4 << 20,
            FrameKind::Manifest => MAX_MANIFEST_SIZE as u32 + 4,
            FrameKind::Catalog | FrameKind::Announce => MAX_CATALOG_FRAME,
            FrameKind::Error => 2048,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FrameKind::Hello => "hello",
            FrameKind::GetChunk => "chunk request",
            FrameKind::GetManifest => "manifest request",
            FrameKind::GetCatalog => "catalog request",
            FrameKind::Subscribe => "subscription",
            FrameKind::Report => "report",
            FrameKind::Welcome => "welcome",
            FrameKind::Chunk => "chunk header",
            FrameKind::Manifest => "manifest",
            FrameKind::Catalog => "catalog",
            FrameKind::Announce => "announcement",
            FrameKind::ReportAck => "report acknowledgement",
            FrameKind::Error => "error",
        }
    }
}

impl std::fmt::Display for FrameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error(
        "frame has protocol version {version}, this node speaks version {PROTOCOL_VERSION}; upgrade the older node"
    )]
    UnsupportedVersion { version: u8 },
    #[error("frame kind 0x{kind:02x} is unknown")]
    UnknownKind { kind: u8 },
    #[error("{kind} frame declares {len} bytes, more than the limit of {max}")]
    TooLarge { kind: FrameKind, len: u64, max: u32 },
    #[error("a {kind} frame is not valid here: expected a {expected}")]
    UnexpectedKind { kind: FrameKind, expected: &'static str },
    #[error("{kind} frame is malformed: {source}")]
    Malformed { kind: FrameKind, source: DecodeError },
}

impl FrameError {
    /// The error code to send back to the peer before closing the stream.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            FrameError::UnknownKind { .. } | FrameError::UnexpectedKind { .. } | FrameError::Malformed { .. } => {
                ErrorCode::Malformed
            }
        }
    }
}

/// A parsed frame header, already checked: known version, known kind, length within limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub payload_len: u32,
}

impl FrameHeader {
    /// Parses and checks a header. Only after this succeeds may a reader buffer
    /// `payload_len` bytes.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Self, FrameError> {
        if bytes[0] != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion { version: bytes[0] });
        }
        let kind = FrameKind::from_u8(bytes[1]).ok_or(FrameError::UnknownKind { kind: bytes[1] })?;
        let payload_len = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
        if payload_len > kind.max_payload() {
            return Err(FrameError::TooLarge {
                kind,
                len: u64::from(payload_len),
                max: kind.max_payload(),
            });
        }
        Ok(Self { kind, payload_len })
    }

    /// The header's bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let len = self.payload_len.to_be_bytes();
        [PROTOCOL_VERSION, self.kind.to_u8(), len[0], len[1], len[2], len[3]]
    }
}

fn write_frame(kind: FrameKind, payload: impl FnOnce(&mut Vec<u8>), out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    payload(out);
    let len = out.len() - start - HEADER_LEN;
    if len > kind.max_payload() as usize {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            kind,
            len: len as u64,
            max: kind.max_payload(),
        });
    }
    let header = FrameHeader {
        kind,
        payload_len: len as u32,
    };
    out[start..start + HEADER_LEN].copy_from_slice(&header.to_bytes());
    Ok(())
}

/// Appends a request frame to `out`. Fails (leaving `out` as it was) if the payload exceeds
/// its kind's limit, e.g. a report with too many records: split it.
pub fn encode_request(request: &Request, out: &mut Vec<u8>) -> Result<(), FrameError> {
    match request {
        Request::Hello(m) => write_frame(FrameKind::Hello, |o| m.encode(o), out),
        Request::GetChunk(m) => write_frame(FrameKind::GetChunk, |o| m.encode(o), out),
        Request::GetManifest(m) => write_frame(FrameKind::GetManifest, |o| m.encode(o), out),
        Request::GetCatalog(m) => write_frame(FrameKind::GetCatalog, |o| m.encode(o), out),
        Request::Subscribe(m) => write_frame(FrameKind::Subscribe, |o| m.encode(o), out),
        Request::Report(m) => write_frame(FrameKind::Report, |o| m.encode(o), out),
    }
}

/// Appends a response frame to `out`. Fails (leaving `out` as it was) if the payload exceeds
/// its kind's limit.
pub fn encode_response(response: &Response, out: &mut Vec<u8>) -> Result<(), FrameError> {
    match response {
        Response::Welcome(m) => write_frame(FrameKind::Welcome, |o| m.encode(o), out),
        Response::Chunk(m) => write_frame(FrameKind::Chunk, |o| m.encode(o), out),
        Response::Manifest(m) => write_frame(FrameKind::Manifest, |o| m.encode(o), out),
        Response::Catalog(m) => write_frame(FrameKind::Catalog, |o| m.encode(o), out),
        Response::Announce(m) => write_frame(FrameKind::Announce, |o| m.encode(o), out),
        Response::ReportAck(m) => write_frame(FrameKind::ReportAck, |o| m.encode(o), out),
        Response::Error(m) => write_frame(FrameKind::Error, |o| m.encode(o), out),
    }
}

fn payload<T: Decode>(kind: FrameKind, bytes: &[u8]) -> Result<T, FrameError> {
    let mut d = Decoder::new(bytes);
    let value = T::decode(&mut d).map_err(|source| FrameError::Malformed { kind, source })?;
    d.finish(kind.name())
        .map_err(|source| FrameError::Malformed { kind, source })?;
    Ok(value)
}

fn check_len(header: FrameHeader, payload_bytes: &[u8]) -> Result<(), FrameError> {
    if payload_bytes.len() != header.payload_len as usize {
        return Err(FrameError::Malformed {
            kind: header.kind,
            source: DecodeError::Invalid {
                field: "payload",
                reason: "length differs from the header",
            },
        });
    }
    Ok(())
}

/// Decodes a request payload whose header was parsed with [`FrameHeader::parse`].
pub fn decode_request(header: FrameHeader, bytes: &[u8]) -> Result<Request, FrameError> {
    check_len(header, bytes)?;
    let kind = header.kind;
    Ok(match kind {
        FrameKind::Hello => Request::Hello(payload(kind, bytes)?),
        FrameKind::GetChunk => Request::GetChunk(payload(kind, bytes)?),
        FrameKind::GetManifest => Request::GetManifest(payload(kind, bytes)?),
        FrameKind::GetCatalog => Request::GetCatalog(payload(kind, bytes)?),
        FrameKind::Subscribe => Request::Subscribe(payload(kind, bytes)?),
        FrameKind::Report => Request::Report(Box::new(payload(kind, bytes)?)),
        _ => {
            return Err(FrameError::UnexpectedKind {
                kind,
                expected: "request",
            })
        }
    })
}

/// Decodes a response payload whose header was parsed with [`FrameHeader::parse`].
pub fn decode_response(header: FrameHeader, bytes: &[u8]) -> Result<Response, FrameError> {
    check_len(header, bytes)?;
    let kind = header.kind;
    Ok(match kind {
        FrameKind::Welcome => Response::Welcome(payload(kind, bytes)?),
        FrameKind::Chunk => Response::Chunk(payload(kind, bytes)?),
        FrameKind::Manifest => Response::Manifest(payload(kind, bytes)?),
        FrameKind::Catalog => Response::Catalog(payload(kind, bytes)?),
        FrameKind::Announce => Response::Announce(payload(kind, bytes)?),
        FrameKind::ReportAck => Response::ReportAck(payload(kind, bytes)?),
        FrameKind::Error => Response::Error(payload(kind, bytes)?),
        _ => {
            return Err(FrameError::UnexpectedKind {
                kind,
                expected: "response",
            })
        }
    })
}

fn try_decode<T>(
    buf: &[u8],
    decode: impl FnOnce(FrameHeader, &[u8]) -> Result<T, FrameError>,
) -> Result<Option<(T, usize)>, FrameError> {
    let Some(header_bytes) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let header = FrameHeader::parse(header_bytes.try_into().expect("slice of HEADER_LEN"))?;
    let end = HEADER_LEN + header.payload_len as usize;
    let Some(payload_bytes) = buf.get(HEADER_LEN..end) else {
        return Ok(None);
    };
    Ok(Some((decode(header, payload_bytes)?, end)))
}

/// Decodes one request frame from the front of `buf`: `Ok(None)` if more bytes are needed,
/// otherwise the request and how many bytes it took.
pub fn try_decode_request(buf: &[u8]) -> Result<Option<(Request, usize)>, FrameError> {
    try_decode(buf, decode_request)
}

/// Decodes one response frame from the front of `buf`: `Ok(None)` if more bytes are needed,
/// otherwise the response and how many bytes it took.
pub fn try_decode_response(buf: &[u8]) -> Result<Option<(Response, usize)>, FrameError> {
    try_decode(buf, decode_response)
}
