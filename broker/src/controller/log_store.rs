//! The controller's Raft log and vote on disk, for openraft's `RaftLogStorage`: one append-only
//! file of records (`u32` length, `u32` CRC32 of the body, both little-endian, then the entry as
//! openraft's JSON), fsynced before openraft is told an append is durable, and a small `meta.json`
//! (the vote, the last purged log id) written atomically. Entries are also kept in memory: the
//! log is bounded by snapshots (openraft purges what a snapshot covers), so it stays small.
//!
//! Truncation and purging rewrite the file whole (rare: a follower's conflicting tail, or after a
//! snapshot). A record cut short at the end of the file (a crash during an append, which was
//! never acknowledged) is dropped on open; a complete record whose checksum fails is refused,
//! naming the file and offset, because a log with a hole could apply a wrong history.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::TypeConfig;
use crate::store::files::{load_json, write_atomic, write_atomic_raw};

type Entry = openraft::Entry<TypeConfig>;
type NodeId = u64;

/// Bytes before each record's body: length and CRC32.
const HEADER: usize = 8;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
}

struct Log {
    path: PathBuf,
    meta_path: PathBuf,
    file: File,
    entries: BTreeMap<u64, Entry>,
    meta: Meta,
}

/// The log of one controller member, in `dir` (`raft-log`, `meta.json`). Cheap to clone; clones
/// share the log (openraft reads through one while it appends through another).
#[derive(Clone)]
pub struct LogStore {
    log: Arc<Mutex<Log>>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`. Errors: I/O, or a damaged record or `meta.json`, the
    /// message naming the file and offset.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("raft-log");
        let meta_path = dir.join("meta.json");
        let meta: Meta = load_json(&meta_path)?.unwrap_or_default();
        let (mut entries, valid) = read_records(&path)?;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if file.metadata()?.len() > valid {
            tracing::warn!(file = %path.display(), offset = valid, "Raft log: an append cut short by a crash is dropped");
            file.set_len(valid)?;
            file.sync_all()?;
        }
        if let Some(purged) = meta.last_purged {
            entries.retain(|i, _| *i > purged.index);
        }
        Ok(LogStore { log: Arc::new(Mutex::new(Log { path, meta_path, file, entries, meta })) })
    }
}

/// Every whole record of the file at `path`, by log index, and the length they cover (bytes).
fn read_records(path: &Path) -> io::Result<(BTreeMap<u64, Entry>, u64)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let damaged = |at: usize, what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: Raft log record at offset {at}: {what}", path.display()),
        )
    };
    let mut entries = BTreeMap::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(body) = bytes.get(at + HEADER..at + HEADER + len) else { break };
        if crc32fast::hash(body) != crc {
            return Err(damaged(at, "checksum mismatch".into()));
        }
        let entry: Entry = serde_json::from_slice(body).map_err(|e| damaged(at, e.to_string()))?;
        entries.insert(entry.log_id.index, entry);
        at += HEADER + len;
    }
    Ok((entries, at as u64))
}

fn encode(out: &mut impl Write, entry: &Entry) -> io::Result<()> {
    let body = serde_json::to_vec(entry)?;
    let len =
        u32::try_from(body.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "Raft entry over 4 GiB"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&crc32fast::hash(&body).to_le_bytes())?;
    out.write_all(&body)
}

impl Log {
    /// Replaces the file with the entries held (after a truncation or a purge).
    fn rewrite(&mut self) -> io::Result<()> {
        write_atomic_raw(&self.path, |w| self.entries.values().try_for_each(|e| encode(w, e)))?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        Ok(())
    }
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        Ok(self.log.lock().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let log = self.log.lock();
        let last_purged_log_id = log.meta.last_purged;
        let last_log_id = log.entries.values().next_back().map(|e| e.log_id).or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut log = self.log.lock();
        log.meta.vote = Some(*vote);
        write_atomic(&log.meta_path, &log.meta).map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.log.lock().meta.vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut log = self.log.lock();
        let mut buf = Vec::new();
        let entries: Vec<Entry> = entries.into_iter().collect();
        for e in &entries {
            encode(&mut buf, e).map_err(write_err)?;
        }
        let written = log.file.write_all(&buf).and_then(|()| log.file.sync_data());
        if let Err(e) = written {
            let report = io::Error::new(e.kind(), format!("{}: {e}", log.path.display()));
            callback.log_io_completed(Err(e));
            return Err(write_err(report));
        }
        log.entries.extend(entries.into_iter().map(|e| (e.log_id.index, e)));
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut log = self.log.lock();
        log.entries.split_off(&log_id.index);
        log.rewrite().map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut log = self.log.lock();
        // The purge point is durable before the entries go: a crash in between leaves entries
        // that opening drops again.
        log.meta.last_purged = Some(log_id);
        write_atomic(&log.meta_path, &log.meta).map_err(write_err)?;
        log.entries = log.entries.split_off(&(log_id.index + 1));
        log.rewrite().map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};

    use super::*;
    use crate::controller::state::Decision;

    fn entry(index: u64) -> Entry {
        let d = Decision::Elect { group: "g".into(), master: format!("m{index}:1"), replaces: index - 1, epoch: index };
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(d) }
    }

    async fn indexes(s: &mut LogStore) -> Vec<u64> {
        s.try_get_log_entries(..).await.unwrap().iter().map(|e| e.log_id.index).collect()
    }

    fn append_raw(path: &Path, entries: &[Entry]) {
        let mut f = OpenOptions::new().create(true).append(true).open(path).unwrap();
        entries.iter().for_each(|e| encode(&mut f, e).unwrap());
    }

    #[tokio::test]
    async fn survives_reopen_truncate_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        append_raw(&dir.path().join("raft-log"), &(1..=5).map(entry).collect::<Vec<_>>());
        let mut s = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut s).await, [1, 2, 3, 4, 5]);
        s.truncate(LogId::new(CommittedLeaderId::new(1, 1), 4)).await.unwrap();
        s.purge(LogId::new(CommittedLeaderId::new(1, 1), 1)).await.unwrap();
        let vote = Vote::new(3, 2);
        s.save_vote(&vote).await.unwrap();
        drop(s);
        let mut s = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut s).await, [2, 3]);
        assert_eq!(s.read_vote().await.unwrap(), Some(vote));
        let state = s.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(1));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
    }

    #[test]
    fn a_torn_tail_is_dropped_and_a_damaged_record_refused_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log");
        append_raw(&path, &[entry(1), entry(2)]);
        let whole = std::fs::metadata(&path).unwrap().len();
        // A crash during the third append left part of it.
        let mut third = Vec::new();
        encode(&mut third, &entry(3)).unwrap();
        OpenOptions::new().append(true).open(&path).unwrap().write_all(&third[..third.len() / 2]).unwrap();
        let s = LogStore::open(dir.path()).unwrap();
        assert_eq!(s.log.lock().entries.len(), 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole, "the torn tail is cut");
        drop(s);
        // A flipped byte inside the second record (a whole one) is refused, naming its offset.
        let mut bytes = std::fs::read(&path).unwrap();
        let second = HEADER + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        bytes[second + HEADER + 3] ^= 0x20;
        std::fs::write(&path, bytes).unwrap();
        let err = LogStore::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("raft-log") && err.contains(&format!("offset {second}")), "{err}");
    }
}
