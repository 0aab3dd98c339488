//! The admin API's records in a RocksDB of their own (`<admin data>/db`): lessons, their media
//! layout, ingest jobs, uploads and the audit log, one column family each, values in JSON.
//! Every write is synced: admin actions are rare and each one matters (an approval, a
//! publication). The audit log's keys are big-endian sequence numbers, so it reads in order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const LESSONS: &str = "lessons";
const MEDIA: &str = "media";
const JOBS: &str = "jobs";
const UPLOADS: &str = "uploads";
const AUDIT: &str = "audit";
const FAMILIES: [&str; 5] = [LESSONS, MEDIA, JOBS, UPLOADS, AUDIT];

/// Why the admin database failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the admin database at {}: {source}; is another origin running with the same [origin.admin] data directory?", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("admin database {operation} failed: {source}")]
    Io {
        operation: &'static str,
        #[source]
        source: rocksdb::Error,
    },
    #[error("admin database record {key:?} is damaged: {source}")]
    Damaged {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A review comment (a rejection's reason, or a note with an approval).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub by: String,
    pub role: String,
    /// Unix seconds.
    pub at: u64,
    /// The workflow step: "reject", "review", "approve".
    pub action: String,
    /// The state the lesson was in.
    pub state: String,
    pub text: String,
}

/// A lesson's descriptive fields, as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataRecord {
    pub title: String,
    pub department: String,
    /// "required" or "elective".
    pub category: String,
    pub tags: Vec<String>,
    pub language: String,
    #[serde(default)]
    pub description: String,
}

/// A lesson in the workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LessonRecord {
    pub id: String,
    pub state: String,
    pub metadata: MetadataRecord,
    /// The submitter's token name.
    pub submitter: String,
    pub job: String,
    /// Unix seconds.
    pub created: u64,
    pub updated: u64,
    #[serde(default)]
    pub comments: Vec<Comment>,
    /// The catalog version that last published or withdrew it.
    #[serde(default)]
    pub catalog_version: Option<u64>,
    /// Source duration in milliseconds, once transcoded.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Rendition names, once transcoded.
    #[serde(default)]
    pub renditions: Vec<String>,
    /// Why its ingest failed.
    #[serde(default)]
    pub error: Option<String>,
    /// The mirror that offered it (`[[mirror]] review = "local"`); none for a local upload.
    #[serde(default)]
    pub source: Option<String>,
}

/// Where a transcoded lesson's files are (relative to its directory in the spool) and its
/// manifest as transcoded (metadata fields are replaced from the lesson record at publication).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// The canonical encoding of the manifest, hex.
    pub manifest: String,
    /// Segment files of each rendition, in manifest order.
    pub segments: Vec<Vec<String>>,
    /// Attachment files, in manifest order.
    pub attachments: Vec<String>,
    pub poster: Option<String>,
}

/// An ingest job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub lesson: String,
    /// queued, probing, transcoding, building, done, failed, cancelled.
    pub state: String,
    pub percent: f64,
    #[serde(default)]
    pub error: Option<String>,
    pub created: u64,
    pub updated: u64,
    /// The live recording the job's source is (none for an upload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingRecord>,
}

/// What a recording of a live channel holds: which segments, and which were missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingRecord {
    pub channel: String,
    pub rendition: String,
    /// Unix seconds.
    pub started: u64,
    pub stopped: Option<u64>,
    /// Segments written into the recording.
    pub segments: u64,
    pub first_sequence: Option<u64>,
    pub last_sequence: Option<u64>,
    /// Runs of sequence numbers missing between the first and the last, as `[first, last]`
    /// (a segment the origin did not cut, or one gone before the recorder read it).
    pub gaps: Vec<[u64; 2]>,
    /// Sum of the recorded segments' durations.
    pub duration_ms: u64,
    pub bytes: u64,
}

impl RecordingRecord {
    /// Segments missing in the gaps.
    pub fn missing(&self) -> u64 {
        self.gaps.iter().map(|[a, b]| b - a + 1).sum()
    }

    /// Counts a segment written into the recording; returns the gap it closes, if any (a
    /// sequence not after the last one is not written: the caller checks [`Self::wants`]).
    pub fn add(&mut self, sequence: u64, duration_ms: u32, bytes: u64) -> Option<[u64; 2]> {
        let gap = match self.last_sequence {
            Some(last) if sequence > last + 1 => Some([last + 1, sequence - 1]),
            _ => None,
        };
        if let Some(g) = gap {
            self.gaps.push(g);
        }
        self.first_sequence.get_or_insert(sequence);
        self.last_sequence = Some(sequence);
        self.segments += 1;
        self.duration_ms += u64::from(duration_ms);
        self.bytes += bytes;
        gap
    }

    /// Whether a segment with this sequence number goes into the recording (after the last).
    pub fn wants(&self, sequence: u64) -> bool {
        self.last_sequence.is_none_or(|last| sequence > last)
    }
}

/// An upload in the spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub id: String,
    /// "media" or "attachment".
    pub kind: String,
    /// The client's file name (shown, and an attachment's name; never used as a path).
    pub name: String,
    pub size: u64,
    pub owner: String,
    pub created: u64,
    /// The lesson it went into, once used.
    #[serde(default)]
    pub lesson: Option<String>,
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    /// Unix seconds.
    pub at: u64,
    /// Token name, or "-" when the request carried no valid token.
    pub who: String,
    pub role: String,
    /// What was asked: "publish", "upload", "http GET /api/audit" …
    pub action: String,
    /// The lesson, job or upload it was about.
    #[serde(default)]
    pub target: Option<String>,
    /// "ok", or the HTTP status and reason of a refusal or failure.
    pub result: String,
}

