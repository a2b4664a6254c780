//! ConsumeQueue: per topic and queue, the n-th message's CommitLog offset, size and tag hash
//! (RocketMQ `ConsumeQueue`), with its message group's hash for the FIFO gate. Written only by
//! the dispatcher; read by receives and pulls through [`ConsumeQueue`].
//!
//! Two stores hold them, chosen per broker by `consume_queue_store` ([`ConsumeQueueStore`]), as
//! RocketMQ 5 chooses with `storeType`:
//! - [`files`]: a directory and files per queue (RocketMQ's `ConsumeQueue`), the default. Reads
//!   are plain memory reads; every queue written costs its own pages, msync and inode, which is
//!   what held 10,000 topics of 8 queues to 40 to 65 % of one topic's send rate
//!   (docs/BENCHMARKS.md run 14).
//! - [`lsm`]: one log-structured key-value store for every queue (RocketMQ 5's
//!   `RocksDBConsumeQueueStore`, here the pure-Rust `fjall`): entries of all queues share its
//!   journal and tables, so a write costs the same however many queues there are, at a fixed
//!   cost per entry and a lookup per read.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;

pub mod files;
pub mod lsm;

/// One ConsumeQueue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqEntry {
    /// CommitLog offset of the message.
    pub physical_offset: u64,
    /// Size of its record, bytes.
    pub size: u32,
    /// [`tag_hash`] of its tag (0 for none).
    pub tag_hash: u64,
}

/// Java's `String.hashCode()` (over UTF-16 code units), which RocketMQ hashes tags, index keys
/// and message groups with.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32))
}

/// The hash RocketMQ stores for a tag: Java's `String.hashCode()` widened to a long
/// (`MessageExtBrokerInner.tagsString2tagsCode`), so tag filters can skip without reading the CommitLog.
pub fn tag_hash(tag: &str) -> u64 {
    java_string_hash(tag) as i64 as u64
}

/// The hash kept for a message group: [`tag_hash`] of its name, never 0 (0 means none).
pub fn message_group_hash(group: &str) -> u64 {
    tag_hash(group).max(1)
}

/// A queue's topic and queue id.
pub type QueueKey = (String, u32);

/// Which store holds a broker's ConsumeQueues (see the module doc). Config values: `files`,
/// `lsm`. A data directory keeps the store it was created with: opening it with the other one
/// is refused, naming both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumeQueueStore {
    /// A directory and files per queue under `consumequeue/` (RocketMQ's default).
    #[default]
    Files,
    /// One LSM store for every queue under `consumequeue_lsm/` (RocketMQ 5 `storeType =
    /// defaultRocksDB`).
    Lsm,
}

/// One queue of one topic, in either store.
pub struct ConsumeQueue(Kind);

enum Kind {
    Files(files::FileQueue),
    Lsm(lsm::LsmQueue),
}

impl ConsumeQueue {
    /// One past the highest queue offset written (and readable).
    pub fn max_offset(&self) -> u64 {
        match &self.0 {
            Kind::Files(q) => q.max_offset(),
            Kind::Lsm(q) => q.max_offset(),
        }
    }

    /// Lowest queue offset still stored (its message is in the CommitLog).
    pub fn min_offset(&self) -> u64 {
        match &self.0 {
            Kind::Files(q) => q.min_offset(),
            Kind::Lsm(q) => q.min_offset(),
        }
    }

    /// The entry at queue `offset`, or `None` if not written (or deleted, or a hole left by a
    /// corrupt CommitLog record).
    pub fn get(&self, offset: u64) -> Option<CqEntry> {
        match &self.0 {
            Kind::Files(q) => q.get(offset),
            Kind::Lsm(q) => q.get(offset),
        }
    }

    /// The message group hash ([`message_group_hash`], 0 for none) of the message at `offset`,
    /// or `None` if it is not known here (a file queue dispatched before its extension
    /// existed: read the message instead).
    pub fn message_group(&self, offset: u64) -> Option<u64> {
        match &self.0 {
            Kind::Files(q) => q.message_group(offset),
            Kind::Lsm(q) => q.message_group(offset),
        }
    }

