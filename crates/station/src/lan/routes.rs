//! The LAN server's HTTP edge: routes, HEAD, byte ranges, errors with reasons, viewing capture
//! of segment requests, and the attendance register.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use courseway_content::{ChannelId, ChunkRef, LessonId, LessonManifest, UnixTime};
use courseway_node::http::{full_body, PeerAddr, StreamingBody, StreamingHandler};
use courseway_node::{clock, store_io};
use courseway_store::Durability;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    RANGE, USER_AGENT,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::api::{self, Held, Recorded, Snapshot};
use super::attendance;
use super::capture::SegmentFetch;
use super::hls::{self, ByteRange};
use super::{assets, Lan};

/// Largest attendance form body.
const MAX_FORM_BODY: usize = 64 << 10;

const PLAYLIST: &str = "application/vnd.apple.mpegurl";
const SEGMENT: &str = "video/mp2t";
const JSON: &str = "application/json; charset=utf-8";

#[derive(Clone)]
pub(crate) struct LanHandler(pub(crate) Arc<Lan>);

impl StreamingHandler for LanHandler {
    async fn handle(&self, request: Request<Incoming>) -> Response<StreamingBody> {
        let path = request.uri().path().to_string();
        let method = request.method().clone();
        match route(&self.0, request).await {
            Ok(response) => response,
            Err(e) => {
                if e.status.is_server_error() {
                    tracing::error!(%method, %path, error = %e.message, "LAN request failed");
                } else {
                    tracing::debug!(%method, %path, status = %e.status, error = %e.message, "LAN request refused");
                }
                e.response(path.starts_with("/api/"), method == Method::HEAD)
            }
        }
    }
}

/// A refusal: the status, the reason, and for a form the field it is about.
#[derive(Debug)]
struct LanError {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
    allow: Option<&'static str>,
}

impl LanError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
            allow: None,
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn response(&self, json: bool, head: bool) -> Response<StreamingBody> {
        let (content_type, body) = if json {
            let mut v = json!({ "error": self.message });
            if let Some(f) = self.field {
                v["field"] = json!(f);
            }
            (JSON, v.to_string())
        } else {
            ("text/plain; charset=utf-8", format!("{}\n", self.message))
        };
        let mut r = answer(self.status, content_type, body.into_bytes(), head);
        if let Some(allow) = self.allow {
            r.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
        }
        r
    }
}

/// A whole in-memory answer (its `Content-Length` set; no body for HEAD).
fn answer(
    status: StatusCode,
    content_type: &str,
    bytes: impl Into<hyper::body::Bytes>,
    head: bool,
) -> Response<StreamingBody> {
    let bytes = bytes.into();
    let len = bytes.len();
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .header(CONTENT_LENGTH, len)
        .body(if head {
            full_body(hyper::body::Bytes::new())
        } else {
            full_body(bytes)
        })
        .expect("a status and valid headers make a valid response")
}

