//! The admin API's HTTP edge: routes, authentication (401), authorisation (403, from
//! [`super::workflow`]), JSON errors with reasons, and the audit record of every action.
//!
//! Every request that changes something is audited, whatever its result, and so is every
//! refused request (401, 403) and every preview start (the master playlist); successful reads
//! are not, or a playing preview would write one record per segment.

use std::collections::HashMap;
use std::sync::Arc;

use courseway_content::{ChannelId, LessonId, LiveShowing, ScheduleEntry, UnixTime};
use courseway_media::LessonMeta;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::db::{AuditRecord, Comment, JobRecord, LessonRecord, MetadataRecord, UploadRecord};
use super::ingest::{self, JobInput, JobOutcome, LiveJob};
use super::ratelimit::Over;
use super::spool::{self, SpoolError};
use super::workflow::{self, Action, LessonState, Metadata, Principal};
use super::{recording, ActiveRecording, Inner};
use courseway_node::http::{Body, Handler};

use courseway_admin_proto::body::{
    MetadataBody, NewLesson, NewRecording, NewShowing, NewUpload, RevokeBody, StepBody, MAX_JSON_BODY,
};
use courseway_admin_proto::enrol::EnrolRequest;
use courseway_node::http::PeerAddr;
/// The header a `HEAD`/`GET` of an upload carries its received offset in (and a `PUT` may
/// carry its starting offset in, instead of `?offset=`).
pub const UPLOAD_OFFSET: &str = "upload-offset";

/// A refusal or failure, sent as `{"error": reason, "code": …, …}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Value,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Value::Null,
        }
    }
    fn with(mut self, extra: Value) -> Self {
        self.extra = extra;
        self
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message.to_string())
    }
    fn rate_limited(over: Over) -> Self {
        let secs = over.retry_after_secs();
        let what = match over {
            Over::Address(_) => "from this address",
            Over::Token(_) => "with this token",
        };
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests {what}; retry after {secs} s (limits: [origin.admin] requests_per_minute_*)"),
        )
        .with(json!({ "retry_after": secs }))
    }
    fn response(&self) -> Response<Body> {
        let mut body = json!({ "error": self.message, "code": self.code });
        if let (Value::Object(extra), Value::Object(map)) = (&self.extra, &mut body) {
            map.extend(extra.clone());
        }
        let mut response = json_response(self.status, &body);
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            if let Some(secs) = self.extra.get("retry_after").and_then(Value::as_u64) {
                response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
            }
        }
        response
    }
}

impl From<super::db::DbError> for ApiError {
    fn from(e: super::db::DbError) -> Self {
        ApiError::internal(e)
    }
}

impl From<workflow::Denied> for ApiError {
    fn from(e: workflow::Denied) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
    }
}

impl From<workflow::IllegalTransition> for ApiError {
    fn from(e: workflow::IllegalTransition) -> Self {
        ApiError::new(StatusCode::CONFLICT, "illegal_transition", e.to_string())
            .with(json!({ "state": e.state.as_str() }))
    }
}

impl From<SpoolError> for ApiError {
    fn from(e: SpoolError) -> Self {
        let (status, code, extra) = match &e {
            SpoolError::TooLarge { limit, .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large", json!({ "limit": limit }))
            }
            SpoolError::PastEnd { size, .. } => (StatusCode::PAYLOAD_TOO_LARGE, "past_end", json!({ "size": size })),
            SpoolError::WrongOffset { held, .. } => (StatusCode::CONFLICT, "wrong_offset", json!({ "offset": held })),
            SpoolError::Busy => (StatusCode::CONFLICT, "busy", Value::Null),
            SpoolError::NoRoom { needed, available } => (
                StatusCode::INSUFFICIENT_STORAGE,
                "no_room",
                json!({ "needed": needed, "available": available }),
            ),
            SpoolError::Empty => (StatusCode::BAD_REQUEST, "empty", Value::Null),
            SpoolError::Cut { received } => (StatusCode::BAD_REQUEST, "cut", json!({ "offset": received })),
            SpoolError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal", Value::Null),
        };
        ApiError::new(status, code, e.to_string()).with(extra)
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(value).expect("JSON values serialise"),
        )))
        .expect("a status and one header make a valid response")
}

fn ok<T: serde::Serialize>(status: StatusCode, value: &T) -> Result<Response<Body>, ApiError> {
    Ok(json_response(
        status,
        &serde_json::to_value(value).map_err(ApiError::internal)?,
    ))
}

/// What one request did, for the audit log.
#[derive(Debug, Default)]
struct Call {
    who: Option<Principal>,
    action: Option<&'static str>,
    target: Option<String>,
    /// Audit even when it succeeds.
    audit: bool,
}

/// The admin API's request handler.
#[derive(Debug, Clone)]
pub(crate) struct AdminHandler(pub(crate) Arc<Inner>);

impl Handler for AdminHandler {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let mut call = Call {
            audit: !matches!(method, Method::GET | Method::HEAD),
            ..Call::default()
        };
        let result = route(&self.0, &mut call, request).await;
        let (response, outcome) = match result {
            Ok(response) => (response, "ok".to_string()),
            Err(e) => {
                call.audit |=
                    matches!(e.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) || e.status.is_server_error();
                // A flood is refused before it does any work, audit writes included.
                call.audit &= e.status != StatusCode::TOO_MANY_REQUESTS;
                if e.status.is_server_error() {
                    tracing::error!(%method, %path, error = %e.message, "admin request failed");
                }
                (e.response(), format!("{} {}", e.status.as_u16(), e.message))
            }
        };
        if call.audit {
            let record = AuditRecord {
                seq: 0,
                at: courseway_node::clock::now().0,
                who: call.who.as_ref().map_or("-".into(), |p| p.name.clone()),
                role: call.who.as_ref().map_or("-".into(), |p| p.role.as_str().into()),
                action: call
                    .action
                    .map_or_else(|| format!("http {method} {path}"), str::to_string),
                target: call.target,
                result: outcome,
            };
            let db = self.0.db.clone();
            match tokio::task::spawn_blocking(move || db.audit(record)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "audit record not written"),
                Err(e) => tracing::error!(error = %e, "audit record not written"),
            }
        }
        response
    }
}

/// Runs store work on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)
}

pub use courseway_admin_proto::query::{parse_query, parse_target, target_str};

fn query(request: &Request<Incoming>) -> HashMap<String, String> {
    request.uri().query().map(parse_query).unwrap_or_default()
}

fn bearer(request: &Request<Incoming>, query: &HashMap<String, String>) -> Option<String> {
    let header = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    match header.and_then(|h| h.strip_prefix("Bearer ")) {
        Some(t) => Some(t.trim().to_string()),
        None => query.get("token").cloned(),
    }
}

/// Reads a whole body of at most `MAX_JSON_BODY` bytes.
async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    Ok(Limited::new(body, MAX_JSON_BODY)
        .collect()
        .await
        .map_err(|e| {
            ApiError::bad_request(format!(
                "cannot read the request body (at most {MAX_JSON_BODY} bytes): {e}"
            ))
        })?
        .to_bytes())
}

