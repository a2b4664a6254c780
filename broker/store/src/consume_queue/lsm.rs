//! The LSM ConsumeQueue store: every queue's entries in one log-structured key-value store under
//! `consumequeue_lsm/` (RocketMQ 5's `RocksDBConsumeQueueStore`; here `fjall`, a maintained
//! pure-Rust LSM tree, so the build needs no C++ toolchain).
//!
//! - Keyspace `entries`: key = queue number (u32) + queue offset (u64), big-endian, so a queue's
//!   entries sort together by offset; value = CommitLog offset (u64), size (u32), tag hash
//!   (u64), message group hash (u64), big-endian, 28 bytes.
//! - Keyspace `queues`: key = queue number (u32); value = queue id (u32) + topic name. Beside
//!   them, key [`NEXT_KEY`] holds the next number to give: numbers are never reused, so entries
//!   the dispatcher wrote for a queue while its topic was being deleted are never read as a
//!   new queue's.
//!
//! Writes go into one batch that [`LsmStore::commit`] writes (the dispatcher commits after each
//! pass, and every [`BATCH_ENTRIES`] entries); a queue's max offset rises only then, so a reader
//! never sees an offset whose entry it cannot read. The store's journal is written through a
//! buffer: [`LsmStore::flush`] writes and fsyncs it before the checkpoint says the entries are
//! there, and recovery re-dispatches from the CommitLog whatever a crash lost after that.
//!
//! Retention removes the entries below the CommitLog's new minimum but keeps each queue's last
//! entry, so its max offset survives a restart when everything else of it has expired (the file
//! store keeps the last file for the same reason).

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};
use parking_lot::Mutex;

use super::{CqEntry, QueueKey};

/// Bytes of a key: queue number u32 and queue offset u64.
const KEY_BYTES: usize = 12;
/// Bytes of a value: CommitLog offset u64, size u32, tag hash u64, message group hash u64.
const VALUE_BYTES: usize = 28;
/// Entries after which a batch is committed without waiting for the dispatcher's pass (bounds the
/// batch's memory when a pass is long, as in recovery).
pub const BATCH_ENTRIES: usize = 4096;
/// Key of the next queue number in the `queues` keyspace (5 bytes: no queue's key).
const NEXT_KEY: [u8; 5] = [0xff; 5];
/// Block cache of the store, bytes.
const CACHE_BYTES: u64 = 16 << 20;
/// Largest memtable of the entries keyspace, bytes: with the cache, what the store's memory is
/// bounded by, whatever the number of queues.
const MEMTABLE_BYTES: u64 = 16 << 20;

/// The store of every queue (see the module doc).
pub struct LsmStore {
    db: Database,
    entries: Keyspace,
    queues: Keyspace,
    next_number: AtomicU32,
    pending: Mutex<Pending>,
}

/// What was put and is not yet committed.
#[derive(Default)]
struct Pending {
    batch: Option<OwnedWriteBatch>,
    entries: usize,
    /// Per queue number, its max offset once the batch is committed.
    maxes: HashMap<u32, (Arc<AtomicU64>, u64)>,
}

/// One queue in the LSM store.
pub struct LsmQueue {
    store: Arc<LsmStore>,
    number: u32,
    /// One past the highest offset committed.
    max: Arc<AtomicU64>,
    /// Lowest offset whose message is still in the CommitLog.
    min: AtomicU64,
}

fn io_error(e: fjall::Error) -> io::Error {
    match e {
        fjall::Error::Io(e) => e,
        e => io::Error::other(e.to_string()),
    }
}

fn key(number: u32, offset: u64) -> [u8; KEY_BYTES] {
    let mut k = [0u8; KEY_BYTES];
    k[..4].copy_from_slice(&number.to_be_bytes());
    k[4..].copy_from_slice(&offset.to_be_bytes());
    k
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn offset_of(k: &[u8]) -> u64 {
    be_u64(k, 4)
}

/// The entry and message group hash in a value. Errors: a value of the wrong size (named).
fn decode(v: &[u8]) -> io::Result<(CqEntry, u64)> {
    if v.len() != VALUE_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("ConsumeQueue value of {} bytes", v.len())));
    }
    let size = u32::from_be_bytes(v[8..12].try_into().expect("4 bytes"));
    Ok((CqEntry { physical_offset: be_u64(v, 0), size, tag_hash: be_u64(v, 12) }, be_u64(v, 20)))
}

