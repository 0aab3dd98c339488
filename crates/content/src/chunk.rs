//! Chunk identity: a chunk is an immutable byte string of at most [`MAX_CHUNK_SIZE`] bytes,
//! named by the BLAKE3-256 hash of its bytes.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::encoding::{put_u32, Decode, DecodeError, Decoder, Encode};

/// The largest chunk Courseway stores or sends: 1 MiB.
pub const MAX_CHUNK_SIZE: usize = 1 << 20;

/// A BLAKE3-256 hash naming a chunk (or a manifest: manifests are named the same way).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId([u8; 32]);

impl ChunkId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps a raw 32-byte hash.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw hash.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Checks that `bytes` hash to this id.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), HashMismatch> {
        let actual = Self::of(bytes);
        if actual == *self {
            Ok(())
        } else {
            Err(HashMismatch {
                expected: *self,
                actual,
            })
        }
    }

    /// The first 8 hex digits, for logs.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_owned()
    }
}

/// Bytes did not hash to the id they were offered under.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("bytes hash to {actual}, not to the expected {expected}; they were altered or corrupted and are not kept")]
pub struct HashMismatch {
    pub expected: ChunkId,
    pub actual: ChunkId,
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.short())
    }
}

/// Why a string is not a chunk id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseChunkIdError {
    #[error("a chunk id is 64 hex digits, this one has {len} characters")]
    WrongLength { len: usize },
    #[error("a chunk id is hex, but character {position} is {found:?}")]
    NotHex { position: usize, found: char },
}

impl FromStr for ChunkId {
    type Err = ParseChunkIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(ParseChunkIdError::WrongLength { len: s.chars().count() });
        }
        let mut out = [0u8; 32];
        let digits = s.as_bytes();
        for (i, byte) in out.iter_mut().enumerate() {
            let hi = hex_value(digits[2 * i], s, 2 * i)?;
            let lo = hex_value(digits[2 * i + 1], s, 2 * i + 1)?;
            *byte = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

fn hex_value(digit: u8, s: &str, position: usize) -> Result<u8, ParseChunkIdError> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(ParseChunkIdError::NotHex {
            position,
            found: s[position..].chars().next().unwrap_or('?'),
        }),
    }
}

impl Encode for ChunkId {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Decode for ChunkId {
    const WHAT: &'static str = "chunk id";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        d.array("chunk id").map(Self)
    }
}

/// A chunk as referenced from a manifest: its id and its size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub size: u32,
}

impl ChunkRef {
    /// The reference to `bytes`.
    ///
    /// # Panics
    /// If `bytes` is longer than [`MAX_CHUNK_SIZE`]; split with [`crate::chunking`] first.
    pub fn of(bytes: &[u8]) -> Self {
        assert!(
            bytes.len() <= MAX_CHUNK_SIZE,
            "chunk of {} bytes exceeds 1 MiB",
            bytes.len()
        );
        Self {
            id: ChunkId::of(bytes),
            size: bytes.len() as u32,
        }
    }
}

impl Encode for ChunkRef {
    fn encode(&self, out: &mut Vec<u8>) {
        self.id.encode(out);
        put_u32(out, self.size);
    }
}

impl Decode for ChunkRef {
    const WHAT: &'static str = "chunk reference";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let id = ChunkId::decode(d)?;
        let size = d.u32("chunk size")?;
        if size as usize > MAX_CHUNK_SIZE {
            return Err(DecodeError::TooLong {
                field: "chunk size",
                len: size as usize,
                max: MAX_CHUNK_SIZE,
            });
        }
        Ok(Self { id, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vector() {
        // BLAKE3 of the empty input.
        assert_eq!(
            ChunkId::of(b"").to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn parse_errors_are_typed() {
        assert_eq!("abc".parse::<ChunkId>(), Err(ParseChunkIdError::WrongLength { len: 3 }));
        let mut s = "0".repeat(64);
        s.replace_range(10..11, "g");
        assert_eq!(
            s.parse::<ChunkId>(),
            Err(ParseChunkIdError::NotHex {
                position: 10,
                found: 'g'
            })
        );
        // Multi-byte characters are reported by character count, never split.
        let s = "é".repeat(32);
        assert_eq!(
            s.parse::<ChunkId>(),
            Err(ParseChunkIdError::NotHex {
                position: 0,
                found: 'é'
            })
        );
    }

    #[test]
    fn verify_detects_a_flipped_bit() {
        let id = ChunkId::of(b"lesson");
        assert!(id.verify(b"lesson").is_ok());
        assert!(id.verify(b"lessom").is_err());
    }

    proptest! {
        #[test]
        fn hex_round_trip(bytes in any::<[u8; 32]>()) {
            let id = ChunkId::from_bytes(bytes);
            prop_assert_eq!(id.to_string().parse::<ChunkId>().unwrap(), id);
            prop_assert_eq!(id.to_string().to_uppercase().parse::<ChunkId>().unwrap(), id);
        }

        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            let _ = s.parse::<ChunkId>();
        }
    }
}