async fn read_json<T: serde::de::DeserializeOwned>(body: Incoming) -> Result<T, ApiError> {
    let bytes = read_body(body).await?;
    courseway_admin_proto::body::parse(&bytes).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn route(inner: &Arc<Inner>, call: &mut Call, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if !matches!(segments.first(), Some(&"api") | Some(&"preview")) {
        return Err(ApiError::not_found(format!(
            "no {path} here; the admin API is under /api and /preview"
        )));
    }
    let now = std::time::Instant::now();
    if let Some(PeerAddr(addr)) = request.extensions().get::<PeerAddr>() {
        inner.limiter.address(addr.ip(), now).map_err(ApiError::rate_limited)?;
    }
    if method == Method::POST && segments[..] == ["api", "enrol"] {
        // The enrolment token in the body is the credential: a new node has no bearer token.
        call.action = Some("enrol");
        return enrol(inner, call, request).await;
    }
    let q = query(&request);
    let token = bearer(&request, &q);
    let who = inner
        .tokens
        .authenticate(token.as_deref())
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()))?;
    call.who = Some(who.clone());
    inner.limiter.token(&who.name, now).map_err(ApiError::rate_limited)?;
    let allow = |action: Action| workflow::authorize(&who, action, None);
    match (&method, &segments[..]) {
        (&Method::GET, ["api", "whoami"]) => ok(
            StatusCode::OK,
            &json!({ "name": who.name, "role": who.role.as_str(), "department": who.department }),
        ),
        (&Method::POST, ["api", "uploads"]) => {
            call.action = Some("upload-create");
            allow(Action::Upload)?;
            create_upload(inner, call, &who, request).await
        }
        (&Method::GET | &Method::HEAD, ["api", "uploads", id]) => {
            allow(Action::Upload)?;
            let (upload, received) = upload_status(inner, &who, id).await?;
            let mut response = ok(StatusCode::OK, &upload_view(&upload, received))?;
            response
                .headers_mut()
                .insert(UPLOAD_OFFSET, HeaderValue::from(received));
            if method == Method::HEAD {
                *response.body_mut() = Full::new(Bytes::new());
            }
            Ok(response)
        }
        (&Method::PUT, ["api", "uploads", id]) => {
            call.action = Some("upload");
            call.target = Some(id.to_string());
            allow(Action::Upload)?;
            put_upload(inner, &who, id, &q, request).await
        }
        (&Method::POST, ["api", "lessons"]) => {
            call.action = Some("create-lesson");
            allow(Action::CreateLesson)?;
            create_lesson(inner, call, &who, request).await
        }
        (&Method::GET, ["api", "lessons"]) => {
            allow(Action::Read)?;
            list_lessons(inner, &q).await
        }
        (&Method::GET, ["api", "lessons", id]) => {
            allow(Action::Read)?;
            ok(StatusCode::OK, &load_lesson(inner, id).await?)
        }
        (&Method::PUT, ["api", "lessons", id, "metadata"]) => {
            call.action = Some("edit-metadata");
            call.target = Some(id.to_string());
            edit_metadata(inner, &who, id, request).await
        }
        (&Method::POST, ["api", "lessons", id, step]) => {
            call.target = Some(id.to_string());
            let action = match *step {
                "submit" => Action::Submit,
                "review" => Action::Review,
                "approve" => Action::Approve,
                "reject" => Action::Reject,
                "publish" => Action::Publish,
                "withdraw" => Action::Withdraw,
                _ => {
                    return Err(ApiError::not_found(format!(
                        "no workflow step {step:?}; use submit, review, approve, reject, publish or withdraw"
                    )))
                }
            };
            call.action = Some(action.as_str());
            // A step runs to its end even if the client goes away (a publication can take
            // minutes): the catalog and the lesson's record must not disagree.
            let (inner, who, id) = (inner.clone(), who.clone(), id.to_string());
            tokio::spawn(async move { workflow_step(&inner, &who, &id, action, request).await })
                .await
                .map_err(|e| ApiError::internal(format!("the workflow step stopped: {e}")))?
        }
        (&Method::GET, ["api", "jobs", id]) => {
            allow(Action::Read)?;
            ok(StatusCode::OK, &load_job(inner, id).await?)
        }
        (&Method::POST, ["api", "jobs", id, "cancel"]) => {
            call.action = Some("cancel-job");
            call.target = Some(id.to_string());
            allow(Action::CancelJob)?;
            let job = inner.jobs.lock().get(*id).cloned();
            match job {
                Some(job) => {
                    // A token bound to a department cancels that department's jobs only.
                    let lesson_id = job.record.lock().lesson.clone();
                    let lesson = load_lesson(inner, &lesson_id).await?;
                    workflow::authorize(
                        &who,
                        Action::CancelJob,
                        Some((&lesson.metadata.department, state_of(&lesson)?)),
                    )?;
                    job.cancel.cancel();
                    ok(StatusCode::ACCEPTED, &*job.record.lock())
                }
                None => Err(ApiError::conflict(format!(
                    "job {id} is not queued or running; nothing to cancel"
                ))),
            }
        }
        (&Method::GET, ["api", "audit"]) => {
            allow(Action::ReadAudit)?;
            let from = q.get("from").and_then(|s| s.parse().ok()).unwrap_or(0);
            let limit = q
                .get("limit")
                .and_then(|s| s.parse().ok())
                .unwrap_or(1000usize)
                .min(10_000);
            let target = q.get("target").cloned();
            let db = inner.db.clone();
            let mut log = blocking(move || db.audit_log(from, usize::MAX)).await??;
            if let Some(t) = target {
                log.retain(|r| r.target.as_deref() == Some(t.as_str()));
            }
            log.truncate(limit);
            ok(StatusCode::OK, &log)
        }
        (&Method::GET, ["api", "fleet"]) => {
            allow(Action::Read)?;
            let offline_after = match q.get("offline_after") {
                Some(v) => v
                    .parse::<u64>()
                    .map(std::time::Duration::from_secs)
                    .map_err(|_| ApiError::bad_request(format!("offline_after={v:?} is not a number of seconds")))?,
                None => crate::FLEET_OFFLINE_AFTER,
            };
            ok(StatusCode::OK, &inner.origin.fleet_status(offline_after))
        }
        (&Method::GET, ["api", "reports", "monthly"]) => {
            allow(Action::Read)?;
            let month = q
                .get("month")
                .ok_or_else(|| ApiError::bad_request("give the month as ?month=YYYY-MM, e.g. ?month=2026-12"))?;
            let month = crate::reports::Month::parse(month).map_err(ApiError::bad_request)?;
            let csv = match q.get("format").map(String::as_str) {
                None | Some("json") => false,
                Some("csv") => true,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "unknown format {other:?}; use format=json or format=csv"
                    )))
                }
            };
            let origin = inner.origin.clone();
            let report = blocking(move || origin.monthly_report(month))
                .await?
                .map_err(ApiError::internal)?;
            if csv {
                return Ok(Response::builder()
                    .status(StatusCode::OK)
                    .header(CONTENT_TYPE, "text/csv; charset=utf-8")
                    .body(Full::new(Bytes::from(report.to_csv())))
                    .expect("a status and one header make a valid response"));
            }
            ok(StatusCode::OK, &report)
        }
        (&Method::GET, ["api", "schedule"]) => {
            allow(Action::Read)?;
            let schedule = inner.origin.schedule();
            let entries: Vec<Value> = schedule
                .as_ref()
                .map(|s| s.body.entries.iter().map(entry_view).collect())
                .unwrap_or_default();
            let live: Vec<Value> = schedule
                .as_ref()
                .map(|s| s.body.live.iter().map(live_showing_view).collect())
                .unwrap_or_default();
            let version = schedule.map_or(0, |s| s.body.version);
            ok(
                StatusCode::OK,
                &json!({ "version": version, "entries": entries, "live": live }),
            )
        }
        (&Method::POST, ["api", "schedule"]) => {
            call.action = Some("schedule");
            allow(Action::Schedule)?;
            add_schedule(inner, call, &who, request).await
        }
        (&Method::POST, ["api", "live", channel, "record"]) => {
            call.action = Some("record-live");
            call.target = Some(format!("live {channel}"));
            allow(Action::CreateLesson)?;
            start_recording(inner, &who, channel, request).await
        }
        (&Method::POST, ["api", "live", channel, "stop"]) => {
            call.action = Some("stop-recording");
            call.target = Some(format!("live {channel}"));
            allow(Action::CreateLesson)?;
            stop_recording(inner, call, &who, channel).await
        }
        (&Method::GET, ["api", "live", "recordings"]) => {
            allow(Action::Read)?;
            let list: Vec<Value> = inner
                .recordings
                .lock()
                .values()
                .map(|r| json!({ "recording": *r.recording.progress.lock(), "title": r.metadata.title, "by": r.by.name }))
                .collect();
            ok(StatusCode::OK, &json!({ "recordings": list }))
        }
        (&Method::GET, ["api", "revocations"]) => {
            allow(Action::Read)?;
            let names: Vec<String> = inner.origin.revoked().iter().map(|n| n.to_string()).collect();
            let version = inner.origin.catalog().map_or(0, |c| c.body.version);
            ok(StatusCode::OK, &json!({ "catalog_version": version, "revoked": names }))
        }
        (&Method::POST, ["api", "revocations"]) => {
            call.action = Some("revoke");
            allow(Action::Revoke)?;
            let body: RevokeBody = read_json(request.into_body()).await?;
            call.target = Some(body.name.clone());
            let name = courseway_content::NodeName::new(body.name.clone())
                .map_err(|e| ApiError::bad_request(format!("node name {:?}: {e}", body.name)))?;
            let _one_step_at_a_time = inner.workflow.lock().await;
            let origin = inner.origin.clone();
            let revoke = vec![name];
            let version = blocking(move || origin.revoke(&revoke)).await?.map_err(|e| match e {
                crate::OriginError::RevokeSelf { .. } | crate::OriginError::TooManyRevoked { .. } => {
                    ApiError::conflict(e.to_string())
                }
                e => ApiError::internal(e),
            })?;
            ok(
                StatusCode::OK,
                &json!({ "revoked": body.name, "catalog_version": version }),
            )
        }
        (&Method::GET, ["preview", lesson, rest @ ..]) => {
            call.target = Some(lesson.to_string());
            preview(
                inner,
                call,
                &who,
                lesson,
                rest,
                token.filter(|_| q.contains_key("token")),
            )
            .await
        }
        _ => Err(ApiError::not_found(format!("no {method} {path} in the admin API"))),
    }
}

