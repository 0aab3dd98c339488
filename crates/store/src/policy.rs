//! The cache policy: S3-FIFO over byte sizes, with pins. Pure: no IO, no clock.
//!
//! S3-FIFO (Yang et al., SOSP 2023) keeps three FIFO queues:
//! - **small** (about 10 % of the budget) takes new chunks; most one-hit chunks leave from here
//!   without ever disturbing the main queue (this is the admission filter);
//! - **main** holds chunks that were hit again while in small (or that came back from ghost);
//!   a chunk at main's tail with hits is re-inserted at the head with one hit less (lazy
//!   promotion, a CLOCK-like second chance);
//! - **ghost** remembers the ids (not the bytes) of chunks recently evicted from small; a chunk
//!   fetched again while its id is in ghost goes straight to main.
//!
//! Each chunk has a hit counter capped at 3. A **pinned** chunk (scheduled lesson, live window,
//! origin-owned content) is never evicted: at small's tail it moves to main, at main's tail it
//! goes round again. If only pinned chunks are left, an insert fails with
//! [`PolicyError::BudgetExhausted`] rather than evict one.
//!
//! The policy records every change it makes as a [`Change`], which the store turns into a write
//! batch, so the on-disk state follows the in-memory one exactly.

use std::collections::{HashMap, HashSet, VecDeque};

use courseway_content::ChunkId;

/// The queue a cached chunk is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    Small,
    Main,
}

/// What the policy knows of one cached chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryState {
    pub size: u32,
    pub queue: Queue,
    /// Position in its queue: larger is newer. Unique across both queues and the ghost.
    pub seq: u64,
    /// Hits since insertion or since the last second chance, at most [`MAX_FREQ`].
    pub freq: u8,
}

/// Cap on the hit counter.
pub const MAX_FREQ: u8 = 3;

/// A change the store must persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A chunk's entry is new or changed (moved to another queue, or re-inserted).
    Entry { id: ChunkId, state: EntryState },
    /// A chunk was evicted: delete its body and entry.
    Evicted { id: ChunkId, size: u32 },
    /// An id was added to the ghost queue.
    GhostAdded { id: ChunkId, seq: u64, size: u32 },
    /// An id left the ghost queue.
    GhostRemoved { id: ChunkId },
}

/// Why an insert was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "the cache budget of {budget} bytes is full of pinned chunks ({pinned} bytes pinned) and {needed} more \
         bytes are needed; raise the store budget or shorten the pin horizon"
    )]
    BudgetExhausted { needed: u64, budget: u64, pinned: u64 },
    #[error("a chunk of {size} bytes can never fit in a budget of {budget} bytes; raise the store budget")]
    LargerThanBudget { size: u64, budget: u64 },
}

/// The S3-FIFO state of a cache.
#[derive(Debug, Clone)]
pub struct S3Fifo {
    budget: u64,
    small_target: u64,
    ghost_budget: u64,
    entries: HashMap<ChunkId, EntryState>,
    small: VecDeque<ChunkId>,
    main: VecDeque<ChunkId>,
    small_bytes: u64,
    main_bytes: u64,
    ghost: VecDeque<(ChunkId, u64)>,
    ghost_index: HashMap<ChunkId, u32>,
    ghost_bytes: u64,
    pinned: HashSet<ChunkId>,
    /// Bytes of cached chunks that are pinned.
    pinned_cached_bytes: u64,
    next_seq: u64,
}

/// Policy sizes.
#[derive(Debug, Clone, Copy)]
pub struct PolicyConfig {
    /// Bytes the cached chunks may take.
    pub budget: u64,
    /// Share of the budget for the small queue, in percent (the paper's default is 10).
    pub small_percent: u8,
}

