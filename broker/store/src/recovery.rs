//! Crash recovery and the CommitLog scan it shares with the dispatcher.
//!
//! RocketMQ cuts the CommitLog at the first record that fails its checks. That would throw away
//! acknowledged messages stored after a single damaged record, so recovery here tells the two
//! cases apart: a bad region with a valid record after it (in the same segment, found by searching
//! for the next record that verifies, or in a later segment) is a corrupt middle region: reported
//! with file and offset and skipped. A bad region with nothing valid after it is a torn tail (the
//! last write was interrupted): it is zeroed and the log continues from there.

use std::collections::HashMap;
use std::path::PathBuf;

use super::checkpoint;
use super::commitlog::{read_in_file, CommitLog, ReadAt};
use super::consume_queue::ConsumeQueueTable;
use super::index_file::IndexService;
use super::mapped_file::MappedFile;
use super::record::{self, Record};
use super::{dispatch_record, StoreConfig, StoreError};

/// A damaged CommitLog region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// Segment file holding it.
    pub file: PathBuf,
    /// Offset of the region in that file, bytes.
    pub file_offset: u64,
    /// CommitLog offset of the region.
    pub offset: u64,
    /// Length of the region, bytes.
    pub len: u64,
    /// What was wrong with the first bytes of it.
    pub reason: String,
}

/// What recovery found.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// CommitLog offset recovery started from (the checkpoint).
    pub from: u64,
    /// CommitLog end after recovery: the next record goes here.
    pub end: u64,
    /// Records re-dispatched into ConsumeQueues and IndexFiles.
    pub records: u64,
    /// Corrupt regions that were skipped (valid records follow them).
    pub corrupt: Vec<Corruption>,
    /// The torn tail that was cut, if any.
    pub truncated: Option<Corruption>,
}

/// How a scan ended.
pub(crate) struct ScanEnd {
    /// Offset after the last good record.
    pub next: u64,
    /// Set if the scan stopped at bytes that are not a record and nothing valid follows them.
    pub torn: Option<Corruption>,
}

fn region(file: &MappedFile, offset: u64, end: u64, reason: String) -> Corruption {
    Corruption {
        file: file.path().to_path_buf(),
        file_offset: offset - file.start(),
        offset,
        len: end - offset,
        reason,
    }
}

/// Finds the next offset in `file` at or after `from` (below `limit`) where a record verifies.
fn resync(file: &MappedFile, from: u64, limit: u64) -> Option<u64> {
    let end = file.end().min(limit);
    let magic = record::MESSAGE_MAGIC.to_be_bytes();
    let mut p = from;
    while p + 8 <= end {
        let window = file.slice(p - file.start() + 4, 4);
        if window == magic {
            if let Ok(ReadAt::Record(..)) = read_in_file(file, p, limit) {
                return Some(p);
            }
        } else if window == record::BLANK_MAGIC.to_be_bytes() {
            if let Ok(record::Peek::Blank(size)) = record::peek(file.slice(p - file.start(), 8)) {
                if p + size as u64 == file.end() {
                    return Some(p);
                }
            }
        }
        p += 1;
    }
    None
}

/// Visits every record in `from..limit`, skipping (and reporting through `on_corrupt`) damaged
/// regions that valid records follow. Returns where it stopped.
pub(crate) fn scan_raw(
    log: &CommitLog,
    from: u64,
    limit: u64,
    mut on_record: impl FnMut(&Record, u32),
    mut on_corrupt: impl FnMut(&Corruption),
) -> ScanEnd {
    let mut pos = from;
    while pos < limit {
        let Some(file) = log.files().find(pos) else {
            break;
        };
        match read_in_file(&file, pos, limit) {
            Ok(ReadAt::Record(rec, next)) => {
                on_record(&rec, (next - pos) as u32);
                pos = next;
            }
            Ok(ReadAt::Blank(next)) => pos = next,
            Ok(ReadAt::End) if file.end() < limit => {
                // Zeros where a record or a filler should be, with later segments after it.
                on_corrupt(&region(&file, pos, file.end(), "unexpected zero bytes".into()));
                pos = file.end();
            }
            Ok(ReadAt::End) => break,
            Err(e) => {
                let reason = match e {
                    StoreError::Corrupt { reason, .. } => reason,
                    other => other.to_string(),
                };
                if let Some(next) = resync(&file, pos + 1, limit) {
                    on_corrupt(&region(&file, pos, next, reason));
                    pos = next;
                } else if file.end() < limit {
                    on_corrupt(&region(&file, pos, file.end(), reason));
                    pos = file.end();
                } else {
                    let end = file.end().min(limit);
                    return ScanEnd { next: pos, torn: Some(region(&file, pos, end, reason)) };
                }
            }
        }
    }
    ScanEnd { next: pos, torn: None }
}