fn upload_view(upload: &UploadRecord, received: u64) -> Value {
    json!({
        "id": upload.id, "kind": upload.kind, "name": upload.name, "size": upload.size,
        "offset": received, "complete": received == upload.size, "lesson": upload.lesson,
    })
}

/// A client's file name, checked: it is only shown (and names an attachment), never a path,
/// but a name with a path in it is a client's mistake worth refusing.
fn check_file_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > 255
        || name.contains(['/', '\\'])
        || name == "."
        || name == ".."
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(format!(
            "file name {name:?} is not a plain file name: give the name only (no directories, at most 255 bytes)"
        )));
    }
    Ok(())
}

async fn create_upload(
    inner: &Arc<Inner>,
    call: &mut Call,
    who: &Principal,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let new: NewUpload = read_json(request.into_body()).await?;
    let kind = new.kind.unwrap_or_else(|| "media".into());
    let limit = match kind.as_str() {
        "media" => inner.config.max_upload,
        "attachment" => inner.config.max_attachment.min(inner.config.max_upload),
        _ => {
            return Err(ApiError::bad_request(format!(
                "upload kind {kind:?} is unknown; use \"media\" or \"attachment\""
            )))
        }
    };
    check_file_name(&new.name)?;
    spool::check_size(new.size, limit)?;
    spool::check_room(new.size, inner.spool.available()?)?;
    let id = spool::new_id("u-");
    call.target = Some(id.clone());
    let record = UploadRecord {
        id: id.clone(),
        kind,
        name: new.name,
        size: new.size,
        owner: who.name.clone(),
        created: courseway_node::clock::now().0,
        lesson: None,
    };
    let (db, spool, r) = (inner.db.clone(), inner.spool.clone(), record.clone());
    blocking(move || -> Result<(), ApiError> {
        spool.create(&r.id)?;
        db.put_upload(&r)?;
        Ok(())
    })
    .await??;
    ok(StatusCode::CREATED, &upload_view(&record, 0))
}

/// An upload of `who`'s (an upload is its owner's alone: nobody else appends to it or makes a
/// lesson of it) and the bytes held.
async fn upload_status(inner: &Arc<Inner>, who: &Principal, id: &str) -> Result<(UploadRecord, u64), ApiError> {
    if !spool::valid_id("u-", id) {
        return Err(ApiError::not_found(format!(
            "no upload {id:?}; upload ids come from POST /api/uploads"
        )));
    }
    let (db, spool, key, owner) = (inner.db.clone(), inner.spool.clone(), id.to_string(), who.name.clone());
    blocking(move || -> Result<(UploadRecord, u64), ApiError> {
        let upload = db
            .upload(&key)?
            .ok_or_else(|| ApiError::not_found(format!("no upload {key}")))?;
        if upload.owner != owner {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_owner",
                format!("upload {key} was made with another token; use an upload of your own"),
            ));
        }
        let received = if upload.lesson.is_some() {
            upload.size
        } else {
            spool.received(&key)?
        };
        Ok((upload, received))
    })
    .await?
}