fn json_answer(value: &Value, head: bool) -> Response<StreamingBody> {
    let mut r = answer(StatusCode::OK, JSON, value.to_string().into_bytes(), head);
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn method_not_allowed(allow: &'static str) -> LanError {
    LanError {
        allow: Some(allow),
        ..LanError::new(StatusCode::METHOD_NOT_ALLOWED, format!("this URL answers {allow} only"))
    }
}

async fn route(lan: &Arc<Lan>, request: Request<Incoming>) -> Result<Response<StreamingBody>, LanError> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let head = method == Method::HEAD;
    if path == "/api/attendance" {
        return match method {
            Method::POST => post_attendance(lan, request).await,
            _ => Err(method_not_allowed("POST")),
        };
    }
    if !matches!(method, Method::GET | Method::HEAD) {
        return Err(method_not_allowed("GET, HEAD"));
    }
    if let Some(asset) = assets::asset(&path) {
        let mut r = answer(StatusCode::OK, asset.content_type, asset.bytes, head);
        r.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
        return Ok(r);
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "status"] => {
            let mut status = api::status(&snapshot(lan));
            status["attendance_pin"] = json!(lan.attendance_pin.is_some());
            Ok(json_answer(&status, head))
        }
        ["api", "lessons"] => Ok(json_answer(&api::lessons(&snapshot(lan)), head)),
        ["api", "schedule"] => {
            let snap = snapshot(lan);
            let recorded = recorded_attendance(lan, &api::showings(&snap)).await;
            Ok(json_answer(&api::schedule(&snap, &recorded), head))
        }
        ["api", ..] => Err(LanError::not_found(format!(
            "no {path}; the API is /api/status, /api/lessons, /api/schedule and POST /api/attendance"
        ))),
        ["hls", lesson, "master.m3u8"] => {
            let m = ready_lesson(lan, lesson)?;
            Ok(playlist(hls::master(&m), head))
        }
        ["hls", lesson, rendition, file] => {
            let m = ready_lesson(lan, lesson)?;
            let r = m.renditions.iter().find(|r| r.name == *rendition).ok_or_else(|| {
                LanError::not_found(format!(
                    "lesson {} has no rendition {rendition:?}; it has {}",
                    m.id,
                    m.renditions
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            if *file == "index.m3u8" {
                return Ok(playlist(hls::media(r), head));
            }
            let index: usize = file
                .strip_suffix(".ts")
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    LanError::not_found(format!(
                        "no {file:?} in a rendition; its files are index.m3u8 and 0.ts, 1.ts, …"
                    ))
                })?;
            let segment = r.segments.get(index).ok_or_else(|| {
                LanError::not_found(format!(
                    "rendition {} of {} has {} segments (0.ts to {}.ts)",
                    r.name,
                    m.id,
                    r.segments.len(),
                    r.segments.len().saturating_sub(1)
                ))
            })?;
            let response = chunks(lan, &request, &segment.chunks, SEGMENT, None)?;
            if !head && response.status().is_success() {
                let fetch = SegmentFetch {
                    client: client_ip(&request),
                    user_agent: request
                        .headers()
                        .get(USER_AGENT)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string(),
                    lesson: m.id.clone(),
                    rendition: r.name.clone(),
                    segment: index,
                    duration_ms: segment.duration_ms,
                };
                let ended = lan.capture.lock().fetched(clock::now(), fetch);
                lan.emit(ended);
            }
            Ok(response)
        }
        ["live", file] if file.ends_with(".m3u8") => {
            let channel = live_channel(lan, file.trim_end_matches(".m3u8"))?;
            let window = lan.state.live.window(&channel);
            let variants = crate::live::held_variants(&lan.state.live, &channel, &window);
            if variants.is_empty() {
                return Err(LanError::not_found(format!(
                    "live channel {channel} has no segment here yet; is the broadcast on? Try again in a few seconds"
                )));
            }
            Ok(playlist(courseway_hls::live_master_playlist(&variants), head))
        }
        ["live", channel, file] => {
            let channel = live_channel(lan, channel)?;
            let rendition = file.strip_suffix(".m3u8").ok_or_else(|| {
                LanError::not_found(format!(
                    "no {file:?} in a live channel; its playlists are /live/{channel}.m3u8 (master) and /live/{channel}/RENDITION.m3u8"
                ))
            })?;
            let window = lan.state.live.rendition(&channel, rendition);
            let entries: Vec<courseway_hls::LiveEntry> = window
                .iter()
                .map(|s| courseway_hls::LiveEntry {
                    sequence: s.body.sequence,
                    discontinuity: s.body.discontinuity,
                    duration_ms: s.body.duration_ms,
                    available: lan.state.live.is_complete(&s.body),
                })
                .collect();
            // The rendition being fetched may still complete its newest segments; one no longer
            // fetched will not, and its playlist runs on as gaps (a player moves to another).
            let fetched = lan
                .state
                .live_following
                .choice(&channel)
                .is_none_or(|c| c.rendition == *rendition);
            let tail = if fetched {
                courseway_hls::LiveTail::LastAvailable
            } else {
                courseway_hls::LiveTail::LastEntry
            };
            let text = courseway_hls::live_media_playlist(&entries, tail, |seq| format!("{rendition}/{seq}.ts"))
                .ok_or_else(|| {
                    let renditions = lan.state.live.renditions(&channel);
                    LanError::not_found(if renditions.is_empty() {
                        format!("live channel {channel} has no segment here yet; is the broadcast on? Try again in a few seconds")
                    } else {
                        format!(
                            "live channel {channel} has no segment of rendition {rendition:?} here; see /live/{channel}.m3u8 for what it holds"
                        )
                    })
                })?;
            Ok(playlist(text, head))
        }
        ["live", channel, rendition, file] => {
            let channel = live_channel(lan, channel)?;
            let sequence: u64 = file
                .strip_suffix(".ts")
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    LanError::not_found(format!("no {file:?} in a live rendition; its segments are SEQUENCE.ts"))
                })?;
            let segment = lan
                .state
                .live
                .rendition(&channel, rendition)
                .into_iter()
                .find(|s| s.body.sequence == sequence && lan.state.live.is_complete(&s.body))
                .ok_or_else(|| {
                    LanError::not_found(format!(
                        "segment {sequence} of {channel}/{rendition} is not held here (lost, not fetched yet, or out of the live window); reload the playlist"
                    ))
                })?;
            chunks(lan, &request, &segment.body.chunks, SEGMENT, None)
        }
        ["files", lesson, n] => {
            let m = ready_lesson(lan, lesson)?;
            let a = n
                .parse::<usize>()
                .ok()
                .filter(|_| n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|i| m.attachments.get(i))
                .ok_or_else(|| {
                    LanError::not_found(format!(
                        "lesson {} has {} attachments (/files/{}/0 to /files/{}/{})",
                        m.id,
                        m.attachments.len(),
                        m.id,
                        m.id,
                        m.attachments.len().saturating_sub(1)
                    ))
                })?;
            let media_type = if valid_media_type(&a.media_type) {
                a.media_type.as_str()
            } else {
                "application/octet-stream"
            };
            chunks(lan, &request, &a.chunks, media_type, Some(&a.name))
        }
        _ => Err(LanError::not_found(format!(
            "no {path} at this station; the page is at /, lessons at /hls/LESSON/master.m3u8"
        ))),
    }
}

