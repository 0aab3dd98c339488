//! The RocksDB store: IO at the edge around the pure [`crate::policy`] core.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use courseway_content::{ChunkId, HashMismatch, MAX_CHUNK_SIZE};
use parking_lot::Mutex;
use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DBCompressionType, DBRecoveryMode, Direction, IteratorMode, Options,
    WriteBatch, WriteOptions, DB,
};
use thiserror::Error;

use crate::keys::*;
use crate::policy::{Change, EntryState, PolicyConfig, PolicyError, S3Fifo};

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The RocksDB directory (created if missing).
    pub path: PathBuf,
    /// Bytes of chunk bodies the store may hold. Pinned chunks count towards it.
    pub budget_bytes: u64,
    /// Share of the budget for S3-FIFO's small queue, in percent.
    pub small_queue_percent: u8,
    /// Hash a chunk again when it is first read after the store opened (a damaged chunk is
    /// dropped, never served). Chunks this process wrote (hashed on the way in) or already
    /// read back whole and intact are not hashed again while it runs: their bytes on disk are
    /// covered by RocksDB's own checksums from then on, and re-hashing on every read cost a
    /// relay most of its serving CPU (docs/benchmarks.md, relay serving capacity).
    pub verify_on_read: bool,
    /// fsync the write-ahead log on every chunk write. Off by default: a chunk lost to a power
    /// cut is fetched again, and a process crash loses nothing either way (see docs/storage.md).
    pub sync_chunk_writes: bool,
    /// RocksDB memtable size for chunk bodies: memory used per write buffer, and how much is
    /// written before a flush to blob files.
    pub memtable_bytes: usize,
}

impl StoreConfig {
    /// A store at `path` with a budget of `budget_bytes` and the default policy.
    pub fn new(path: impl Into<PathBuf>, budget_bytes: u64) -> Self {
        Self {
            path: path.into(),
            budget_bytes,
            small_queue_percent: 10,
            verify_on_read: true,
            sync_chunk_writes: false,
            memtable_bytes: 64 << 20,
        }
    }
}

/// Why a pin keeps a chunk. Eviction never touches a pinned chunk, whatever the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    /// The chunk belongs to a lesson scheduled inside the planning horizon.
    Scheduled,
    /// The chunk is a live segment inside the live window.
    LiveWindow,
    /// The chunk was ingested at this origin; it is the only copy.
    OriginOwned,
}

impl PinReason {
    fn to_u8(self) -> u8 {
        match self {
            PinReason::Scheduled => 1,
            PinReason::LiveWindow => 2,
            PinReason::OriginOwned => 3,
        }
    }
}

/// A `meta` key and its value.
pub type MetaEntry = (Vec<u8>, Vec<u8>);

/// Whether a write waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before returning: survives a power cut.
    Synced,
    /// Written to the OS: survives a process crash, not a power cut.
    Buffered,
}

