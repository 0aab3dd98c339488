//! The admin API's JSON request bodies.
//!
//! Every body is read by [`parse`]: at most [`MAX_JSON_BODY`] bytes, UTF-8 JSON, and no field
//! the type does not name (a misspelt field is an error, not silently ignored).

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Largest JSON request body, in bytes.
pub const MAX_JSON_BODY: usize = 64 << 10;

/// Why a request body was refused (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is {len} bytes; at most {MAX_JSON_BODY}")]
    TooLarge { len: usize },
    #[error("the request body must be a JSON object {{…}}")]
    NotAnObject,
    #[error("the request body is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Parses a request body as `T`: one JSON object (serde would also take a struct's fields as
/// an array; only the object form is accepted, so one body has one spelling).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    if bytes.len() > MAX_JSON_BODY {
        return Err(BodyError::TooLarge { len: bytes.len() });
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(BodyError::NotAnObject);
    }
    Ok(serde_json::from_slice(bytes)?)
}

/// `POST /api/uploads`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUpload {
    /// "media" (default) or "attachment".
    #[serde(default)]
    pub kind: Option<String>,
    pub name: String,
    pub size: u64,
}

/// A lesson's metadata as sent (`PUT /api/lessons/{id}/metadata`, and inside [`NewLesson`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataBody {
    pub title: String,
    pub department: String,
    pub category: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default = "default_language")]
    pub language: String,
    #[serde(default)]
    pub description: String,
}

fn default_language() -> String {
    "zh-CN".into()
}

/// `POST /api/lessons`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLesson {
    pub upload: String,
    #[serde(default)]
    pub attachments: Vec<String>,
    /// What the upload is declared to be; checked against the probe before anything is made.
    #[serde(default)]
    pub media: Option<DeclaredMedia>,
    #[serde(flatten)]
    pub metadata: MetadataBody,
}

/// What a submitter says an upload is (`"media": "video" | "audio"` in [`NewLesson`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeclaredMedia {
    /// A video lesson: the upload must have a video stream (audio optional).
    Video,
    /// An audio lesson (radio, weak links): the upload must be audio only.
    Audio,
}

/// `POST /api/lessons/{id}/{step}` (the body may also be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepBody {
    #[serde(default)]
    pub comment: Option<String>,
}

/// `POST /api/schedule`: a showing of a lesson (`lesson`) or a live showing of a channel
/// (`live`, with `title` and `minutes`); exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewShowing {
    #[serde(default)]
    pub lesson: Option<String>,
    /// A live channel, e.g. `city-live`: a live showing (直播预告) instead of a lesson.
    #[serde(default)]
    pub live: Option<String>,
    /// Unix seconds (UTC).
    pub at: u64,
    #[serde(default = "all")]
    pub target: String,
    /// What a live showing is about (default: the channel's name).
    #[serde(default)]
    pub title: Option<String>,
    /// How long a live showing is planned to last, in minutes (default 60).
    #[serde(default)]
    pub minutes: Option<u32>,
}

/// `POST /api/live/{channel}/record`: start recording a live channel into a lesson with this
/// metadata.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRecording {
    /// The rendition to record (default: the channel's top rendition, the one with the largest
    /// segments in the origin's window).
    #[serde(default)]
    pub rendition: Option<String>,
    #[serde(flatten)]
    pub metadata: MetadataBody,
}

fn all() -> String {
    "all".into()
}

/// `POST /api/revocations`: revoke a node by name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_and_refuse_unknown_fields() {
        let l: NewLesson = parse(br#"{"upload":"u-1","title":"t","department":"d","category":"required"}"#).unwrap();
        assert_eq!(l.metadata.language, "zh-CN");
        assert!(parse::<NewUpload>(br#"{"name":"a","size":1,"sise":2}"#).is_err());
        assert!(matches!(parse::<StepBody>(b" []"), Err(BodyError::NotAnObject)));
        assert!(parse::<StepBody>(b"{} x").is_err());
        let s: NewShowing = parse(br#"{"lesson":"x","at":5}"#).unwrap();
        assert_eq!(
            (s.target.as_str(), s.lesson.as_deref(), s.live),
            ("all", Some("x"), None)
        );
        let s: NewShowing = parse(br#"{"live":"city-live","at":5,"title":"t","minutes":90}"#).unwrap();
        assert_eq!((s.live.as_deref(), s.minutes), (Some("city-live"), Some(90)));
        let r: NewRecording = parse(br#"{"title":"t","department":"d","category":"required"}"#).unwrap();
        assert_eq!(r.rendition, None);
        let big = vec![b' '; MAX_JSON_BODY + 1];
        assert!(matches!(parse::<StepBody>(&big), Err(BodyError::TooLarge { .. })));
    }
}
