//! Retention: deletes the oldest CommitLog segments once they are older than the reserved time or
//! the disk is too full, then the ConsumeQueue and IndexFile files that only point into them
//! (RocketMQ `CleanCommitLogService` and `CleanConsumeQueueService`). The broker decides when and
//! how far (it knows which records are still needed); this module only deletes, oldest first,
//! never the segment being written and never past the offset it is told to keep.

use std::io;
use std::path::{Path, PathBuf};

use super::commitlog::{read_in_file, ReadAt};
use super::mapped_file::MappedFile;
use super::Store;

/// How far one retention pass may go.
#[derive(Debug, Clone, Copy)]
pub struct RetentionPass {
    /// CommitLog offset that must stay readable: only segments that end at or below it may go.
    /// The store lowers it to what has been dispatched to the ConsumeQueues.
    pub keep_from: u64,
    /// A segment may go once it was closed (its last record written) at or before this time,
    /// ms since the Unix epoch: now minus `file_reserved_hours`.
    pub closed_before_ms: u64,
    /// Delete even segments that are not old enough (disk above `disk_max_used_ratio`).
    pub force: bool,
    /// Segments to delete at most.
    pub max_segments: usize,
}

/// What one retention pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// CommitLog segment files deleted, oldest first.
    pub segments: Vec<PathBuf>,
    /// ConsumeQueue files deleted.
    pub consume_queue_files: usize,
    /// IndexFiles deleted.
    pub index_files: usize,
    /// The CommitLog's first offset after the pass, bytes.
    pub min_offset: u64,
}

/// Time the segment after `next` was closed: the store time of the first record of `next`, since
/// the writer only moves on when a record does not fit. `None` if that record is unreadable.
fn closed_ms(next: &MappedFile, limit: u64) -> Option<u64> {
    match read_in_file(next, next.start(), limit) {
        Ok(ReadAt::Record(rec, _)) => Some(rec.store_timestamp),
        _ => None,
    }
}

impl Store {
    /// Runs one retention pass (see [`RetentionPass`]): deletes the oldest CommitLog segments that
    /// may go, then the ConsumeQueue files and IndexFiles whose entries all point into them, and
    /// moves each ConsumeQueue's minimum offset past deleted messages. ConsumeQueues are corrected
    /// before the segments are unlinked, so a consumer never gets an entry whose message is gone
    /// (readers already holding a segment keep its mapping until they drop it).
    /// Errors: I/O unlinking a file (named); what was deleted before it stays deleted.
    pub fn delete_old_segments(&self, pass: RetentionPass) -> io::Result<Deleted> {
        let keep_from = pass.keep_from.min(self.dispatched());
        let limit = self.commitlog.committed();
        let segs = self.commitlog.files().segments();
        let mut n = 0;
        while n + 1 < segs.len() && n < pass.max_segments && segs[n].end() <= keep_from {
            if !pass.force {
                match closed_ms(&segs[n + 1], limit) {
                    Some(t) if t <= pass.closed_before_ms => {}
                    Some(_) => break,
                    None => {
                        tracing::warn!(file = %segs[n + 1].path().display(), "cannot read the first record of a segment; keeping the one before it");
                        break;
                    }
                }
            }
            n += 1;
        }
        let mut deleted = Deleted { min_offset: self.commitlog.min_offset(), ..Default::default() };
        if n == 0 {
            return Ok(deleted);
        }
        let min = segs[n].start();
        for (_, q) in self.cqs.all() {
            deleted.consume_queue_files += q.delete_below_physical(min)?;
        }
        deleted.segments = self.commitlog.files().delete_first(n)?;
        deleted.index_files = self.index.lock().delete_below_physical(min)?;
        deleted.min_offset = self.commitlog.min_offset();
        Ok(deleted)
    }
}

/// The used share of the filesystem holding `path`, 0.0..=1.0, computed as `df` does:
/// used / (used + available to unprivileged users). Errors: I/O (statvfs).
pub fn disk_used_ratio(path: &Path) -> io::Result<f64> {
    let st = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    let used = st.f_blocks.saturating_sub(st.f_bfree);
    let total = used + st.f_bavail;
    Ok(if total == 0 { 0.0 } else { used as f64 / total as f64 })
}
