//! A client of the origin's admin API (HTTP/1.1 with hyper's client connection, one
//! connection per request: the CLI makes a handful of requests). Used by `courseway ingest`,
//! `review`, `publish`, `withdraw`, `lessons` and `schedule`, and by the tests.
//!
//! Uploads stream a file from disk in blocks (never whole in memory) and resume after a cut:
//! the client asks the server for the offset it holds and sends the rest from there.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The environment variable naming the admin API's address.
pub const SERVER_ENV: &str = "COURSEWAY_SERVER";
/// The environment variable holding the bearer token.
pub const TOKEN_ENV: &str = "COURSEWAY_TOKEN";
/// Bytes per block of a streamed upload.
pub const UPLOAD_BLOCK: usize = 256 << 10;
/// How many times an upload resumes after a cut before giving up.
pub const UPLOAD_RETRIES: u32 = 5;

/// Wait before resuming when the server still holds an earlier, cut `PUT` of the upload.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What went wrong talking to the admin API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0:?} is not an admin API address; give HOST:PORT or http://HOST:PORT (e.g. 127.0.0.1:7480)")]
    BadServer(String),
    #[error("cannot connect to the admin API at {server}: {source}; check --server / COURSEWAY_SERVER and that the origin runs with [origin.admin]")]
    Connect {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP to the admin API failed: {0}")]
    Http(#[from] hyper::Error),
    /// The server refused or failed: its status and reason.
    #[error("the origin answered {status}: {message}")]
    Server {
        status: StatusCode,
        message: String,
        body: Value,
    },
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the origin's answer is not JSON: {0}")]
    NotJson(String),
}

impl ClientError {
    /// The HTTP status of a server refusal.
    /// The server's error code (`"busy"`, `"not_owner"`, …), for a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server { body, .. } => body["code"].as_str(),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Server { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A request body fed from a channel: blocks of a file, or a test's chosen bytes. An `Err`
/// sent down the channel aborts the request (the connection closes mid-body, as a cut line
/// would).
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl ChannelBody {
    /// A body and the sender that feeds it (`capacity` blocks in flight).
    pub fn new(capacity: usize) -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, Self { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// A client of one origin's admin API with one token.
#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: String,
    token: String,
}

/// `%`-encodes a query value.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl AdminClient {
    /// `server` is `HOST:PORT` or `http://HOST:PORT`.
    pub fn new(server: &str, token: &str) -> Result<Self, ClientError> {
        let addr = server.strip_prefix("http://").unwrap_or(server).trim_end_matches('/');
        if addr.is_empty() || addr.contains('/') || !addr.contains(':') {
            return Err(ClientError::BadServer(server.to_string()));
        }
        Ok(Self {
            addr: addr.to_string(),
            token: token.to_string(),
        })
    }

    /// A client for `addr`.
    pub fn for_addr(addr: SocketAddr, token: &str) -> Self {
        Self {
            addr: addr.to_string(),
            token: token.to_string(),
        }
    }

    /// Sends one request and returns the status, the `Upload-Offset` header (if any) and the
    /// body.
    pub async fn send<B>(
        &self,
        method: Method,
        path: &str,
        body: B,
    ) -> Result<(StatusCode, Option<u64>, Bytes), ClientError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|source| ClientError::Connect {
                server: self.addr.clone(),
                source,
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let connection = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.addr)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if !self.token.is_empty() {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.token));
        }
        let request = request.body(body).map_err(|e| ClientError::BadServer(e.to_string()))?;
        let result = async {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let offset = response
                .headers()
                .get("upload-offset")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, ClientError>((status, offset, body))
        }
        .await;
        connection.abort();
        result
    }

    /// Sends JSON (or nothing) and returns the JSON answer; a non-2xx answer is
    /// [`ClientError::Server`] with the server's reason.
    pub async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let (status, _, body) = self.send(method, path, Full::new(bytes)).await?;
        let value: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .map_err(|_| ClientError::NotJson(String::from_utf8_lossy(&body).into_owned()))?
        };
        if status.is_success() {
            Ok(value)
        } else {
            Err(ClientError::Server {
                status,
                message: value["error"].as_str().unwrap_or("(no reason given)").to_string(),
                body: value,
            })
        }
    }

    /// GETs a text answer (e.g. CSV); a non-2xx answer is [`ClientError::Server`] with the
    /// server's reason.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let (status, _, body) = self.send(Method::GET, path, Full::new(Bytes::new())).await?;
        if status.is_success() {
            return Ok(String::from_utf8_lossy(&body).into_owned());
        }
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Err(ClientError::Server {
            status,
            message: value["error"].as_str().unwrap_or("(no reason given)").to_string(),
            body: value,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.json(Method::POST, path, Some(body)).await
    }

    /// Declares an upload; returns its id.
    pub async fn create_upload(&self, kind: &str, name: &str, size: u64) -> Result<String, ClientError> {
        let v = self
            .post("/api/uploads", &json!({ "kind": kind, "name": name, "size": size }))
            .await?;
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }

    /// The offset the server holds of upload `id`.
    pub async fn upload_offset(&self, id: &str) -> Result<u64, ClientError> {
        let v = self.get(&format!("/api/uploads/{id}")).await?;
        Ok(v["offset"].as_u64().unwrap_or(0))
    }

    /// Sends `body` to upload `id` starting at `offset`; returns the server's new offset.
    pub async fn put_upload<B>(&self, id: &str, offset: u64, body: B) -> Result<u64, ClientError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (status, _, bytes) = self
            .send(Method::PUT, &format!("/api/uploads/{id}?offset={offset}"), body)
            .await?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value["offset"].as_u64().unwrap_or(offset))
        } else {
            Err(ClientError::Server {
                status,
                message: value["error"].as_str().unwrap_or("(no reason given)").to_string(),
                body: value,
            })
        }
    }

    /// Streams `path` into upload `id` from `offset` to the end, in blocks read on a thread of
    /// their own; `progress` gets the bytes the server is known to hold plus those sent since.
    pub async fn send_file_from(
        &self,
        id: &str,
        path: &Path,
        offset: u64,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<u64, ClientError> {
        let file_error = |source| ClientError::File {
            path: path.display().to_string(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(file_error)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset)).map_err(file_error)?;
        let (tx, body) = ChannelBody::new(4);
        std::thread::spawn(move || {
            let mut sent = offset;
            loop {
                let mut block = vec![0u8; UPLOAD_BLOCK];
                match file.read(&mut block) {
                    Ok(0) => break,
                    Ok(n) => {
                        block.truncate(n);
                        sent += n as u64;
                        if tx.blocking_send(Ok(Bytes::from(block))).is_err() {
                            break;
                        }
                        progress(sent);
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        break;
                    }
                }
            }
        });
        self.put_upload(id, offset, body).await
    }

    /// Uploads a whole file (kind "media" or "attachment"), resuming after cuts; returns the
    /// upload's id.
    pub async fn upload_file(
        &self,
        path: &Path,
        kind: &str,
        progress: impl Fn(u64) + Send + Sync + Clone + 'static,
    ) -> Result<String, ClientError> {
        let size = std::fs::metadata(path)
            .map_err(|source| ClientError::File {
                path: path.display().to_string(),
                source,
            })?
            .len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "upload".into());
        let id = self.create_upload(kind, &name, size).await?;
        let mut offset = 0;
        let mut tries = 0;
        while offset < size {
            match self.send_file_from(&id, path, offset, progress.clone()).await {
                Ok(o) if o == size => return Ok(id),
                // The server took everything sent, and it was less than the file's size when the
                // upload began: the file shrank (being rewritten?). Resending would send nothing.
                Ok(o) => {
                    return Err(ClientError::File {
                        path: path.display().to_string(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("the file is now {o} bytes, not the {size} it had when the upload began; upload it again once nothing writes to it"),
                        ),
                    })
                }
                // The server still holds the previous, cut PUT open for a moment: wait for it.
                Err(e) if e.status() == Some(StatusCode::CONFLICT) && e.code() == Some("busy") => {
                    tries += 1;
                    if tries > UPLOAD_RETRIES {
                        return Err(e);
                    }
                    tokio::time::sleep(BUSY_WAIT).await;
                    offset = self.upload_offset(&id).await?;
                }
                Err(e @ ClientError::Server { .. }) if e.status() != Some(StatusCode::BAD_REQUEST) => return Err(e),
                Err(e) => {
                    tries += 1;
                    if tries > UPLOAD_RETRIES {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, "upload cut; resuming");
                    offset = self.upload_offset(&id).await?;
                }
            }
        }
        Ok(id)
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DD HH:MM` (or `…THH:MM[:SS]`) as UTC, or with an explicit offset suffix
/// (` +08:00`, `Z`), into Unix seconds.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a time; write e.g. \"2026-12-01 19:30\" (UTC) or \"2026-12-01 19:30 +08:00\"");
    let s = s.trim();
    let (main, offset_secs) = if let Some(rest) = s.strip_suffix('Z') {
        (rest.trim(), 0i64)
    } else if let Some(pos) = s.rfind(['+', '-']).filter(|&p| p > 10) {
        let (main, off) = s.split_at(pos);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off[1..].split_once(':').ok_or_else(bad)?;
        let (h, m): (i64, i64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 14 || m > 59 {
            return Err(bad());
        }
        (main.trim(), sign * (h * 3600 + m * 60))
    } else {
        (s, 0)
    };
    let (date, time) = main.split_once([' ', 'T']).ok_or_else(bad)?;
    let mut d = date.split('-');
    let (y, mo, da): (i64, u32, u32) = (
        d.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        d.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        d.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
    );
    let mut t = time.trim().split(':');
    let (h, mi): (i64, i64) = (
        t.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        t.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
    );
    let sec: i64 = match t.next() {
        Some(v) => v.parse().map_err(|_| bad())?,
        None => 0,
    };
    let days_in_month = [
        31,
        if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) {
            29
        } else {
            28
        },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d.next().is_some()
        || t.next().is_some()
        || !(1..=12).contains(&mo)
        || da == 0
        || da > days_in_month[mo as usize - 1]
        || !(0..24).contains(&h)
        || !(0..60).contains(&mi)
        || !(0..60).contains(&sec)
        || y < 1970
    {
        return Err(bad());
    }
    let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    u64::try_from(secs).map_err(|_| bad())
}

/// Formats Unix seconds as `YYYY-MM-DD HH:MM UTC`.
pub fn format_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_times_parse_as_utc_or_with_an_offset() {
        assert_eq!(parse_time("1970-01-01 00:00"), Ok(0));
        // 2026-12-01 19:30 UTC.
        assert_eq!(parse_time("2026-12-01 19:30"), Ok(1_796_153_400));
        assert_eq!(parse_time("2026-12-01T19:30:00Z"), Ok(1_796_153_400));
        assert_eq!(parse_time("2026-12-02 03:30 +08:00"), Ok(1_796_153_400));
        assert_eq!(parse_time("2024-02-29 00:00"), Ok(1_709_164_800));
        for bad in [
            "2026-02-29 10:00",
            "2026-13-01 10:00",
            "2026-12-01",
            "tomorrow",
            "2026-12-01 24:00",
            "2026-12-01 19:30 +15:00",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(format_time(1_796_153_400), "2026-12-01 19:30 UTC");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(percent_encode("农 a&b"), "%E5%86%9C%20a%26b");
    }

    #[test]
    fn server_addresses() {
        assert!(AdminClient::new("http://127.0.0.1:7480/", "t").is_ok());
        assert!(AdminClient::new("127.0.0.1:7480", "t").is_ok());
        assert!(AdminClient::new("https://x/y", "t").is_err());
        assert!(AdminClient::new("", "t").is_err());
    }
}