async fn put_upload(
    inner: &Arc<Inner>,
    who: &Principal,
    id: &str,
    q: &HashMap<String, String>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (upload, _) = upload_status(inner, who, id).await?;
    if let Some(lesson) = &upload.lesson {
        return Err(ApiError::conflict(format!(
            "upload {id} is complete and went into lesson {lesson}"
        )));
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let offset = q
        .get("offset")
        .cloned()
        .or_else(|| header(UPLOAD_OFFSET))
        .ok_or_else(|| {
            ApiError::bad_request("give the offset this body starts at: ?offset=N (HEAD the upload to learn it)")
        })?
        .parse::<u64>()
        .map_err(|_| ApiError::bad_request("the offset is not a number"))?;
    let content_length = header(CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok());
    let received = inner
        .spool
        .append(id, upload.size, offset, content_length, request.into_body())
        .await?;
    ok(StatusCode::OK, &upload_view(&upload, received))
}

/// Validates metadata as sent: every problem listed (HTTP 422).
fn validated(body: MetadataBody) -> Result<Metadata, ApiError> {
    let mut problems = Vec::new();
    let category = workflow::parse_category(&body.category);
    if category.is_none() {
        problems.push(format!(
            "category {:?} is unknown; use required (必修) or elective (选修)",
            body.category
        ));
    }
    let meta = Metadata {
        title: body.title,
        department: body.department,
        category: category.unwrap_or(courseway_content::Category::Elective),
        tags: body.tags,
        language: body.language,
        description: body.description,
    }
    .validated();
    match meta {
        Ok(m) if problems.is_empty() => Ok(m),
        Ok(_) => Err(metadata_error(problems)),
        Err(e) => {
            problems.extend(e.problems);
            Err(metadata_error(problems))
        }
    }
}

fn metadata_error(problems: Vec<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_metadata",
        workflow::MetadataError {
            problems: problems.clone(),
        }
        .to_string(),
    )
    .with(json!({ "problems": problems }))
}

fn metadata_record(m: &Metadata) -> MetadataRecord {
    MetadataRecord {
        title: m.title.clone(),
        department: m.department.clone(),
        category: workflow::category_str(m.category).into(),
        tags: m.tags.clone(),
        language: m.language.clone(),
        description: m.description.clone(),
    }
}

fn lesson_meta(id: &LessonId, m: &MetadataRecord) -> LessonMeta {
    LessonMeta {
        id: id.clone(),
        version: 1,
        title: m.title.clone(),
        publisher: m.department.clone(),
        category: workflow::parse_category(&m.category).unwrap_or(courseway_content::Category::Elective),
        tags: m.tags.clone(),
        language: m.language.clone(),
    }
}

async fn complete_upload(inner: &Arc<Inner>, who: &Principal, id: &str, kind: &str) -> Result<UploadRecord, ApiError> {
    let (upload, received) = upload_status(inner, who, id).await?;
    if upload.kind != kind {
        return Err(ApiError::bad_request(format!(
            "upload {id} is an {} upload, not {kind}",
            upload.kind
        )));
    }
    if let Some(lesson) = &upload.lesson {
        return Err(ApiError::conflict(format!(
            "upload {id} went into lesson {lesson} already"
        )));
    }
    if received != upload.size {
        return Err(ApiError::conflict(format!(
            "upload {id} has {received} of {} bytes; resume it at offset {received} before making a lesson of it",
            upload.size
        ))
        .with(json!({ "offset": received })));
    }
    Ok(upload)
}

async fn create_lesson(
    inner: &Arc<Inner>,
    call: &mut Call,
    who: &Principal,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let new: NewLesson = read_json(request.into_body()).await?;
    let metadata = validated(new.metadata)?;
    if let Some(d) = &who.department {
        if *d != metadata.department {
            return Err(workflow::Denied::Department {
                token: d.clone(),
                lesson: metadata.department.clone(),
            }
            .into());
        }
    }
    let media = complete_upload(inner, who, &new.upload, "media").await?;
    let mut attachments = Vec::new();
    for id in &new.attachments {
        attachments.push(complete_upload(inner, who, id, "attachment").await?);
    }
    if attachments.len() > courseway_content::lesson::MAX_ATTACHMENTS {
        return Err(ApiError::bad_request(format!(
            "at most {} attachments",
            courseway_content::lesson::MAX_ATTACHMENTS
        )));
    }
    // Probe before anything is made, so a file that is not media is refused with its reason.
    let source = inner.spool.upload_path(&media.id);
    let probe_path = source.clone();
    let info = match blocking(move || courseway_media::probe(&probe_path)).await? {
        Ok(info) => info,
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_media",
                format!("{} cannot be ingested: {e}", media.name),
            ))
        }
    };
    if let Err(e) = workflow::check_declared_media(new.media, info.main_video().is_some()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "media_mismatch",
            format!("{} cannot be ingested: {e}", media.name),
        ));
    }
    let lesson_id = ingest::new_lesson_id();
    let job_id = spool::new_id("j-");
    call.target = Some(lesson_id.to_string());
    let now = courseway_node::clock::now().0;
    let record = LessonRecord {
        id: lesson_id.to_string(),
        state: LessonState::Processing.as_str().into(),
        metadata: metadata_record(&metadata),
        submitter: who.name.clone(),
        job: job_id.clone(),
        created: now,
        updated: now,
        comments: Vec::new(),
        catalog_version: None,
        duration_ms: None,
        renditions: Vec::new(),
        error: None,
        source: None,
    };
    let job = JobRecord {
        id: job_id.clone(),
        lesson: record.id.clone(),
        state: "queued".into(),
        percent: 0.0,
        error: None,
        created: now,
        updated: now,
        recording: None,
    };
    let live = Arc::new(LiveJob {
        record: parking_lot::Mutex::new(job.clone()),
        cancel: courseway_media::CancelToken::new(),
    });
    let input = JobInput {
        source,
        attachments: attachments
            .iter()
            .map(|a| (a.name.clone(), inner.spool.upload_path(&a.id)))
            .collect(),
        meta: lesson_meta(&lesson_id, &record.metadata),
        dir: inner.spool.lesson_dir(lesson_id.as_str()),
        ladder: inner.config.ladder.clone(),
    };
    let (db, r, j) = (inner.db.clone(), record.clone(), job.clone());
    let mut used: Vec<UploadRecord> = std::iter::once(media).chain(attachments).collect();
    for u in &mut used {
        u.lesson = Some(record.id.clone());
    }
    // Two requests naming the same upload (a double click, a retried request): one lesson. The
    // uploads are checked again and claimed under the workflow lock.
    let _one_step_at_a_time = inner.workflow.lock().await;
    blocking(move || -> Result<(), ApiError> {
        for u in &used {
            if let Some(lesson) = db.upload(&u.id)?.and_then(|held| held.lesson) {
                return Err(ApiError::conflict(format!(
                    "upload {} already went into lesson {lesson}; upload the file again for another lesson",
                    u.id
                )));
            }
        }
        db.put_job(&j)?;
        db.put_lesson(&r)?;
        for u in &used {
            db.put_upload(u)?;
        }
        Ok(())
    })
    .await??;
    inner.jobs.lock().insert(job_id.clone(), live.clone());
    tokio::spawn(run_job(inner.clone(), live, input, AfterIngest::Draft));
    ok(StatusCode::ACCEPTED, &json!({ "lesson": record.id, "job": job_id }))
}

/// Where a lesson goes when its ingest job is done.
#[derive(Debug, Clone)]
enum AfterIngest {
    /// To `draft`: its submitter checks it and submits it (an upload).
    Draft,
    /// Straight to `submitted`, with this comment by its submitter (a recording, whose
    /// metadata was given when it started).
    Submit { by: String, text: String },
}

fn channel_of(name: &str) -> Result<ChannelId, ApiError> {
    ChannelId::new(name.to_string()).map_err(|e| ApiError::bad_request(format!("live channel {name:?}: {e}")))
}