/// What went wrong in the store.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error(
        "cannot open the store at {path}: {source}; check that the directory is writable, that the disk is not \
         full and that no other courseway process is using it"
    )]
    Open { path: PathBuf, source: rocksdb::Error },
    #[error(
        "the disk holding the store is full ({operation} failed: {source}); free space on that disk or lower the \
         store budget below the free space. Writes resume by themselves within seconds once there is room; what \
         the store holds is still served meanwhile"
    )]
    DiskFull {
        operation: &'static str,
        source: rocksdb::Error,
    },
    #[error("store {operation} failed: {source}")]
    Io {
        operation: &'static str,
        source: rocksdb::Error,
    },
    #[error(transparent)]
    HashMismatch(#[from] HashMismatch),
    #[error("chunk of {size} bytes refused: chunks are at most {MAX_CHUNK_SIZE} bytes")]
    TooLarge { size: usize },
    #[error(transparent)]
    Budget(#[from] PolicyError),
    #[error("offset {offset} is beyond the end of chunk {id} ({size} bytes)")]
    OffsetBeyondEnd { id: ChunkId, offset: u32, size: u32 },
    #[error("chunk {id} is damaged on disk ({reason}); it was dropped and must be fetched again")]
    Corrupt { id: ChunkId, reason: &'static str },
    #[error("chunk {id} is pinned and cannot be removed; unpin it first")]
    Pinned { id: ChunkId },
    #[error("pin holder {holder:?} is longer than 255 bytes")]
    HolderTooLong { holder: String },
}

impl StoreError {
    /// Whether the store's disk is full (see [`StoreError::DiskFull`]).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull { .. })
    }
}

fn io(operation: &'static str) -> impl FnOnce(rocksdb::Error) -> StoreError {
    move |source| {
        if is_no_space(&source) {
            StoreError::DiskFull { operation, source }
        } else {
            StoreError::Io { operation, source }
        }
    }
}

/// Whether RocksDB failed for lack of disk space. A write that hits ENOSPC fails with "No space
/// left on device"; RocksDB then stops writes (a hard background error) and every later write
/// fails with the same error until its SstFileManager sees free space again (it checks every
/// 5 s) and resumes the database by itself. Reads keep working throughout.
fn is_no_space(e: &rocksdb::Error) -> bool {
    let text = e.as_ref();
    text.contains("No space left on device") || text.contains("NoSpace")
}

/// What [`Store::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The chunk was written.
    Stored,
    /// The chunk was already present (counted as a hit).
    AlreadyPresent,
}

/// A snapshot of the store's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub budget_bytes: u64,
    pub used_bytes: u64,
    pub chunks: u64,
    pub small_bytes: u64,
    pub main_bytes: u64,
    pub pinned_bytes: u64,
    pub ghost_entries: u64,
    /// Since open.
    pub evicted_bytes: u64,
    /// Since open.
    pub evicted_chunks: u64,
    /// Chunks found damaged on read since open.
    pub corrupt_chunks: u64,
    /// Reads that hashed the chunk's bytes since open (its first read, see
    /// [`StoreConfig::verify_on_read`]).
    pub hashed_reads: u64,
}

/// The result of [`Store::verify_all`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Chunks whose bytes hash to their id.
    pub verified: u64,
    pub verified_bytes: u64,
    /// Entries whose body does not hash to the id or has the wrong size.
    pub corrupt: Vec<ChunkId>,
    /// Entries with no body.
    pub missing_bodies: Vec<ChunkId>,
    /// Bodies with no entry.
    pub orphan_bodies: Vec<ChunkId>,
}

impl Verification {
    /// Whether every entry has a body that verifies, and nothing else is stored.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.missing_bodies.is_empty() && self.orphan_bodies.is_empty()
    }
}

struct State {
    policy: S3Fifo,
    /// The chunk a [`Store::put`] has admitted to `policy` but not yet written (at most one:
    /// writes are serialised). It is not reported as stored until its batch is on disk.
    pending: Option<ChunkId>,
    /// Pins per chunk (a chunk may be pinned by several lessons or reasons).
    pin_counts: HashMap<ChunkId, u32>,
    /// Chunks whose hit counter changed since it was last written.
    dirty_hits: HashSet<ChunkId>,
    /// Chunks whose stored bytes this process has hashed (written by `put`, or read whole and
    /// intact): `get` does not hash them again. Never persisted: a store opens with none.
    verified: HashSet<ChunkId>,
    evicted_bytes: u64,
    evicted_chunks: u64,
    corrupt_chunks: u64,
    hashed_reads: u64,
}

impl State {
    /// The chunk's entry, if it is stored (written, not merely admitted).
    fn stored(&self, id: &ChunkId) -> Option<EntryState> {
        if self.pending.as_ref() == Some(id) {
            return None;
        }
        self.policy.entry(id)
    }
}