impl S3Fifo {
    /// An empty cache.
    pub fn new(config: PolicyConfig) -> Self {
        // u128: a budget near u64::MAX (a store opened only to be read) must not overflow.
        let small_target = (u128::from(config.budget) * u128::from(config.small_percent.clamp(1, 90)) / 100) as u64;
        Self {
            budget: config.budget,
            small_target,
            ghost_budget: config.budget - small_target,
            entries: HashMap::new(),
            small: VecDeque::new(),
            main: VecDeque::new(),
            small_bytes: 0,
            main_bytes: 0,
            ghost: VecDeque::new(),
            ghost_index: HashMap::new(),
            ghost_bytes: 0,
            pinned: HashSet::new(),
            pinned_cached_bytes: 0,
            next_seq: 1,
        }
    }

    /// Rebuilds the state persisted by a store: entries and ghosts in any order (they are
    /// sorted by `seq`), and the pinned ids. A budget smaller than what is stored is honoured
    /// by the next inserts, which evict first.
    pub fn restore(
        config: PolicyConfig,
        entries: impl IntoIterator<Item = (ChunkId, EntryState)>,
        ghosts: impl IntoIterator<Item = (ChunkId, u64, u32)>,
        pinned: impl IntoIterator<Item = ChunkId>,
    ) -> Self {
        let mut s = Self::new(config);
        let mut entries: Vec<_> = entries.into_iter().collect();
        entries.sort_by_key(|(_, e)| e.seq);
        for (id, e) in entries {
            s.next_seq = s.next_seq.max(e.seq + 1);
            s.push(id, e);
        }
        let mut ghosts: Vec<_> = ghosts
            .into_iter()
            .filter(|(id, _, _)| !s.entries.contains_key(id))
            .collect();
        ghosts.sort_by_key(|(_, seq, _)| *seq);
        for (id, seq, size) in ghosts {
            s.next_seq = s.next_seq.max(seq + 1);
            s.ghost.push_back((id, seq));
            s.ghost_index.insert(id, size);
            s.ghost_bytes += u64::from(size);
        }
        for id in pinned {
            s.set_pinned(id, true);
        }
        s
    }