/// `POST /api/live/{channel}/record`: starts recording the channel into a lesson with the
/// body's metadata.
async fn start_recording(
    inner: &Arc<Inner>,
    who: &Principal,
    channel: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let channel = channel_of(channel)?;
    let new: NewRecording = read_json(request.into_body()).await?;
    let metadata = validated(new.metadata)?;
    if let Some(d) = &who.department {
        if *d != metadata.department {
            return Err(workflow::Denied::Department {
                token: d.clone(),
                lesson: metadata.department.clone(),
            }
            .into());
        }
    }
    let mut recordings = inner.recordings.lock();
    if let Some(r) = recordings.get(&channel) {
        return Err(ApiError::conflict(format!(
            "live channel {channel} is being recorded already (by {}); stop it with POST /api/live/{channel}/stop",
            r.by.name
        )));
    }
    let dir = inner.config.spool.join(recording::RECORDINGS_DIR);
    let now = courseway_node::clock::now().0;
    let started = recording::Recording::start(inner.origin.clone(), channel.clone(), new.rendition, &dir, now)
        .map_err(|e| match e {
            recording::RecordingError::Io { .. } => ApiError::internal(e),
            _ => ApiError::conflict(e.to_string()),
        })?;
    let view = started.progress.lock().clone();
    recordings.insert(
        channel,
        ActiveRecording {
            recording: started,
            metadata,
            by: who.clone(),
        },
    );
    ok(StatusCode::CREATED, &json!({ "recording": view }))
}

/// `POST /api/live/{channel}/stop`: stops the recording and makes a lesson of it through an
/// ingest job; the lesson is `submitted` for review once transcoded.
async fn stop_recording(
    inner: &Arc<Inner>,
    call: &mut Call,
    who: &Principal,
    channel: &str,
) -> Result<Response<Body>, ApiError> {
    let channel = channel_of(channel)?;
    let active = {
        let mut recordings = inner.recordings.lock();
        let Some(active) = recordings.get(&channel) else {
            return Err(ApiError::conflict(format!(
                "live channel {channel} is not being recorded; start with POST /api/live/{channel}/record"
            )));
        };
        if let Some(d) = &who.department {
            if *d != active.metadata.department {
                return Err(workflow::Denied::Department {
                    token: d.clone(),
                    lesson: active.metadata.department.clone(),
                }
                .into());
            }
        }
        recordings.remove(&channel).expect("checked above")
    };
    let source = active.recording.file.clone();
    let now = courseway_node::clock::now().0;
    let rec = match active.recording.stop(now).await {
        Ok(rec) => rec,
        Err(e) => {
            let _ = std::fs::remove_file(&source);
            return Err(ApiError::internal(e));
        }
    };
    if rec.segments == 0 {
        let _ = std::fs::remove_file(&source);
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "nothing_recorded",
            format!(
                "no segment of {channel}/{} was announced while it was recorded; is the feed on? Nothing was made",
                rec.rendition
            ),
        )
        .with(json!({ "recording": rec })));
    }
    let probe_path = source.clone();
    if let Err(e) = blocking(move || courseway_media::probe(&probe_path)).await? {
        let _ = std::fs::remove_file(&source);
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_media",
            format!("the recording of {channel} cannot be ingested: {e}"),
        ));
    }
    if !rec.gaps.is_empty() {
        tracing::warn!(%channel, gaps = ?rec.gaps, missing = rec.missing(), "the recording has gaps");
    }
    let lesson_id = ingest::new_lesson_id();
    let job_id = spool::new_id("j-");
    call.target = Some(lesson_id.to_string());
    let gaps = if rec.gaps.is_empty() {
        "no gap".to_string()
    } else {
        format!(
            "{} segment(s) missing in {} gap(s): {}",
            rec.missing(),
            rec.gaps.len(),
            rec.gaps
                .iter()
                .map(|[a, b]| if a == b { a.to_string() } else { format!("{a}-{b}") })
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let text = format!(
        "recorded from live channel {channel} (rendition {}): segments {}..{}, {} recorded, {:.1} s; {gaps}",
        rec.rendition,
        rec.first_sequence.unwrap_or(0),
        rec.last_sequence.unwrap_or(0),
        rec.segments,
        rec.duration_ms as f64 / 1000.0
    );
    let record = LessonRecord {
        id: lesson_id.to_string(),
        state: LessonState::Processing.as_str().into(),
        metadata: metadata_record(&active.metadata),
        submitter: active.by.name.clone(),
        job: job_id.clone(),
        created: now,
        updated: now,
        comments: Vec::new(),
        catalog_version: None,
        duration_ms: None,
        renditions: Vec::new(),
        error: None,
        source: None,
    };
    let job = JobRecord {
        id: job_id.clone(),
        lesson: record.id.clone(),
        state: "queued".into(),
        percent: 0.0,
        error: None,
        created: now,
        updated: now,
        recording: Some(rec.clone()),
    };
    let live = Arc::new(LiveJob {
        record: parking_lot::Mutex::new(job.clone()),
        cancel: courseway_media::CancelToken::new(),
    });
    let input = JobInput {
        source,
        attachments: Vec::new(),
        meta: lesson_meta(&lesson_id, &record.metadata),
        dir: inner.spool.lesson_dir(lesson_id.as_str()),
        ladder: inner.config.ladder.clone(),
    };
    let (db, r, j) = (inner.db.clone(), record.clone(), job.clone());
    blocking(move || -> Result<(), ApiError> {
        db.put_job(&j)?;
        db.put_lesson(&r)?;
        Ok(())
    })
    .await??;
    inner.jobs.lock().insert(job_id.clone(), live.clone());
    tracing::info!(%channel, lesson = %record.id, job = %job_id, "{text}");
    tokio::spawn(run_job(
        inner.clone(),
        live,
        input,
        AfterIngest::Submit {
            by: active.by.name.clone(),
            text,
        },
    ));
    ok(
        StatusCode::ACCEPTED,
        &json!({ "lesson": record.id, "job": job_id, "recording": rec }),
    )
}

/// Waits for a transcoder, runs the job on the blocking pool and records how it ended.
async fn run_job(inner: Arc<Inner>, live: Arc<LiveJob>, input: JobInput, after: AfterIngest) {
    let permit = inner.transcoders.clone().acquire_owned().await;
    let source = input.source.clone();
    let attachments: Vec<_> = input.attachments.iter().map(|(_, p)| p.clone()).collect();
    let job = live.clone();
    let outcome = if live.cancel.is_cancelled() {
        JobOutcome::Cancelled
    } else {
        tokio::task::spawn_blocking(move || ingest::run(&job, input))
            .await
            .unwrap_or_else(|e| JobOutcome::Failed(format!("the job stopped: {e}")))
    };
    drop(permit);
    // Index into ENDED_JOB_STATES.
    let ended = match &outcome {
        JobOutcome::Done { .. } => 0,
        JobOutcome::Failed(_) => 1,
        JobOutcome::Cancelled => 2,
    };
    let now = courseway_node::clock::now().0;
    let mut job = live.record.lock().clone();
    job.updated = now;
    let lesson_id = job.lesson.clone();
    let db = inner.db.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<(), super::db::DbError> {
        let mut lesson = db
            .lesson(&lesson_id)?
            .expect("a job's lesson is written before the job starts");
        lesson.updated = now;
        match outcome {
            JobOutcome::Done {
                media,
                duration_ms,
                renditions,
            } => {
                db.put_media(&lesson_id, &media)?;
                job.state = "done".into();
                job.percent = 100.0;
                lesson.state = match after {
                    AfterIngest::Draft => LessonState::Draft.as_str().into(),
                    AfterIngest::Submit { by, text } => {
                        lesson.comments.push(Comment {
                            by,
                            role: workflow::Role::Submitter.as_str().into(),
                            at: now,
                            action: "submit".into(),
                            state: LessonState::Draft.as_str().into(),
                            text,
                        });
                        LessonState::Submitted.as_str().into()
                    }
                };
                lesson.duration_ms = Some(duration_ms);
                lesson.renditions = renditions;
            }
            JobOutcome::Failed(reason) => {
                job.state = "failed".into();
                job.error = Some(reason.clone());
                lesson.state = LessonState::Failed.as_str().into();
                lesson.error = Some(reason);
            }
            JobOutcome::Cancelled => {
                job.state = "cancelled".into();
                job.error = Some("cancelled".into());
                lesson.state = LessonState::Failed.as_str().into();
                lesson.error = Some("the ingest job was cancelled".into());
            }
        }
        db.put_job(&job)?;
        db.put_lesson(&lesson)?;
        tracing::info!(lesson = %lesson.id, job = %job.id, state = %job.state, "ingest job ended");
        Ok(())
    })
    .await;
    if !matches!(result, Ok(Ok(()))) {
        tracing::error!(?result, "the end of an ingest job could not be recorded");
    }
    // The uploads go only once the outcome is written: a restart in between finds the job
    // still `processing`, marks it failed, and the upload files are swept with it.
    let _ = std::fs::remove_file(&source);
    for a in attachments {
        let _ = std::fs::remove_file(a);
    }
    inner.jobs_ended[ended].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = live.record.lock().id.clone();
    inner.jobs.lock().remove(&id);
}

