#![warn(missing_docs)]
//! The storage engine: CommitLog, ConsumeQueues, IndexFiles, checkpoint, flush and recovery.
//! It knows nothing of the network, of consumers or of an async runtime; it stores records and
//! finds them again, and tells whoever opened it of its progress through [`Listeners`].
//!
//! Retention ([`retention`]) deletes old segments when the broker asks.
//!
//! Threads: the dispatcher turns new CommitLog records into ConsumeQueue and IndexFile entries
//! (RocketMQ `ReputMessageService`) and maps the CommitLog pages ahead of the writer
//! ([`CommitLog::populate_ahead`]); the flush thread fsyncs the CommitLog (every
//! `flush_interval_ms` for ASYNC_FLUSH, as soon as a writer waits for SYNC_FLUSH: group commit)
//! and writes the checkpoint once a second.

pub mod checkpoint;
pub mod commitlog;
pub mod consume_queue;
pub mod files;
pub mod index_file;
pub mod mapped_file;
pub mod record;
mod recovery;
pub mod retention;

use std::collections::HashMap;
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use thiserror::Error;

pub use commitlog::RecordClass;
use commitlog::{AppendResult, CommitLog, ReadAt};
pub use consume_queue::ConsumeQueueStore;
use consume_queue::{message_group_hash, tag_hash, ConsumeQueue, ConsumeQueueTable, CqEntry};
use index_file::IndexService;
use record::{Record, RecordView};
pub use recovery::{Corruption, RecoveryReport};

/// sys_flag bit: the record gets no ConsumeQueue or IndexFile entry (internal logs such as acks).
pub const SYS_FLAG_NO_DISPATCH: u32 = 1 << 16;
/// Property: the message's tag (RocketMQ `TAGS`).
pub const PROP_TAGS: &str = "TAGS";
/// Property: the message's keys, separated by [`KEY_SEPARATOR`] (RocketMQ `KEYS`).
pub const PROP_KEYS: &str = "KEYS";
/// Property: the client's message id (RocketMQ `UNIQ_KEY`).
pub const PROP_MSG_ID: &str = "UNIQ_KEY";
/// Property: message group of a FIFO message (RocketMQ `__SHARDINGKEY`).
pub const PROP_MESSAGE_GROUP: &str = "__SHARDINGKEY";
/// Separator of keys in [`PROP_KEYS`] (RocketMQ uses a space).
pub const KEY_SEPARATOR: char = ' ';

/// How long the dispatcher lets appends accumulate after a pass that found work, before it looks
/// again (1 ms, RocketMQ `ReputMessageService`). An idle dispatcher is woken by the next append.
const DISPATCH_BATCH: Duration = Duration::from_millis(1);
/// How often the flush thread flushes the ConsumeQueues written since its last pass and the
/// IndexFiles, and writes the checkpoint: recovery re-dispatches at most this much of the
/// CommitLog.
/// Flushing every queue every second cost one random 4 KiB write per queue per second, which
/// with 80,000 queues outran the disk (docs/BENCHMARKS.md run 14); RocketMQ flushes its
/// ConsumeQueues thoroughly every 60 s (`flushConsumeQueueThoroughInterval`).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

/// When a send is acknowledged relative to the fsync of the CommitLog (RocketMQ `flushDiskType`).
/// Config values: `async`, `sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlushDiskType {
    /// Acknowledge once written to the page cache; a flush thread fsyncs every `flush_interval_ms`.
    Async,
    /// Acknowledge only after an fsync covering the message (group commit: one fsync serves every
    /// message written before it).
    Sync,
}

/// Callbacks the store makes from its own threads with its progress, so that the layer above
/// can wake its waiters (long polls, SYNC_FLUSH sends) however it likes. Each gets a CommitLog
/// offset in bytes, or a duration in ms.
#[derive(Default)]
pub struct Listeners {
    /// Every record below this offset is dispatched to the ConsumeQueues and IndexFiles.
    pub dispatched: Option<Box<dyn Fn(u64) + Send + Sync>>,
    /// The CommitLog is on disk below this offset. Called by whichever thread flushed (the flush
    /// thread, a writer leading a group commit, a checkpoint), one at a time, with offsets that
    /// only rise.
    pub flushed: Option<Box<dyn Fn(u64) + Send + Sync>>,
    /// A record was appended; the CommitLog now ends at this offset (replication streams wait
    /// on it: under SYNC replication they must not wait for the dispatcher).
    pub appended: Option<Box<dyn Fn(u64) + Send + Sync>>,
    /// A flush by the flush thread that wrote something took this long, ms.
    pub flush_ms: Option<Box<dyn Fn(f64) + Send + Sync>>,
    /// A CommitLog segment was created (its blocks reserved): the disk's free space changed.
    /// Called with the CommitLog's writer lock held, so it must be quick (a statvfs is).
    pub segment_created: Option<Box<dyn Fn() + Send + Sync>>,
}