impl LsmStore {
    /// Opens (or creates) the store in `dir`, replaying its journal. Errors: I/O, or a store
    /// fjall cannot recover (the message names `dir`).
    pub fn open(dir: &Path) -> io::Result<LsmStore> {
        let named = |e: fjall::Error| {
            let e = io_error(e);
            io::Error::new(e.kind(), format!("ConsumeQueue store {}: {e}", dir.display()))
        };
        // One background worker: flushes and compactions share two cores with the broker.
        let db = Database::builder(dir).cache_size(CACHE_BYTES).worker_threads(1).open().map_err(named)?;
        let entries = db
            .keyspace("entries", || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES))
            .map_err(named)?;
        let queues = db.keyspace("queues", KeyspaceCreateOptions::default).map_err(named)?;
        let next = match queues.get(NEXT_KEY).map_err(named)? {
            Some(v) => u32::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("ConsumeQueue store {}: bad next queue number", dir.display()),
                )
            })?),
            None => 0,
        };
        Ok(LsmStore { db, entries, queues, next_number: AtomicU32::new(next), pending: Mutex::default() })
    }

    /// Every queue in the store with its (topic, queue id), its min and max offsets read from its
    /// first and last entries. Errors: I/O or a malformed record.
    pub fn load_queues(self: &Arc<Self>) -> io::Result<Vec<(QueueKey, LsmQueue)>> {
        let mut out = Vec::new();
        for g in self.queues.iter() {
            let (k, v) = g.into_inner().map_err(io_error)?;
            if k.as_ref() == NEXT_KEY {
                continue;
            }
            let (Ok(number), Some(id), Ok(topic)) = (
                <[u8; 4]>::try_from(k.as_ref()).map(u32::from_be_bytes),
                v.get(..4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes"))),
                std::str::from_utf8(&v[4.min(v.len())..]),
            ) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed queue record in the ConsumeQueue store",
                ));
            };
            let mut range = self.entries.prefix(number.to_be_bytes());
            let first = range.next().map(|g| g.key().map(|k| offset_of(&k))).transpose().map_err(io_error)?;
            let last = range.next_back().map(|g| g.key().map(|k| offset_of(&k))).transpose().map_err(io_error)?;
            let (min, max) = match (first, last) {
                (Some(a), Some(b)) => (a, b + 1),
                (Some(a), None) => (a, a + 1),
                _ => (0, 0),
            };
            let q =
                LsmQueue { store: self.clone(), number, max: Arc::new(AtomicU64::new(max)), min: AtomicU64::new(min) };
            out.push(((topic.to_string(), id), q));
        }
        Ok(out)
    }

    /// A new, empty queue of `topic`, recorded at once. Errors: I/O.
    pub fn create(self: &Arc<Self>, topic: &str, queue_id: u32) -> io::Result<LsmQueue> {
        let number = self.next_number.fetch_add(1, Ordering::AcqRel);
        let mut v = queue_id.to_be_bytes().to_vec();
        v.extend_from_slice(topic.as_bytes());
        let mut batch = self.db.batch();
        batch.insert(&self.queues, number.to_be_bytes(), v);
        batch.insert(&self.queues, NEXT_KEY, (number + 1).to_be_bytes());
        batch.commit().map_err(io_error)?;
        Ok(LsmQueue { store: self.clone(), number, max: Arc::new(AtomicU64::new(0)), min: AtomicU64::new(0) })
    }

    /// Deletes a queue's entries, then its record (its topic was deleted). Errors: I/O.
    pub fn remove_queue(&self, q: &LsmQueue) -> io::Result<()> {
        self.commit()?;
        let mut removals = Removals::new(self);
        for g in self.entries.prefix(q.number.to_be_bytes()) {
            removals.remove(&self.entries, g.key().map_err(io_error)?)?;
        }
        removals.remove(&self.queues, q.number.to_be_bytes())?;
        removals.commit()
    }

    /// Adds an entry to the pending batch; committed by [`LsmStore::commit`] or once the batch
    /// holds [`BATCH_ENTRIES`]. Errors: I/O of that commit.
    fn put(&self, q: &LsmQueue, offset: u64, e: CqEntry, group: u64) -> io::Result<()> {
        let mut v = [0u8; VALUE_BYTES];
        v[0..8].copy_from_slice(&e.physical_offset.to_be_bytes());
        v[8..12].copy_from_slice(&e.size.to_be_bytes());
        v[12..20].copy_from_slice(&e.tag_hash.to_be_bytes());
        v[20..28].copy_from_slice(&group.to_be_bytes());
        let mut p = self.pending.lock();
        p.batch.get_or_insert_with(|| self.db.batch()).insert(&self.entries, key(q.number, offset), v);
        p.entries += 1;
        let max = p.maxes.entry(q.number).or_insert_with(|| (q.max.clone(), 0));
        max.1 = max.1.max(offset + 1);
        if p.entries >= BATCH_ENTRIES {
            Self::commit_locked(&mut p)?;
        }
        Ok(())
    }

    /// Writes the pending batch and then raises each queue's max offset to what it holds.
    /// Errors: I/O (nothing of the batch is readable; the dispatcher writes it again).
    pub fn commit(&self) -> io::Result<()> {
        Self::commit_locked(&mut self.pending.lock())
    }

    fn commit_locked(p: &mut Pending) -> io::Result<()> {
        let maxes = std::mem::take(&mut p.maxes);
        p.entries = 0;
        if let Some(batch) = p.batch.take() {
            batch.commit().map_err(io_error)?;
        }
        for (max, to) in maxes.into_values() {
            max.fetch_max(to, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Commits and fsyncs the journal: every entry put so far survives a crash of the machine.
    /// Errors: I/O.
    pub fn flush(&self) -> io::Result<()> {
        self.commit()?;
        self.db.persist(PersistMode::SyncData).map_err(io_error)
    }

    fn read(&self, number: u32, offset: u64) -> Option<(CqEntry, u64)> {
        match self.entries.get(key(number, offset)) {
            Ok(v) => v.and_then(|v| match decode(&v) {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::error!(number, offset, error = %e, "unreadable ConsumeQueue entry");
                    None
                }
            }),
            Err(e) => {
                tracing::error!(number, offset, error = %e, "cannot read the ConsumeQueue store");
                None
            }
        }
    }
}

/// Removals written in batches of [`BATCH_ENTRIES`], in order, so a long one holds little
/// memory.
struct Removals<'a> {
    store: &'a LsmStore,
    batch: OwnedWriteBatch,
}