async fn load_lesson(inner: &Arc<Inner>, id: &str) -> Result<LessonRecord, ApiError> {
    let (db, key) = (inner.db.clone(), id.to_string());
    blocking(move || db.lesson(&key))
        .await??
        .ok_or_else(|| ApiError::not_found(format!("no lesson {id}; list them with GET /api/lessons")))
}

async fn load_job(inner: &Arc<Inner>, id: &str) -> Result<JobRecord, ApiError> {
    if let Some(live) = inner.jobs.lock().get(id) {
        return Ok(live.record.lock().clone());
    }
    let (db, key) = (inner.db.clone(), id.to_string());
    blocking(move || db.job(&key))
        .await??
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

fn state_of(lesson: &LessonRecord) -> Result<LessonState, ApiError> {
    LessonState::parse(&lesson.state)
        .ok_or_else(|| ApiError::internal(format!("lesson {} has an unknown state {:?}", lesson.id, lesson.state)))
}

async fn list_lessons(inner: &Arc<Inner>, q: &HashMap<String, String>) -> Result<Response<Body>, ApiError> {
    let state = match q.get("state").filter(|s| !s.is_empty()) {
        Some(s) => Some(LessonState::parse(s).ok_or_else(|| ApiError::bad_request(format!("unknown state {s:?}")))?),
        None => None,
    };
    let category = match q.get("category").filter(|s| !s.is_empty()) {
        Some(c) => Some(
            workflow::parse_category(c)
                .ok_or_else(|| ApiError::bad_request(format!("unknown category {c:?}; use required or elective")))?,
        ),
        None => None,
    };
    let text = q.get("q").map(|s| s.to_lowercase()).filter(|s| !s.is_empty());
    let db = inner.db.clone();
    let mut lessons = blocking(move || db.lessons()).await??;
    lessons.retain(|l| {
        state.is_none_or(|s| l.state == s.as_str())
            && category.is_none_or(|c| l.metadata.category == workflow::category_str(c))
            && text.as_ref().is_none_or(|t| {
                let m = &l.metadata;
                [&l.id, &m.title, &m.department, &m.description]
                    .iter()
                    .any(|f| f.to_lowercase().contains(t.as_str()))
                    || m.tags.iter().any(|tag| tag.to_lowercase().contains(t.as_str()))
            })
    });
    lessons.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    ok(StatusCode::OK, &lessons)
}

async fn edit_metadata(
    inner: &Arc<Inner>,
    who: &Principal,
    id: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body: MetadataBody = read_json(request.into_body()).await?;
    let _one_step_at_a_time = inner.workflow.lock().await;
    let mut lesson = load_lesson(inner, id).await?;
    let state = state_of(&lesson)?;
    workflow::authorize(who, Action::EditMetadata, Some((&lesson.metadata.department, state)))?;
    check_mirrored(&lesson, Action::EditMetadata)?;
    workflow::transition(state, Action::EditMetadata)?;
    let metadata = validated(body)?;
    if let Some(d) = &who.department {
        if *d != metadata.department {
            return Err(workflow::Denied::Department {
                token: d.clone(),
                lesson: metadata.department.clone(),
            }
            .into());
        }
    }
    lesson.metadata = metadata_record(&metadata);
    lesson.updated = courseway_node::clock::now().0;
    let (db, l) = (inner.db.clone(), lesson.clone());
    blocking(move || db.put_lesson(&l)).await??;
    ok(StatusCode::OK, &lesson)
}

async fn workflow_step(
    inner: &Arc<Inner>,
    who: &Principal,
    id: &str,
    action: Action,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let has_body = request
        .headers()
        .get(CONTENT_LENGTH)
        .is_none_or(|v| v.as_bytes() != b"0");
    let body: StepBody = if has_body {
        let bytes = Limited::new(request.into_body(), MAX_JSON_BODY)
            .collect()
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?
            .to_bytes();
        if bytes.is_empty() {
            StepBody::default()
        } else {
            courseway_admin_proto::body::parse(&bytes)
                .map_err(|e| ApiError::bad_request(format!("the body must be {{\"comment\": \"…\"}}: {e}")))?
        }
    } else {
        StepBody::default()
    };
    let comment = body.comment.map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
    let _one_step_at_a_time = inner.workflow.lock().await;
    let mut lesson = load_lesson(inner, id).await?;
    let state = state_of(&lesson)?;
    workflow::authorize(who, action, Some((&lesson.metadata.department, state)))?;
    check_mirrored(&lesson, action)?;
    let next = workflow::transition(state, action)?;
    if action == Action::Reject && comment.is_none() {
        return Err(ApiError::bad_request(
            "a rejection needs a comment telling the submitter what to change",
        ));
    }
    if let Some(c) = comment.as_ref().filter(|c| c.chars().count() > 4000) {
        return Err(ApiError::bad_request(format!(
            "the comment is {} characters; at most 4000",
            c.chars().count()
        )));
    }
    let now = courseway_node::clock::now().0;
    match action {
        Action::Publish => {
            let version = publish(inner, &lesson).await?;
            lesson.catalog_version = Some(version);
        }
        Action::Withdraw => {
            let (origin, lid) = (inner.origin.clone(), lesson_id(&lesson)?);
            let current = origin.catalog().map_or(0, |c| c.body.version);
            let version = match blocking(move || origin.withdraw(&[lid])).await? {
                Ok(version) => version,
                // Already out of the catalog (an earlier withdrawal whose record was not
                // written): the record catches up.
                Err(crate::OriginError::NotPublished { .. }) => current,
                Err(e) => return Err(ApiError::internal(e)),
            };
            lesson.catalog_version = Some(version);
        }
        _ => {}
    }
    if let Some(text) = comment {
        lesson.comments.push(Comment {
            by: who.name.clone(),
            role: who.role.as_str().into(),
            at: now,
            action: action.as_str().into(),
            state: state.as_str().into(),
            text,
        });
    }
    lesson.state = next.as_str().into();
    lesson.updated = now;
    let (db, l) = (inner.db.clone(), lesson.clone());
    blocking(move || db.put_lesson(&l)).await??;
    ok(StatusCode::OK, &lesson)
}

/// Refuses what a mirrored lesson does not allow (409, naming the mirror).
fn check_mirrored(lesson: &LessonRecord, action: Action) -> Result<(), ApiError> {
    match &lesson.source {
        Some(mirror) if !workflow::mirrored_allows(action) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "mirrored",
            format!(
                "cannot {} lesson {}: it comes from the upstream origin of [[mirror]] {mirror:?}, whose content and metadata are the upstream's; review, approve or reject it instead",
                action.as_str(),
                lesson.id
            ),
        )
        .with(json!({ "mirror": mirror }))),
        _ => Ok(()),
    }
}

