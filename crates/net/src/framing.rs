//! Frames over quinn streams: the IO edge of `courseway-proto`.
//!
//! Reading a frame is always: read [`HEADER_LEN`] bytes, [`FrameHeader::parse`] them (which
//! refuses an unknown version, an unknown kind or a length above the kind's limit), check the
//! direction (a request where a request belongs), and only then read exactly
//! `payload_len` bytes. A lying length therefore costs the reader nothing, and the payload
//! buffer grows only as bytes arrive, so a declared-but-unsent payload costs nothing either.

use bytes::Bytes;
use courseway_content::MAX_CHUNK_SIZE;
use courseway_proto::{
    decode_request, decode_response, encode_request, encode_response, ChunkHeader, ErrorCode, ErrorReply, FrameError,
    FrameHeader, Request, Response, HEADER_LEN,
};
use quinn::{RecvStream, SendStream, VarInt};

use crate::error::NetError;
use crate::pacing::{write_limited, SharedLimiter};

/// The QUIC application error code for `code`, used to reset or stop a stream.
pub fn stream_error_code(code: ErrorCode) -> VarInt {
    VarInt::from_u32(u32::from(code.to_u16()))
}

/// Writes one request frame. Does not finish the stream.
pub async fn send_request(send: &mut SendStream, request: &Request) -> Result<(), NetError> {
    let mut buf = Vec::new();
    encode_request(request, &mut buf).map_err(NetError::Encode)?;
    send.write_all(&buf).await.map_err(|source| NetError::Write {
        what: "request",
        source,
    })
}

/// Writes one response frame. Does not finish the stream.
pub async fn send_response(send: &mut SendStream, response: &Response) -> Result<(), NetError> {
    let mut buf = Vec::new();
    encode_response(response, &mut buf).map_err(NetError::Encode)?;
    send.write_all(&buf).await.map_err(|source| NetError::Write {
        what: "response",
        source,
    })
}

/// Reads a header, checked before any payload byte is read.
async fn read_header(recv: &mut RecvStream, want_request: bool) -> Result<FrameHeader, NetError> {
    let mut bytes = [0u8; HEADER_LEN];
    recv.read_exact(&mut bytes)
        .await
        .map_err(|e| NetError::read_exact("frame header", HEADER_LEN, e))?;
    let header = FrameHeader::parse(&bytes).map_err(NetError::Frame)?;
    if header.kind.is_request() != want_request {
        return Err(NetError::Frame(FrameError::UnexpectedKind {
            kind: header.kind,
            expected: if want_request { "request" } else { "response" },
        }));
    }
    Ok(header)
}

async fn read_payload(recv: &mut RecvStream, header: FrameHeader) -> Result<Vec<u8>, NetError> {
    // `payload_len` was checked against the kind's limit by `FrameHeader::parse`.
    read_growing(recv, header.payload_len as usize, "frame payload").await
}

/// Reads exactly `len` bytes, growing the buffer only as bytes arrive: a peer that declares a
/// large (but allowed) length and then sends nothing costs us nothing.
async fn read_growing(recv: &mut RecvStream, len: usize, what: &'static str) -> Result<Vec<u8>, NetError> {
    // quinn's pieces are kept as they arrive (what is held grows only with what arrived, never
    // with what the header announced) and joined once at the end: one copy, no reallocation.
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut got = 0;
    while got < len {
        match recv.read_chunk(len - got, true).await {
            Ok(Some(chunk)) => {
                got += chunk.bytes.len();
                pieces.push(chunk.bytes);
            }
            Ok(None) => {
                return Err(NetError::EndedEarly {
                    what,
                    expected: len,
                    got,
                })
            }
            Err(source) => return Err(NetError::Read { what, source }),
        }
    }
    let mut buf = Vec::with_capacity(got);
    for piece in &pieces {
        buf.extend_from_slice(piece);
    }
    Ok(buf)
}

/// Reads one request frame. A bad frame is [`NetError::Frame`], whose
/// [`FrameError::code`] is what to reply (see [`reply_error`]).
pub async fn read_request(recv: &mut RecvStream) -> Result<Request, NetError> {
    let header = read_header(recv, true).await?;
    let payload = read_payload(recv, header).await?;
    decode_request(header, &payload).map_err(NetError::Frame)
}

/// Reads one response frame. An error reply is returned as [`Response::Error`], not as an
/// `Err`; [`crate::PeerConnection::request`] turns it into [`NetError::Refused`].
pub async fn read_response(recv: &mut RecvStream) -> Result<Response, NetError> {
    let header = read_header(recv, false).await?;
    let payload = read_payload(recv, header).await?;
    decode_response(header, &payload).map_err(NetError::Frame)
}

/// Answers a failed request: writes an error frame, finishes the send side, and stops the
/// receive side with the same code (the rest of the request will not be read).
pub async fn reply_error(
    send: &mut SendStream,
    recv: &mut RecvStream,
    code: ErrorCode,
    message: impl Into<String>,
) -> Result<(), NetError> {
    // Stopping first tells the peer at once to stop sending an oversized payload. Either may
    // fail only because the stream is already closed, which is fine here.
    let _ = recv.stop(stream_error_code(code));
    send_response(send, &Response::Error(ErrorReply::new(code, message))).await?;
    send.finish().map_err(|_| NetError::StreamClosed {
        action: "finish the error reply",
    })
}

/// Reads the raw chunk bytes that follow a [`Response::Chunk`] header.
pub async fn read_chunk_body(recv: &mut RecvStream, header: &ChunkHeader) -> Result<Vec<u8>, NetError> {
    // `ChunkHeader`'s decoder guarantees offset ≤ size ≤ MAX_CHUNK_SIZE; checked again so that
    // a header built by hand cannot make us allocate more.
    if header.offset > header.size || header.size as usize > MAX_CHUNK_SIZE {
        return Err(NetError::Frame(FrameError::Malformed {
            kind: courseway_proto::FrameKind::Chunk,
            source: courseway_content::DecodeError::Invalid {
                field: "chunk header",
                reason: "offset beyond size or size beyond the chunk limit",
            },
        }));
    }
    read_growing(recv, header.body_len() as usize, "chunk body").await
}

/// Sends a chunk: its header frame, then `body` (the chunk's bytes from `header.offset` on),
/// paced by `limiters`, then finishes the stream.
pub async fn send_chunk(
    send: &mut SendStream,
    header: &ChunkHeader,
    body: Bytes,
    limiters: &[&SharedLimiter],
) -> Result<(), NetError> {
    if body.len() as u64 != u64::from(header.size.saturating_sub(header.offset)) || header.offset > header.size {
        return Err(NetError::config(
            "chunk reply",
            format!(
                "body has {} bytes but the header announces size {} from offset {}",
                body.len(),
                header.size,
                header.offset
            ),
        ));
    }
    send_response(send, &Response::Chunk(*header)).await?;
    write_limited(send, body, limiters).await?;
    send.finish().map_err(|_| NetError::StreamClosed {
        action: "finish the chunk",
    })
}
