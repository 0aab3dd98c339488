//! Wall-clock time as the content crate's [`UnixTime`].

use courseway_content::UnixTime;

/// Now, in whole seconds since the Unix epoch (0 if the clock is before 1970).
pub fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}