impl Listeners {
    fn dispatched(&self, offset: u64) {
        if let Some(f) = &self.dispatched {
            f(offset)
        }
    }
    fn flushed(&self, offset: u64) {
        if let Some(f) = &self.flushed {
            f(offset)
        }
    }
}

/// Storage errors. Corruption names the segment file and offsets.
#[derive(Debug, Error)]
pub enum StoreError {
    /// An I/O error.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// The record cannot be encoded.
    #[error("cannot encode record: {0}")]
    Encode(#[from] record::EncodeError),
    #[error("record of {size} bytes does not fit in a CommitLog segment of {segment} bytes")]
    /// The record is larger than a segment.
    TooLarge {
        /// Record size, bytes.
        size: u64,
        /// Segment size, bytes.
        segment: u64,
    },
    /// Stored bytes fail their checks.
    #[error("corrupt record in {} at file offset {file_offset} (CommitLog offset {offset}): {reason}", file.display())]
    Corrupt {
        /// Segment file.
        file: PathBuf,
        /// Offset in that file, bytes.
        file_offset: u64,
        /// CommitLog offset.
        offset: u64,
        /// What failed.
        reason: String,
    },
    /// Nothing is stored at this CommitLog offset (deleted, or not yet written).
    #[error("no record at CommitLog offset {0}")]
    NotFound(u64),
    /// The store is stopping or stopped.
    #[error("store is shut down")]
    ShutDown,
    /// This store is a slave's copy: only its master's bytes are written to it.
    #[error("this broker is a slave: writes go to the master of its broker group")]
    ReadOnly,
    /// Only a slave's copy may be cut back ([`Store::truncate`] on a master).
    #[error("only a slave's CommitLog may be truncated")]
    NotReplica,
    /// The dispatcher did not reach the CommitLog's end within 30 s.
    #[error("the dispatcher is stuck at CommitLog offset {at} (end {end})")]
    DispatchStuck {
        /// Dispatched below this offset.
        at: u64,
        /// The CommitLog's end.
        end: u64,
    },
    /// No spare CommitLog segment can be created (the disk is full): new messages are refused
    /// so that control records (acks, transaction ends, deliveries, dead letters) keep the spare.
    #[error("disk full: {0}; new messages are refused until retention or an operator frees space")]
    NoSpace(String),
    /// Replicated bytes that do not continue the log.
    #[error("replicated bytes at CommitLog offset {got}, but the log ends at {expected}")]
    OutOfSequence {
        /// This log's end.
        expected: u64,
        /// Where the bytes were meant to go.
        got: u64,
    },
}

/// What the store needs from the broker config.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Root of the store's files.
    pub data_dir: PathBuf,
    /// ASYNC_FLUSH or SYNC_FLUSH.
    pub flush_disk_type: FlushDiskType,
    /// ASYNC_FLUSH period, ms.
    pub flush_interval_ms: u64,
    /// CommitLog segment size, bytes.
    pub commitlog_segment_bytes: u64,
    /// ConsumeQueue entries per file (the file store).
    pub consume_queue_entries_per_file: u64,
    /// Which store holds the ConsumeQueues.
    pub consume_queue_store: ConsumeQueueStore,
    /// Hash slots per IndexFile.
    pub index_slots: u32,
    /// Entries per IndexFile.
    pub index_max_entries: u32,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A wake-up flag for a background thread (lost wake-ups are impossible: the flag is kept).
/// Setting a flag that is already set costs one atomic swap: under load the appenders do not
/// take the lock or wake anyone while the thread has not yet consumed the last notification.
#[derive(Default)]
struct Signal {
    flag: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Signal {
    fn notify(&self) {
        if !self.flag.swap(true, Ordering::AcqRel) {
            // The lock orders this notify after a waiter's check of the flag (no lost wake-up).
            let _g = self.lock.lock();
            self.cv.notify_one();
        }
    }
    /// Waits until notified or `timeout` passes; clears the flag.
    fn wait(&self, timeout: Duration) {
        let mut g = self.lock.lock();
        if !self.flag.load(Ordering::Acquire) {
            self.cv.wait_for(&mut g, timeout);
        }
        // A swap, not a store: a notify that set the flag after a timed-out wait is then either
        // seen here (and its append with it) or left set for the next wait, never erased.
        self.flag.swap(false, Ordering::AcqRel);
    }
}

/// The store of one broker. Create with [`Store::open`]; stop with [`Store::shutdown`].
pub struct Store {
    cfg: StoreConfig,
    commitlog: CommitLog,
    cqs: ConsumeQueueTable,
    index: Mutex<IndexService>,
    dispatched: AtomicU64,
    /// The dispatcher stops before this CommitLog offset (`u64::MAX`: no limit); see
    /// [`Store::set_dispatch_limit`].
    dispatch_limit: AtomicU64,
    listeners: Listeners,
    dispatch_signal: Signal,
    flush_signal: Signal,
    /// Held by whoever flushes the CommitLog and publishes the offset: the flush thread, a writer
    /// leading a group commit inline ([`Store::try_flush_inline`]) or a checkpoint. So at most one
    /// writer's thread (a tokio worker in the broker) is ever blocked on the disk, and
    /// [`Listeners::flushed`] sees offsets in order.
    flushing: Mutex<()>,
    stopping: AtomicBool,
    /// Set on a slave: [`Store::append`] refuses, [`Store::append_raw`] writes.
    replica: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    recovery: RecoveryReport,
    /// Serialises checkpoint writes: the flush thread and the consumer snapshot both flush, and
    /// two writers of `checkpoint.tmp` could rename a half-written file into place.
    checkpoint_lock: Mutex<()>,
}

impl Store {
    /// Opens the store in `cfg.data_dir`, recovers it and starts its threads.
    ///
    /// Recovery scans the CommitLog from the checkpoint: valid records are re-dispatched; a corrupt
    /// record followed by valid ones is reported (file and offset) and skipped, never cut; an
    /// invalid tail with nothing valid after it (a torn write) is cut. See [`RecoveryReport`].
    /// Errors: I/O or malformed store files, each naming the file.
    pub fn open(cfg: StoreConfig, listeners: Listeners) -> Result<Arc<Store>, StoreError> {
        let (commitlog, cqs, index, recovery) = recovery::recover(&cfg)?;
        let store = Arc::new(Store {
            cfg,
            commitlog,
            cqs,
            index: Mutex::new(index),
            dispatched: AtomicU64::new(recovery.dispatched),
            dispatch_limit: AtomicU64::new(u64::MAX),
            listeners,
            dispatch_signal: Signal::default(),
            flush_signal: Signal::default(),
            flushing: Mutex::new(()),
            stopping: AtomicBool::new(false),
            replica: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            recovery,
            checkpoint_lock: Mutex::new(()),
        });
        let s = store.clone();
        let dispatcher = std::thread::Builder::new().name("dispatcher".into()).spawn(move || s.dispatch_loop())?;
        let s = store.clone();
        let flusher = std::thread::Builder::new().name("flush".into()).spawn(move || s.flush_loop())?;
        store.threads.lock().extend([dispatcher, flusher]);
        Ok(store)
    }