/// A chunk store. Cheap to share behind an `Arc`; every method takes `&self`.
///
/// Every method blocks on disk IO except `has`, `size_of`, `is_pinned`, `stats` and
/// `chunk_ids`, which only read memory: async callers run the others on a blocking thread.
///
/// Two locks. `state` guards the in-memory policy and is only ever held for memory work, so
/// the memory-only methods never wait on the disk. `write_order` is held by every method that
/// writes, from the moment it decides what to write until the batch is on disk: batches land in
/// the order their policy changes were made (a batch evicting a chunk can never overtake the
/// batch that stored it), and nothing else changes the policy's structure while a write is in
/// flight, so a failed write can rebuild the policy from disk. While a batch is in flight,
/// memory is at most one batch ahead of disk: the evicted chunks already read as misses, the
/// admitted chunk does not read as stored until its batch landed (`State::pending`).
pub struct Store {
    db: DB,
    config: StoreConfig,
    state: Mutex<State>,
    write_order: Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.config.path)
            .finish_non_exhaustive()
    }
}

fn db_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
    opts.increase_parallelism(2);
    opts.set_max_open_files(512);
    opts.set_keep_log_file_num(3);
    opts
}

fn chunk_cf_options(memtable_bytes: usize) -> Options {
    let mut opts = Options::default();
    // Media does not compress; keep bodies in blob files so compaction only moves small index
    // records, and let blob GC reclaim the space of evicted chunks.
    opts.set_enable_blob_files(true);
    opts.set_min_blob_size(4096);
    opts.set_blob_file_size(256 << 20);
    opts.set_blob_compression_type(DBCompressionType::None);
    opts.set_enable_blob_gc(true);
    opts.set_blob_gc_age_cutoff(0.25);
    opts.set_compression_type(DBCompressionType::None);
    opts.set_write_buffer_size(memtable_bytes);
    opts
}

fn small_cf_options() -> Options {
    let mut opts = Options::default();
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    opts.set_block_based_table_factory(&table);
    opts.set_compression_type(DBCompressionType::Lz4);
    opts
}