/// A live channel this station follows, by the name in a path.
fn live_channel(lan: &Lan, name: &str) -> Result<ChannelId, LanError> {
    lan.state
        .live_channels
        .iter()
        .find(|c| c.as_str() == name)
        .cloned()
        .ok_or_else(|| {
            let followed: Vec<&str> = lan.state.live_channels.iter().map(|c| c.as_str()).collect();
            LanError::not_found(if followed.is_empty() {
                format!("this station follows no live channel ({name:?} asked); add it to [station] live_channels")
            } else {
                format!(
                    "this station does not follow live channel {name:?}; it follows {}",
                    followed.join(", ")
                )
            })
        })
}

fn client_ip(request: &Request<Incoming>) -> IpAddr {
    request
        .extensions()
        .get::<PeerAddr>()
        .map(|p| p.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

fn playlist(text: String, head: bool) -> Response<StreamingBody> {
    let mut r = answer(StatusCode::OK, PLAYLIST, text.into_bytes(), head);
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// A media type safe to send as a header: `type/subtype` of plain characters.
fn valid_media_type(t: &str) -> bool {
    t.split_once('/').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        && t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'/' | b'.' | b'+' | b'-'))
}

/// `filename*=` of RFC 6266: the name percent-encoded as UTF-8 (Chinese names survive).
fn content_disposition(name: &str) -> String {
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// A body made of `chunks`, whole or the asked range, streamed from the store.
fn chunks(
    lan: &Lan,
    request: &Request<Incoming>,
    chunks: &[ChunkRef],
    content_type: &str,
    download_name: Option<&str>,
) -> Result<Response<StreamingBody>, LanError> {
    let len: u64 = chunks.iter().map(|c| u64::from(c.size)).sum();
    let range = parse_range_header(request, len);
    let (status, start, end) = match range {
        ByteRange::Whole => (StatusCode::OK, 0, len),
        ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        ByteRange::Unsatisfiable => {
            let mut r = LanError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("the range asked for is past the end of this {len}-byte body"),
            )
            .response(false, request.method() == Method::HEAD);
            r.headers_mut().insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("digits are a valid header"),
            );
            return Ok(r);
        }
    };
    let head = request.method() == Method::HEAD;
    let body = if head || start == end {
        full_body(hyper::body::Bytes::new())
    } else {
        hls::stream(lan.state.store.clone(), hls::reads(chunks, start, end))
    };
    let mut builder = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .header(CONTENT_LENGTH, end - start)
        .header(ACCEPT_RANGES, "bytes")
        .header(CACHE_CONTROL, "no-cache");
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(CONTENT_RANGE, format!("bytes {start}-{}/{len}", end - 1));
    }
    if let Some(name) = download_name {
        builder = builder.header(CONTENT_DISPOSITION, content_disposition(name));
    }
    Ok(builder.body(body).expect("valid headers make a valid response"))
}