/// The admin database.
#[derive(Debug)]
pub struct AdminDb {
    db: DB,
    next_audit: AtomicU64,
}

fn io(operation: &'static str) -> impl FnOnce(rocksdb::Error) -> DbError {
    move |source| DbError::Io { operation, source }
}

impl AdminDb {
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let cfs = FAMILIES.map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, path, cfs).map_err(|source| DbError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let last = {
            let cf = db.cf_handle(AUDIT).expect("created at open");
            let mut it = db.iterator_cf(&cf, IteratorMode::End);
            match it.next() {
                Some(Ok((key, _))) => u64::from_be_bytes(key.as_ref().try_into().unwrap_or([0; 8])),
                Some(Err(source)) => {
                    return Err(DbError::Io {
                        operation: "read",
                        source,
                    })
                }
                None => 0,
            }
        };
        Ok(Self {
            db,
            next_audit: AtomicU64::new(last + 1),
        })
    }

    fn put<T: Serialize>(&self, family: &str, key: &[u8], value: &T) -> Result<(), DbError> {
        let cf = self.db.cf_handle(family).expect("created at open");
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        let bytes = serde_json::to_vec(value).expect("records always serialise");
        self.db.put_cf_opt(&cf, key, bytes, &sync).map_err(io("write"))
    }

    fn get<T: DeserializeOwned>(&self, family: &str, key: &[u8]) -> Result<Option<T>, DbError> {
        let cf = self.db.cf_handle(family).expect("created at open");
        match self.db.get_cf(&cf, key).map_err(io("read"))? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| DbError::Damaged {
                    key: String::from_utf8_lossy(key).into_owned(),
                    source,
                }),
        }
    }

    fn all<T: DeserializeOwned>(&self, family: &str, mode: IteratorMode<'_>, limit: usize) -> Result<Vec<T>, DbError> {
        let cf = self.db.cf_handle(family).expect("created at open");
        let mut out = Vec::new();
        for item in self.db.iterator_cf(&cf, mode) {
            let (key, value) = item.map_err(io("read"))?;
            out.push(serde_json::from_slice(&value).map_err(|source| DbError::Damaged {
                key: String::from_utf8_lossy(&key).into_owned(),
                source,
            })?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn put_lesson(&self, lesson: &LessonRecord) -> Result<(), DbError> {
        self.put(LESSONS, lesson.id.as_bytes(), lesson)
    }

    /// A lesson record and its media in one synced batch.
    pub fn put_lesson_and_media(&self, lesson: &LessonRecord, media: &MediaRecord) -> Result<(), DbError> {
        let mut batch = rocksdb::WriteBatch::default();
        let cf = |name| self.db.cf_handle(name).expect("created at open");
        batch.put_cf(
            &cf(LESSONS),
            lesson.id.as_bytes(),
            serde_json::to_vec(lesson).expect("records always serialise"),
        );
        batch.put_cf(
            &cf(MEDIA),
            lesson.id.as_bytes(),
            serde_json::to_vec(media).expect("records always serialise"),
        );
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db.write_opt(batch, &sync).map_err(io("write"))
    }

    pub fn lesson(&self, id: &str) -> Result<Option<LessonRecord>, DbError> {
        self.get(LESSONS, id.as_bytes())
    }

    pub fn lessons(&self) -> Result<Vec<LessonRecord>, DbError> {
        self.all(LESSONS, IteratorMode::Start, usize::MAX)
    }

    pub fn put_media(&self, lesson: &str, media: &MediaRecord) -> Result<(), DbError> {
        self.put(MEDIA, lesson.as_bytes(), media)
    }

    pub fn media(&self, lesson: &str) -> Result<Option<MediaRecord>, DbError> {
        self.get(MEDIA, lesson.as_bytes())
    }

    pub fn put_job(&self, job: &JobRecord) -> Result<(), DbError> {
        self.put(JOBS, job.id.as_bytes(), job)
    }

    pub fn job(&self, id: &str) -> Result<Option<JobRecord>, DbError> {
        self.get(JOBS, id.as_bytes())
    }

    pub fn put_upload(&self, upload: &UploadRecord) -> Result<(), DbError> {
        self.put(UPLOADS, upload.id.as_bytes(), upload)
    }

    pub fn upload(&self, id: &str) -> Result<Option<UploadRecord>, DbError> {
        self.get(UPLOADS, id.as_bytes())
    }

    pub fn uploads(&self) -> Result<Vec<UploadRecord>, DbError> {
        self.all(UPLOADS, IteratorMode::Start, usize::MAX)
    }

    /// Appends to the audit log (synced) and returns the entry's sequence number.
    pub fn audit(&self, mut record: AuditRecord) -> Result<u64, DbError> {
        let seq = self.next_audit.fetch_add(1, Ordering::SeqCst);
        record.seq = seq;
        self.put(AUDIT, &seq.to_be_bytes(), &record)?;
        Ok(seq)
    }

    /// Audit entries from sequence number `from` on, oldest first, at most `limit`.
    pub fn audit_log(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>, DbError> {
        let start = from.to_be_bytes();
        self.all(AUDIT, IteratorMode::From(&start, Direction::Forward), limit)
    }
}