impl<'a> Removals<'a> {
    fn new(store: &'a LsmStore) -> Removals<'a> {
        Removals { store, batch: store.db.batch() }
    }

    /// Adds a removal, committing the batch once full. Errors: I/O.
    fn remove(&mut self, keyspace: &Keyspace, key: impl Into<fjall::UserKey>) -> io::Result<()> {
        self.batch.remove(keyspace, key);
        if self.batch.len() >= BATCH_ENTRIES {
            std::mem::replace(&mut self.batch, self.store.db.batch()).commit().map_err(io_error)?;
        }
        Ok(())
    }

    /// Commits what is left. Errors: I/O.
    fn commit(self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch.commit().map_err(io_error)
    }
}

impl LsmQueue {
    /// One past the highest offset committed.
    pub fn max_offset(&self) -> u64 {
        self.max.load(Ordering::Acquire)
    }

    /// Lowest offset still stored.
    pub fn min_offset(&self) -> u64 {
        self.min.load(Ordering::Acquire).min(self.max_offset())
    }

    /// The entry at `offset` if committed and not expired. A read error is logged and reads as
    /// a hole.
    pub fn get(&self, offset: u64) -> Option<CqEntry> {
        if offset < self.min.load(Ordering::Acquire) || offset >= self.max_offset() {
            return None;
        }
        self.store.read(self.number, offset).map(|(e, _)| e).filter(|e| e.size != 0)
    }

    /// The message group hash at `offset` (0 for none or an entry not stored).
    pub fn message_group(&self, offset: u64) -> Option<u64> {
        Some(self.store.read(self.number, offset).map_or(0, |(_, g)| g))
    }

    /// See [`super::ConsumeQueue::put`].
    pub fn put(&self, offset: u64, e: CqEntry, group: u64) -> io::Result<()> {
        self.store.put(self, offset, e, group)
    }

    /// Removes the entries from the top down while they point at `physical` or later.
    /// Errors: I/O.
    pub fn truncate_from_physical(&self, physical: u64) -> io::Result<()> {
        self.store.commit()?;
        let (min, mut max) = (self.min_offset(), self.max_offset());
        let mut cut = Removals::new(&self.store);
        while max > min {
            match self.store.read(self.number, max - 1) {
                Some((e, _)) if e.physical_offset < physical => break,
                _ => cut.remove(&self.store.entries, key(self.number, max - 1))?,
            }
            max -= 1;
        }
        cut.commit()?;
        self.max.store(max, Ordering::Release);
        Ok(())
    }

