//! The CommitLog: the one append-only log of every record a broker stores, over fixed-size
//! MappedFiles. One writer at a time (a mutex), readers bounded by the published write position.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::mapped_file::{MappedFile, MappedFileQueue};
use super::record::{self, DecodeError, Peek, Record, RecordView};
use super::StoreError;

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// CommitLog offset of the record's first byte.
    pub physical_offset: u64,
    /// CommitLog offset one past its last byte: wait for the flush to reach this.
    pub end: u64,
    /// Offset in its topic queue (0 for records that have no ConsumeQueue).
    pub queue_offset: u64,
    /// Record size, bytes.
    pub size: u32,
    /// Time the broker stored it, ms since the Unix epoch.
    pub store_timestamp: u64,
    /// CommitLog segments this append created (the disk's free space changed).
    pub segments_created: u32,
}

/// What a record is to the CommitLog's reserve. A full disk must never stop the broker from
/// finishing what it already accepted, so new messages may not take the last segment: they are
/// stored only while a spare segment (fully allocated) is ready beyond the one they go to, and
/// control records may use that spare. RocketMQ keeps no such reserve (its acks and revives
/// fail on a full disk); its pre-allocation of the next file is the same idea.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordClass {
    /// A new message from a producer: a send, a half message, a scheduled message.
    Message,
    /// A record for messages already held: acks, offset updates, transaction ops and commits,
    /// timer deliveries and recalls, DLQ copies.
    Control,
}

/// What lies at a CommitLog offset: `R` is the verified record, owned ([`Record`]) or borrowed
/// from the segment ([`RecordView`]).
#[derive(Debug)]
pub enum ReadAt<R = Box<Record>> {
    /// A verified record and the offset of the next one.
    Record(R, u64),
    /// A segment filler: the next record is at the given offset (the next segment).
    Blank(u64),
    /// Nothing written here yet.
    End,
}

struct Writer {
    /// Next free byte.
    wrote: u64,
    /// Next queue offset per (topic, queue id) (RocketMQ `topicQueueTable`).
    queue_offsets: HashMap<(String, u32), u64>,
}

/// The CommitLog of one broker.
pub struct CommitLog {
    files: MappedFileQueue,
    writer: Mutex<Writer>,
    /// Bytes below this are complete records, readable by anyone.
    committed: AtomicU64,
    /// Bytes below this are on disk.
    flushed: AtomicU64,
    /// Flushes that wrote something (one group commit each under SYNC_FLUSH).
    fsyncs: AtomicU64,
    /// When creating a spare segment last failed, ms since the Unix epoch (0: never): refused
    /// sends retry at most once a second, not once each.
    spare_failed_ms: AtomicU64,
    /// Bytes below this are mapped writable ([`CommitLog::populate_ahead`]); `u64::MAX` once
    /// the kernel refused to populate.
    populated: AtomicU64,
}

/// Bytes ahead of the write position that [`CommitLog::populate_ahead`] keeps mapped writable:
/// 80 ms of appends at 50 MB/s, 1,024 pages.
pub const POPULATE_AHEAD: u64 = 4 << 20;

/// How long after a failed spare segment the next send tries again, ms.
const SPARE_RETRY_MS: u64 = 1_000;

/// Bytes always left free at the end of a segment so a BLANK filler fits.
const END_RESERVE: u64 = 8;

impl CommitLog {
    /// Opens the segments in `dir`. The write position starts at `end` (found by recovery).
    pub fn open(dir: &Path, segment_bytes: u64, end: u64) -> io::Result<CommitLog> {
        let files = MappedFileQueue::load(dir, segment_bytes)?.preallocated();
        Ok(CommitLog {
            files,
            writer: Mutex::new(Writer { wrote: end, queue_offsets: HashMap::new() }),
            committed: AtomicU64::new(end),
            flushed: AtomicU64::new(end),
            fsyncs: AtomicU64::new(0),
            spare_failed_ms: AtomicU64::new(0),
            populated: AtomicU64::new(end),
        })
    }

    /// The segments, oldest first.
    pub fn files(&self) -> &MappedFileQueue {
        &self.files
    }

    /// Offset up to which records are complete and readable.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Offset up to which records are on disk.
    pub fn flushed(&self) -> u64 {
        self.flushed.load(Ordering::Acquire)
    }

    /// Offset of the first byte still stored (0 for a new log).
    pub fn min_offset(&self) -> u64 {
        self.files.min_offset().unwrap_or(0)
    }

    /// Moves the write position to `end` (recovery only, before any append).
    pub(crate) fn set_end(&self, end: u64) {
        self.writer.lock().wrote = end;
        self.committed.store(end, Ordering::Release);
        self.flushed.store(end, Ordering::Release);
    }