    /// Writes the entry for queue `offset` (dispatcher only) and its message group hash (0 for
    /// none). In the LSM store it becomes readable at the next [`ConsumeQueueTable::commit`].
    /// Errors: I/O (ENOSPC).
    pub fn put(&self, offset: u64, e: CqEntry, group: u64) -> io::Result<()> {
        match &self.0 {
            Kind::Files(q) => q.put(offset, e, group),
            Kind::Lsm(q) => q.put(offset, e, group),
        }
    }

    /// Drops every entry that points at CommitLog offset `physical` or later (recovery
    /// re-dispatches them). Errors: I/O.
    pub fn truncate_from_physical(&self, physical: u64) -> io::Result<()> {
        match &self.0 {
            Kind::Files(q) => q.truncate_from_physical(physical),
            Kind::Lsm(q) => q.truncate_from_physical(physical),
        }
    }

    /// Forgets what points below CommitLog offset `min_physical` (retention deleted it) and
    /// moves the queue's minimum past it (RocketMQ `deleteExpiredFile` + `correctMinOffset`).
    /// Returns the number of files deleted (0 in the LSM store, whose compaction reclaims the
    /// space). Errors: I/O (a file named).
    pub fn delete_below_physical(&self, min_physical: u64) -> io::Result<usize> {
        match &self.0 {
            Kind::Files(q) => q.delete_below_physical(min_physical),
            Kind::Lsm(q) => q.delete_below_physical(min_physical).map(|_| 0),
        }
    }
}

/// Every ConsumeQueue of a broker.
pub struct ConsumeQueueTable {
    backing: Backing,
    /// The store's directory did not exist when loaded.
    fresh: bool,
    /// Topic, then queue id: looked up by `&str`, so the dispatcher's and every receive's lookup
    /// allocates nothing.
    queues: RwLock<HashMap<String, HashMap<u32, Arc<ConsumeQueue>>>>,
}

enum Backing {
    Files(files::FileRoot),
    Lsm(Arc<lsm::LsmStore>),
}

/// Directories of the two stores under a data directory.
const FILES_DIR: &str = "consumequeue";
const FILES_EXT_DIR: &str = "consumequeue_ext";
const LSM_DIR: &str = "consumequeue_lsm";