    /// Whether `id` is cached.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.entries.contains_key(id)
    }

    /// The policy state of a cached chunk.
    pub fn entry(&self, id: &ChunkId) -> Option<EntryState> {
        self.entries.get(id).copied()
    }

    /// Every cached chunk.
    pub fn entries(&self) -> impl Iterator<Item = (&ChunkId, &EntryState)> {
        self.entries.iter()
    }

    /// Bytes cached.
    pub fn used(&self) -> u64 {
        self.small_bytes + self.main_bytes
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes in the small and main queues.
    pub fn queue_bytes(&self) -> (u64, u64) {
        (self.small_bytes, self.main_bytes)
    }

    /// Ids remembered in the ghost queue.
    pub fn ghost_len(&self) -> usize {
        self.ghost.len()
    }

    /// Bytes of cached chunks that are pinned.
    pub fn pinned_bytes(&self) -> u64 {
        self.pinned_cached_bytes
    }

    /// Records a hit on `id`. Only the in-memory counter changes; see the store's durability notes.
    pub fn access(&mut self, id: &ChunkId) {
        if let Some(e) = self.entries.get_mut(id) {
            e.freq = (e.freq + 1).min(MAX_FREQ);
        }
    }

    /// Marks `id` pinned (it may or may not be cached yet).
    pub fn set_pinned(&mut self, id: ChunkId, pinned: bool) {
        let changed = if pinned {
            self.pinned.insert(id)
        } else {
            self.pinned.remove(&id)
        };
        if let (true, Some(e)) = (changed, self.entries.get(&id)) {
            if pinned {
                self.pinned_cached_bytes += u64::from(e.size);
            } else {
                self.pinned_cached_bytes -= u64::from(e.size);
            }
        }
    }

    /// Whether `id` is pinned.
    pub fn is_pinned(&self, id: &ChunkId) -> bool {
        self.pinned.contains(id)
    }

    /// Admits a new chunk, evicting as needed, and appends the changes to persist to `changes`
    /// (the new entry's last). Inserting a cached chunk is a hit and changes nothing on disk.
    ///
    /// On error the chunk is not admitted; `changes` may still hold changes already made in
    /// memory, and the caller must persist them like any others.
    pub fn insert(&mut self, id: ChunkId, size: u32, changes: &mut Vec<Change>) -> Result<(), PolicyError> {
        if self.entries.contains_key(&id) {
            self.access(&id);
            return Ok(());
        }
        let needed = u64::from(size);
        if needed > self.budget {
            return Err(PolicyError::LargerThanBudget {
                size: needed,
                budget: self.budget,
            });
        }
        // Refuse up front, before evicting anything, when the pinned chunks leave no room.
        if self.pinned_cached_bytes + needed > self.budget {
            return Err(PolicyError::BudgetExhausted {
                needed,
                budget: self.budget,
                pinned: self.pinned_cached_bytes,
            });
        }
        while self.used() + needed > self.budget {
            if !self.evict_one(changes) {
                return Err(PolicyError::BudgetExhausted {
                    needed,
                    budget: self.budget,
                    pinned: self.pinned_cached_bytes,
                });
            }
        }
        let pinned = self.pinned.contains(&id);
        let queue = if self.ghost_index.contains_key(&id) || pinned {
            self.remove_ghost(&id, changes);
            Queue::Main
        } else {
            Queue::Small
        };
        let state = EntryState {
            size,
            queue,
            seq: self.take_seq(),
            freq: 0,
        };
        self.push(id, state);
        if pinned {
            self.pinned_cached_bytes += needed;
        }
        changes.push(Change::Entry { id, state });
        Ok(())
    }

    /// Removes a cached chunk outright (not an eviction: nothing goes to ghost).
    pub fn remove(&mut self, id: &ChunkId) -> Option<EntryState> {
        let e = self.entries.remove(id)?;
        if self.pinned.contains(id) {
            self.pinned_cached_bytes -= u64::from(e.size);
        }
        match e.queue {
            Queue::Small => {
                self.small.retain(|x| x != id);
                self.small_bytes -= u64::from(e.size);
            }
            Queue::Main => {
                self.main.retain(|x| x != id);
                self.main_bytes -= u64::from(e.size);
            }
        }
        Some(e)
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn push(&mut self, id: ChunkId, state: EntryState) {
        match state.queue {
            Queue::Small => {
                self.small.push_back(id);
                self.small_bytes += u64::from(state.size);
            }
            Queue::Main => {
                self.main.push_back(id);
                self.main_bytes += u64::from(state.size);
            }
        }
        self.entries.insert(id, state);
    }

    fn remove_ghost(&mut self, id: &ChunkId, changes: &mut Vec<Change>) {
        if let Some(size) = self.ghost_index.remove(id) {
            self.ghost.retain(|(x, _)| x != id);
            self.ghost_bytes -= u64::from(size);
            changes.push(Change::GhostRemoved { id: *id });
        }
    }

    /// Evicts one unpinned chunk. Returns false if every cached chunk is pinned.
    fn evict_one(&mut self, changes: &mut Vec<Change>) -> bool {
        // Each unpinned chunk is looked at most MAX_FREQ + 2 times before it is evicted, and the
        // caller checked that unpinned bytes exist; the bound below only guards that reasoning.
        let mut budget_of_looks = (self.entries.len() + 1) * (usize::from(MAX_FREQ) + 2);
        loop {
            if budget_of_looks == 0 {
                return false;
            }
            budget_of_looks -= 1;
            let from_small = self.small_bytes > 0 && (self.small_bytes >= self.small_target || self.main.is_empty());
            if from_small {
                let id = self.small.pop_front().expect("small has bytes");
                let mut e = self.entries[&id];
                self.small_bytes -= u64::from(e.size);
                if e.freq > 0 || self.pinned.contains(&id) {
                    e.queue = Queue::Main;
                    e.freq = 0;
                    e.seq = self.take_seq();
                    self.push(id, e);
                    changes.push(Change::Entry { id, state: e });
                    continue;
                }
                self.entries.remove(&id);
                changes.push(Change::Evicted { id, size: e.size });
                self.add_ghost(id, e.size, changes);
                return true;
            }
            let Some(id) = self.main.pop_front() else { return false };
            let mut e = self.entries[&id];
            self.main_bytes -= u64::from(e.size);
            if self.pinned.contains(&id) {
                e.seq = self.take_seq();
                self.push(id, e);
                changes.push(Change::Entry { id, state: e });
                continue;
            }
            if e.freq > 0 {
                e.freq -= 1;
                e.seq = self.take_seq();
                self.push(id, e);
                changes.push(Change::Entry { id, state: e });
                continue;
            }
            self.entries.remove(&id);
            changes.push(Change::Evicted { id, size: e.size });
            return true;
        }
    }

    fn add_ghost(&mut self, id: ChunkId, size: u32, changes: &mut Vec<Change>) {
        let seq = self.take_seq();
        self.ghost.push_back((id, seq));
        self.ghost_index.insert(id, size);
        self.ghost_bytes += u64::from(size);
        changes.push(Change::GhostAdded { id, seq, size });
        while self.ghost_bytes > self.ghost_budget {
            let (old, _) = self.ghost.pop_front().expect("ghost has bytes");
            if let Some(size) = self.ghost_index.remove(&old) {
                self.ghost_bytes -= u64::from(size);
            }
            changes.push(Change::GhostRemoved { id: old });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn id(n: u32) -> ChunkId {
        ChunkId::of(&n.to_le_bytes())
    }

    fn cache(budget: u64) -> S3Fifo {
        S3Fifo::new(PolicyConfig {
            budget,
            small_percent: 10,
        })
    }

    fn insert(c: &mut S3Fifo, n: u32, size: u32) -> Result<Vec<Change>, PolicyError> {
        let mut changes = Vec::new();
        c.insert(id(n), size, &mut changes).map(|()| changes)
    }

    #[test]
    fn a_scan_does_not_flush_the_hot_set() {
        let mut c = cache(100 * 10);
        for n in 0..50 {
            insert(&mut c, n, 10).unwrap();
        }
        for _ in 0..3 {
            for n in 0..50 {
                c.access(&id(n));
            }
        }
        // A scan of 1,000 chunks seen once each, as a one-off download would cause.
        for n in 1000..2000 {
            insert(&mut c, n, 10).unwrap();
        }
        let hot_left = (0..50).filter(|n| c.contains(&id(*n))).count();
        assert_eq!(hot_left, 50, "the hot set survives a scan");
        assert!(c.used() <= c.budget());
    }

    #[test]
    fn a_chunk_back_from_ghost_goes_to_main() {
        let mut c = cache(100);
        insert(&mut c, 1, 10).unwrap();
        // Ten more fill the budget and push chunk 1 (never hit) out of the small queue.
        for n in 2..12 {
            insert(&mut c, n, 10).unwrap();
        }
        assert!(!c.contains(&id(1)));
        let changes = insert(&mut c, 1, 10).unwrap();
        assert!(changes.contains(&Change::GhostRemoved { id: id(1) }));
        assert_eq!(c.entry(&id(1)).unwrap().queue, Queue::Main);
    }

    #[test]
    fn pinned_chunks_are_never_evicted_and_refusal_changes_nothing() {
        let mut c = cache(100);
        for n in 0..10 {
            c.set_pinned(id(n), true);
            insert(&mut c, n, 10).unwrap();
        }
        assert_eq!(c.pinned_bytes(), 100);
        let before = c.used();
        let mut changes = Vec::new();
        let err = c.insert(id(99), 10, &mut changes).unwrap_err();
        assert_eq!(
            err,
            PolicyError::BudgetExhausted {
                needed: 10,
                budget: 100,
                pinned: 100
            }
        );
        assert!(changes.is_empty());
        assert_eq!(c.used(), before);
        // Unpinning one makes room for exactly one.
        c.set_pinned(id(3), false);
        let changes = insert(&mut c, 99, 10).unwrap();
        assert!(changes.contains(&Change::Evicted { id: id(3), size: 10 }));
    }

    #[test]
    fn a_chunk_larger_than_the_budget_is_refused() {
        let mut c = cache(100);
        assert_eq!(
            insert(&mut c, 1, 101),
            Err(PolicyError::LargerThanBudget { size: 101, budget: 100 })
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u32),
        Access(u32),
        Pin(u32),
        Unpin(u32),
        Remove(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..60, 1u32..40).prop_map(|(n, s)| Op::Insert(n, s)),
            3 => (0u32..60).prop_map(Op::Access),
            1 => (0u32..60).prop_map(Op::Pin),
            1 => (0u32..60).prop_map(Op::Unpin),
            1 => (0u32..60).prop_map(Op::Remove),
        ]
    }

    /// What the store keeps on disk, maintained only from the changes the policy reports.
    #[derive(Default)]
    struct Disk {
        entries: BTreeMap<ChunkId, EntryState>,
        ghosts: BTreeMap<ChunkId, (u64, u32)>,
    }

    impl Disk {
        fn apply(&mut self, changes: &[Change]) {
            for c in changes {
                match c {
                    Change::Entry { id, state } => {
                        self.entries.insert(*id, *state);
                    }
                    Change::Evicted { id, .. } => {
                        self.entries.remove(id);
                    }
                    Change::GhostAdded { id, seq, size } => {
                        self.ghosts.insert(*id, (*seq, *size));
                    }
                    Change::GhostRemoved { id } => {
                        self.ghosts.remove(id);
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn invariants_hold_and_persisted_changes_restore_the_same_queues(ops in proptest::collection::vec(op(), 1..300)) {
            let config = PolicyConfig { budget: 400, small_percent: 10 };
            let mut c = S3Fifo::new(config);
            let mut disk = Disk::default();
            let mut pinned = std::collections::HashSet::new();
            for op in ops {
                match op {
                    Op::Insert(n, size) => {
                        let mut changes = Vec::new();
                        let result = c.insert(id(n), size, &mut changes);
                        for change in &changes {
                            if let Change::Evicted { id: evicted, .. } = change {
                                prop_assert!(!pinned.contains(evicted), "a pinned chunk was evicted");
                            }
                        }
                        disk.apply(&changes);
                        if result.is_ok() {
                            prop_assert!(c.contains(&id(n)));
                        }
                    }
                    Op::Access(n) => c.access(&id(n)),
                    Op::Pin(n) => {
                        pinned.insert(id(n));
                        c.set_pinned(id(n), true);
                    }
                    Op::Unpin(n) => {
                        pinned.remove(&id(n));
                        c.set_pinned(id(n), false);
                    }
                    Op::Remove(n) => {
                        if c.remove(&id(n)).is_some() {
                            disk.entries.remove(&id(n));
                        }
                    }
                }
                let sum: u64 = c.entries().map(|(_, e)| u64::from(e.size)).sum();
                prop_assert_eq!(sum, c.used());
                let pinned_sum: u64 = c.entries().filter(|(i, _)| pinned.contains(*i)).map(|(_, e)| u64::from(e.size)).sum();
                prop_assert_eq!(pinned_sum, c.pinned_bytes());
                prop_assert!(c.used() <= c.budget() || c.pinned_bytes() > c.budget());
            }
            // The state rebuilt from disk equals the live state, queue order included
            // (hit counters are memory-only and are not compared).
            let restored = S3Fifo::restore(
                config,
                disk.entries.iter().map(|(i, e)| (*i, *e)),
                disk.ghosts.iter().map(|(i, (seq, size))| (*i, *seq, *size)),
                pinned.iter().copied(),
            );
            prop_assert_eq!(&restored.small, &c.small);
            prop_assert_eq!(&restored.main, &c.main);
            prop_assert_eq!(&restored.ghost, &c.ghost);
            prop_assert_eq!(restored.used(), c.used());
            prop_assert_eq!(restored.pinned_bytes(), c.pinned_bytes());
            prop_assert!(restored.next_seq <= c.next_seq);
        }
    }
}
