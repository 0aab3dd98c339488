//! Recording a live channel into a lesson (回看): from `POST /api/live/{channel}/record` to
//! `POST /api/live/{channel}/stop`, every segment the origin cuts of one rendition (by default
//! the top one: the largest segments in the origin's window) is read back from the origin's
//! store as it is announced and appended to `<spool>/recordings/<id>.ts`. MPEG-TS segments
//! concatenate into one playable stream. Stopping hands the file to an ordinary ingest job
//! (probe, transcode ladder, manifest) and the lesson goes to `submitted` for review.
//!
//! A segment that does not arrive (the origin did not cut it, the recorder fell behind the
//! announcements, or its chunks left the store before it was read) is a gap: logged as it is
//! found and kept in the job's [`RecordingRecord`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use courseway_content::{ChannelId, LiveSegment, Signed};
use courseway_proto::Announcement;
use parking_lot::Mutex;
use tokio::sync::{broadcast, oneshot};

use super::db::RecordingRecord;
use crate::Origin;

/// The directory of recordings in progress, under the spool.
pub const RECORDINGS_DIR: &str = "recordings";

/// Why a recording could not start or yielded nothing.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("live channel {channel} has no segment at this origin; start its feed ([[live]] in the origin's config) and try again")]
    NoFeed { channel: ChannelId },
    #[error("live channel {channel} has no rendition {rendition:?} at this origin; it has {have}")]
    NoRendition {
        channel: ChannelId,
        rendition: String,
        have: String,
    },
    #[error("cannot write the recording {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The rendition to record when none is named: the one whose segments in `window` are largest
/// on average (the highest bit rate), ties by name.
pub fn top_rendition(window: &[Arc<Signed<LiveSegment>>]) -> Option<String> {
    let mut sizes: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for s in window {
        let e = sizes.entry(s.body.rendition.as_str()).or_default();
        e.0 += s.body.chunks.iter().map(|c| u64::from(c.size)).sum::<u64>();
        e.1 += 1;
    }
    sizes
        .into_iter()
        .map(|(name, (bytes, n))| (bytes / n.max(1), name))
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)))
        .map(|(_, name)| name.to_string())
}

/// A recording in progress.
#[derive(Debug)]
pub struct Recording {
    pub file: PathBuf,
    pub progress: Arc<Mutex<RecordingRecord>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), RecordingError>>,
}

impl Recording {
    /// Starts recording `channel` (its `rendition`, else the top one) into a new file under
    /// `dir`, from the next segment the origin announces.
    pub fn start(
        origin: Arc<Origin>,
        channel: ChannelId,
        rendition: Option<String>,
        dir: &Path,
        now: u64,
    ) -> Result<Recording, RecordingError> {
        let window = origin.live_window(&channel);
        if window.is_empty() {
            return Err(RecordingError::NoFeed { channel });
        }
        let rendition = match rendition {
            Some(r) if window.iter().any(|s| s.body.rendition == r) => r,
            Some(r) => {
                let mut have: Vec<&str> = window.iter().map(|s| s.body.rendition.as_str()).collect();
                have.sort_unstable();
                have.dedup();
                return Err(RecordingError::NoRendition {
                    channel,
                    rendition: r,
                    have: have.join(", "),
                });
            }
            None => top_rendition(&window).expect("a window with segments has a rendition"),
        };
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RecordingError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let file = dir.join(format!("{}.ts", super::spool::new_id(&format!("{channel}-"))));
        let out = std::fs::File::create(&file).map_err(io(&file))?;
        let progress = Arc::new(Mutex::new(RecordingRecord {
            channel: channel.to_string(),
            rendition: rendition.clone(),
            started: now,
            ..RecordingRecord::default()
        }));
        let (stop, stopped) = oneshot::channel();
        // Subscribed before this returns: every segment announced from now on is seen.
        let announcements = origin.live_announcements();
        tracing::info!(%channel, %rendition, file = %file.display(), "recording a live channel");
        let task = tokio::spawn(record(
            origin,
            channel,
            rendition,
            announcements,
            stopped,
            out,
            file.clone(),
            progress.clone(),
        ));
        Ok(Recording {
            file,
            progress,
            stop: Some(stop),
            task,
        })
    }