impl Store {
    /// Opens (or creates) the store. A store left by a crash opens without manual repair.
    pub fn open(config: StoreConfig) -> Result<Self, StoreError> {
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_CHUNKS, chunk_cf_options(config.memtable_bytes)),
            ColumnFamilyDescriptor::new(CF_ENTRIES, small_cf_options()),
            ColumnFamilyDescriptor::new(CF_GHOSTS, small_cf_options()),
            ColumnFamilyDescriptor::new(CF_PINS, small_cf_options()),
            ColumnFamilyDescriptor::new(CF_META, small_cf_options()),
        ];
        let db = DB::open_cf_descriptors(&db_options(), &config.path, cfs).map_err(|source| StoreError::Open {
            path: config.path.clone(),
            source,
        })?;
        let state = load_state(&db, &config)?;
        tracing::debug!(path = %config.path.display(), chunks = state.policy.entries().count(), "store opened");
        Ok(Self {
            db,
            config,
            state: Mutex::new(state),
            write_order: Mutex::new(()),
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column families are created at open")
    }

    fn chunk_write_options(&self) -> WriteOptions {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.config.sync_chunk_writes);
        wo
    }

    /// Verifies `bytes` against `id` and stores them, evicting as the budget requires.
    pub fn put(&self, id: ChunkId, bytes: &[u8]) -> Result<PutOutcome, StoreError> {
        if bytes.len() > MAX_CHUNK_SIZE {
            return Err(StoreError::TooLarge { size: bytes.len() });
        }
        id.verify(bytes)?;
        let _in_order = self.write_order.lock();
        let mut changes = Vec::new();
        let admitted = {
            let mut state = self.state.lock();
            if state.policy.contains(&id) {
                state.policy.access(&id);
                state.dirty_hits.insert(id);
                return Ok(PutOutcome::AlreadyPresent);
            }
            let admitted = state.policy.insert(id, bytes.len() as u32, &mut changes);
            if admitted.is_ok() {
                state.pending = Some(id);
            }
            for change in &changes {
                if let Change::Evicted { id, size } = change {
                    state.evicted_bytes += u64::from(*size);
                    state.evicted_chunks += 1;
                    state.dirty_hits.remove(id);
                    state.verified.remove(id);
                }
            }
            admitted
        };
        let mut batch = WriteBatch::default();
        self.add_changes(&mut batch, &changes);
        if admitted.is_ok() {
            batch.put_cf(self.cf(CF_CHUNKS), id.as_bytes(), bytes);
        }
        let written = self.db.write_opt(batch, &self.chunk_write_options());
        if let Err(source) = written {
            // Memory ran ahead of disk: rebuild the policy from what is really stored.
            self.reload_policy()?;
            return Err(io("chunk write")(source));
        }
        {
            let mut state = self.state.lock();
            state.pending = None;
            if admitted.is_ok() {
                // Hashed above, and these very bytes are what was written.
                state.verified.insert(id);
            }
        }
        admitted?;
        Ok(PutOutcome::Stored)
    }

    /// Rebuilds the policy from disk after a failed write. Call with `write_order` held.
    fn reload_policy(&self) -> Result<(), StoreError> {
        let loaded = load_state(&self.db, &self.config);
        let mut state = self.state.lock();
        state.pending = None;
        state.verified.clear();
        state.policy = loaded?.policy;
        Ok(())
    }

    fn add_changes(&self, batch: &mut WriteBatch, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Entry { id, state } => batch.put_cf(self.cf(CF_ENTRIES), id.as_bytes(), encode_entry(state)),
                Change::Evicted { id, .. } => {
                    batch.delete_cf(self.cf(CF_CHUNKS), id.as_bytes());
                    batch.delete_cf(self.cf(CF_ENTRIES), id.as_bytes());
                }
                Change::GhostAdded { id, seq, size } => {
                    batch.put_cf(self.cf(CF_GHOSTS), id.as_bytes(), encode_ghost(*seq, *size))
                }
                Change::GhostRemoved { id } => batch.delete_cf(self.cf(CF_GHOSTS), id.as_bytes()),
            }
        }
    }

    /// Whether the chunk is stored.
    pub fn has(&self, id: &ChunkId) -> bool {
        self.state.lock().stored(id).is_some()
    }

    /// The stored chunk's size.
    pub fn size_of(&self, id: &ChunkId) -> Option<u32> {
        self.state.lock().stored(id).map(|e| e.size)
    }

    /// The chunk's bytes from `offset` to its end, or `None` if it is not stored. Counts as a hit.
    pub fn get(&self, id: &ChunkId, offset: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let verified = {
            let mut state = self.state.lock();
            let Some(entry) = state.stored(id) else {
                return Ok(None);
            };
            if offset > entry.size {
                return Err(StoreError::OffsetBeyondEnd {
                    id: *id,
                    offset,
                    size: entry.size,
                });
            }
            state.policy.access(id);
            state.dirty_hits.insert(*id);
            state.verified.contains(id)
        };
        let Some(body) = self
            .db
            .get_pinned_cf(self.cf(CF_CHUNKS), id.as_bytes())
            .map_err(io("chunk read"))?
        else {
            // Evicted by another thread between the index check and the read: a plain miss.
            if !self.has(id) {
                return Ok(None);
            }
            return Err(self.drop_corrupt(id, "its body is missing"));
        };
        if self.config.verify_on_read && !verified {
            if id.verify(&body).is_err() {
                return Err(self.drop_corrupt(id, "its bytes no longer match its hash"));
            }
            let mut state = self.state.lock();
            state.hashed_reads += 1;
            // Unless it was evicted meanwhile (a later `put` would mark it again).
            if state.stored(id).is_some() {
                state.verified.insert(*id);
            }
        }
        let start = (offset as usize).min(body.len());
        Ok(Some(body[start..].to_vec()))
    }

    fn drop_corrupt(&self, id: &ChunkId, reason: &'static str) -> StoreError {
        tracing::error!(chunk = %id, reason, "damaged chunk dropped from the store");
        let _in_order = self.write_order.lock();
        let removed = {
            let mut state = self.state.lock();
            state.corrupt_chunks += 1;
            state.dirty_hits.remove(id);
            state.verified.remove(id);
            state.policy.remove(id).is_some()
        };
        if removed {
            let mut batch = WriteBatch::default();
            batch.delete_cf(self.cf(CF_CHUNKS), id.as_bytes());
            batch.delete_cf(self.cf(CF_ENTRIES), id.as_bytes());
            if let Err(e) = self.db.write(batch) {
                tracing::error!(chunk = %id, error = %e, "could not delete a damaged chunk");
            }
        }
        StoreError::Corrupt { id: *id, reason }
    }

    /// Deletes a chunk that is not pinned. Returns whether it was stored.
    pub fn remove(&self, id: &ChunkId) -> Result<bool, StoreError> {
        let _in_order = self.write_order.lock();
        {
            // Gone from memory first, so a concurrent `get` reads a miss, not a missing body.
            let mut state = self.state.lock();
            if state.policy.is_pinned(id) {
                return Err(StoreError::Pinned { id: *id });
            }
            if state.policy.remove(id).is_none() {
                return Ok(false);
            }
            state.dirty_hits.remove(id);
            state.verified.remove(id);
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_CHUNKS), id.as_bytes());
        batch.delete_cf(self.cf(CF_ENTRIES), id.as_bytes());
        if let Err(source) = self.db.write_opt(batch, &self.chunk_write_options()) {
            self.reload_policy()?;
            return Err(io("chunk delete")(source));
        }
        Ok(true)
    }

    /// Pins chunks for `holder` (e.g. a lesson id) with `reason`. A chunk need not be stored
    /// yet: the pin applies when it arrives. Synced: a pin is a promise.
    pub fn pin(&self, ids: &[ChunkId], reason: PinReason, holder: &str) -> Result<(), StoreError> {
        if holder.len() > 255 {
            return Err(StoreError::HolderTooLong {
                holder: holder.to_owned(),
            });
        }
        let _in_order = self.write_order.lock();
        let mut batch = WriteBatch::default();
        let mut new = Vec::new();
        for id in ids {
            let key = pin_key(reason.to_u8(), holder, id);
            if self
                .db
                .get_pinned_cf(self.cf(CF_PINS), &key)
                .map_err(io("pin read"))?
                .is_none()
                && !new.contains(id)
            {
                batch.put_cf(self.cf(CF_PINS), &key, []);
                new.push(*id);
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(io("pin write"))?;
        let mut state = self.state.lock();
        for id in new {
            *state.pin_counts.entry(id).or_default() += 1;
            state.policy.set_pinned(id, true);
        }
        Ok(())
    }

    /// Drops every pin `holder` holds for `reason`. Returns how many were dropped.
    pub fn unpin_holder(&self, reason: PinReason, holder: &str) -> Result<usize, StoreError> {
        if holder.len() > 255 {
            return Err(StoreError::HolderTooLong {
                holder: holder.to_owned(),
            });
        }
        let prefix = pin_prefix(reason.to_u8(), holder);
        let _in_order = self.write_order.lock();
        let mut batch = WriteBatch::default();
        let mut dropped = Vec::new();
        let iter = self
            .db
            .iterator_cf(self.cf(CF_PINS), IteratorMode::From(&prefix, Direction::Forward));
        for item in iter {
            let (key, _) = item.map_err(io("pin scan"))?;
            if !key.starts_with(&prefix) || key.len() != prefix.len() + 32 {
                break;
            }
            if let Some(id) = pin_key_chunk(&key) {
                batch.delete_cf(self.cf(CF_PINS), &key);
                dropped.push(id);
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(io("unpin write"))?;
        let mut state = self.state.lock();
        for id in &dropped {
            let remaining = state.pin_counts.get_mut(id).map(|c| {
                *c -= 1;
                *c
            });
            if remaining == Some(0) {
                state.pin_counts.remove(id);
                state.policy.set_pinned(*id, false);
            }
        }
        Ok(dropped.len())
    }

    /// The holders that pin at least one chunk for `reason`, sorted.
    pub fn pin_holders(&self, reason: PinReason) -> Result<Vec<String>, StoreError> {
        let mut holders = Vec::new();
        let mut from = vec![reason.to_u8()];
        loop {
            let mut iter = self
                .db
                .iterator_cf(self.cf(CF_PINS), IteratorMode::From(&from, Direction::Forward));
            let Some(item) = iter.next() else { break };
            let (key, _) = item.map_err(io("pin scan"))?;
            if key.first() != Some(&reason.to_u8()) || key.len() < 2 + 32 {
                break;
            }
            let len = usize::from(key[1]);
            let Some(holder) = key.get(2..2 + len) else { break };
            let holder = String::from_utf8_lossy(holder).into_owned();
            // Past every key of this holder: its prefix, then a chunk id of all ones, then one more byte.
            from = pin_prefix(reason.to_u8(), &holder);
            from.extend_from_slice(&[0xff; 33]);
            holders.push(holder);
        }
        holders.sort();
        Ok(holders)
    }

    /// Whether any pin holds the chunk.
    pub fn is_pinned(&self, id: &ChunkId) -> bool {
        self.state.lock().policy.is_pinned(id)
    }

    /// Writes node state (catalog, trust state, outbox, ...) to the `meta` column family.
    pub fn put_meta(&self, key: &[u8], value: &[u8], durability: Durability) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(durability == Durability::Synced);
        self.db
            .put_cf_opt(self.cf(CF_META), key, value, &wo)
            .map_err(io("meta write"))
    }

    /// Reads node state from the `meta` column family.
    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(CF_META), key).map_err(io("meta read"))
    }

    /// Deletes node state from the `meta` column family.
    pub fn delete_meta(&self, key: &[u8], durability: Durability) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(durability == Durability::Synced);
        self.db
            .delete_cf_opt(self.cf(CF_META), key, &wo)
            .map_err(io("meta delete"))
    }

    /// Every `meta` entry whose key starts with `prefix`, in key order, at most `limit` of them
    /// (node state kept as many small records: a station's report outbox, an origin's reports).
    pub fn scan_meta(&self, prefix: &[u8], limit: usize) -> Result<Vec<MetaEntry>, StoreError> {
        let mut out = Vec::new();
        let iter = self
            .db
            .iterator_cf(self.cf(CF_META), IteratorMode::From(prefix, Direction::Forward));
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(io("meta scan"))?;
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.into_vec(), value.into_vec()));
        }
        Ok(out)
    }

    /// The last `meta` key starting with `prefix`, if any.
    pub fn last_meta_key(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        // Just past every key with the prefix: the prefix followed by bytes that sort last.
        let mut end = prefix.to_vec();
        end.extend_from_slice(&[0xff; 64]);
        let mut iter = self
            .db
            .iterator_cf(self.cf(CF_META), IteratorMode::From(&end, Direction::Reverse));
        match iter.next() {
            Some(item) => {
                let (key, _) = item.map_err(io("meta scan"))?;
                Ok(key.starts_with(prefix).then(|| key.into_vec()))
            }
            None => Ok(None),
        }
    }

    /// Puts and deletes `meta` entries in one atomic write: all of them or none survive a crash.
    pub fn write_meta(
        &self,
        puts: &[(&[u8], &[u8])],
        deletes: &[&[u8]],
        durability: Durability,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for key in deletes {
            batch.delete_cf(self.cf(CF_META), key);
        }
        for (key, value) in puts {
            batch.put_cf(self.cf(CF_META), key, value);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(durability == Durability::Synced);
        self.db.write_opt(batch, &wo).map_err(io("meta write"))
    }

    /// Writes the hit counters that changed since the last flush. Run it now and then; a crash
    /// loses only the counters since the last flush (eviction gets a little less precise).
    pub fn flush_policy(&self) -> Result<(), StoreError> {
        let _in_order = self.write_order.lock();
        let mut batch = WriteBatch::default();
        let flushed: Vec<ChunkId> = {
            let mut state = self.state.lock();
            let dirty = std::mem::take(&mut state.dirty_hits);
            for id in &dirty {
                if let Some(e) = state.policy.entry(id) {
                    batch.put_cf(self.cf(CF_ENTRIES), id.as_bytes(), encode_entry(&e));
                }
            }
            dirty.into_iter().collect()
        };
        if flushed.is_empty() {
            return Ok(());
        }
        if let Err(source) = self.db.write(batch) {
            self.state.lock().dirty_hits.extend(flushed);
            return Err(io("policy flush")(source));
        }
        Ok(())
    }

    /// The store's counters.
    pub fn stats(&self) -> StoreStats {
        let state = self.state.lock();
        let (small_bytes, main_bytes) = state.policy.queue_bytes();
        StoreStats {
            budget_bytes: state.policy.budget(),
            used_bytes: state.policy.used(),
            chunks: state.policy.entries().count() as u64,
            small_bytes,
            main_bytes,
            pinned_bytes: state.policy.pinned_bytes(),
            ghost_entries: state.policy.ghost_len() as u64,
            evicted_bytes: state.evicted_bytes,
            evicted_chunks: state.evicted_chunks,
            corrupt_chunks: state.corrupt_chunks,
            hashed_reads: state.hashed_reads,
        }
    }

    /// The ids of every stored chunk.
    pub fn chunk_ids(&self) -> Vec<ChunkId> {
        let state = self.state.lock();
        let pending = state.pending;
        state
            .policy
            .entries()
            .map(|(id, _)| *id)
            .filter(|id| Some(*id) != pending)
            .collect()
    }

    /// Reads and hashes every stored chunk, and checks that entries and bodies match one to one.
    pub fn verify_all(&self) -> Result<Verification, StoreError> {
        let mut report = Verification::default();
        let mut with_entry = HashSet::new();
        for item in self.db.iterator_cf(self.cf(CF_ENTRIES), IteratorMode::Start) {
            let (key, value) = item.map_err(io("entry scan"))?;
            let (Some(id), Some(entry)) = (chunk_id(&key), decode_entry(&value)) else {
                continue;
            };
            with_entry.insert(id);
            match self
                .db
                .get_pinned_cf(self.cf(CF_CHUNKS), id.as_bytes())
                .map_err(io("chunk read"))?
            {
                None => report.missing_bodies.push(id),
                Some(body) if body.len() != entry.size as usize || id.verify(&body).is_err() => report.corrupt.push(id),
                Some(body) => {
                    report.verified += 1;
                    report.verified_bytes += body.len() as u64;
                }
            }
        }
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_CHUNKS));
        iter.seek_to_first();
        while let Some(key) = iter.key() {
            match chunk_id(key) {
                Some(id) if with_entry.contains(&id) => {}
                Some(id) => report.orphan_bodies.push(id),
                None => {}
            }
            iter.next();
        }
        iter.status().map_err(io("chunk scan"))?;
        Ok(report)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.flush_policy() {
            tracing::warn!(error = %e, "could not save cache hit counters on close");
        }
    }
}