impl ConsumeQueueTable {
    /// Loads every queue of the data directory `data_dir` from `store`. Errors: the directory
    /// holds queues of the other store (both named); I/O or a malformed file (named).
    pub fn load(data_dir: &Path, store: ConsumeQueueStore, entries_per_file: u64) -> io::Result<ConsumeQueueTable> {
        let (own, other) = match store {
            ConsumeQueueStore::Files => (data_dir.join(FILES_DIR), data_dir.join(LSM_DIR)),
            ConsumeQueueStore::Lsm => (data_dir.join(LSM_DIR), data_dir.join(FILES_DIR)),
        };
        if std::fs::read_dir(&other).is_ok_and(|mut d| d.next().is_some()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "consume_queue_store = \"{}\" but {} holds ConsumeQueues of the other store: \
                     a data directory keeps the store it was created with",
                    serde_json::to_value(store).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                    other.display()
                ),
            ));
        }
        let fresh = !own.exists();
        let (backing, queues): (Backing, Vec<(QueueKey, Kind)>) = match store {
            ConsumeQueueStore::Files => {
                let (root, qs) = files::FileRoot::load(&own, &data_dir.join(FILES_EXT_DIR), entries_per_file)?;
                (Backing::Files(root), qs.into_iter().map(|(k, q)| (k, Kind::Files(q))).collect())
            }
            ConsumeQueueStore::Lsm => {
                let store = Arc::new(lsm::LsmStore::open(&own)?);
                let qs = store.load_queues()?;
                (Backing::Lsm(store), qs.into_iter().map(|(k, q)| (k, Kind::Lsm(q))).collect())
            }
        };
        let mut by_topic: HashMap<String, HashMap<u32, Arc<ConsumeQueue>>> = HashMap::new();
        for ((topic, id), q) in queues {
            by_topic.entry(topic).or_default().insert(id, Arc::new(ConsumeQueue(q)));
        }
        Ok(ConsumeQueueTable { backing, fresh, queues: RwLock::new(by_topic) })
    }

    /// Whether the store's directory was missing when loaded (new, or deleted): recovery then
    /// dispatches the whole CommitLog, whatever the checkpoint says.
    pub fn fresh(&self) -> bool {
        self.fresh
    }

    /// The queue, if it has ever had an entry.
    pub fn get(&self, topic: &str, queue_id: u32) -> Option<Arc<ConsumeQueue>> {
        self.queues.read().get(topic)?.get(&queue_id).cloned()
    }

    /// The queue, created if absent. Errors: I/O.
    pub fn get_or_create(&self, topic: &str, queue_id: u32) -> io::Result<Arc<ConsumeQueue>> {
        if let Some(q) = self.get(topic, queue_id) {
            return Ok(q);
        }
        let mut w = self.queues.write();
        if let Some(q) = w.get(topic).and_then(|qs| qs.get(&queue_id)) {
            return Ok(q.clone());
        }
        let q = Arc::new(ConsumeQueue(match &self.backing {
            Backing::Files(root) => Kind::Files(root.create(topic, queue_id)?),
            Backing::Lsm(store) => Kind::Lsm(store.create(topic, queue_id)?),
        }));
        // Listed only once created: a failed create leaves no empty topic behind.
        w.entry(topic.to_string()).or_default().insert(queue_id, q.clone());
        Ok(q)
    }

    /// Forgets every queue of `topic` and deletes its entries (the topic was deleted).
    /// Errors: I/O (a directory named).
    pub fn remove_topic(&self, topic: &str) -> io::Result<()> {
        let removed = self.queues.write().remove(topic).unwrap_or_default();
        match &self.backing {
            Backing::Files(root) => root.remove_topic(topic),
            Backing::Lsm(store) => {
                for q in removed.into_values() {
                    if let Kind::Lsm(q) = &q.0 {
                        store.remove_queue(q)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Every queue with its key.
    pub fn all(&self) -> Vec<(QueueKey, Arc<ConsumeQueue>)> {
        let queues = self.queues.read();
        queues.iter().flat_map(|(t, qs)| qs.iter().map(|(id, q)| ((t.clone(), *id), q.clone()))).collect()
    }

    /// Makes every entry [`ConsumeQueue::put`] so far readable (the LSM store writes them as one
    /// batch; the file store needs nothing). The dispatcher calls it before it publishes how far
    /// it got. Errors: I/O (then nothing of the batch is readable: dispatch it again).
    pub fn commit(&self) -> io::Result<()> {
        match &self.backing {
            Backing::Files(_) => Ok(()),
            Backing::Lsm(store) => store.commit(),
        }
    }

    /// Puts every entry written so far on disk: the file queues written since the last flush,
    /// or the LSM store's journal. Errors: I/O.
    pub fn flush(&self) -> io::Result<()> {
        match &self.backing {
            Backing::Files(_) => {
                for (_, q) in self.all() {
                    if let Kind::Files(q) = &q.0 {
                        q.flush()?;
                    }
                }
                Ok(())
            }
            Backing::Lsm(store) => store.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_hash_matches_java_string_hash_code() {
        // Values of "TagA".hashCode() and "".hashCode() in Java; negative hashes sign-extend.
        assert_eq!(tag_hash(""), 0);
        assert_eq!(tag_hash("TagA") as i64, 2_598_919);
        assert_eq!(tag_hash("polygenelubricants") as i64, i32::MIN as i64);
    }

    #[test]
    fn a_data_directory_keeps_its_store() {
        let dir = tempfile::tempdir().unwrap();
        let e = CqEntry { physical_offset: 0, size: 10, tag_hash: 0 };
        let files = ConsumeQueueTable::load(dir.path(), ConsumeQueueStore::Files, 16).unwrap();
        files.get_or_create("T", 0).unwrap().put(0, e, 0).unwrap();
        drop(files);
        let err = ConsumeQueueTable::load(dir.path(), ConsumeQueueStore::Lsm, 16).err().expect("refused");
        assert!(
            err.to_string().contains("consume_queue_store = \"lsm\"") && err.to_string().contains("consumequeue"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let lsm = ConsumeQueueTable::load(dir.path(), ConsumeQueueStore::Lsm, 16).unwrap();
        lsm.get_or_create("T", 0).unwrap().put(0, e, 0).unwrap();
        lsm.commit().unwrap();
        drop(lsm);
        let err = ConsumeQueueTable::load(dir.path(), ConsumeQueueStore::Files, 16).err().expect("refused");
        assert!(err.to_string().contains("consumequeue_lsm"), "{err}");
    }
}