fn parse_range_header(request: &Request<Incoming>, len: u64) -> ByteRange {
    hls::parse_range(request.headers().get(RANGE).and_then(|v| v.to_str().ok()), len)
}

/// The manifest of a lesson this station offers, with what the store holds of it.
fn find_lesson(lan: &Lan, id: &str) -> Result<Arc<LessonManifest>, LanError> {
    let lesson = LessonId::new(id).map_err(|e| LanError::not_found(format!("not a lesson: {e}")))?;
    lan.state
        .manifests
        .lock()
        .iter()
        .find(|m| m.id == lesson)
        .cloned()
        .ok_or_else(|| {
            LanError::not_found(format!(
                "this station has no lesson {lesson}: it is not in the catalog this station follows, or not for this station"
            ))
        })
}

fn held(lan: &Lan, m: &LessonManifest) -> Held {
    let store = &lan.state.store;
    m.chunk_refs().iter().fold(Held::default(), |mut h, c| {
        h.size += u64::from(c.size);
        if store.has(&c.id) {
            h.bytes += u64::from(c.size);
        }
        h
    })
}

/// A lesson whose every chunk is held.
fn ready_lesson(lan: &Lan, id: &str) -> Result<Arc<LessonManifest>, LanError> {
    let m = find_lesson(lan, id)?;
    let h = held(lan, &m);
    if !h.ready() {
        return Err(LanError::not_found(format!(
            "lesson {} is not ready at this station yet: {:.1} of {:.1} MB held ({}%); it plays once every part has arrived and been checked",
            m.id,
            h.bytes as f64 / 1e6,
            h.size as f64 / 1e6,
            h.bytes * 100 / h.size.max(1)
        )));
    }
    Ok(m)
}

fn snapshot(lan: &Lan) -> Snapshot {
    let st = &lan.state;
    let lessons = st.manifests.lock().clone();
    let held = lessons.iter().map(|m| (m.id.clone(), held(lan, m))).collect();
    Snapshot {
        station: st.name.to_string(),
        place: st.place.clone(),
        now: clock::now(),
        utc_offset_secs: st.throttle.policy().utc_offset_secs,
        status: st.status.borrow().clone(),
        store: st.store.stats(),
        downloads_allowed: st.throttle.is_open(),
        playing: lan.capture.lock().len(),
        lessons,
        held,
        plan: st.plan.lock().clone(),
        schedule: st.trust.lock().schedule().map(|s| s.body.clone()),
        now_ms: courseway_node::live::now_ms(),
        live: st
            .live_channels
            .iter()
            .map(|c| (c.clone(), st.live.summary(c)))
            .collect(),
    }
}

fn decode_recorded(bytes: &[u8]) -> Option<Recorded> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    Some(Recorded {
        present: u32::try_from(v["present"].as_u64()?).ok()?,
        names: v["names"]
            .as_array()?
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect(),
        recorded_at: UnixTime(v["recorded_at"].as_u64()?),
    })
}

async fn recorded_attendance(lan: &Lan, showings: &[(LessonId, UnixTime)]) -> BTreeMap<(LessonId, UnixTime), Recorded> {
    let keys: Vec<_> = showings.to_vec();
    store_io(&lan.state.store, move |s| {
        keys.into_iter()
            .filter_map(|(l, t)| {
                let bytes = s.get_meta(&attendance::register_key(&l, t)).ok()??;
                Some(((l, t), decode_recorded(&bytes)?))
            })
            .collect::<BTreeMap<_, _>>()
    })
    .await
}