    /// Stops recording and waits for the last segment read to be written; returns what the
    /// recording holds.
    pub async fn stop(mut self, now: u64) -> Result<RecordingRecord, RecordingError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let ended = (&mut self.task).await;
        let mut record = self.progress.lock().clone();
        record.stopped = Some(now);
        match ended {
            Ok(Ok(())) => Ok(record),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(RecordingError::Io {
                path: self.file.clone(),
                source: std::io::Error::other(format!("the recorder stopped: {e}")),
            }),
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[allow(clippy::too_many_arguments)]
async fn record(
    origin: Arc<Origin>,
    channel: ChannelId,
    rendition: String,
    mut announcements: broadcast::Receiver<Announcement>,
    mut stopped: oneshot::Receiver<()>,
    out: std::fs::File,
    path: PathBuf,
    progress: Arc<Mutex<RecordingRecord>>,
) -> Result<(), RecordingError> {
    let out = Arc::new(Mutex::new(out));
    loop {
        let announced = tokio::select! {
            _ = &mut stopped => return Ok(()),
            a = announcements.recv() => a,
        };
        let segment = match announced {
            Ok(Announcement::Live(s)) if s.body.channel == channel && s.body.rendition == rendition => s,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(%channel, skipped = n, "the recorder fell behind the origin's announcements; the missing segments are gaps in the recording");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        };
        let seq = segment.body.sequence;
        if !progress.lock().wants(seq) {
            continue;
        }
        let (origin, out, path) = (origin.clone(), out.clone(), path.clone());
        let chunks = segment.body.chunks.clone();
        let written = tokio::task::spawn_blocking(move || -> Result<Option<u64>, RecordingError> {
            let mut bytes = Vec::new();
            for c in &chunks {
                match origin.chunk(&c.id) {
                    Ok(Some(b)) => bytes.extend_from_slice(&b),
                    // Out of the window and evicted already: a gap, not an error.
                    Ok(None) | Err(_) => return Ok(None),
                }
            }
            let mut f = out.lock();
            f.write_all(&bytes)
                .and_then(|_| f.flush())
                .map_err(|source| RecordingError::Io { path, source })?;
            Ok(Some(bytes.len() as u64))
        })
        .await
        .map_err(|e| RecordingError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })??;
        match written {
            Some(bytes) => {
                if let Some([a, b]) = progress.lock().add(seq, segment.body.duration_ms, bytes) {
                    tracing::warn!(%channel, %rendition, from = a, to = b, "segments missing from the recording (a gap)");
                }
            }
            None => {
                tracing::warn!(%channel, %rendition, sequence = seq, "a live segment left the origin's store before it was recorded; it is a gap")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courseway_content::signing::RootKey;
    use courseway_content::{ChunkId, ChunkRef, OnlineKey, UnixTime};

    fn segment(signer: &OnlineKey, rendition: &str, sequence: u64, size: u32) -> Arc<Signed<LiveSegment>> {
        Arc::new(signer.sign(LiveSegment {
            channel: ChannelId::new("city-live").unwrap(),
            rendition: rendition.into(),
            info: Default::default(),
            sequence,
            discontinuity: 0,
            duration_ms: 2000,
            cut_at_ms: 0,
            chunks: vec![ChunkRef {
                id: ChunkId::of(format!("{rendition}{sequence}").as_bytes()),
                size,
            }],
        }))
    }

    #[test]
    fn the_top_rendition_has_the_largest_segments() {
        let root = RootKey::from_seed([1; 32]);
        let delegation = root.delegate(
            OnlineKey::public_for_seed([2; 32]),
            "test",
            UnixTime(0),
            UnixTime(u64::MAX / 2),
        );
        let signer = OnlineKey::new([2; 32], delegation).unwrap();
        assert_eq!(top_rendition(&[]), None);
        let window = vec![
            segment(&signer, "audio", 1, 16_000),
            segment(&signer, "low", 1, 90_000),
            segment(&signer, "source", 1, 300_000),
            segment(&signer, "source", 2, 100_000),
            segment(&signer, "low", 2, 100_000),
        ];
        assert_eq!(top_rendition(&window).as_deref(), Some("source"));
        // A tie goes to the first name.
        let tie = vec![segment(&signer, "b", 1, 10), segment(&signer, "a", 1, 10)];
        assert_eq!(top_rendition(&tie).as_deref(), Some("a"));
    }

    #[test]
    fn a_recording_keeps_its_gaps() {
        let mut r = RecordingRecord::default();
        assert_eq!(r.add(10, 2000, 5), None);
        assert_eq!(r.add(11, 2000, 5), None);
        assert!(!r.wants(11) && r.wants(12));
        assert_eq!(r.add(14, 2000, 5), Some([12, 13]));
        assert_eq!(r.add(15, 1000, 5), None);
        assert_eq!((r.segments, r.duration_ms, r.bytes, r.missing()), (4, 7000, 20, 2));
        assert_eq!((r.first_sequence, r.last_sequence), (Some(10), Some(15)));
    }
}
