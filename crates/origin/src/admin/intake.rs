//! Lessons offered by a mirror in review mode (`[[mirror]] review = "local"`): they enter the
//! workflow as `submitted`, with the upstream's manifest as their media, and a local reviewer
//! and publisher take them from there (preview plays them from the origin's store).
//!
//! Rules, beyond the workflow's own:
//! - The content and metadata are the upstream's: a mirrored lesson cannot be edited or
//!   submitted by hand (see [`super::workflow::mirrored_allows`]); publishing it republishes the
//!   upstream manifest unchanged.
//! - An offer of the manifest the record already holds changes nothing, so a local rejection
//!   or withdrawal stands until the upstream publishes a new version; a new version goes back to
//!   `submitted` (the version already published here stays in the catalog until the new one is
//!   published or the lesson withdrawn).
//! - A retraction (the upstream withdrew it) closes the record as `withdrawn`, with a comment;
//!   if the upstream publishes it again, it is offered again.

use std::sync::Arc;

use courseway_content::encoding::Encode;
use courseway_content::{LessonId, LessonManifest};

use super::db::{Comment, LessonRecord, MediaRecord, MetadataRecord};
use super::workflow::{self, LessonState};
use super::{ingest, Inner};
use crate::mirror::{Offer, ReviewQueue};

/// The comment action a retraction leaves, so a later offer knows to reopen the lesson.
const RETRACT: &str = "retract";

/// The admin workflow as a mirror's review queue.
#[derive(Debug)]
pub(crate) struct MirrorIntake(pub Arc<Inner>);

/// `mirror:<name>`: the submitter and comment author of a mirror's offers.
fn mirror_principal(mirror: &str) -> String {
    format!("mirror:{mirror}")
}

fn metadata_of(manifest: &LessonManifest, mirror: &str) -> MetadataRecord {
    MetadataRecord {
        title: manifest.title.clone(),
        department: manifest.publisher.clone(),
        category: workflow::category_str(manifest.category).into(),
        tags: manifest.tags.clone(),
        language: manifest.language.clone(),
        description: format!("mirrored from the upstream origin of [[mirror]] {mirror:?}"),
    }
}

impl ReviewQueue for MirrorIntake {
    fn offer(&self, mirror: &str, manifest: &LessonManifest) -> Result<Offer, String> {
        let inner = &self.0;
        let _one_step_at_a_time = inner.workflow.blocking_lock();
        let id = manifest.id.as_str();
        let encoded = ingest::to_hex(&manifest.to_bytes());
        let now = courseway_node::clock::now().0;
        let existing = inner.db.lesson(id).map_err(|e| e.to_string())?;
        let mut record = match existing {
            Some(record) => {
                if record.source.as_deref() != Some(mirror) {
                    return Ok(Offer::Conflict);
                }
                let held = inner.db.media(id).map_err(|e| e.to_string())?;
                let same = held.is_some_and(|m| m.manifest == encoded);
                let retracted = record.state == LessonState::Withdrawn.as_str()
                    && record.comments.last().is_some_and(|c| c.action == RETRACT);
                if same && !retracted {
                    return Ok(Offer::Unchanged);
                }
                let text = if same {
                    "the upstream origin publishes this lesson again; review it again".to_string()
                } else {
                    format!(
                        "the upstream origin published version {} of this lesson; review it again",
                        manifest.version
                    )
                };
                let mut record = record;
                record.comments.push(Comment {
                    by: mirror_principal(mirror),
                    role: "mirror".into(),
                    at: now,
                    action: "offer".into(),
                    state: record.state.clone(),
                    text,
                });
                record.state = LessonState::Submitted.as_str().into();
                record.metadata = metadata_of(manifest, mirror);
                record.updated = now;
                record
            }
            None => LessonRecord {
                id: id.to_string(),
                state: LessonState::Submitted.as_str().into(),
                metadata: metadata_of(manifest, mirror),
                submitter: mirror_principal(mirror),
                job: String::new(),
                created: now,
                updated: now,
                comments: Vec::new(),
                catalog_version: None,
                duration_ms: Some(manifest.duration_ms),
                renditions: manifest.renditions.iter().map(|r| r.name.clone()).collect(),
                error: None,
                source: Some(mirror.to_string()),
            },
        };
        record.duration_ms = Some(manifest.duration_ms);
        record.renditions = manifest.renditions.iter().map(|r| r.name.clone()).collect();
        let media = MediaRecord {
            manifest: encoded,
            segments: Vec::new(),
            attachments: Vec::new(),
            poster: None,
        };
        // One batch: a reviewer never sees the new record with the old media.
        inner
            .db
            .put_lesson_and_media(&record, &media)
            .map_err(|e| e.to_string())?;
        Ok(Offer::Offered)
    }

    fn retract(&self, mirror: &str, lesson: &LessonId) -> Result<(), String> {
        let inner = &self.0;
        let _one_step_at_a_time = inner.workflow.blocking_lock();
        let Some(mut record) = inner.db.lesson(lesson.as_str()).map_err(|e| e.to_string())? else {
            return Ok(());
        };
        if record.source.as_deref() != Some(mirror) {
            return Ok(());
        }
        // Whatever the record says (a step cut before its record was written, a local
        // publication after the mirror's snapshot), what is in the catalog comes out.
        let in_catalog = inner.origin.catalog().is_some_and(|c| c.body.entry(lesson).is_some());
        if in_catalog {
            match inner.origin.withdraw(std::slice::from_ref(lesson)) {
                Ok(_) | Err(crate::OriginError::NotPublished { .. }) => {}
                Err(e) => return Err(format!("withdrawing it: {e}")),
            }
        }
        if record.state == LessonState::Withdrawn.as_str() {
            return Ok(());
        }
        let now = courseway_node::clock::now().0;
        record.comments.push(Comment {
            by: mirror_principal(mirror),
            role: "mirror".into(),
            at: now,
            action: RETRACT.into(),
            state: record.state.clone(),
            text: "the upstream origin withdrew this lesson (or it left the mirror's selection); it is offered again if the upstream publishes it again".into(),
        });
        record.state = LessonState::Withdrawn.as_str().into();
        record.updated = now;
        inner.db.put_lesson(&record).map_err(|e| e.to_string())
    }
}
