//! Ingest jobs and publication bytes.
//!
//! A job takes a completed media upload (and attachment uploads) to a transcoded lesson:
//! queued (waiting for a free transcoder: `[origin.admin] jobs`) → probing → transcoding (the
//! slowest rendition's position as a percentage) → building (the manifest, attachments cut by
//! FastCDC) → done; or failed / cancelled, with the transcode's output removed. GStreamer runs
//! on tokio's blocking pool. The source upload is removed when the job ends.
//!
//! [`lesson_chunks`] reads a transcoded lesson's files back into the chunk map that
//! `Origin::publish` takes, checking every chunk against the manifest made at ingest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use courseway_content::chunking::{attachment_ranges, refs_for, segment_ranges};
use courseway_content::encoding::{Decode, Encode};
use courseway_content::{ChunkId, LessonId, LessonManifest};
use courseway_media::lesson::media_type_for;
use courseway_media::{AttachmentInput, CancelToken, LadderConfig, LessonMeta, TranscodeError};
use parking_lot::Mutex;

use super::db::{AdminDb, JobRecord, MediaRecord};
use super::workflow::LessonState;

/// A job's progress, shared between its task and the API.
#[derive(Debug)]
pub struct LiveJob {
    pub record: Mutex<JobRecord>,
    pub cancel: CancelToken,
}

/// What a job needs.
#[derive(Debug)]
pub struct JobInput {
    pub source: PathBuf,
    /// (file name, spool path) of each attachment.
    pub attachments: Vec<(String, PathBuf)>,
    pub meta: LessonMeta,
    /// The lesson's directory in the spool (must not exist yet).
    pub dir: PathBuf,
    pub ladder: LadderConfig,
}

/// How a job ended.
#[derive(Debug)]
pub enum JobOutcome {
    Done {
        media: MediaRecord,
        duration_ms: u64,
        renditions: Vec<String>,
    },
    Failed(String),
    Cancelled,
}

fn set(job: &LiveJob, state: &str, percent: f64) {
    let mut r = job.record.lock();
    r.state = state.to_string();
    r.percent = percent;
}

fn relative(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir).unwrap_or(path).to_string_lossy().into_owned()
}

/// Runs the job (blocking: GStreamer and file IO). The caller records the outcome.
pub fn run(job: &LiveJob, input: JobInput) -> JobOutcome {
    set(job, "probing", 0.0);
    let out = input.dir.join("media");
    let progress = |p: courseway_media::Progress| set(job, "transcoding", (p.fraction() * 100.0).clamp(0.0, 99.9));
    let output = match courseway_media::transcode(&input.source, &input.ladder, &out, progress, &job.cancel) {
        Ok(output) => output,
        Err(TranscodeError::Cancelled) => {
            let _ = std::fs::remove_dir_all(&input.dir);
            return JobOutcome::Cancelled;
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&input.dir);
            return JobOutcome::Failed(e.to_string());
        }
    };
    set(job, "building", 99.9);
    match build(&input, &output) {
        Ok(done) => done,
        Err(reason) => {
            let _ = std::fs::remove_dir_all(&input.dir);
            JobOutcome::Failed(reason)
        }
    }
}

