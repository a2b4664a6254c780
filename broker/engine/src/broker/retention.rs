//! Retention and disk safety for the engine: how far old CommitLog segments may be deleted
//! (never past a record the broker still needs), when to delete them early, and when to refuse
//! new messages. RocketMQ's defaults: segments kept `file_reserved_hours` (72), deleted early
//! above `disk_max_used_ratio` (0.75), sends refused above `disk_refuse_write_ratio` (0.90,
//! RocketMQ `diskSpaceWarningLevelRatio`). Reads, acks and everything the broker writes for
//! itself (acks, transaction ends, scheduled deliveries, dead letters) go on when sends are refused.
//!
//! The used share is measured by every retention pass and whenever the CommitLog creates a
//! segment (the moment the disk fills fastest), so a send is checked against a figure at most one
//! segment old; the store's spare segment ([`crate::store::RecordClass`]) is the hard limit
//! behind it when another process fills the disk.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::{Broker, BrokerError};
use crate::store::now_ms;
use crate::store::retention::{self, Deleted, RetentionPass};

/// Most segments one pass deletes for age, and most it deletes early under disk pressure
/// (RocketMQ `deleteFileBatchMax`, 10).
const BATCH: usize = 10;

/// What the last measurement saw of the data disk.
#[derive(Debug, Default)]
pub(super) struct DiskGuard {
    /// `disk_max_used_ratio` and `disk_refuse_write_ratio`.
    max_used: f64,
    refuse_above: f64,
    /// Used share of the data disk, `f64` bits.
    used_bits: AtomicU64,
    /// Set while the used share is above `disk_max_used_ratio` (for logging transitions).
    above_max: AtomicBool,
    /// Set while sends are refused.
    refusing: AtomicBool,
    /// One pass at a time: two passes would both try to delete the same oldest files.
    pass: parking_lot::Mutex<()>,
}

impl DiskGuard {
    pub(super) fn new(max_used: f64, refuse_above: f64) -> DiskGuard {
        DiskGuard { max_used, refuse_above, ..Default::default() }
    }

    /// Records a measurement of the used share (0.0..=1.0): sends are refused while it is above
    /// `disk_refuse_write_ratio`; transitions are logged. Returns whether sends are refused.
    pub(super) fn observe(&self, used: f64) -> bool {
        self.used_bits.store(used.to_bits(), Ordering::Release);
        let refusing = used > self.refuse_above;
        if refusing != self.refusing.swap(refusing, Ordering::AcqRel) {
            if refusing {
                tracing::error!(
                    used,
                    limit = self.refuse_above,
                    "data disk above disk_refuse_write_ratio: refusing new messages"
                );
            } else {
                tracing::info!(used, "data disk below disk_refuse_write_ratio: accepting new messages again");
            }
        }
        refusing
    }

    /// Measures the data disk at `dir` and records it ([`DiskGuard::observe`]); a failed
    /// measurement is logged and changes nothing.
    pub(super) fn measure(&self, dir: &std::path::Path) {
        match retention::disk_used_ratio(dir) {
            Ok(used) => {
                self.observe(used);
            }
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot measure the data disk"),
        }
    }
}

/// What one retention pass did.
#[derive(Debug, Clone, Default)]
pub struct CleanReport {
    /// Files deleted (CommitLog segments, ConsumeQueue files, IndexFiles).
    pub deleted: Deleted,
    /// Used share of the data disk after the pass, 0.0..=1.0.
    pub used_ratio: f64,
    /// True if sends are refused until a later pass sees the disk below `disk_refuse_write_ratio`.
    pub refusing_writes: bool,
}

impl Broker {
    /// CommitLog offset below which the broker needs no record: the oldest pending half message,
    /// the oldest scheduled message, and the offset the last state snapshot was taken at (ack,
    /// half, op and timer records after it are replayed on start).
    pub fn retention_floor(&self) -> u64 {
        let mut floor = self.snapshot_offset.load(Ordering::Acquire);
        if let Some(t) = self.timer.lock().min_physical_offset() {
            floor = floor.min(t);
        }
        if let Some(p) = self.tx.lock().pending().values().next() {
            // Half queue offsets grow with CommitLog offsets: the first pending is the oldest.
            floor = floor.min(p.physical_offset);
        }
        floor
    }

