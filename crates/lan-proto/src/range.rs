//! `Range` request headers (RFC 9110 14.2): one `bytes=` range per request (`a-b`, `a-`, `-n`);
//! several ranges, or a header that does not parse, mean the whole body (a server may ignore
//! `Range`); a range that starts past the end is unsatisfiable (416).

/// What a `Range` header asks of a body of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// The whole body (no header, several ranges, or a header that does not parse).
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// Nothing of the body: 416.
    Unsatisfiable,
}

/// Reads a `Range` header for a body of `len` bytes.
pub fn parse_range(header: Option<&str>, len: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim().is_empty(), number(a), number(b)) {
        // "-n": the last n bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part {
                    start: len - n.min(len),
                    end: len - 1,
                }
            }
        }
        (false, Some(start), end) if b.trim().is_empty() || end.is_some() => {
            if start >= len {
                return ByteRange::Unsatisfiable;
            }
            match end {
                Some(end) if end < start => ByteRange::Whole,
                Some(end) => ByteRange::Part {
                    start,
                    end: end.min(len - 1),
                },
                None => ByteRange::Part { start, end: len - 1 },
            }
        }
        _ => ByteRange::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        let len = 1000;
        assert_eq!(parse_range(None, len), ByteRange::Whole);
        assert_eq!(
            parse_range(Some("bytes=0-99"), len),
            ByteRange::Part { start: 0, end: 99 }
        );
        assert_eq!(
            parse_range(Some("bytes=990-"), len),
            ByteRange::Part { start: 990, end: 999 }
        );
        assert_eq!(
            parse_range(Some("bytes=990-5000"), len),
            ByteRange::Part { start: 990, end: 999 }
        );
        assert_eq!(
            parse_range(Some("bytes=-10"), len),
            ByteRange::Part { start: 990, end: 999 }
        );
        assert_eq!(
            parse_range(Some("bytes=-5000"), len),
            ByteRange::Part { start: 0, end: 999 }
        );
        assert_eq!(parse_range(Some("bytes=1000-"), len), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), len), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), len), ByteRange::Whole);
        assert_eq!(parse_range(Some("bytes=5-1"), len), ByteRange::Whole);
        assert_eq!(parse_range(Some("items=0-1"), len), ByteRange::Whole);
        assert_eq!(parse_range(Some("bytes=x-1"), len), ByteRange::Whole);
        assert_eq!(parse_range(Some("bytes=+1-2"), len), ByteRange::Whole);
        assert_eq!(parse_range(Some("bytes=-"), len), ByteRange::Whole);
        assert_eq!(parse_range(Some("bytes=0-"), 0), ByteRange::Unsatisfiable);
    }
}
