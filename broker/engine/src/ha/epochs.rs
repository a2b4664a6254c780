//! A broker's epoch history (RocketMQ `EpochFileCache`, Kafka's leader epoch cache): for every
//! epoch in which its log grew, the CommitLog offset where that epoch's master started writing.
//! A master adds an entry when elected; a slave adopts its master's history. Comparing two
//! histories gives the last offset where two logs agree: a returning old master truncates its
//! log to it before replicating from the new master.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::files::{load_json, write_atomic};

/// One epoch: from `start` (a CommitLog offset, bytes) on, the log was written by the master
/// elected in `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    /// Controller epoch.
    pub epoch: u64,
    /// CommitLog offset of the epoch's first byte.
    pub start: u64,
}

/// The epoch history of one broker, persisted in `<data_dir>/config/epochs.json`.
#[derive(Debug)]
pub struct EpochHistory {
    path: PathBuf,
    entries: Vec<Epoch>,
}

impl EpochHistory {
    /// Loads the history at `path` (empty if absent). Errors: unreadable or malformed file,
    /// naming it.
    pub fn load(path: &Path) -> io::Result<EpochHistory> {
        Ok(EpochHistory { path: path.to_path_buf(), entries: load_json(path)?.unwrap_or_default() })
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> &[Epoch] {
        &self.entries
    }

    /// The newest epoch (0 if none).
    pub fn last_epoch(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.epoch)
    }

    /// Records that this broker, elected master in `epoch`, writes from `start` on. A repeated
    /// epoch is ignored. Errors: I/O (the entry is not kept).
    pub fn begin(&mut self, epoch: u64, start: u64) -> io::Result<()> {
        if epoch <= self.last_epoch() {
            return Ok(());
        }
        self.entries.push(Epoch { epoch, start });
        self.save().inspect_err(|_| {
            self.entries.pop();
        })
    }

    /// Replaces the history with the master's (a slave's log is a prefix of its master's).
    /// Errors: I/O.
    pub fn adopt(&mut self, entries: Vec<Epoch>) -> io::Result<()> {
        if entries != self.entries {
            self.entries = entries;
            self.save()?;
        }
        Ok(())
    }

    fn save(&self) -> io::Result<()> {
        write_atomic(&self.path, &self.entries)
    }
}

/// The offset up to which two logs agree, given each one's history and end (bytes): the end
/// of the newest epoch both have with the same start, bounded by both logs (RocketMQ
/// `EpochFileCache.findConsistentPoint`). `None` if they share no epoch: the logs have nothing in
/// common that can be proven.
pub fn consistent_point(mine: &[Epoch], my_end: u64, theirs: &[Epoch], their_end: u64) -> Option<u64> {
    let end_of = |h: &[Epoch], i: usize, log_end: u64| h.get(i + 1).map_or(log_end, |n| n.start).min(log_end);
    for (i, e) in mine.iter().enumerate().rev() {
        if let Some(j) = theirs.iter().position(|t| t.epoch == e.epoch && t.start == e.start) {
            return Some(end_of(mine, i, my_end).min(end_of(theirs, j, their_end)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[(u64, u64)]) -> Vec<Epoch> {
        v.iter().map(|(epoch, start)| Epoch { epoch: *epoch, start: *start }).collect()
    }

    #[test]
    fn the_consistent_point_cuts_an_old_masters_unreplicated_tail() {
        // The old master wrote epoch 1 up to 1000; its slave had 900 when it was elected (epoch 2).
        let old = h(&[(1, 0)]);
        let new = h(&[(1, 0), (2, 900)]);
        assert_eq!(consistent_point(&old, 1000, &new, 1500), Some(900));
        // A slave behind the point keeps everything it has.
        assert_eq!(consistent_point(&old, 700, &new, 1500), Some(700));
        // Same history: the shorter log.
        assert_eq!(consistent_point(&new, 1200, &new, 1500), Some(1200));
        // Two failovers: the common epoch is 2, which ended at 1300 on the master.
        let twice = h(&[(1, 0), (2, 900), (3, 1300)]);
        assert_eq!(consistent_point(&h(&[(1, 0), (2, 900)]), 1400, &twice, 2000), Some(1300));
        // Nothing in common.
        assert_eq!(consistent_point(&h(&[(5, 0)]), 10, &new, 1500), None);
    }

    #[test]
    fn the_history_persists_and_ignores_old_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epochs.json");
        let mut e = EpochHistory::load(&path).unwrap();
        e.begin(1, 0).unwrap();
        e.begin(1, 50).unwrap();
        e.begin(3, 100).unwrap();
        assert_eq!(EpochHistory::load(&path).unwrap().entries(), h(&[(1, 0), (3, 100)]).as_slice());
        e.adopt(h(&[(1, 0), (2, 80)])).unwrap();
        assert_eq!(EpochHistory::load(&path).unwrap().last_epoch(), 2);
        std::fs::write(&path, "[oops").unwrap();
        assert!(EpochHistory::load(&path).unwrap_err().to_string().contains("epochs.json"));
    }
}