    /// One retention pass at `now_ms`: deletes segments closed more than `file_reserved_hours`
    /// ago, then, while `used_ratio()` is above `disk_max_used_ratio`, the oldest segment one at a
    /// time (at most 10 of each), never past [`Broker::retention_floor`]; then refuses sends if
    /// the disk is still above `disk_refuse_write_ratio`. `used_ratio` measures the data disk
    /// (0.0..=1.0); tests pass their own. Concurrent calls run one after the other. Errors: I/O deleting a file or measuring the disk.
    pub fn clean(&self, now_ms: u64, mut used_ratio: impl FnMut() -> io::Result<f64>) -> io::Result<CleanReport> {
        let _one_pass = self.disk.pass.lock();
        let floor = self.retention_floor();
        let reserved_ms = self.cfg.file_reserved_hours.saturating_mul(3_600_000);
        let mut pass = RetentionPass {
            keep_from: floor,
            closed_before_ms: now_ms.saturating_sub(reserved_ms),
            force: false,
            max_segments: BATCH,
        };
        let mut deleted = self.store.delete_old_segments(pass)?;
        let mut used = used_ratio()?;
        let above_max = used > self.disk.max_used;
        if above_max != self.disk.above_max.swap(above_max, Ordering::AcqRel) {
            if above_max {
                tracing::warn!(
                    used,
                    limit = self.cfg.disk_max_used_ratio,
                    "data disk above disk_max_used_ratio: deleting the oldest CommitLog segments early"
                );
            } else {
                tracing::info!(used, "data disk back below disk_max_used_ratio");
            }
        }
        pass.force = true;
        pass.max_segments = 1;
        let mut forced = 0;
        while used > self.cfg.disk_max_used_ratio && forced < BATCH {
            let d = self.store.delete_old_segments(pass)?;
            if d.segments.is_empty() {
                tracing::debug!(floor, "the oldest CommitLog segment still holds records the broker needs");
                break;
            }
            deleted.segments.extend(d.segments);
            deleted.consume_queue_files += d.consume_queue_files;
            deleted.index_files += d.index_files;
            deleted.min_offset = d.min_offset;
            forced += 1;
            used = used_ratio()?;
        }
        if !deleted.segments.is_empty() {
            tracing::info!(
                segments = deleted.segments.len(),
                consume_queue_files = deleted.consume_queue_files,
                index_files = deleted.index_files,
                min_offset = deleted.min_offset,
                early = forced,
                "retention deleted old CommitLog segments"
            );
            self.metrics.retention.segments_deleted.inc_by(deleted.segments.len() as u64);
        }
        let refusing = self.disk.observe(used);
        self.metrics.retention.disk_used_ratio.set(used);
        Ok(CleanReport { deleted, used_ratio: used, refusing_writes: refusing })
    }

    /// Refuses a new message while the data disk is above `disk_refuse_write_ratio`.
    /// Errors: [`BrokerError::DiskFull`].
    pub(super) fn check_disk(&self) -> Result<(), BrokerError> {
        if !self.disk.refusing.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(BrokerError::DiskFull {
            used: f64::from_bits(self.disk.used_bits.load(Ordering::Acquire)),
            limit: self.disk.refuse_above,
        })
    }

    /// The retention thread: one [`Broker::clean`] pass at start (so a full disk refuses sends
    /// at once) and every `clean_interval_ms` after.
    pub(super) fn clean_loop(&self) {
        let dir = self.cfg.data_dir.clone();
        self.every(Duration::from_millis(self.cfg.clean_interval_ms), true, || {
            if let Err(e) = self.clean(now_ms(), || retention::disk_used_ratio(&dir)) {
                tracing::error!(error = %e, "retention pass failed; retried");
            }
        });
    }
}