/// [`scan_raw`] for live use: a torn end below `limit` cannot happen while running, so it is an error.
pub(crate) fn scan(
    log: &CommitLog,
    from: u64,
    limit: u64,
    on_record: impl FnMut(&Record, u32),
    on_corrupt: impl FnMut(&Corruption),
) -> Result<u64, StoreError> {
    let end = scan_raw(log, from, limit, on_record, on_corrupt);
    match end.torn {
        None => Ok(end.next),
        Some(c) => {
            Err(StoreError::Corrupt { file: c.file, file_offset: c.file_offset, offset: c.offset, reason: c.reason })
        }
    }
}

/// Opens and recovers the store's files. See the module docs.
pub(crate) fn recover(
    cfg: &StoreConfig,
) -> Result<(CommitLog, ConsumeQueueTable, IndexService, RecoveryReport), StoreError> {
    std::fs::create_dir_all(&cfg.data_dir)?;
    let log = CommitLog::open(&cfg.data_dir.join("commitlog"), cfg.commitlog_segment_bytes, 0)?;
    let segments = log.files().segments();
    let (min, max) = match (segments.first(), segments.last()) {
        (Some(a), Some(b)) => (a.start(), b.end()),
        _ => (0, 0),
    };
    let cp_path = cfg.data_dir.join("checkpoint");
    let cp = match checkpoint::load(&cp_path) {
        Ok(cp) => cp.unwrap_or_default(),
        // Everything the checkpoint says can be rebuilt from the CommitLog: scan all of it.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            tracing::error!(error = %e, "unreadable checkpoint; rebuilding ConsumeQueues and IndexFiles from the whole CommitLog");
            checkpoint::Checkpoint::default()
        }
        Err(e) => return Err(e.into()),
    };
    let from = cp.dispatched.clamp(min, max);
    let cqs = ConsumeQueueTable::load(&cfg.data_dir.join("consumequeue"), cfg.consume_queue_entries_per_file)?;
    for (_, q) in cqs.all() {
        // Retention may have deleted segments and stopped before the ConsumeQueue files.
        q.delete_below_physical(min)?;
        q.truncate_from_physical(from)?;
    }
    let mut index = IndexService::load(&cfg.data_dir.join("index"), cfg.index_slots, cfg.index_max_entries)?;
    index.delete_below_physical(min)?;
    let mut report = RecoveryReport { from, ..Default::default() };
    // Let reads see every byte while scanning; the real end is set below.
    log.set_end(max);
    let end = scan_raw(
        &log,
        from,
        max,
        |rec, size| {
            report.records += 1;
            dispatch_record(&cqs, &mut index, rec, size);
        },
        |c| {
            tracing::error!(file = %c.file.display(), file_offset = c.file_offset, len = c.len, reason = %c.reason,
                "corrupt CommitLog record skipped; the records before and after it stay readable");
            report.corrupt.push(c.clone());
        },
    );
    if let Some(torn) = end.torn {
        tracing::warn!(file = %torn.file.display(), file_offset = torn.file_offset, len = torn.len, reason = %torn.reason,
            "cutting a torn CommitLog tail (an interrupted write)");
        if let Some(f) = log.files().find(torn.offset) {
            f.zero_from(torn.file_offset)?;
        }
        report.truncated = Some(torn);
    }
    report.end = end.next;
    log.set_end(end.next);
    let table: HashMap<(String, u32), u64> = cqs.all().into_iter().map(|(k, q)| (k, q.max_offset())).collect();
    log.set_queue_offsets(table);
    for (_, q) in cqs.all() {
        q.flush()?;
    }
    index.flush()?;
    crate::files::write_atomic(
        &cfg.data_dir.join("checkpoint"),
        &checkpoint::Checkpoint { dispatched: end.next, written_ms: super::now_ms() },
    )?;
    if report.records > 0 || !report.corrupt.is_empty() || report.truncated.is_some() {
        tracing::info!(
            from = report.from,
            end = report.end,
            records = report.records,
            corrupt = report.corrupt.len(),
            truncated = report.truncated.is_some(),
            "CommitLog recovered"
        );
    }
    Ok((log, cqs, index, report))
}
