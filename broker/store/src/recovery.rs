//! Crash recovery and the CommitLog scan it shares with the dispatcher.
//!
//! RocketMQ cuts the CommitLog at the first record that fails its checks. That would throw away
//! acknowledged messages stored after a single damaged record, so recovery here tells the two
//! cases apart: a bad region with a valid record after it (in the same segment, found by searching
//! for the next record that verifies, or in a later segment) is a corrupt middle region: reported
//! with file and offset and skipped. A bad region with nothing valid after it is a torn tail (the
//! last write was interrupted): it is zeroed and the log continues from there.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;

use super::checkpoint;
use super::commitlog::{view_in_file, CommitLog, ReadAt};
use super::consume_queue::ConsumeQueueTable;
use super::index_file::IndexService;
use super::mapped_file::MappedFile;
use super::record::{self, Record, RecordView};
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
    /// Records below this offset have their ConsumeQueue entries (`end` unless the disk was
    /// too full to write one: the dispatcher goes on from here).
    pub dispatched: u64,
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
            if let Ok(ReadAt::Record(..)) = view_in_file(file, p, limit) {
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

/// Visits every record in `from..limit`, borrowed from the segment, skipping (and reporting
/// through `on_corrupt`) damaged regions that valid records follow, until `on_record` breaks (the
/// scan then ends at that record). Returns where it stopped.
pub(crate) fn scan_raw(
    log: &CommitLog,
    from: u64,
    limit: u64,
    mut on_record: impl FnMut(&RecordView) -> ControlFlow<()>,
    mut on_corrupt: impl FnMut(&Corruption),
) -> ScanEnd {
    let mut pos = from;
    while pos < limit {
        let Some(file) = log.files().find(pos) else {
            break;
        };
        match view_in_file(&file, pos, limit) {
            Ok(ReadAt::Record(rec, next)) => {
                if on_record(&rec).is_break() {
                    break;
                }
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
    mut on_record: impl FnMut(&Record, u32),
    on_corrupt: impl FnMut(&Corruption),
) -> Result<u64, StoreError> {
    let visit = |rec: &RecordView| {
        on_record(&rec.to_record(), rec.size);
        ControlFlow::Continue(())
    };
    let end = scan_raw(log, from, limit, visit, on_corrupt);
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
    // Spare segments (never written: their first bytes are zero) lie past the log's end.
    let written = segments.iter().rposition(|f| f.slice(0, 8) != [0u8; 8]).map_or(1, |i| i + 1);
    let (min, max) = match (segments.first(), segments.get(written.min(segments.len()).saturating_sub(1))) {
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
    let cqs = ConsumeQueueTable::load(&cfg.data_dir, cfg.consume_queue_store, cfg.consume_queue_entries_per_file)?;
    // A missing ConsumeQueue store (deleted, or a data directory switched to the other store)
    // is rebuilt from the whole CommitLog: the checkpoint speaks of the one that was there.
    let from = if cqs.fresh() { min } else { cp.dispatched.clamp(min, max) };
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
    // Next queue offsets as the records say (a ConsumeQueue that could not be written on a full
    // disk lags behind them); dispatching stops at the first record whose entry cannot be
    // written, and the dispatcher goes on from there once there is space.
    let mut next_offsets: HashMap<(String, u32), u64> = HashMap::new();
    let mut undispatched: Option<u64> = None;
    let end = scan_raw(
        &log,
        from,
        max,
        |rec| {
            report.records += 1;
            if rec.sys_flag & super::SYS_FLAG_NO_DISPATCH == 0 {
                let next = next_offsets.entry((rec.topic.to_string(), rec.queue_id)).or_default();
                *next = (*next).max(rec.queue_offset + 1);
            }
            if undispatched.is_none() {
                if let Err(e) = dispatch_record(&cqs, &mut index, rec) {
                    tracing::error!(offset = rec.physical_offset, error = %e,
                        "cannot write a ConsumeQueue entry during recovery; the dispatcher resumes here once there is space");
                    undispatched = Some(rec.physical_offset);
                }
            }
            ControlFlow::Continue(())
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
    if let Err(e) = cqs.commit() {
        tracing::error!(error = %e, "cannot write ConsumeQueue entries during recovery; the dispatcher writes them again");
        undispatched = Some(from);
    }
    report.end = end.next;
    report.dispatched = undispatched.unwrap_or(end.next);
    log.set_end(end.next);
    let mut table: HashMap<(String, u32), u64> = cqs.all().into_iter().map(|(k, q)| (k, q.max_offset())).collect();
    for (k, next) in next_offsets {
        let t = table.entry(k).or_default();
        *t = (*t).max(next);
    }
    log.set_queue_offsets(table);
    cqs.flush()?;
    index.flush()?;
    let cp = checkpoint::Checkpoint { dispatched: report.dispatched, written_ms: super::now_ms() };
    crate::files::write_or_skip(&cfg.data_dir.join("checkpoint"), &cp, "checkpoint")?;
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