    /// Removes the entries below the first that points at `min_physical` or later, except the
    /// queue's last entry (it keeps the max offset across restarts), and moves the minimum to
    /// that first entry. One scan of what it removes, in batches. Returns the number of entries
    /// removed. Errors: I/O, or a malformed value.
    pub fn delete_below_physical(&self, min_physical: u64) -> io::Result<u64> {
        self.store.commit()?;
        let (from, max) = (self.min.load(Ordering::Acquire), self.max_offset());
        let (mut first_kept, mut removed, mut doomed) = (max, 0, Removals::new(&self.store));
        for g in self.store.entries.range(key(self.number, from)..key(self.number, max)) {
            let (k, v) = g.into_inner().map_err(io_error)?;
            let offset = offset_of(&k);
            if decode(&v)?.0.physical_offset >= min_physical {
                first_kept = offset;
                break;
            }
            if offset + 1 < max {
                doomed.remove(&self.store.entries, k)?;
                removed += 1;
            }
        }
        doomed.commit()?;
        self.min.fetch_max(first_kept, Ordering::AcqRel);
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(i: u64) -> CqEntry {
        CqEntry { physical_offset: i * 100, size: 50, tag_hash: i }
    }

    fn open(dir: &Path) -> (Arc<LsmStore>, HashMap<QueueKey, LsmQueue>) {
        let store = Arc::new(LsmStore::open(dir).unwrap());
        let queues = store.load_queues().unwrap().into_iter().collect();
        (store, queues)
    }

    #[test]
    fn entries_are_readable_once_committed_and_survive_reopening_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        let q = store.create("T", 3).unwrap();
        for i in 0..10u64 {
            q.put(i, e(i), if i == 4 { 77 } else { 0 }).unwrap();
        }
        assert_eq!((q.max_offset(), q.get(0)), (0, None), "nothing is readable before the commit");
        store.commit().unwrap();
        assert_eq!(q.max_offset(), 10);
        assert_eq!(q.get(7), Some(e(7)));
        assert_eq!((q.message_group(4), q.message_group(5)), (Some(77), Some(0)));
        store.flush().unwrap();
        drop((q, store));
        let (store, mut queues) = open(dir.path());
        let q = queues.remove(&("T".to_string(), 3)).expect("reloaded");
        assert_eq!((q.min_offset(), q.max_offset(), q.get(9)), (0, 10, Some(e(9))));
        q.truncate_from_physical(450).unwrap();
        assert_eq!((q.max_offset(), q.get(5)), (5, None));
        drop((q, store));
        let (_store, queues) = open(dir.path());
        assert_eq!(queues[&("T".to_string(), 3)].max_offset(), 5);
    }

    #[test]
    fn a_long_pass_is_committed_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        let q = store.create("T", 0).unwrap();
        for i in 0..BATCH_ENTRIES as u64 + 10 {
            q.put(i, e(i), 0).unwrap();
        }
        assert_eq!(q.max_offset(), BATCH_ENTRIES as u64, "the full batch was committed and published");
        store.commit().unwrap();
        assert_eq!(q.max_offset(), BATCH_ENTRIES as u64 + 10);
    }

    #[test]
    fn retention_keeps_the_last_entry_so_the_max_offset_survives() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        let q = store.create("T", 0).unwrap();
        for i in 0..10u64 {
            q.put(i, e(i), 0).unwrap();
        }
        // A hole (a corrupt record was never dispatched) is passed over like an expired entry.
        q.put(10, e(10), 0).unwrap();
        q.put(12, e(12), 0).unwrap();
        q.put(13, e(13), 0).unwrap();
        store.commit().unwrap();
        assert_eq!(q.delete_below_physical(550).unwrap(), 6);
        assert_eq!((q.min_offset(), q.get(5), q.get(6)), (6, None, Some(e(6))));
        assert_eq!(q.delete_below_physical(1_150).unwrap(), 5, "6..=10 (11 is a hole)");
        assert_eq!((q.min_offset(), q.get(12)), (12, Some(e(12))));
        assert_eq!(q.delete_below_physical(100_000).unwrap(), 1, "all but the last");
        assert_eq!((q.min_offset(), q.max_offset(), q.get(13)), (14, 14, None));
        drop((q, store));
        let (store, mut queues) = open(dir.path());
        let q = queues.remove(&("T".to_string(), 0)).unwrap();
        // Reopened, the last entry is the first there is; recovery corrects the minimum again.
        assert_eq!((q.min_offset(), q.max_offset()), (13, 14));
        q.delete_below_physical(100_000).unwrap();
        assert_eq!((q.min_offset(), q.get(13)), (14, None));
        q.put(14, e(14), 0).unwrap();
        store.commit().unwrap();
        assert_eq!(q.get(14), Some(e(14)));
    }

    #[test]
    fn a_removed_queue_is_gone_and_its_number_never_given_again() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        let a = store.create("A", 0).unwrap();
        store.remove_queue(&a).unwrap();
        // The dispatcher still held the queue while its topic was deleted.
        a.put(0, e(0), 0).unwrap();
        store.commit().unwrap();
        drop((a, store));
        let (store, queues) = open(dir.path());
        assert!(queues.is_empty());
        let b = store.create("A", 0).unwrap();
        assert_eq!((b.number, b.get(0)), (1, None));
        b.put(0, e(5), 0).unwrap();
        store.commit().unwrap();
        drop((b, store));
        let (_store, queues) = open(dir.path());
        let b = &queues[&("A".to_string(), 0)];
        assert_eq!((queues.len(), b.max_offset(), b.get(0)), (1, 1, Some(e(5))));
    }
}