fn lesson_id(lesson: &LessonRecord) -> Result<LessonId, ApiError> {
    LessonId::new(lesson.id.clone()).map_err(ApiError::internal)
}

/// Reads the lesson's files into chunks and publishes it with its current metadata; returns
/// the new catalog version.
async fn publish(inner: &Arc<Inner>, lesson: &LessonRecord) -> Result<u64, ApiError> {
    let (db, origin, dir, record) = (
        inner.db.clone(),
        inner.origin.clone(),
        inner.spool.lesson_dir(&lesson.id),
        lesson.clone(),
    );
    let id = lesson_id(lesson)?;
    blocking(move || -> Result<u64, ApiError> {
        let media = db
            .media(&record.id)?
            .ok_or_else(|| ApiError::internal(format!("lesson {} has no media record", record.id)))?;
        let mut manifest = ingest::stored_manifest(&media).map_err(ApiError::internal)?;
        if record.source.is_some() {
            // A mirrored lesson: its chunks are in the store already (the mirror fetched and
            // pinned them) and its manifest is the upstream's, unchanged.
            return origin.publish_stored(&[manifest]).map_err(ApiError::internal);
        }
        let meta = lesson_meta(&id, &record.metadata);
        manifest.title = meta.title;
        manifest.publisher = meta.publisher;
        manifest.category = meta.category;
        manifest.tags = meta.tags;
        manifest.language = meta.language;
        let chunks = ingest::lesson_chunks(&dir, &media, &manifest).map_err(ApiError::internal)?;
        origin.publish(&[(manifest, &chunks)]).map_err(ApiError::internal)
    })
    .await?
}

fn entry_view(e: &ScheduleEntry) -> Value {
    json!({ "lesson": e.lesson.as_str(), "at": e.show_at.0, "target": target_str(&e.target) })
}

async fn add_schedule(
    inner: &Arc<Inner>,
    call: &mut Call,
    who: &Principal,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let new: NewShowing = read_json(request.into_body()).await?;
    let target = parse_target(&new.target).map_err(ApiError::bad_request)?;
    let lesson = match (new.lesson.clone(), new.live.clone()) {
        (Some(lesson), None) => lesson,
        (None, Some(channel)) => return add_live_showing(inner, call, who, new, channel, target).await,
        _ => return Err(ApiError::bad_request(
            "give either \"lesson\" (a lesson's showing) or \"live\" (a live channel's showing), not both or neither",
        )),
    };
    if new.title.is_some() || new.minutes.is_some() {
        return Err(ApiError::bad_request(
            "\"title\" and \"minutes\" are for live showings; a lesson's showing takes its title and length from the lesson",
        ));
    }
    call.target = Some(lesson.clone());
    let _one_step_at_a_time = inner.workflow.lock().await;
    let lesson = load_lesson(inner, &lesson).await?;
    // A publisher bound to a department schedules that department's lessons only.
    workflow::authorize(
        who,
        Action::Schedule,
        Some((&lesson.metadata.department, state_of(&lesson)?)),
    )?;
    if matches!(state_of(&lesson)?, LessonState::Failed | LessonState::Withdrawn) {
        return Err(ApiError::conflict(format!(
            "lesson {} is {}; it cannot be scheduled",
            lesson.id, lesson.state
        ))
        .with(json!({ "state": lesson.state })));
    }
    let entry = ScheduleEntry {
        lesson: lesson_id(&lesson)?,
        show_at: UnixTime(new.at),
        target,
    };
    let mut entries = inner
        .origin
        .schedule()
        .map(|s| s.body.entries.clone())
        .unwrap_or_default();
    if entries.contains(&entry) {
        return Err(ApiError::conflict("this showing is in the schedule already"));
    }
    entries.push(entry.clone());
    let origin = inner.origin.clone();
    let version = blocking(move || origin.publish_schedule(entries))
        .await?
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "schedule", e.to_string()))?;
    ok(
        StatusCode::CREATED,
        &json!({ "version": version, "entry": entry_view(&entry) }),
    )
}

/// Default length of a live showing, in minutes.
const LIVE_SHOWING_MINUTES: u32 = 60;

fn live_showing_view(l: &LiveShowing) -> Value {
    json!({
        "live": l.channel.as_str(), "at": l.show_at.0, "target": target_str(&l.target),
        "title": l.title, "duration_seconds": l.duration_secs,
    })
}

/// A live showing: no lesson to check; a department-bound publisher may schedule one (a live
/// broadcast belongs to no department's lessons).
async fn add_live_showing(
    inner: &Arc<Inner>,
    call: &mut Call,
    who: &Principal,
    new: NewShowing,
    channel: String,
    target: courseway_content::Target,
) -> Result<Response<Body>, ApiError> {
    call.target = Some(format!("live {channel}"));
    workflow::authorize(who, Action::Schedule, None)?;
    let channel =
        ChannelId::new(channel.clone()).map_err(|e| ApiError::bad_request(format!("live channel {channel:?}: {e}")))?;
    let minutes = new.minutes.unwrap_or(LIVE_SHOWING_MINUTES);
    if minutes == 0 || minutes > 24 * 60 {
        return Err(ApiError::bad_request(format!(
            "minutes={minutes}: a live showing lasts 1 to 1440 minutes"
        )));
    }
    let title = new.title.unwrap_or_else(|| channel.to_string());
    let max = courseway_content::schedule::MAX_LIVE_TITLE;
    if title.trim().is_empty() || title.len() > max || title.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "title {title:?}: give a title of 1 to {max} bytes without control characters"
        )));
    }
    let showing = LiveShowing {
        channel,
        show_at: UnixTime(new.at),
        duration_secs: minutes * 60,
        title,
        target,
    };
    let _one_step_at_a_time = inner.workflow.lock().await;
    let mut live = inner.origin.schedule().map(|s| s.body.live.clone()).unwrap_or_default();
    if live
        .iter()
        .any(|l| l.channel == showing.channel && l.show_at == showing.show_at && l.target == showing.target)
    {
        return Err(ApiError::conflict(
            "this channel already has a live showing at that time for that target",
        ));
    }
    live.push(showing.clone());
    let origin = inner.origin.clone();
    let version = blocking(move || origin.publish_live_showings(live))
        .await?
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "schedule", e.to_string()))?;
    ok(
        StatusCode::CREATED,
        &json!({ "version": version, "live": live_showing_view(&showing) }),
    )
}