    /// What recovery found when the store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Root of the store's files.
    pub fn data_dir(&self) -> &Path {
        &self.cfg.data_dir
    }

    /// Appends a record of `class` (see [`CommitLog::append`]) and wakes the dispatcher. With
    /// SYNC_FLUSH, await for [`Listeners::flushed`] to pass its end (after
    /// [`Store::request_flush`]) before acknowledging. Errors: as [`CommitLog::append`],
    /// [`StoreError::ShutDown`], [`StoreError::ReadOnly`] on a slave.
    pub fn append(
        &self,
        rec: &mut Record,
        with_queue_offset: bool,
        class: RecordClass,
    ) -> Result<AppendResult, StoreError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(StoreError::ShutDown);
        }
        if self.replica.load(Ordering::Acquire) {
            return Err(StoreError::ReadOnly);
        }
        let r = self.commitlog.append(rec, with_queue_offset, class);
        if let (Some(f), Ok(AppendResult { segments_created: 1.., .. }) | Err(StoreError::NoSpace(_))) =
            (&self.listeners.segment_created, &r)
        {
            f();
        }
        let r = r?;
        self.dispatch_signal.notify();
        if let Some(f) = &self.listeners.appended {
            f(r.end)
        }
        Ok(r)
    }

    /// Makes this store a slave's copy (`true`): appends are refused and only
    /// [`Store::append_raw`] writes.
    pub fn set_replica(&self, replica: bool) {
        self.replica.store(replica, Ordering::Release);
    }

