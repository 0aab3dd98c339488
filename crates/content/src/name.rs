//! Identifiers: lesson ids, node names, group names, channel names.
//!
//! An identifier is 1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits, `.`, `_`, `-` and `:`,
//! so it is safe in URLs, file names, metric label values and log lines. Human titles
//! (which may be Chinese) are free text elsewhere, never identifiers.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::encoding::{put_str, Decode, DecodeError, Decoder, Encode};

/// Longest identifier in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("{kind} is empty; give a name such as \"village-0123\"")]
    Empty { kind: &'static str },
    #[error("{kind} {name:?} is {len} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong {
        kind: &'static str,
        name: String,
        len: usize,
    },
    #[error("{kind} {name:?} contains {found:?}; use only ASCII letters, digits, '.', '_', '-' and ':'")]
    BadCharacter {
        kind: &'static str,
        name: String,
        found: char,
    },
    /// "." and ".." name directories, and every name may end up as a file or directory name.
    #[error("{kind} {name:?} is only dots; give a name with a letter or digit")]
    OnlyDots { kind: &'static str, name: String },
}

fn validate(kind: &'static str, s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            kind,
            name: s.chars().take(40).collect(),
            len: s.len(),
        });
    }
    if let Some(found) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')))
    {
        return Err(NameError::BadCharacter {
            kind,
            name: s.to_owned(),
            found,
        });
    }
    if s.chars().all(|c| c == '.') {
        return Err(NameError::OnlyDots {
            kind,
            name: s.to_owned(),
        });
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                validate($kind, &s)?;
                Ok(Self(s))
            }

            /// The identifier as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl Encode for $name {
            fn encode(&self, out: &mut Vec<u8>) {
                put_str(out, &self.0);
            }
        }

        impl Decode for $name {
            const WHAT: &'static str = $kind;
            fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
                let s = d.str($kind, MAX_NAME_LEN)?;
                validate($kind, &s)
                    .map_err(|_| DecodeError::Invalid { field: $kind, reason: "not a valid identifier" })?;
                Ok(Self(s))
            }
        }
    };
}

identifier!(
    /// A lesson's stable id (its versions share it), e.g. `agri-2026-017`.
    LessonId,
    "lesson id"
);
identifier!(
    /// A node's name, as in its certificate: `origin`, `city-1`, `district-07`, `village-0123`.
    NodeName,
    "node name"
);
identifier!(
    /// A name for a place or group a schedule targets: a district, a town, or a named group.
    AreaName,
    "area name"
);
identifier!(
    /// A live channel, e.g. `city-live`.
    ChannelId,
    "channel id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_names() {
        assert!(LessonId::new("agri-2026-017").is_ok());
        assert!(NodeName::new("district:07_town.3").is_ok());
        assert_eq!(LessonId::new(""), Err(NameError::Empty { kind: "lesson id" }));
        assert!(matches!(
            LessonId::new("课程"),
            Err(NameError::BadCharacter { found: '课', .. })
        ));
        assert!(matches!(
            LessonId::new("a/b"),
            Err(NameError::BadCharacter { found: '/', .. })
        ));
        assert!(matches!(
            LessonId::new("a".repeat(129)),
            Err(NameError::TooLong { len: 129, .. })
        ));
        for dots in [".", "..", "..."] {
            assert!(matches!(LessonId::new(dots), Err(NameError::OnlyDots { .. })), "{dots}");
        }
        assert!(LessonId::new("..a").is_ok() && LessonId::new("v1.2").is_ok());
    }

    #[test]
    fn decoding_rejects_invalid_names() {
        let bytes = "bad name".to_string().to_bytes();
        assert!(matches!(LessonId::from_bytes(&bytes), Err(DecodeError::Invalid { .. })));
    }
}