/// `POST /api/enrol`: a new node's key request with a one-time token (see [`super::enrol`]).
async fn enrol(inner: &Arc<Inner>, call: &mut Call, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    call.audit = true;
    let Some(enroller) = inner.enroller.clone() else {
        return Err(ApiError::not_found(
            "this origin does not enrol nodes: its [origin.admin] has no enrol_ca_key",
        ));
    };
    let bytes = read_body(request.into_body()).await?;
    let body = EnrolRequest::parse(&bytes).map_err(|e| ApiError::bad_request(e.to_string()))?;
    call.target = Some(format!("enrol token {}", &body.token[..16]));
    let origin = inner.origin.clone();
    let now = courseway_node::clock::now().0;
    let answer = blocking(move || enroller.enrol(&body, now, |name| origin.revoked().contains(name))).await?;
    use super::enrol::Refusal;
    match answer {
        Ok(answer) => {
            call.target = Some(format!("{} {}", answer.role, answer.name));
            ok(StatusCode::CREATED, &answer)
        }
        Err(e) => {
            let (status, code) = match &e {
                Refusal::UnknownToken | Refusal::BadMac => (StatusCode::UNAUTHORIZED, "unauthorized"),
                Refusal::Used { .. } => (StatusCode::CONFLICT, "token_used"),
                Refusal::Expired { .. } => (StatusCode::FORBIDDEN, "token_expired"),
                Refusal::Revoked { .. } => (StatusCode::FORBIDDEN, "revoked"),
                Refusal::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
                Refusal::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            };
            Err(ApiError::new(status, code, e.to_string()))
        }
    }
}

/// `GET /preview/{lesson}/master.m3u8`, `…/{rendition}/index.m3u8`, `…/{rendition}/{n}.ts`,
/// `…/poster.jpg`: the transcoded renditions before publication. A token given as `?token=`
/// is carried into the playlists' URIs, so a player that cannot send headers can follow them.
async fn preview(
    inner: &Arc<Inner>,
    call: &mut Call,
    who: &Principal,
    id: &str,
    rest: &[&str],
    query_token: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let lesson = load_lesson(inner, id).await?;
    let state = state_of(&lesson)?;
    workflow::authorize(who, Action::Preview, Some((&lesson.metadata.department, state)))?;
    let (db, key) = (inner.db.clone(), lesson.id.clone());
    let media = blocking(move || db.media(&key)).await??.ok_or_else(|| {
        ApiError::conflict(format!(
            "lesson {id} is {}; there is nothing to preview until its ingest job is done",
            lesson.state
        ))
        .with(json!({ "state": lesson.state }))
    })?;
    let manifest = ingest::stored_manifest(&media).map_err(ApiError::internal)?;
    let suffix = query_token.map(|t| format!("?token={t}")).unwrap_or_default();
    let playlist = |text: String| {
        Response::builder()
            .header(CONTENT_TYPE, "application/vnd.apple.mpegurl")
            .body(Full::new(Bytes::from(text)))
            .expect("valid response")
    };
    let file = |path: std::path::PathBuf, content_type: &'static str| async move {
        let read = path.clone();
        let bytes = blocking(move || std::fs::read(read))
            .await?
            .map_err(|e| ApiError::internal(format!("cannot read {}: {e}", path.display())))?;
        Ok::<_, ApiError>(
            Response::builder()
                .header(CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from(bytes)))
                .expect("valid response"),
        )
    };
    let dir = inner.spool.lesson_dir(&lesson.id);
    match rest {
        ["master.m3u8"] => {
            call.action = Some("preview");
            call.audit = true;
            Ok(playlist(courseway_hls::master_playlist(&manifest, |r| {
                format!("{}/index.m3u8{suffix}", r.name)
            })))
        }
        ["poster.jpg"] => match &media.poster {
            Some(p) => file(dir.join(p), "image/jpeg").await,
            None => Err(ApiError::not_found("this lesson has no poster (audio only)")),
        },
        [rendition, file_name] => {
            let index = manifest
                .renditions
                .iter()
                .position(|r| r.name == *rendition)
                .ok_or_else(|| ApiError::not_found(format!("lesson {id} has no rendition {rendition:?}")))?;
            if *file_name == "index.m3u8" {
                return Ok(playlist(courseway_hls::media_playlist(
                    &manifest.renditions[index],
                    |i, _| format!("{i}.ts{suffix}"),
                )));
            }
            let n: usize = file_name
                .strip_suffix(".ts")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    ApiError::not_found(format!("no {file_name:?} in a rendition; segments are 0.ts, 1.ts, …"))
                })?;
            let segments = manifest.renditions[index].segments.len();
            if n >= segments {
                return Err(ApiError::not_found(format!(
                    "rendition {rendition} has {segments} segments"
                )));
            }
            if lesson.source.is_some() {
                // A mirrored lesson: the segment's chunks from the origin's store, verified.
                let (origin, chunks) = (
                    inner.origin.clone(),
                    manifest.renditions[index].segments[n].chunks.clone(),
                );
                let bytes = blocking(move || -> Result<Vec<u8>, ApiError> {
                    let mut out = Vec::new();
                    for c in &chunks {
                        let bytes = origin
                            .chunk(&c.id)
                            .map_err(ApiError::internal)?
                            .ok_or_else(|| ApiError::internal(format!("chunk {} is not held", c.id)))?;
                        out.extend_from_slice(&bytes);
                    }
                    Ok(out)
                })
                .await??;
                return Ok(Response::builder()
                    .header(CONTENT_TYPE, "video/mp2t")
                    .body(Full::new(Bytes::from(bytes)))
                    .expect("valid response"));
            }
            let path = media.segments[index].get(n).ok_or_else(|| {
                ApiError::not_found(format!(
                    "rendition {rendition} has {} segments",
                    media.segments[index].len()
                ))
            })?;
            file(dir.join(path), "video/mp2t").await
        }
        _ => Err(ApiError::not_found(
            "preview URLs are master.m3u8, RENDITION/index.m3u8, RENDITION/N.ts and poster.jpg",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_plain() {
        assert!(check_file_name("讲义.pdf").is_ok());
        for bad in ["../../etc/passwd", "a/b.mp4", "..", "", "a\\b", "a\nb"] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }
}
