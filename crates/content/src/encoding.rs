//! The canonical binary encoding shared by every signed or hashed object and by the wire codec.
//!
//! Rules, chosen so that one value has exactly one encoding:
//! - integers are fixed width, big-endian;
//! - `bool` is one byte, `0` or `1` (anything else is rejected);
//! - strings and byte strings are a `u32` length then the bytes; strings must be UTF-8;
//! - sequences are a `u32` count then the items;
//! - enums are a one-byte tag then the variant's fields;
//! - a top-level object is rejected if bytes are left after it.
//!
//! Because decoding accepts only what encoding produces, `encode(decode(b)) == b` whenever
//! `decode(b)` succeeds, which lets signatures be checked over re-encoded values.
//!
//! Every length and count is checked against a per-field limit *before* anything is allocated,
//! and no allocation is ever larger than the bytes actually remaining in the input.

use thiserror::Error;

/// Why bytes could not be decoded. Each variant names the field that was being read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("input ended while reading {field}: needed {needed} more bytes, {remaining} left")]
    UnexpectedEnd {
        field: &'static str,
        needed: usize,
        remaining: usize,
    },
    #[error("{field} is {len} long, more than the limit of {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} has unknown tag {tag}")]
    InvalidTag { field: &'static str, tag: u8 },
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    #[error("{field} is a boolean but holds {value} (expected 0 or 1)")]
    InvalidBool { field: &'static str, value: u8 },
    #[error("{count} unexpected bytes after the end of {what}")]
    TrailingBytes { what: &'static str, count: usize },
    #[error("{what} has format version {version}; this build understands version {supported}")]
    UnsupportedVersion {
        what: &'static str,
        version: u8,
        supported: u8,
    },
    #[error("{field} is invalid: {reason}")]
    Invalid { field: &'static str, reason: &'static str },
}

/// A value with a canonical encoding.
pub trait Encode {
    /// Appends the canonical encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// The canonical encoding of `self` as a new buffer.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// A value that can be read back from its canonical encoding.
pub trait Decode: Sized {
    /// What the value is called in error messages.
    const WHAT: &'static str;

    /// Reads one value from the decoder.
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError>;

    /// Decodes a whole buffer holding exactly one value.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Decoder::new(bytes);
        let value = Self::decode(&mut d)?;
        d.finish(Self::WHAT)?;
        Ok(value)
    }
}

/// Writes the primitives of the canonical encoding.
pub fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}
/// Writes a big-endian `u16`.
pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
/// Writes a big-endian `u32`.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
/// Writes a big-endian `u64`.
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}
/// Writes a boolean as `0` or `1`.
pub fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(u8::from(v));
}
/// Writes a length-prefixed byte string.
///
/// # Panics
/// If `v` is longer than `u32::MAX`; every field has a far smaller limit that callers enforce
/// when building values.
pub fn put_bytes(out: &mut Vec<u8>, v: &[u8]) {
    put_u32(out, u32::try_from(v.len()).expect("byte string longer than u32::MAX"));
    out.extend_from_slice(v);
}
/// Writes a length-prefixed UTF-8 string.
pub fn put_str(out: &mut Vec<u8>, v: &str) {
    put_bytes(out, v.as_bytes());
}
/// Writes a count-prefixed sequence.
pub fn put_seq<T: Encode>(out: &mut Vec<u8>, items: &[T]) {
    put_u32(out, u32::try_from(items.len()).expect("sequence longer than u32::MAX"));
    for item in items {
        item.encode(out);
    }
}

/// Reads the primitives of the canonical encoding from a byte slice. Never panics.
#[derive(Debug)]
pub struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Starts reading at the beginning of `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Self { input, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    /// Fails unless every byte has been read.
    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { what, count }),
        }
    }

    /// Takes exactly `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::UnexpectedEnd {
                field,
                needed: n,
                remaining: self.remaining(),
            });
        }
        let slice = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }
    /// Reads a big-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }
    /// Reads a big-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }
    /// Reads a big-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
    /// Reads a boolean that must be `0` or `1`.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::InvalidBool { field, value }),
        }
    }

    /// Reads a format version byte and checks it.
    pub fn version(&mut self, what: &'static str, supported: u8) -> Result<(), DecodeError> {
        let version = self.u8("format version")?;
        if version == supported {
            Ok(())
        } else {
            Err(DecodeError::UnsupportedVersion {
                what,
                version,
                supported,
            })
        }
    }

    /// Reads a length-prefixed byte string of at most `max` bytes, borrowing from the input.
    pub fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        self.take(len, field)
    }

    /// Reads a length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let raw = self.bytes(field, max)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    /// Reads a count-prefixed sequence of at most `max` items.
    ///
    /// The buffer reserved up front is bounded by the bytes left in the input (each item takes at
    /// least one byte), so a forged count cannot make the decoder allocate.
    pub fn seq<T: Decode>(&mut self, field: &'static str, max: usize) -> Result<Vec<T>, DecodeError> {
        let count = self.u32(field)? as usize;
        if count > max {
            return Err(DecodeError::TooLong { field, len: count, max });
        }
        let mut items = Vec::with_capacity(count.min(self.remaining()));
        for _ in 0..count {
            items.push(T::decode(self)?);
        }
        Ok(items)
    }
}

impl Encode for String {
    fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, self);
    }
}

/// Longest free-text string accepted in a tag list.
pub const MAX_TAG_LEN: usize = 64;

impl Decode for String {
    const WHAT: &'static str = "string";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        d.str("string", MAX_TAG_LEN)
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => put_u8(out, 0),
            Some(v) => {
                put_u8(out, 1);
                v.encode(out);
            }
        }
    }
}

impl<T: Decode> Decode for Option<T> {
    const WHAT: &'static str = T::WHAT;
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        match d.u8(T::WHAT)? {
            0 => Ok(None),
            1 => T::decode(d).map(Some),
            tag => Err(DecodeError::InvalidTag { field: T::WHAT, tag }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_count_does_not_allocate_beyond_input() {
        // A count of 1,000 items with only 4 bytes behind it fails on the first missing item.
        let mut bytes = Vec::new();
        put_u32(&mut bytes, 1000);
        put_u32(&mut bytes, 0);
        let mut d = Decoder::new(&bytes);
        let err = d.seq::<String>("tags", 10_000).unwrap_err();
        assert!(matches!(err, DecodeError::UnexpectedEnd { .. }), "{err}");
    }

    #[test]
    fn count_over_limit_is_refused_before_reading_items() {
        let mut bytes = Vec::new();
        put_u32(&mut bytes, 11);
        let err = Decoder::new(&bytes).seq::<String>("tags", 10).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLong {
                field: "tags",
                len: 11,
                max: 10
            }
        );
    }

    #[test]
    fn bool_must_be_zero_or_one() {
        assert_eq!(
            Decoder::new(&[2]).bool("flag"),
            Err(DecodeError::InvalidBool {
                field: "flag",
                value: 2
            })
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = "ab".to_string().to_bytes();
        bytes.push(0);
        assert_eq!(
            String::from_bytes(&bytes),
            Err(DecodeError::TrailingBytes {
                what: "string",
                count: 1
            })
        );
    }
}