    /// Sets the next queue offset of every (topic, queue) from the ConsumeQueues after recovery.
    pub fn set_queue_offsets(&self, table: HashMap<(String, u32), u64>) {
        self.writer.lock().queue_offsets = table;
    }

    /// Forgets the next queue offsets of `topic` (deleted: a topic created again under its name
    /// starts at offset 0, RocketMQ `removeQueueFromTopicQueueTable`).
    pub fn forget_topic(&self, topic: &str) {
        self.writer.lock().queue_offsets.retain(|(t, _), _| t != topic);
    }

    /// Appends `rec`, filling in its physical offset, store timestamp and (if `with_queue_offset`)
    /// its queue offset. A [`RecordClass::Message`] needs a spare segment beyond the one it goes
    /// to (created here if missing); a [`RecordClass::Control`] record may take the spare.
    /// Errors: [`StoreError::Encode`] for a record that cannot be encoded,
    /// [`StoreError::TooLarge`] if it does not fit in one segment, [`StoreError::NoSpace`] for a
    /// message when no spare segment can be created, [`StoreError::Io`] creating a segment.
    pub fn append(
        &self,
        rec: &mut Record,
        with_queue_offset: bool,
        class: RecordClass,
    ) -> Result<AppendResult, StoreError> {
        let mut w = self.writer.lock();
        rec.store_timestamp = super::now_ms();
        let key = (rec.topic.clone(), rec.queue_id);
        rec.queue_offset = if with_queue_offset { w.queue_offsets.get(&key).copied().unwrap_or(0) } else { 0 };
        rec.physical_offset = w.wrote;
        let mut bytes = rec.encode()?;
        let len = bytes.len() as u64;
        let seg = self.files.segment_bytes();
        if len + END_RESERVE > seg {
            return Err(StoreError::TooLarge { size: len, segment: seg });
        }
        let before = self.files.count();
        let mut file = match (self.files.find(w.wrote), class) {
            (Some(f), _) => f,
            (None, RecordClass::Message) => self.segment_for_message(w.wrote)?,
            (None, RecordClass::Control) => self.files.find_or_create(w.wrote)?,
        };
        let rolls = w.wrote + len + END_RESERVE > file.end();
        if class == RecordClass::Message {
            if rolls {
                self.segment_for_message(file.end())?;
            }
            // The spare beyond the segment the message goes to.
            self.segment_for_message(file.end() + if rolls { seg } else { 0 })?;
        }
        if rolls {
            // Fill the rest of this segment and continue at the start of the next one (found
            // first: a failure leaves the log as it was).
            let next = self.files.find_or_create(file.end())?;
            let rest = file.end() - w.wrote;
            file.write(w.wrote - file.start(), &record::blank(rest as usize))?;
            w.wrote = file.end();
            self.committed.store(w.wrote, Ordering::Release);
            file = next;
            rec.physical_offset = w.wrote;
            bytes = rec.encode()?;
            if class == RecordClass::Control && self.files.find(file.end()).is_none() {
                match self.files.find_or_create(file.end()) {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "no spare CommitLog segment: control records use the last one")
                    }
                }
            }
        }
        file.write(w.wrote - file.start(), &bytes)?;
        let result = AppendResult {
            physical_offset: w.wrote,
            end: w.wrote + len,
            queue_offset: rec.queue_offset,
            size: len as u32,
            store_timestamp: rec.store_timestamp,
            segments_created: self.files.count().saturating_sub(before) as u32,
        };
        w.wrote += len;
        if with_queue_offset {
            w.queue_offsets.insert(key, rec.queue_offset + 1);
        }
        self.committed.store(w.wrote, Ordering::Release);
        Ok(result)
    }

    /// The segment starting at `start`, created if missing, for a new message: a failure is
    /// [`StoreError::NoSpace`], and after one the next attempt waits [`SPARE_RETRY_MS`].
    fn segment_for_message(&self, start: u64) -> Result<Arc<MappedFile>, StoreError> {
        if let Some(f) = self.files.find(start) {
            return Ok(f);
        }
        let now = super::now_ms();
        let failed = self.spare_failed_ms.load(Ordering::Acquire);
        if failed != 0 && now.saturating_sub(failed) < SPARE_RETRY_MS {
            let why = format!("creating the CommitLog segment at {start} failed {} ms ago", now - failed);
            return Err(StoreError::NoSpace(why));
        }
        self.files.find_or_create(start).map_err(|e| {
            self.spare_failed_ms.store(now.max(1), Ordering::Release);
            StoreError::NoSpace(e.to_string())
        })
    }

    /// The log's bytes from `from` (a record boundary), ending at a record boundary: whole
    /// records totalling at most `max` bytes (at least one), never past the committed end or
    /// the segment holding `from`. Replication sends these, so a slave never holds half a
    /// record. `None` if nothing is committed at `from` yet or it was deleted.
    pub fn read_raw(&self, from: u64, max: usize) -> Option<Vec<u8>> {
        let limit = self.committed();
        let file = self.files.find(from).filter(|_| from < limit)?;
        let hard_end = limit.min(file.end());
        let mut end = hard_end;
        if hard_end - from > max as u64 {
            // Walk record headers (size only) to the last boundary within `max`.
            end = from;
            while end < hard_end {
                let size = match record::peek(file.slice(end - file.start(), 8.min((file.end() - end) as usize))) {
                    Ok(Peek::Message(size)) => size as u64,
                    Ok(Peek::Blank(_)) => file.end() - end,
                    _ => break,
                };
                if end > from && end + size - from > max as u64 {
                    break;
                }
                end = (end + size).min(hard_end);
            }
        }
        (end > from).then(|| file.slice(from - file.start(), (end - from) as usize).to_vec())
    }

    /// Writes bytes a master sent at `offset`, which must be this log's end (or, for an empty
    /// log, any segment boundary: a new slave starts at its master's oldest segment). Returns the
    /// new end. Errors: [`StoreError::OutOfSequence`] for any other offset,
    /// [`StoreError::TooLarge`] if the bytes span two segments, I/O creating a segment.
    pub fn append_raw(&self, offset: u64, data: &[u8]) -> Result<u64, StoreError> {
        let mut w = self.writer.lock();
        let seg = self.files.segment_bytes();
        if offset != w.wrote {
            if !(self.files.segments().is_empty() && offset.is_multiple_of(seg)) {
                return Err(StoreError::OutOfSequence { expected: w.wrote, got: offset });
            }
            w.wrote = offset;
        }
        let file = self.files.find_or_create(offset)?;
        if offset + data.len() as u64 > file.end() {
            return Err(StoreError::TooLarge { size: data.len() as u64, segment: seg });
        }
        file.write(offset - file.start(), data)?;
        w.wrote += data.len() as u64;
        self.committed.store(w.wrote, Ordering::Release);
        Ok(w.wrote)
    }

    /// Cuts the log back to `offset` (a record boundary below the end): zeroes the bytes after
    /// it in its segment (so recovery never finds them again), deletes the segments after it and
    /// forgets the next queue offsets (a promotion rebuilds them). A slave only. Errors:
    /// [`StoreError::OutOfSequence`] for an offset below the oldest byte kept, I/O.
    pub(crate) fn truncate(&self, offset: u64) -> Result<(), StoreError> {
        let mut w = self.writer.lock();
        if offset >= w.wrote {
            return Ok(());
        }
        if offset < self.min_offset() {
            return Err(StoreError::OutOfSequence { expected: self.min_offset(), got: offset });
        }
        self.committed.store(offset, Ordering::Release);
        self.files.remove_from(offset + 1)?;
        if let Some(f) = self.files.find(offset) {
            f.zero_from(offset - f.start())?;
        }
        w.wrote = offset;
        w.queue_offsets.clear();
        self.flushed.fetch_min(offset, Ordering::AcqRel);
        Ok(())
    }

    /// Reads what is at `offset`, which must be a record boundary below [`Self::committed`].
    /// Errors: [`StoreError::Corrupt`] naming the segment file and offset if the bytes there are
    /// not a valid record.
    pub fn read_at(&self, offset: u64) -> Result<ReadAt, StoreError> {
        let limit = self.committed();
        if offset >= limit {
            return Ok(ReadAt::End);
        }
        let Some(file) = self.files.find(offset) else {
            return Ok(ReadAt::End);
        };
        read_in_file(&file, offset, limit)
    }

    /// Reads the record of `size` bytes at `offset` (as a ConsumeQueue entry names it).
    /// Errors: [`StoreError::NotFound`] if the offset was deleted or not yet written;
    /// [`StoreError::Corrupt`] if the bytes do not verify.
    pub fn read_record(&self, offset: u64, size: u32) -> Result<Record, StoreError> {
        if offset + size as u64 > self.committed() {
            return Err(StoreError::NotFound(offset));
        }
        let file = self.files.find(offset).ok_or(StoreError::NotFound(offset))?;
        let pos = offset - file.start();
        if pos + size as u64 > file.size() {
            return Err(corrupt(&file, offset, DecodeError::BadSize(size)));
        }
        Record::decode(file.slice(pos, size as usize)).map_err(|e| corrupt(&file, offset, e))
    }

    /// Flushes every committed byte to disk; returns the new flushed offset.
    pub fn flush(&self) -> io::Result<u64> {
        let target = self.committed();
        let from = self.flushed();
        if target > from {
            self.files.flush(from, target)?;
            self.flushed.fetch_max(target, Ordering::AcqRel);
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(target)
    }

    /// Maps the pages of the next [`POPULATE_AHEAD`] bytes past the write position writable, in
    /// the segments that exist, so appends store into memory instead of faulting (a fault per
    /// 4 KiB page, with the kernel zero-filling the page under the writer's lock). RocketMQ warms
    /// whole new segments instead (`warmMappedFileEnable`, off by default), which writes every
    /// page to disk twice. Called by a background thread, never by the writer. A kernel without
    /// MADV_POPULATE_WRITE is logged once and the pages fault in as before. Segments reopened
    /// after a restart are not known to be fully allocated, so they populate only as far as the
    /// writer has reserved ([`MappedFile::reserve_to`]). Measured in docs/BENCHMARKS.md run 10.
    pub fn populate_ahead(&self) {
        let mut from = self.populated.load(Ordering::Acquire);
        if from == u64::MAX {
            return;
        }
        let committed = self.committed();
        from = from.max(committed);
        let to = committed + POPULATE_AHEAD;
        while from < to {
            let Some(file) = self.files.find(from) else { break };
            let end = to.min(file.end());
            match file.populate(from - file.start(), end - file.start()) {
                Ok(mapped) => from = file.start() + mapped,
                Err(e) => {
                    tracing::warn!(file = %file.path().display(), error = %e, "the kernel cannot populate CommitLog pages ahead of writes; they fault in");
                    self.populated.store(u64::MAX, Ordering::Release);
                    return;
                }
            }
            if from < end {
                break; // blocks not reserved yet
            }
        }
        self.populated.fetch_max(from, Ordering::AcqRel);
    }

    /// Flushes that wrote something since the log was opened.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }
}

