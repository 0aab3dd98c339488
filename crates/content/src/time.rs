//! Wall-clock instants as plain values. The content crate never reads a clock: callers pass
//! "now" in, which keeps every check deterministic and testable.

use std::fmt;

use crate::encoding::{put_u64, Decode, DecodeError, Decoder, Encode};

/// Seconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// This instant plus `secs` seconds (saturating).
    pub fn plus_secs(self, secs: u64) -> Self {
        Self(self.0.saturating_add(secs))
    }

    /// Seconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn secs_since(self, earlier: UnixTime) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unix:{}", self.0)
    }
}

impl Encode for UnixTime {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.0);
    }
}

impl Decode for UnixTime {
    const WHAT: &'static str = "time";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        d.u64("time").map(Self)
    }
}