fn load_state(db: &DB, config: &StoreConfig) -> Result<State, StoreError> {
    let cf = |name| db.cf_handle(name).expect("column families are created at open");
    let mut entries = Vec::new();
    for item in db.iterator_cf(cf(CF_ENTRIES), IteratorMode::Start) {
        let (key, value) = item.map_err(io("entry scan"))?;
        match (chunk_id(&key), decode_entry(&value)) {
            (Some(id), Some(e)) => entries.push((id, e)),
            _ => tracing::warn!("skipping an unreadable cache entry"),
        }
    }
    let mut ghosts = Vec::new();
    for item in db.iterator_cf(cf(CF_GHOSTS), IteratorMode::Start) {
        let (key, value) = item.map_err(io("ghost scan"))?;
        if let (Some(id), Some((seq, size))) = (chunk_id(&key), decode_ghost(&value)) {
            ghosts.push((id, seq, size));
        }
    }
    let mut pin_counts: HashMap<ChunkId, u32> = HashMap::new();
    for item in db.iterator_cf(cf(CF_PINS), IteratorMode::Start) {
        let (key, _) = item.map_err(io("pin scan"))?;
        if let Some(id) = pin_key_chunk(&key) {
            *pin_counts.entry(id).or_default() += 1;
        }
    }
    let policy = S3Fifo::restore(
        PolicyConfig {
            budget: config.budget_bytes,
            small_percent: config.small_queue_percent,
        },
        entries,
        ghosts,
        pin_counts.keys().copied(),
    );
    Ok(State {
        policy,
        pending: None,
        pin_counts,
        dirty_hits: HashSet::new(),
        verified: HashSet::new(),
        evicted_bytes: 0,
        evicted_chunks: 0,
        corrupt_chunks: 0,
        hashed_reads: 0,
    })
}
