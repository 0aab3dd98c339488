//! The upload spool: `<spool>/uploads/<id>` grows as a client sends a file in one or more
//! `PUT`s, each starting at the offset the spool holds, so a cut upload resumes where it
//! stopped. Bodies are streamed to disk frame by frame, never held whole in memory. The file's
//! length is the received offset (after each `PUT` the file is synced), so it survives a
//! restart. Upload ids are made here ([`new_id`]) and checked ([`valid_id`]) before they touch
//! a path: a client never names a file.
//!
//! Transcoded lessons live beside the uploads, in `<spool>/lessons/<lesson id>/`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use parking_lot::Mutex;
use rand::RngCore;

/// Default [`Spool`] body idle limit: how long an upload's body may send nothing before the
/// `PUT` ends as cut (the client resumes from what arrived).
pub const DEFAULT_BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Why an upload could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the upload is {size} bytes; this origin takes at most {limit} bytes ([origin.admin] max_upload)")]
    TooLarge { size: u64, limit: u64 },
    #[error("the origin's spool disk has {available} bytes free; this upload needs about {needed} (the file and its renditions); free room in [origin.admin] spool or upload a smaller file")]
    NoRoom { needed: u64, available: u64 },
    #[error("the file is empty (0 bytes); choose the lesson's video or audio file (or the attachment's file) and upload it again")]
    Empty,
    #[error("the body would end at byte {end}, past the declared size {size}; resume at the offset the server holds")]
    PastEnd { end: u64, size: u64 },
    #[error("the server holds {held} bytes of this upload, not {offset}; resume at offset {held}")]
    WrongOffset { offset: u64, held: u64 },
    #[error("another PUT to this upload is in progress; wait for it or resume after it ends")]
    Busy,
    #[error("the body was cut after {received} bytes of the upload; resume at offset {received}")]
    Cut { received: u64 },
    #[error("spool IO failed on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Makes a new upload id: `u-` and 16 random hex digits.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// Whether `id` is one [`new_id`] could have made with `prefix` (and so safe in a path).
pub fn valid_id(prefix: &str, id: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
}

/// Refuses an empty upload, or one larger than `limit`, before any of it is read.
pub fn check_size(size: u64, limit: u64) -> Result<(), SpoolError> {
    if size == 0 {
        Err(SpoolError::Empty)
    } else if size > limit {
        Err(SpoolError::TooLarge { size, limit })
    } else {
        Ok(())
    }
}

/// Refuses an upload of `size` bytes when the spool's disk has less than `available` room for
/// it and what is made from it: the upload itself, then its renditions (at most about its size
/// again: the ladder's rungs never exceed the source's quality).
pub fn check_room(size: u64, available: u64) -> Result<(), SpoolError> {
    let needed = size.saturating_mul(2);
    if needed > available {
        Err(SpoolError::NoRoom { needed, available })
    } else {
        Ok(())
    }
}

/// The spool directory and who is writing to which upload.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    busy: Mutex<HashSet<String>>,
    body_idle: std::time::Duration,
}

