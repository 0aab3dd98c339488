//! The station's report outbox: viewing records kept in the store until the origin has them.
//!
//! - [`Outbox::record`] writes a record to the `meta` column family (`outbox/rec/<seq>`,
//!   synced) before it returns: a record the LAN page was told about survives a crash or a power
//!   cut.
//! - The sender takes the oldest records (at most [`ReportsConfig::batch`]) as one report. The
//!   batch (its id, time and record numbers) is written (synced) as `outbox/inflight` before it
//!   is first sent, and resent unchanged until it is acknowledged, so a resend after a cut
//!   connection, a lost acknowledgement or a restart carries the same id and the same records,
//!   and the origin stores it once.
//! - Only the acknowledgement (which the origin sends after its synced write, and a relay passes
//!   down only once its own parent acknowledged) removes the records and the batch, in one
//!   synced write.
//!
//! The id is derived from the station's name, the batch's time and its records, so it is unique
//! per batch; a batch never changes once written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use courseway_content::encoding::{put_u32, put_u64, Decode, Decoder, Encode};
use courseway_content::{NodeName, UnixTime};
use courseway_node::reports::{report_id, send_report};
use courseway_node::{clock, store_io, Upstream};
use courseway_proto::{Report, ReportId, Viewing, MAX_VIEWINGS};
use courseway_store::{Durability, Store, StoreError};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Longest rendition name and device description a viewing record may carry on the wire.
const MAX_RENDITION: usize = 32;
const MAX_DEVICE: usize = 128;

const RECORD_PREFIX: &[u8] = b"outbox/rec/";
const INFLIGHT_KEY: &[u8] = b"outbox/inflight";

/// How a station sends its reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportsConfig {
    /// Viewing records per report (at most the wire limit of 10 000).
    pub batch: usize,
    /// Wait before sending again after a report could not be delivered.
    pub retry_after: Duration,
    /// How often a heartbeat (health and inventory) is sent even when nothing changed.
    pub heartbeat: Duration,
    /// A change (a lesson ready, a lesson at risk, a new catalog) sends a heartbeat at once, but
    /// not more often than this.
    pub heartbeat_min_gap: Duration,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        Self {
            batch: 500,
            retry_after: Duration::from_secs(10),
            heartbeat: Duration::from_secs(300),
            heartbeat_min_gap: Duration::from_secs(5),
        }
    }
}

/// Counters of the outbox, for the metrics.
#[derive(Debug, Default)]
pub struct OutboxStats {
    /// Records waiting for an acknowledgement.
    pub depth: AtomicU64,
    /// Records written to the outbox since start.
    pub recorded: AtomicU64,
    /// Report sends attempted (first sends and resends).
    pub reports_sent: AtomicU64,
    /// Reports acknowledged (so removed from the outbox).
    pub reports_acknowledged: AtomicU64,
    /// Records acknowledged.
    pub records_acknowledged: AtomicU64,
    /// Sends that failed (parents unreachable or refusing); the batch is sent again.
    pub send_failures: AtomicU64,
}

/// A batch being sent: written before its first send, removed with its records on the ack.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inflight {
    id: ReportId,
    created_at: UnixTime,
    seqs: Vec<u64>,
}

impl Inflight {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.id.encode(&mut out);
        self.created_at.encode(&mut out);
        put_u32(&mut out, self.seqs.len() as u32);
        for s in &self.seqs {
            put_u64(&mut out, *s);
        }
        out
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut d = Decoder::new(bytes);
        let id = ReportId::decode(&mut d).ok()?;
        let created_at = UnixTime::decode(&mut d).ok()?;
        let n = d.u32("records").ok()? as usize;
        if n > MAX_VIEWINGS {
            return None;
        }
        let seqs = (0..n).map(|_| d.u64("record")).collect::<Result<Vec<_>, _>>().ok()?;
        d.finish("outbox batch").ok()?;
        Some(Self { id, created_at, seqs })
    }
}

fn record_key(seq: u64) -> Vec<u8> {
    let mut key = RECORD_PREFIX.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.strip_prefix(RECORD_PREFIX)?.try_into().ok()?))
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Why a record could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("the viewing record could not be written to the station's store: {0}")]
    Store(#[from] StoreError),
}

/// The outbox of one station. Cheap to share (`Arc`); the LAN server's sink calls
/// [`Outbox::record`].
#[derive(Debug)]
pub struct Outbox {
    station: NodeName,
    store: Arc<Store>,
    next_seq: Mutex<u64>,
    batch: usize,
    stats: OutboxStats,
    wake: Notify,
}