fn build(input: &JobInput, output: &courseway_media::TranscodeOutput) -> Result<JobOutcome, String> {
    let attachments_dir = input.dir.join("attachments");
    let mut attachment_files = Vec::new();
    let mut attachments = Vec::new();
    for (i, (name, path)) in input.attachments.iter().enumerate() {
        std::fs::create_dir_all(&attachments_dir)
            .map_err(|e| format!("cannot make {}: {e}", attachments_dir.display()))?;
        let to = attachments_dir.join(format!("{i:02}"));
        std::fs::rename(path, &to).map_err(|e| format!("cannot move attachment {name:?} into the lesson: {e}"))?;
        let bytes = std::fs::read(&to).map_err(|e| format!("cannot read attachment {name:?}: {e}"))?;
        attachments.push(AttachmentInput {
            name: name.clone(),
            media_type: media_type_for(name).to_string(),
            bytes,
        });
        attachment_files.push(relative(&input.dir, &to));
    }
    let manifest = courseway_media::build_manifest(input.meta.clone(), output, &attachments, |_, _| {})
        .map_err(|e| e.to_string())?;
    let media = MediaRecord {
        manifest: to_hex(&manifest.to_bytes()),
        segments: output
            .renditions
            .iter()
            .map(|r| r.segments.iter().map(|s| relative(&input.dir, &s.path)).collect())
            .collect(),
        attachments: attachment_files,
        poster: output.poster.as_ref().map(|p| relative(&input.dir, p)),
    };
    Ok(JobOutcome::Done {
        media,
        duration_ms: manifest.duration_ms,
        renditions: manifest.renditions.iter().map(|r| r.name.clone()).collect(),
    })
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The manifest made at ingest.
pub fn stored_manifest(media: &MediaRecord) -> Result<LessonManifest, String> {
    let bytes = from_hex(&media.manifest).ok_or("the stored manifest is not hex")?;
    LessonManifest::from_bytes(&bytes).map_err(|e| format!("the stored manifest does not decode: {e}"))
}

/// Reads a transcoded lesson's segment and attachment files and cuts them into the chunks the
/// manifest names; a file that no longer matches its manifest is an error.
pub fn lesson_chunks(
    dir: &Path,
    media: &MediaRecord,
    manifest: &LessonManifest,
) -> Result<BTreeMap<ChunkId, Vec<u8>>, String> {
    let mut chunks = BTreeMap::new();
    let mut take =
        |file: &str, bytes: Vec<u8>, ranges: Vec<std::ops::Range<usize>>, want: &[courseway_content::ChunkRef]| {
            let refs = refs_for(&bytes, &ranges);
            if refs != want {
                return Err(format!(
                    "{file} no longer matches the manifest made at ingest; ingest the lesson again"
                ));
            }
            for (r, range) in refs.iter().zip(ranges) {
                chunks.entry(r.id).or_insert_with(|| bytes[range].to_vec());
            }
            Ok(())
        };
    if media.segments.len() != manifest.renditions.len() || media.attachments.len() != manifest.attachments.len() {
        return Err("the lesson's files and its manifest disagree; ingest the lesson again".into());
    }
    for (rendition, files) in manifest.renditions.iter().zip(&media.segments) {
        if files.len() != rendition.segments.len() {
            return Err(format!(
                "rendition {} lost segments; ingest the lesson again",
                rendition.name
            ));
        }
        for (segment, file) in rendition.segments.iter().zip(files) {
            let bytes = std::fs::read(dir.join(file)).map_err(|e| format!("cannot read {file}: {e}"))?;
            let ranges = segment_ranges(&bytes);
            take(file, bytes, ranges, &segment.chunks)?;
        }
    }
    for (attachment, file) in manifest.attachments.iter().zip(&media.attachments) {
        let bytes = std::fs::read(dir.join(file)).map_err(|e| format!("cannot read {file}: {e}"))?;
        let ranges = attachment_ranges(&bytes);
        take(file, bytes, ranges, &attachment.chunks)?;
    }
    Ok(chunks)
}

/// Marks lessons whose job was running when the origin stopped as failed: their output is
/// incomplete. Called once at start.
pub fn fail_interrupted(db: &AdminDb, spool_lessons: &Path, now: u64) -> Result<usize, super::db::DbError> {
    let mut n = 0;
    for mut lesson in db.lessons()? {
        if lesson.state != LessonState::Processing.as_str() {
            continue;
        }
        let reason = "the origin stopped while this lesson was being transcoded; create it again from a new upload";
        lesson.state = LessonState::Failed.as_str().to_string();
        lesson.error = Some(reason.to_string());
        lesson.updated = now;
        if let Some(mut job) = db.job(&lesson.job)? {
            job.state = "failed".into();
            job.error = Some(reason.to_string());
            job.updated = now;
            db.put_job(&job)?;
        }
        db.put_lesson(&lesson)?;
        let _ = std::fs::remove_dir_all(spool_lessons.join(&lesson.id));
        n += 1;
    }
    Ok(n)
}

/// Removes the files of uploads that went into a lesson no longer being transcoded (a job's
/// uploads are removed after its outcome is written; a restart in between leaves them).
/// Returns how many were removed.
pub fn sweep_used_uploads(db: &AdminDb, spool: &super::spool::Spool) -> Result<usize, super::db::DbError> {
    let mut removed = 0;
    for upload in db.uploads()? {
        let Some(lesson) = &upload.lesson else { continue };
        let transcoding = db
            .lesson(lesson)?
            .is_some_and(|l| l.state == LessonState::Processing.as_str());
        let path = spool.upload_path(&upload.id);
        if !transcoding && path.exists() && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// A lesson id made by the origin: `lesson-` and 16 random hex digits.
pub fn new_lesson_id() -> LessonId {
    LessonId::new(super::spool::new_id("lesson-")).expect("letters, digits and '-' make a valid lesson id")
}

/// Shared handle to a live job.
pub type JobHandle = Arc<LiveJob>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_hex_round_trips() {
        let bytes = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(from_hex(&to_hex(&bytes)), Some(bytes));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
