//! Error codes a server sends back (and uses as the QUIC stream reset code).

use std::fmt;

/// Why a request failed. Stable numbers: they are sent on the wire and used as QUIC
/// application error codes when a stream is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request frame could not be decoded.
    Malformed,
    /// The frame's protocol version is not understood.
    UnsupportedVersion,
    /// A frame was larger than its kind allows.
    TooLarge,
    /// The requested chunk, manifest or catalog is not known here or upstream.
    NotFound,
    /// The peer is not enrolled, is revoked, or its role may not make this request.
    Unauthorized,
    /// The server is at capacity; retry later or elsewhere.
    Overloaded,
    /// The server's parent could not provide the data in time; try another parent.
    UpstreamUnavailable,
    /// The requested offset is beyond the end of the chunk.
    BadOffset,
    /// Anything else; the message says what.
    Internal,
    /// A code from a newer peer that this build does not know.
    Unknown(u16),
}

impl ErrorCode {
    /// The code's wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Malformed => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::TooLarge => 3,
            ErrorCode::NotFound => 4,
            ErrorCode::Unauthorized => 5,
            ErrorCode::Overloaded => 6,
            ErrorCode::UpstreamUnavailable => 7,
            ErrorCode::BadOffset => 8,
            ErrorCode::Internal => 9,
            ErrorCode::Unknown(v) => v,
        }
    }

    /// The code for a wire value; unknown values are kept, not refused.
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => ErrorCode::Malformed,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::TooLarge,
            4 => ErrorCode::NotFound,
            5 => ErrorCode::Unauthorized,
            6 => ErrorCode::Overloaded,
            7 => ErrorCode::UpstreamUnavailable,
            8 => ErrorCode::BadOffset,
            9 => ErrorCode::Internal,
            other => ErrorCode::Unknown(other),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ErrorCode::Malformed => "malformed request",
            ErrorCode::UnsupportedVersion => "unsupported protocol version",
            ErrorCode::TooLarge => "frame too large",
            ErrorCode::NotFound => "not found",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::UpstreamUnavailable => "upstream unavailable",
            ErrorCode::BadOffset => "offset beyond end of chunk",
            ErrorCode::Internal => "internal error",
            ErrorCode::Unknown(v) => return write!(f, "unknown error code {v}"),
        };
        f.write_str(name)
    }
}