impl Outbox {
    /// The outbox kept in `store`, continuing its record numbers after a restart.
    pub fn open(station: NodeName, store: Arc<Store>, batch: usize) -> Result<Self, StoreError> {
        let next_seq = store
            .last_meta_key(RECORD_PREFIX)?
            .as_deref()
            .and_then(seq_of)
            .map_or(0, |s| s + 1);
        // Records never outnumber what fits the store: count them once at start.
        let depth = store.scan_meta(RECORD_PREFIX, usize::MAX)?.len() as u64;
        let stats = OutboxStats::default();
        stats.depth.store(depth, Ordering::Relaxed);
        Ok(Self {
            station,
            store,
            next_seq: Mutex::new(next_seq),
            batch: batch.clamp(1, MAX_VIEWINGS),
            stats,
            wake: Notify::new(),
        })
    }

    /// Keeps a viewing record: returns once it is written (synced). Over-long rendition or device
    /// strings are cut to the wire's limits (a record the origin would refuse would stay in the
    /// outbox for ever). Blocks on the disk: from async code use [`Outbox::record_async`].
    pub fn record(&self, mut viewing: Viewing) -> Result<(), OutboxError> {
        cut(&mut viewing.rendition, MAX_RENDITION);
        cut(&mut viewing.device, MAX_DEVICE);
        let mut value = Vec::new();
        viewing.encode(&mut value);
        {
            // Numbers are given and written in order, so the oldest record has the lowest key.
            let mut next = self.next_seq.lock();
            self.store.put_meta(&record_key(*next), &value, Durability::Synced)?;
            *next += 1;
        }
        self.stats.depth.fetch_add(1, Ordering::Relaxed);
        self.stats.recorded.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        Ok(())
    }

