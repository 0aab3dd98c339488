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

impl UnixTime {
    /// The instant as `YYYY-MM-DD HH:MM UTC`, for people.
    pub fn utc(self) -> String {
        let (y, m, d) = civil_from_days((self.0 / 86_400) as i64);
        let rem = self.0 % 86_400;
        format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
    }

    /// Midnight UTC at the start of a proleptic Gregorian date (None before 1970).
    pub fn from_utc_date(year: i64, month: u32, day: u32) -> Option<Self> {
        u64::try_from(days_from_civil(year, month, day) * 86_400).ok().map(Self)
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day counted from 1970-01-01: the inverse of
/// [`days_from_civil`].
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(UnixTime::from_utc_date(2026, 12, 1), Some(UnixTime(1_796_083_200)));
        assert_eq!(UnixTime(1_796_153_400).utc(), "2026-12-01 19:30 UTC");
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(UnixTime::from_utc_date(1969, 12, 31), None);
    }
}