/// Removes an upload from the busy set when its `PUT` ends, however it ends.
struct Busy<'a>(&'a Spool, String);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.lock().remove(&self.1);
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Spool {
    /// The spool in `dir`; an upload body silent for `body_idle` is taken as cut.
    pub fn open(dir: PathBuf, body_idle: std::time::Duration) -> Result<Arc<Self>, SpoolError> {
        for sub in ["uploads", "lessons"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        Ok(Arc::new(Self {
            dir,
            busy: Mutex::new(HashSet::new()),
            body_idle,
        }))
    }

    /// The file of upload `id` (an id checked with [`valid_id`]).
    pub fn upload_path(&self, id: &str) -> PathBuf {
        self.dir.join("uploads").join(id)
    }

    /// The directory of lesson `id`'s transcoded files.
    pub fn lesson_dir(&self, id: &str) -> PathBuf {
        self.dir.join("lessons").join(id)
    }

    /// Makes the empty file of a new upload.
    pub fn create(&self, id: &str) -> Result<(), SpoolError> {
        let path = self.upload_path(id);
        std::fs::File::create(&path).map_err(io(&path))?;
        Ok(())
    }

    /// Bytes received of upload `id`.
    pub fn received(&self, id: &str) -> Result<u64, SpoolError> {
        let path = self.upload_path(id);
        Ok(std::fs::metadata(&path).map_err(io(&path))?.len())
    }

    /// Appends `body` to upload `id` (declared `size`), starting at `offset`, which must be
    /// what the spool holds. `content_length`, when the client sent one, is checked against the
    /// declared size before the body is read. Returns the new received offset; a body cut short
    /// keeps what arrived and says where to resume.
    pub async fn append(
        &self,
        id: &str,
        size: u64,
        offset: u64,
        content_length: Option<u64>,
        mut body: Incoming,
    ) -> Result<u64, SpoolError> {
        if !self.busy.lock().insert(id.to_string()) {
            return Err(SpoolError::Busy);
        }
        let _busy = Busy(self, id.to_string());
        let held = self.received(id)?;
        if offset != held {
            return Err(SpoolError::WrongOffset { offset, held });
        }
        if let Some(len) = content_length {
            if offset.saturating_add(len) > size {
                return Err(SpoolError::PastEnd {
                    end: offset.saturating_add(len),
                    size,
                });
            }
        }
        let path = self.upload_path(id);
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut writer = Writer {
            file: Some(file),
            path: path.clone(),
        };
        // Frames are gathered up to WRITE_BATCH bytes, then written on the blocking pool: memory
        // stays bounded whatever the upload's size.
        let mut pending: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
        let mut at = offset;
        let outcome = loop {
            // A client that stops sending but keeps its connection open would hold the upload
            // (and its busy mark) for ever: silence for `body_idle` is a cut like any other.
            let Ok(frame) = tokio::time::timeout(self.body_idle, body.frame()).await else {
                tracing::info!(
                    upload = id,
                    received = at,
                    idle_secs = self.body_idle.as_secs(),
                    "upload body stalled; taken as cut"
                );
                break Err(());
            };
            match frame {
                None => break Ok(()),
                Some(Err(e)) => {
                    tracing::info!(upload = id, received = at, error = %e, "upload body cut");
                    break Err(());
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    let data: Bytes = data;
                    let end = at + data.len() as u64;
                    if end > size {
                        writer.write(std::mem::take(&mut pending), false).await?;
                        return Err(SpoolError::PastEnd { end, size });
                    }
                    pending.extend_from_slice(&data);
                    at = end;
                    if pending.len() >= WRITE_BATCH {
                        writer
                            .write(std::mem::replace(&mut pending, Vec::with_capacity(WRITE_BATCH)), false)
                            .await?;
                    }
                }
            }
        };
        writer.write(pending, true).await?;
        match outcome {
            Ok(()) => Ok(at),
            Err(()) => Err(SpoolError::Cut { received: at }),
        }
    }

    /// Bytes an unprivileged writer may still put on the spool's file system.
    pub fn available(&self) -> Result<u64, SpoolError> {
        let st = rustix::fs::statvfs(&self.dir).map_err(|e| SpoolError::Io {
            path: self.dir.clone(),
            source: e.into(),
        })?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Removes upload `id`'s file.
    pub fn remove_upload(&self, id: &str) {
        let _ = std::fs::remove_file(self.upload_path(id));
    }
}

/// Bytes gathered from the body before they are written.
const WRITE_BATCH: usize = 1 << 20;

/// An upload's file, written on the blocking pool.
struct Writer {
    file: Option<std::fs::File>,
    path: PathBuf,
}

impl Writer {
    async fn write(&mut self, bytes: Vec<u8>, sync: bool) -> Result<(), SpoolError> {
        use std::io::Write;
        let mut file = self.file.take().expect("the file is put back after every write");
        let path = self.path.clone();
        let (file, result) = tokio::task::spawn_blocking(move || {
            let result = file
                .write_all(&bytes)
                .and_then(|()| if sync { file.sync_data() } else { Ok(()) });
            (file, result)
        })
        .await
        .map_err(|e| SpoolError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        self.file = Some(file);
        result.map_err(io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids_are_ours_and_path_safe() {
        let id = new_id("u-");
        assert!(valid_id("u-", &id), "{id}");
        for bad in [
            "u-../../etc/passwd",
            "u-0123456789abcdeg",
            "u-0123456789ABCDEF",
            "j-0123456789abcdef",
            "u-",
            "",
        ] {
            assert!(!valid_id("u-", bad), "{bad}");
        }
    }

    #[test]
    fn an_upload_needs_room_for_itself_and_its_renditions() {
        assert!(check_room(1 << 30, 2 << 30).is_ok());
        assert!(matches!(
            check_room(1 << 30, (2 << 30) - 1),
            Err(SpoolError::NoRoom { needed, .. }) if needed == 2 << 30
        ));
        assert!(matches!(
            check_room(u64::MAX, u64::MAX - 1),
            Err(SpoolError::NoRoom { .. })
        ));
    }

    #[test]
    fn upload_limit_is_checked_on_the_declared_size() {
        assert!(check_size(2 << 30, 4 << 30).is_ok());
        let e = check_size((4 << 30) + 1, 4 << 30).unwrap_err();
        assert!(e.to_string().contains("max_upload"), "{e}");
        assert!(matches!(check_size(0, 4 << 30), Err(SpoolError::Empty)));
    }
}