    /// [`Outbox::record`] on the blocking pool.
    pub async fn record_async(self: &Arc<Self>, viewing: Viewing) -> Result<(), OutboxError> {
        let outbox = self.clone();
        match tokio::task::spawn_blocking(move || outbox.record(viewing)).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Records waiting for an acknowledgement.
    pub fn depth(&self) -> u64 {
        self.stats.depth.load(Ordering::Relaxed)
    }

    /// The outbox's counters.
    pub fn stats(&self) -> &OutboxStats {
        &self.stats
    }

    /// The batch to send: the one written before (unchanged), or a new one of the oldest records
    /// (written, synced, before it is returned). None when the outbox is empty.
    fn next_report(&self) -> Result<Option<Report>, StoreError> {
        let inflight = match self.store.get_meta(INFLIGHT_KEY)? {
            Some(bytes) => match Inflight::from_bytes(&bytes) {
                Some(b) => Some(b),
                None => {
                    tracing::error!(station = %self.station, "the outbox's batch record is damaged; making a new batch");
                    None
                }
            },
            None => None,
        };
        let (batch, records) = match inflight {
            Some(batch) => {
                let mut records = Vec::with_capacity(batch.seqs.len());
                for seq in &batch.seqs {
                    if let Some(value) = self.store.get_meta(&record_key(*seq))? {
                        records.push(value);
                    }
                }
                (batch, records)
            }
            None => {
                let found = self.store.scan_meta(RECORD_PREFIX, self.batch)?;
                if found.is_empty() {
                    return Ok(None);
                }
                let created_at = clock::now();
                let seqs: Vec<u64> = found.iter().filter_map(|(k, _)| seq_of(k)).collect();
                let mut parts: Vec<&[u8]> = vec![self.station.as_str().as_bytes()];
                let when = created_at.0.to_be_bytes();
                parts.push(&when);
                let keyed: Vec<[u8; 8]> = seqs.iter().map(|s| s.to_be_bytes()).collect();
                for ((_, value), seq) in found.iter().zip(&keyed) {
                    parts.push(seq);
                    parts.push(value);
                }
                let batch = Inflight {
                    id: report_id(&parts),
                    created_at,
                    seqs,
                };
                self.store
                    .put_meta(INFLIGHT_KEY, &batch.to_bytes(), Durability::Synced)?;
                (batch, found.into_iter().map(|(_, v)| v).collect())
            }
        };
        let viewings = records
            .iter()
            .filter_map(|bytes| {
                let mut d = Decoder::new(bytes);
                let v = Viewing::decode(&mut d).ok();
                if v.is_none() {
                    tracing::error!(station = %self.station, "a damaged viewing record in the outbox is skipped");
                }
                v
            })
            .collect();
        Ok(Some(Report {
            id: batch.id,
            station: self.station.clone(),
            created_at: batch.created_at,
            viewings,
            health: None,
        }))
    }

    /// Removes an acknowledged batch and its records in one synced write.
    fn acknowledged(&self, id: ReportId) -> Result<u64, StoreError> {
        let Some(bytes) = self.store.get_meta(INFLIGHT_KEY)? else {
            return Ok(0);
        };
        let Some(batch) = Inflight::from_bytes(&bytes).filter(|b| b.id == id) else {
            return Ok(0);
        };
        let keys: Vec<Vec<u8>> = batch.seqs.iter().map(|s| record_key(*s)).collect();
        let mut deletes: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        deletes.push(INFLIGHT_KEY);
        self.store.write_meta(&[], &deletes, Durability::Synced)?;
        let n = batch.seqs.len() as u64;
        self.stats.depth.fetch_sub(n.min(self.depth()), Ordering::Relaxed);
        Ok(n)
    }
}

/// Sends the outbox up until the station stops: a batch at a time, each resent until it is
/// acknowledged; waits for new records when the outbox is empty.
pub(crate) async fn run_sender(outbox: Arc<Outbox>, upstream: &Upstream, retry_after: Duration) {
    loop {
        let next = {
            let outbox = outbox.clone();
            store_io(&outbox.store.clone(), move |_| outbox.next_report()).await
        };
        let report = match next {
            Ok(Some(report)) => report,
            Ok(None) => {
                // Woken by the next record (a permit is kept if one arrived meanwhile).
                outbox.wake.notified().await;
                continue;
            }
            Err(e) => {
                tracing::error!(station = %outbox.station, error = %e, "cannot read the report outbox; retrying");
                tokio::time::sleep(retry_after).await;
                continue;
            }
        };
        let (id, records) = (report.id, report.viewings.len());
        outbox.stats.reports_sent.fetch_add(1, Ordering::Relaxed);
        match send_report(upstream, report).await {
            Ok(()) => {
                let done = outbox.clone();
                match store_io(&outbox.store.clone(), move |_| done.acknowledged(id)).await {
                    Ok(n) => {
                        outbox.stats.reports_acknowledged.fetch_add(1, Ordering::Relaxed);
                        outbox.stats.records_acknowledged.fetch_add(n, Ordering::Relaxed);
                        tracing::debug!(station = %outbox.station, records, "report acknowledged");
                    }
                    Err(e) => {
                        // Sent again later with the same id: the origin acknowledges it without
                        // storing it twice.
                        tracing::error!(station = %outbox.station, error = %e, "could not remove an acknowledged report from the outbox");
                        tokio::time::sleep(retry_after).await;
                    }
                }
            }
            Err(e) => {
                outbox.stats.send_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(station = %outbox.station, records, error = %e, "report not delivered; it stays in the outbox and is sent again");
                tokio::time::sleep(retry_after).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_record_round_trips_and_refuses_damage() {
        let b = Inflight {
            id: ReportId([7; 16]),
            created_at: UnixTime(1_800_000_000),
            seqs: vec![0, 1, 2, u64::MAX],
        };
        let bytes = b.to_bytes();
        assert_eq!(Inflight::from_bytes(&bytes), Some(b));
        assert_eq!(Inflight::from_bytes(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Inflight::from_bytes(&longer), None);
    }

    fn viewing(i: u32) -> Viewing {
        Viewing {
            lesson: "lesson-1".parse().unwrap(),
            rendition: "360p".into(),
            started_at: UnixTime(1_796_083_200 + u64::from(i) * 60),
            seconds_watched: i,
            device: format!("tv 192.168.1.{i}"),
            attendance: None,
        }
    }

    #[test]
    fn a_batch_keeps_its_id_and_records_across_a_restart_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Arc::new(Store::open(courseway_store::StoreConfig::new(dir.path(), 1 << 30)).unwrap());
        let station: NodeName = "village-0001".parse().unwrap();
        let first = {
            let outbox = Outbox::open(station.clone(), open(), 3).unwrap();
            for i in 0..5 {
                outbox.record(viewing(i)).unwrap();
            }
            outbox.next_report().unwrap().unwrap()
        };
        assert_eq!(first.viewings, (0..3).map(viewing).collect::<Vec<_>>());
        let outbox = Outbox::open(station.clone(), open(), 3).unwrap();
        assert_eq!(outbox.depth(), 5);
        outbox.record(viewing(5)).unwrap();
        assert_eq!(outbox.next_report().unwrap().unwrap(), first, "the same batch, same id");
        assert_eq!(
            outbox.acknowledged(ReportId([0; 16])).unwrap(),
            0,
            "another id removes nothing"
        );
        assert_eq!(outbox.acknowledged(first.id).unwrap(), 3);
        assert_eq!(outbox.depth(), 3);
        let second = outbox.next_report().unwrap().unwrap();
        assert_ne!(second.id, first.id);
        assert_eq!(second.viewings, (3..6).map(viewing).collect::<Vec<_>>());
        assert_eq!(outbox.acknowledged(second.id).unwrap(), 3);
        assert_eq!(outbox.next_report().unwrap(), None);
        assert_eq!(outbox.depth(), 0);
    }

    #[test]
    fn record_keys_sort_by_number() {
        assert!(record_key(255) < record_key(256));
        assert_eq!(seq_of(&record_key(1 << 40)), Some(1 << 40));
        assert_eq!(seq_of(b"outbox/inflight"), None);
    }

    #[test]
    fn long_strings_are_cut_on_a_character_boundary() {
        let mut s = "电视".repeat(30);
        cut(&mut s, 32);
        assert!(s.len() <= 32 && s.is_char_boundary(s.len()));
        assert_eq!(s, "电视".repeat(5));
    }
}