    /// Writes CommitLog bytes replicated from the master (see [`CommitLog::append_raw`]) and
    /// wakes the dispatcher; returns the new end. Errors: as [`CommitLog::append_raw`],
    /// [`StoreError::ShutDown`].
    pub fn append_raw(&self, offset: u64, data: &[u8]) -> Result<u64, StoreError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(StoreError::ShutDown);
        }
        let end = self.commitlog.append_raw(offset, data)?;
        self.dispatch_signal.notify();
        Ok(end)
    }

    /// Waits (at most 30 s) until every committed record is dispatched. Errors: the dispatcher
    /// did not catch up in time.
    fn wait_dispatched(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.dispatched() < self.commitlog.committed() {
            if Instant::now() > deadline {
                return Err(StoreError::DispatchStuck { at: self.dispatched(), end: self.commitlog.committed() });
            }
            self.dispatch_signal.notify();
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// On a slave: cuts the CommitLog back to `offset` (a record boundary: where its log and its
    /// new master's last agree), with the ConsumeQueue entries that point past it, and writes
    /// the checkpoint. IndexFile entries past it stay: lookups verify each hit against the log.
    /// Errors: called on a master (only a slave's log may be cut), [`StoreError::OutOfSequence`]
    /// for an offset below the oldest byte kept, I/O.
    pub fn truncate(&self, offset: u64) -> Result<(), StoreError> {
        if !self.replica.load(Ordering::Acquire) {
            return Err(StoreError::NotReplica);
        }
        self.wait_dispatched()?;
        let before = self.commitlog.committed();
        self.commitlog.truncate(offset)?;
        for (_, q) in self.cqs.all() {
            q.truncate_from_physical(offset)?;
        }
        self.dispatched.store(offset.min(before), Ordering::Release);
        self.listeners.dispatched(offset.min(before));
        self.flush_all()?;
        tracing::warn!(
            from = offset,
            cut = before.saturating_sub(offset),
            "CommitLog truncated to the point shared with the master"
        );
        Ok(())
    }

    /// Deletes the ConsumeQueues of `topic` and its queue offsets (RocketMQ `deleteTopics`); its
    /// CommitLog records stay until retention deletes their segments. Errors: I/O.
    pub fn delete_topic(&self, topic: &str) -> Result<(), StoreError> {
        self.commitlog.forget_topic(topic);
        Ok(self.cqs.remove_topic(topic)?)
    }

    /// Turns a slave's store into a master's: waits until every replicated record is
    /// dispatched, takes each queue's next offset from its ConsumeQueue (replicated bytes did not
    /// advance them) and accepts appends again. Errors: the dispatcher did not catch up.
    pub fn promote(&self) -> Result<(), StoreError> {
        self.wait_dispatched()?;
        let table: HashMap<(String, u32), u64> = self.cqs.all().into_iter().map(|(k, q)| (k, q.max_offset())).collect();
        self.commitlog.set_queue_offsets(table);
        self.replica.store(false, Ordering::Release);
        Ok(())
    }

    /// Up to `max` committed CommitLog bytes from `from`, within one segment (see
    /// [`CommitLog::read_raw`]).
    pub fn read_raw(&self, from: u64, max: usize) -> Option<Vec<u8>> {
        self.commitlog.read_raw(from, max)
    }

    /// Offset of the oldest CommitLog byte kept.
    pub fn commitlog_min_offset(&self) -> u64 {
        self.commitlog.min_offset()
    }

    /// The flush policy.
    pub fn flush_disk_type(&self) -> FlushDiskType {
        self.cfg.flush_disk_type
    }

    /// CommitLog offset below which every byte is on disk.
    pub fn flushed(&self) -> u64 {
        self.commitlog.flushed()
    }

    /// Asks the flush thread to flush now (SYNC_FLUSH group commit: a writer about to wait for
    /// [`Listeners::flushed`] calls it).
    pub fn request_flush(&self) {
        self.flush_signal.notify();
    }

    /// SYNC_FLUSH group commit led by a writer: when no flush is under way, flushes the CommitLog
    /// on the calling thread and publishes the new flushed offset through [`Listeners::flushed`],
    /// saving the hand-off to the flush thread and back (two thread wake-ups per flush, most of
    /// the cost of a lone SYNC_FLUSH sender; docs/BENCHMARKS.md run 12). Returns the flushed
    /// offset, or None when another thread is flushing: the caller then requests a flush and
    /// waits, and that flush or the next one covers its record. Blocks for the msync of what was
    /// written since the last flush, however long the disk takes: on a stalled disk the leader
    /// is answered when its msync returns, not at `sync_flush_timeout_ms` (its followers still
    /// time out). A failed flush is logged, as by the flush thread, and returns None.
    pub fn try_flush_inline(&self) -> Option<u64> {
        let _leader = self.flushing.try_lock()?;
        self.flush_commitlog()
    }

    /// Flushes the CommitLog and publishes the offset (the caller holds `flushing`). None on a
    /// failed flush, which is logged.
    fn flush_commitlog(&self) -> Option<u64> {
        let started = Instant::now();
        let before = self.commitlog.flushed();
        match self.commitlog.flush() {
            Ok(f) => {
                if let (true, Some(observe)) = (f > before, &self.listeners.flush_ms) {
                    observe(started.elapsed().as_secs_f64() * 1000.0);
                }
                self.listeners.flushed(f);
                Some(f)
            }
            Err(e) => {
                tracing::error!(error = %e, "CommitLog flush failed");
                None
            }
        }
    }

    /// Lets the dispatcher go no further than CommitLog offset `limit` (a record boundary), or
    /// removes the limit with `u64::MAX`; records past it stay invisible to consumers. A master
    /// under SYNC replication sets it to what its in-sync slaves hold (RocketMQ's confirm
    /// offset), so no consumer sees a message that a failover could lose. Raising it wakes the
    /// dispatcher.
    pub fn set_dispatch_limit(&self, limit: u64) {
        let before = self.dispatch_limit.swap(limit, Ordering::AcqRel);
        if limit > before {
            self.dispatch_signal.notify();
        }
    }

    /// How many times the CommitLog has been fsynced since the store was opened.
    pub fn commitlog_fsyncs(&self) -> u64 {
        self.commitlog.fsyncs()
    }

    /// Offset up to which records have been dispatched to ConsumeQueues.
    pub fn dispatched(&self) -> u64 {
        self.dispatched.load(Ordering::Acquire)
    }

    /// The ConsumeQueue of a topic queue, if it has ever had a message.
    pub fn consume_queue(&self, topic: &str, queue_id: u32) -> Option<Arc<ConsumeQueue>> {
        self.cqs.get(topic, queue_id)
    }

    /// One past the highest queue offset of a topic queue (0 if it has no messages).
    pub fn max_queue_offset(&self, topic: &str, queue_id: u32) -> u64 {
        self.cqs.get(topic, queue_id).map(|q| q.max_offset()).unwrap_or(0)
    }

    /// Lowest queue offset still stored for a topic queue.
    pub fn min_queue_offset(&self, topic: &str, queue_id: u32) -> u64 {
        self.cqs.get(topic, queue_id).map(|q| q.min_offset()).unwrap_or(0)
    }

    /// Reads the message a ConsumeQueue entry points at. Errors: see [`CommitLog::read_record`].
    pub fn read(&self, e: &CqEntry) -> Result<Record, StoreError> {
        self.read_record(e.physical_offset, e.size)
    }

    /// Reads the record of `size` bytes at CommitLog offset `physical`. Errors: see
    /// [`CommitLog::read_record`].
    pub fn read_record(&self, physical: u64, size: u32) -> Result<Record, StoreError> {
        self.commitlog.read_record(physical, size)
    }

    /// Offset one past the last complete CommitLog record.
    pub fn commitlog_end(&self) -> u64 {
        self.commitlog.committed()
    }

    /// Messages whose index key is `key` (`<topic>#<key>` or `#id#<message id>`), newest first,
    /// at most `max`. Each candidate is verified against the CommitLog.
    pub fn query_index(&self, key: &str, max: usize) -> Vec<Record> {
        let offsets = self.index.lock().query(key, max * 4);
        let mut out = Vec::new();
        for off in offsets {
            let Ok(ReadAt::Record(rec, _)) = self.commitlog.read_at(off) else {
                continue;
            };
            let prop = |name| rec.properties.get(name).map(String::as_str);
            if index_keys(&rec.topic, prop(PROP_KEYS), prop(PROP_MSG_ID)).iter().any(|k| k == key) {
                out.push(*rec);
                if out.len() == max {
                    break;
                }
            }
        }
        out
    }

    /// Calls `f` with every record (and its size, bytes) from CommitLog offset `from` to the current end, in order,
    /// skipping corrupt regions. Used to replay internal logs (acks) on start. Errors: I/O.
    pub fn scan(&self, from: u64, f: impl FnMut(&Record, u32)) -> Result<(), StoreError> {
        recovery::scan(&self.commitlog, from.max(self.commitlog.min_offset()), self.commitlog.committed(), f, |_| {})
            .map(|_| ())
    }

    /// Flushes everything and writes the checkpoint; on a full disk the checkpoint is skipped
    /// (see [`files::write_or_skip`]: recovery then starts from the older one). Errors: I/O.
    pub fn flush_all(&self) -> io::Result<()> {
        let _one_writer = self.checkpoint_lock.lock();
        let dispatched = self.dispatched();
        self.flush_log()?;
        self.cqs.flush()?;
        self.index.lock().flush()?;
        let cp = checkpoint::Checkpoint { dispatched, written_ms: now_ms() };
        files::write_or_skip(&self.cfg.data_dir.join("checkpoint"), &cp, "checkpoint")?;
        Ok(())
    }

    /// Flushes the CommitLog (not the ConsumeQueues and IndexFiles, which recovery rebuilds from
    /// it); returns the offset flushed below. Errors: I/O.
    pub fn flush_log(&self) -> io::Result<u64> {
        let _one_flusher = self.flushing.lock(); // keeps the published offset rising
        let flushed = self.commitlog.flush()?;
        self.listeners.flushed(flushed);
        Ok(flushed)
    }

    /// Stops accepting appends, dispatches what is left, flushes everything, writes the checkpoint
    /// and joins the threads. Idempotent. Errors: I/O of the final flush.
    pub fn shutdown(&self) -> io::Result<()> {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.dispatch_signal.notify();
        self.flush_signal.notify();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        self.flush_all()
    }

    fn dispatch_loop(&self) {
        // Set while a ConsumeQueue entry cannot be written (full disk): logged once, retried.
        let mut paused: Option<String> = None;
        loop {
            let stopping = self.stopping.load(Ordering::Acquire);
            let from = self.dispatched();
            let end = self.commitlog.committed().min(self.dispatch_limit.load(Ordering::Acquire));
            if from < end {
                let mut failed = None;
                let scanned = recovery::scan_raw(
                    &self.commitlog,
                    from,
                    end,
                    |rec| match dispatch_record(&self.cqs, &mut self.index.lock(), rec) {
                        Ok(()) => ControlFlow::Continue(()),
                        Err(e) => {
                            failed = Some(e);
                            ControlFlow::Break(())
                        }
                    },
                    |c| {
                        tracing::error!(file = %c.file.display(), offset = c.file_offset, len = c.len, reason = %c.reason,
                        "corrupt CommitLog region skipped by the dispatcher")
                    },
                );
                // Entries become readable before the offset that announces them is published.
                let (next, failed) = match self.cqs.commit() {
                    Ok(()) => (scanned.next, failed),
                    Err(e) => (from, Some(e)),
                };
                if next > from {
                    self.dispatched.store(next, Ordering::Release);
                    self.listeners.dispatched(next);
                }
                match (scanned.torn, failed) {
                    (None, None) => {
                        if let Some(why) = paused.take() {
                            tracing::info!(offset = next, was = %why, "dispatching again");
                        }
                        self.commitlog.populate_ahead();
                        if !stopping {
                            // Under load, let appends accumulate instead of parking and being
                            // woken for every one or two of them (a context switch each): at most
                            // DISPATCH_BATCH more before a consumer sees a message, as
                            // RocketMQ's ReputMessageService, which polls every 1 ms.
                            std::thread::sleep(DISPATCH_BATCH);
                        }
                    }
                    (Some(c), _) => {
                        tracing::error!(file = %c.file.display(), offset = c.file_offset, reason = %c.reason, "dispatch stopped at a bad record; retrying");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    (None, Some(e)) => {
                        if paused.is_none() {
                            tracing::error!(offset = next, error = %e,
                                "dispatch paused: consumers see no newer message until the entry can be written; retrying");
                        }
                        paused = Some(e.to_string());
                        if stopping {
                            return;
                        }
                        self.dispatch_signal.wait(Duration::from_millis(200));
                    }
                }
                continue;
            }
            if stopping {
                return;
            }
            self.dispatch_signal.wait(Duration::from_millis(100));
        }
    }

    fn flush_loop(&self) {
        let interval = match self.cfg.flush_disk_type {
            // Group commit: flush as soon as a writer waits; the timeout only bounds idle wake-ups.
            FlushDiskType::Sync => Duration::from_millis(10),
            FlushDiskType::Async => Duration::from_millis(self.cfg.flush_interval_ms),
        };
        let mut last_checkpoint = Instant::now();
        while !self.stopping.load(Ordering::Acquire) {
            self.flush_signal.wait(interval);
            {
                let _one_flusher = self.flushing.lock(); // waits out a writer's inline flush
                let _ = self.flush_commitlog();
            }
            if last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
                if let Err(e) = self.flush_all() {
                    tracing::error!(error = %e, "checkpoint failed");
                }
                last_checkpoint = Instant::now();
            }
        }
    }
}

/// Writes the ConsumeQueue and IndexFile entries of one record. Errors: the ConsumeQueue entry
/// cannot be written (the record must be dispatched again later, or its message would never be
/// delivered). An IndexFile entry that cannot be written is skipped and logged: the index only
/// serves lookups by key, and every hit is verified anyway.
fn dispatch_record(cqs: &ConsumeQueueTable, index: &mut IndexService, rec: &RecordView) -> io::Result<()> {
    if rec.sys_flag & SYS_FLAG_NO_DISPATCH != 0 {
        return Ok(());
    }
    // One walk over the encoded properties for the four the dispatcher needs.
    let (mut tags, mut keys, mut msg_id, mut group) = (None, None, None, None);
    for (name, value) in rec.properties() {
        match name {
            PROP_TAGS => tags = Some(value),
            PROP_MESSAGE_GROUP => group = Some(value),
            PROP_KEYS => keys = Some(value),
            PROP_MSG_ID => msg_id = Some(value),
            _ => {}
        }
    }
    let entry =
        CqEntry { physical_offset: rec.physical_offset, size: rec.size, tag_hash: tags.map(tag_hash).unwrap_or(0) };
    cqs.get_or_create(rec.topic, rec.queue_id)
        .and_then(|q| q.put(rec.queue_offset, entry, group.map_or(0, message_group_hash)))
        .map_err(|e| io::Error::new(e.kind(), format!("ConsumeQueue {} queue {}: {e}", rec.topic, rec.queue_id)))?;
    for key in index_keys(rec.topic, keys, msg_id) {
        let put = index.put(&key, rec.physical_offset, rec.store_timestamp);
        index.note(put);
    }
    Ok(())
}

/// The IndexFile keys of a message of `topic` with the KEYS property `keys` (separated by
/// spaces) and the message id `msg_id`: `<topic>#<key>` for each key and `#id#<message id>`.
pub fn index_keys(topic: &str, keys: Option<&str>, msg_id: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = keys
        .map(|ks| ks.split(KEY_SEPARATOR).filter(|k| !k.is_empty()).map(|k| format!("{topic}#{k}")).collect())
        .unwrap_or_default();
    if let Some(id) = msg_id {
        out.push(format!("#id#{id}"));
    }
    out
}

#[cfg(test)]
mod signal_tests {
    use super::*;

    #[test]
    fn a_notify_before_the_wait_is_kept_and_consumed_once() {
        let s = Signal::default();
        s.notify();
        s.notify();
        let t = Instant::now();
        s.wait(Duration::from_secs(10));
        assert!(t.elapsed() < Duration::from_secs(5), "the kept notification was lost");
        let t = Instant::now();
        s.wait(Duration::from_millis(50));
        assert!(t.elapsed() >= Duration::from_millis(50), "two notifications woke twice");
    }

    #[test]
    fn a_notify_from_another_thread_wakes_a_waiter() {
        let s = Arc::new(Signal::default());
        for _ in 0..200 {
            let n = s.clone();
            let t = std::thread::spawn(move || n.notify());
            let started = Instant::now();
            s.wait(Duration::from_secs(10));
            assert!(started.elapsed() < Duration::from_secs(5), "a wake-up was lost");
            t.join().unwrap();
        }
    }
}