async fn post_attendance(lan: &Arc<Lan>, request: Request<Incoming>) -> Result<Response<StreamingBody>, LanError> {
    let client = client_ip(&request);
    let bytes = Limited::new(request.into_body(), MAX_FORM_BODY)
        .collect()
        .await
        .map_err(|e| {
            LanError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the form (at most {MAX_FORM_BODY} bytes): {e}"),
            )
        })?
        .to_bytes();
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| LanError {
        field: Some("body"),
        ..LanError::new(StatusCode::BAD_REQUEST, format!("the form is not JSON: {e}"))
    })?;
    let form_error = |e: attendance::FormError| LanError {
        field: Some(e.field),
        ..LanError::new(
            if e.not_found {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            },
            e.message,
        )
    };
    let form = attendance::parse(&body).map_err(form_error)?;
    let now = clock::now();
    if let Some(expected) = &lan.attendance_pin {
        let mut guard = lan.pin_guard.lock();
        if let Err(wait) = guard.check(now) {
            return Err(LanError {
                field: Some("pin"),
                ..LanError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "{} wrong PINs in a row: the form is locked; try again in {wait} s",
                        attendance::PIN_TRIES
                    ),
                )
            });
        }
        if !attendance::pin_matches(expected, form.pin.as_deref()) {
            guard.wrong(now);
            tracing::warn!(%client, given = form.pin.is_some(), "attendance form refused: wrong or missing PIN");
            let message = if form.pin.is_none() {
                "this station asks for the attendance PIN; the station admin has it"
            } else {
                "the attendance PIN is wrong; the station admin has it"
            };
            return Err(LanError {
                field: Some("pin"),
                ..LanError::new(StatusCode::FORBIDDEN, message)
            });
        }
        guard.right();
    }
    let schedule = lan.state.trust.lock().schedule().map(|s| s.body.clone());
    attendance::check_showing(schedule.as_ref(), &lan.state.place, &form, now).map_err(form_error)?;
    // One form per showing: checked and written under the lock.
    let _one_at_a_time = lan.attendance.lock().await;
    let key = attendance::register_key(&form.lesson, form.show_at);
    let value = json!({"present": form.present, "names": form.names, "recorded_at": now.0, "from": client.to_string()});
    let written = store_io(&lan.state.store, move |s| {
        if let Some(old) = s.get_meta(&key)? {
            return Ok(Some(old));
        }
        s.put_meta(&key, value.to_string().as_bytes(), Durability::Synced)?;
        Ok::<_, courseway_store::StoreError>(None)
    })
    .await
    .map_err(|e| {
        LanError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the form could not be saved: {e}"),
        )
    })?;
    if let Some(old) = written {
        let old = decode_recorded(&old);
        return Err(LanError {
            field: Some("show_at"),
            ..LanError::new(
                StatusCode::CONFLICT,
                format!(
                    "attendance for this showing was already entered ({} present); it is counted once",
                    old.map_or_else(|| "?".to_string(), |o| o.present.to_string())
                ),
            )
        });
    }
    let viewing = attendance::viewing(&form, client);
    lan.emit(vec![viewing]);
    let mut r = answer(
        StatusCode::CREATED,
        JSON,
        json!({"lesson": form.lesson.as_str(), "show_at": form.show_at.0, "present": form.present, "names": form.names.len()})
            .to_string()
            .into_bytes(),
        false,
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names_are_encoded() {
        assert_eq!(
            content_disposition("讲义 1.pdf"),
            "attachment; filename=\"___1.pdf\"; filename*=UTF-8''%E8%AE%B2%E4%B9%89%201.pdf"
        );
        assert!(valid_media_type("application/pdf"));
        assert!(valid_media_type("application/vnd.ms-powerpoint"));
        assert!(!valid_media_type("text/html\r\nX: y"));
        assert!(!valid_media_type("pdf"));
    }
}