/// Reads the record at global `offset` in `file`, not looking at bytes at or past `limit`.
pub(crate) fn read_in_file(file: &MappedFile, offset: u64, limit: u64) -> Result<ReadAt, StoreError> {
    Ok(match view_in_file(file, offset, limit)? {
        ReadAt::Record(view, next) => ReadAt::Record(Box::new(view.to_record()), next),
        ReadAt::Blank(next) => ReadAt::Blank(next),
        ReadAt::End => ReadAt::End,
    })
}

/// [`read_in_file`], borrowing the record from the segment's mapping.
pub(crate) fn view_in_file(file: &MappedFile, offset: u64, limit: u64) -> Result<ReadAt<RecordView<'_>>, StoreError> {
    let pos = offset - file.start();
    let avail = (file.end().min(limit) - offset) as usize;
    match record::peek(file.slice(pos, avail.min(8))).map_err(|e| corrupt(file, offset, e))? {
        Peek::Empty => Ok(ReadAt::End),
        Peek::Blank(_) => Ok(ReadAt::Blank(file.end())),
        Peek::Message(size) => {
            if size as usize > avail {
                return Err(corrupt(file, offset, DecodeError::Truncated { need: size as usize, have: avail }));
            }
            let view = RecordView::parse(file.slice(pos, size as usize)).map_err(|e| corrupt(file, offset, e))?;
            if view.physical_offset != offset {
                return Err(corrupt(file, offset, DecodeError::Malformed("physical_offset")));
            }
            Ok(ReadAt::Record(view, offset + size as u64))
        }
    }
}

pub(crate) fn corrupt(file: &MappedFile, offset: u64, err: DecodeError) -> StoreError {
    StoreError::Corrupt {
        file: file.path().to_path_buf(),
        file_offset: offset - file.start(),
        offset,
        reason: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populate_ahead_covers_the_spare_segment_and_follows_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 1 << 20; // smaller than POPULATE_AHEAD: the range crosses into the spare
        let log = CommitLog::open(dir.path(), seg, 0).unwrap();
        log.populate_ahead();
        assert_eq!(log.populated.load(Ordering::Acquire), 0, "no segment exists before the first append");
        let mut rec = Record { topic: "T".into(), body: vec![b'x'; 1000], ..Default::default() };
        log.append(&mut rec, true, RecordClass::Message).unwrap();
        log.populate_ahead();
        assert_eq!(log.populated.load(Ordering::Acquire), 2 * seg, "the written segment and its spare");
        let mut rec = Record { topic: "T".into(), body: vec![b'y'; 1000], ..Default::default() };
        let second = log.append(&mut rec, true, RecordClass::Message).unwrap();
        assert_eq!(log.read_record(second.physical_offset, second.size).unwrap().body, vec![b'y'; 1000]);
    }
}
