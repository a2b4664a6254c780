//! The pending set of scheduled messages, kept on disk so that memory does not grow with how
//! many are scheduled (RocketMQ 5 keeps a TimerLog and a TimerWheel of slots for the same reason).
//!
//! Time is cut into buckets of [`BUCKET_MS`]; each bucket that has ever held a message is one
//! append-only file `timerlog/<bucket start ms, 20 digits>.log` of 24-byte units, in the order
//! the CommitLog holds their records:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | due time, ms since the epoch, little endian |
//! | 8..16 | CommitLog offset of the timer record |
//! | 16..20 | record size, bytes |
//! | 20 | 1 = scheduled, 2 = delivered or recalled |
//! | 21..24 | zero |
//!
//! Only the earliest bucket is read into memory (its pending messages in due order), so
//! delivery is exact to the ms and never early; memory is that one bucket (24 bytes a message on
//! disk, about 40 in memory) plus a few dozen bytes per bucket file.
//!
//! Unlike RocketMQ's wheel, which rounds delivery to its slot (`timerPrecisionMs`), a bucket is
//! only a unit of loading: messages leave it one by one when due.
//!
//! Crash safety rests on the CommitLog, which holds every timer, recall and delivery record: the
//! state snapshot records each bucket's length as of its CommitLog offset (after an fsync of the
//! files), and a restart cuts every file back to that length, deletes the files it does not
//! list, and replays the records after the offset. So units written after the last snapshot
//! may be lost in a crash without losing or repeating a delivery.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TimerKey;
use crate::store::record::Record;

/// Width of one bucket, ms: the unit of loading (and of files).
pub const BUCKET_MS: u64 = 10_000;
/// Bytes of one unit.
const UNIT: usize = 24;
const SCHEDULED: u8 = 1;
const CANCELLED: u8 = 2;
/// Most bucket files kept open for appending at once.
const MAX_OPEN: usize = 64;

/// One bucket file, as the state snapshot records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Length of the file, bytes.
    pub len: u64,
    /// Messages scheduled in it and not yet delivered or recalled.
    pub pending: u64,
    /// Lowest CommitLog offset of a message scheduled in it (retention keeps the CommitLog from
    /// here while any is pending).
    pub min_offset: u64,
    /// Highest CommitLog offset of a message scheduled in it.
    pub max_offset: u64,
}

impl Bucket {
    fn empty() -> Bucket {
        Bucket { len: 0, pending: 0, min_offset: u64::MAX, max_offset: 0 }
    }
}

/// What the state snapshot keeps of the timer log: every live bucket by its start (ms since the
/// epoch), as of the snapshot's CommitLog offset.
pub type TimerCheckpoint = BTreeMap<u64, Bucket>;

/// Taken under the engine's locks with the state snapshot ([`TimerLog::capture`]).
#[derive(Debug)]
pub struct Capture {
    /// The buckets to record.
    pub checkpoint: TimerCheckpoint,
    /// Files written since the last capture: fsync them before the snapshot is written.
    pub to_sync: Vec<PathBuf>,
    /// The directory, if a file was created since the last capture (fsync it too).
    pub new_files_in: Option<PathBuf>,
    /// Buckets delivered in full: their files go once the snapshot is written.
    pub retired: Vec<u64>,
}

impl Capture {
    /// Makes the captured files durable (outside the engine's locks). Errors: I/O.
    pub fn sync(&self) -> io::Result<()> {
        for p in &self.to_sync {
            match File::open(p) {
                Ok(f) => f.sync_data()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(dir) = &self.new_files_in {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// The scheduled messages not yet delivered or recalled (see the module doc).
#[derive(Debug)]
pub struct TimerLog {
    dir: PathBuf,
    buckets: BTreeMap<u64, Bucket>,
    writers: HashMap<u64, BufWriter<File>>,
    /// Buckets written since the last capture.
    dirty: BTreeSet<u64>,
    created: bool,
    /// The earliest bucket's pending messages, by (due, offset): record size.
    loaded: Option<(u64, BTreeMap<TimerKey, u32>)>,
    /// Buckets delivered in full whose files a written snapshot no longer needs.
    retired: BTreeMap<u64, Bucket>,
}

/// The start of the bucket holding due time `due_ms`.
pub fn bucket_of(due_ms: u64) -> u64 {
    due_ms - due_ms % BUCKET_MS
}

fn invalid(path: &Path, what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("timer log {}: {what}", path.display()))
}

impl TimerLog {
    /// Opens the timer log in `dir` as `checkpoint` recorded it: every listed file cut back to
    /// its recorded length, every other file deleted; then schedules `import` (pending messages
    /// of a state snapshot written before the timer log existed). Errors: I/O;
    /// [`io::ErrorKind::InvalidData`] naming the file if one is shorter than recorded or missing
    /// (the caller then rebuilds the log from the CommitLog with [`TimerLog::open`] and an empty
    /// checkpoint).
    pub fn open(
        dir: &Path,
        checkpoint: TimerCheckpoint,
        import: impl IntoIterator<Item = (TimerKey, u32)>,
    ) -> io::Result<TimerLog> {
        std::fs::create_dir_all(dir)?;
        let mut seen = BTreeSet::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let start = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok());
            let Some(start) = start else { continue };
            let Some(b) = checkpoint.get(&start) else {
                std::fs::remove_file(&path)?;
                continue;
            };
            let f = OpenOptions::new().write(true).open(&path)?;
            let len = f.metadata()?.len();
            if len < b.len {
                return Err(invalid(&path, format!("{len} bytes, the state snapshot recorded {}", b.len)));
            }
            f.set_len(b.len)?;
            seen.insert(start);
        }
        if let Some((start, b)) = checkpoint.iter().find(|(s, b)| b.len > 0 && !seen.contains(s)) {
            let path = dir.join(file_name(*start));
            return Err(invalid(&path, format!("missing; the state snapshot recorded {} bytes", b.len)));
        }
        let mut log = TimerLog {
            dir: dir.to_path_buf(),
            buckets: checkpoint,
            writers: HashMap::new(),
            dirty: BTreeSet::new(),
            created: false,
            loaded: None,
            retired: BTreeMap::new(),
        };
        for (key, size) in import {
            log.add(key, size)?;
        }
        Ok(log)
    }

    fn path(&self, start: u64) -> PathBuf {
        self.dir.join(file_name(start))
    }

    fn write_unit(&mut self, key: TimerKey, size: u32, kind: u8) -> io::Result<()> {
        let start = bucket_of(key.0);
        if !self.writers.contains_key(&start) {
            if self.writers.len() >= MAX_OPEN {
                let evict = *self.writers.keys().next().expect("MAX_OPEN > 0");
                self.writers.remove(&evict).expect("present").flush()?;
            }
            let path = self.path(start);
            self.created |= !path.exists();
            let f = OpenOptions::new().create(true).append(true).open(path)?;
            self.writers.insert(start, BufWriter::with_capacity(4096, f));
        }
        let mut unit = [0u8; UNIT];
        unit[0..8].copy_from_slice(&key.0.to_le_bytes());
        unit[8..16].copy_from_slice(&key.1.to_le_bytes());
        unit[16..20].copy_from_slice(&size.to_le_bytes());
        unit[20] = kind;
        self.writers.get_mut(&start).expect("opened above").write_all(&unit)?;
        self.dirty.insert(start);
        Ok(())
    }

    /// Schedules the timer record of `size` bytes at CommitLog offset `key.1` for `key.0`.
    /// Errors: I/O writing the bucket file.
    pub fn add(&mut self, key: TimerKey, size: u32) -> io::Result<()> {
        let start = bucket_of(key.0);
        if let Some(b) = self.retired.remove(&start) {
            self.buckets.insert(start, b);
        }
        self.buckets.entry(start).or_insert_with(Bucket::empty);
        self.write_unit(key, size, SCHEDULED)?;
        let b = self.buckets.get_mut(&start).expect("inserted above");
        b.len += UNIT as u64;
        b.pending += 1;
        b.min_offset = b.min_offset.min(key.1);
        b.max_offset = b.max_offset.max(key.1);
        if let Some((_, pending)) = self.loaded.as_mut().filter(|(s, _)| *s == start) {
            pending.insert(key, size);
        }
        Ok(())
    }

    /// Marks a scheduled message delivered or recalled. A key that is not pending changes
    /// nothing where that can be told cheaply (the loaded bucket). Errors: I/O.
    pub fn cancel(&mut self, key: TimerKey) -> io::Result<()> {
        let start = bucket_of(key.0);
        if !self.buckets.contains_key(&start) {
            return Ok(());
        }
        if let Some((_, pending)) = self.loaded.as_mut().filter(|(s, _)| *s == start) {
            if pending.remove(&key).is_none() {
                return Ok(());
            }
        }
        self.write_unit(key, 0, CANCELLED)?;
        let b = self.buckets.get_mut(&start).expect("checked above");
        b.len += UNIT as u64;
        b.pending = b.pending.saturating_sub(1);
        Ok(())
    }

    /// The record size of a pending message, `None` if it is not pending (reads its bucket file
    /// unless that is the loaded one). Errors: I/O, a corrupt unit.
    pub fn pending(&mut self, key: TimerKey) -> io::Result<Option<u32>> {
        let start = bucket_of(key.0);
        if !self.buckets.contains_key(&start) {
            return Ok(None);
        }
        if let Some((_, pending)) = self.loaded.as_ref().filter(|(s, _)| *s == start) {
            return Ok(pending.get(&key).copied());
        }
        Ok(self.read_bucket(start)?.get(&key).copied())
    }

    /// A bucket file's pending messages. Errors: I/O, a unit of an unknown kind (naming the file
    /// and its offset).
    fn read_bucket(&mut self, start: u64) -> io::Result<BTreeMap<TimerKey, u32>> {
        if let Some(w) = self.writers.get_mut(&start) {
            w.flush()?;
        }
        let path = self.path(start);
        let len = self.buckets.get(&start).map_or(0, |b| b.len);
        let mut pending = BTreeMap::new();
        let mut r = match File::open(&path) {
            Ok(f) => BufReader::with_capacity(64 * 1024, f.take(len)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && len == 0 => return Ok(pending),
            Err(e) => return Err(e),
        };
        let mut unit = [0u8; UNIT];
        for at in (0..len).step_by(UNIT) {
            r.read_exact(&mut unit).map_err(|e| invalid(&path, format!("reading offset {at}: {e}")))?;
            let key = (u64_at(&unit, 0), u64_at(&unit, 8));
            match unit[20] {
                SCHEDULED => {
                    pending.insert(key, u32::from_le_bytes(unit[16..20].try_into().expect("4 bytes")));
                }
                CANCELLED => {
                    pending.remove(&key);
                }
                k => return Err(invalid(&path, format!("unit of unknown kind {k} at offset {at}"))),
            }
        }
        Ok(pending)
    }

    /// Up to `max` messages due at `now_ms` or before, earliest first: (key, record size).
    /// Loads the earliest bucket once its time has come, and retires buckets whose time has
    /// passed with nothing pending. Errors: as reading a bucket.
    pub fn due(&mut self, now_ms: u64, max: usize) -> io::Result<Vec<(TimerKey, u32)>> {
        loop {
            let Some(&start) = self.buckets.keys().next() else {
                self.loaded = None;
                return Ok(Vec::new());
            };
            if start > now_ms {
                return Ok(Vec::new());
            }
            if self.loaded.as_ref().map(|(s, _)| *s) != Some(start) {
                let pending = self.read_bucket(start)?;
                let b = self.buckets.get_mut(&start).expect("first key");
                // The file is the truth; a count that drifted is corrected here.
                b.pending = pending.len() as u64;
                self.loaded = Some((start, pending));
            }
            let (_, pending) = self.loaded.as_ref().expect("loaded above");
            if pending.is_empty() && start + BUCKET_MS <= now_ms {
                self.retire(start)?;
                continue;
            }
            return Ok(pending.range(..=(now_ms, u64::MAX)).take(max).map(|(k, s)| (*k, *s)).collect());
        }
    }

    fn retire(&mut self, start: u64) -> io::Result<()> {
        if let Some(mut w) = self.writers.remove(&start) {
            w.flush()?;
        }
        self.dirty.remove(&start);
        self.loaded = None;
        if let Some(b) = self.buckets.remove(&start) {
            self.retired.insert(start, b);
        }
        Ok(())
    }

    /// Number of scheduled messages (a sum over the bucket files).
    pub fn len(&self) -> u64 {
        self.buckets.values().map(|b| b.pending).sum()
    }

    /// True if nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.buckets.values().all(|b| b.pending == 0)
    }

    /// Lowest CommitLog offset a pending message may be stored at (retention keeps it).
    pub fn min_physical_offset(&self) -> Option<u64> {
        self.buckets.values().filter(|b| b.pending > 0).map(|b| b.min_offset).min()
    }

    /// Forgets the scheduled messages stored at CommitLog offset `physical` or later (a slave's
    /// log was cut back there). Reads every bucket that may hold one. Errors: as reading a
    /// bucket, I/O.
    pub fn retain_below(&mut self, physical: u64) -> io::Result<()> {
        let starts: Vec<u64> = self.buckets.iter().filter(|(_, b)| b.max_offset >= physical).map(|(s, _)| *s).collect();
        for start in starts {
            let pending = match self.loaded.as_ref().filter(|(s, _)| *s == start) {
                Some((_, p)) => p.clone(),
                None => self.read_bucket(start)?,
            };
            for key in pending.into_keys().filter(|k| k.1 >= physical) {
                self.cancel(key)?;
            }
        }
        Ok(())
    }

    /// Applies one CommitLog record of `size` bytes: a timer record schedules, a recall record
    /// or a delivered message (one with [`super::PROP_TIMER_SRC`]) cancels. Errors: I/O.
    pub fn apply(&mut self, rec: &Record, size: u32) -> io::Result<()> {
        if rec.topic == super::TIMER_TOPIC {
            if let Some(due) = rec.properties.get(super::PROP_DELIVER_MS).and_then(|d| d.parse().ok()) {
                self.add((due, rec.physical_offset), size)?;
            }
        } else if rec.topic == super::TIMER_OP_TOPIC {
            if let Some(key) = super::parse_recall_handle(std::str::from_utf8(&rec.body).unwrap_or("")) {
                self.cancel(key)?;
            }
        } else if let Some(src) = rec.properties.get(super::PROP_TIMER_SRC).and_then(|s| s.parse().ok()) {
            if let Some(due) = rec.properties.get(super::PROP_DELIVER_MS).and_then(|d| d.parse().ok()) {
                self.cancel((due, src))?;
            }
        }
        Ok(())
    }

    /// What the state snapshot records (call under the lock the snapshot's CommitLog offset is
    /// taken under): flushes every open file and lists the buckets. Errors: I/O flushing.
    pub fn capture(&mut self) -> io::Result<Capture> {
        for w in self.writers.values_mut() {
            w.flush()?;
        }
        let to_sync = std::mem::take(&mut self.dirty).into_iter().map(|s| self.path(s)).collect();
        let new_files_in = std::mem::take(&mut self.created).then(|| self.dir.clone());
        Ok(Capture {
            checkpoint: self.buckets.clone(),
            to_sync,
            new_files_in,
            retired: self.retired.keys().copied().collect(),
        })
    }

    /// After a snapshot that recorded `capture` was written: deletes the files of the buckets
    /// it retired (unless scheduled into again since). Errors: I/O.
    pub fn forget_retired(&mut self, capture: &Capture) -> io::Result<()> {
        for start in &capture.retired {
            if self.retired.remove(start).is_some() {
                match std::fs::remove_file(self.path(*start)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

fn file_name(start: u64) -> String {
    format!("{start:020}.log")
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, cp: TimerCheckpoint) -> TimerLog {
        TimerLog::open(dir, cp, []).unwrap()
    }

    /// An empty timer log in a new temporary directory.
    fn fresh() -> (tempfile::TempDir, TimerLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), TimerCheckpoint::new());
        (dir, log)
    }

    #[test]
    fn delivers_in_due_order_never_early_and_retires_buckets() {
        let (dir, mut log) = fresh();
        log.add((25_005, 300), 30).unwrap();
        log.add((25_001, 200), 20).unwrap();
        log.add((3_000, 100), 10).unwrap();
        assert_eq!(log.len(), 3);
        assert_eq!(log.due(2_999, 10).unwrap(), vec![]);
        assert_eq!(log.due(3_000, 10).unwrap(), vec![((3_000, 100), 10)]);
        log.cancel((3_000, 100)).unwrap();
        // Bucket 0 is empty but its window is open until 10 000: it stays.
        assert_eq!(log.due(9_999, 10).unwrap(), vec![]);
        assert_eq!(log.buckets.len(), 2);
        assert_eq!(log.due(25_001, 10).unwrap(), vec![((25_001, 200), 20)]);
        assert_eq!(log.buckets.len(), 1, "bucket 0 retired");
        assert_eq!(log.due(30_000, 1).unwrap().len(), 1);
        assert_eq!(log.min_physical_offset(), Some(200));
        let cap = log.capture().unwrap();
        assert_eq!(cap.retired, vec![0]);
        log.forget_retired(&cap).unwrap();
        assert!(!dir.path().join(file_name(0)).exists());
    }

    #[test]
    fn pending_reads_unloaded_buckets_and_cancel_is_exact_when_loaded() {
        let (_dir, mut log) = fresh();
        log.add((50_000, 1), 5).unwrap();
        log.add((50_001, 2), 6).unwrap();
        assert_eq!(log.pending((50_001, 2)).unwrap(), Some(6));
        log.cancel((50_001, 2)).unwrap();
        assert_eq!(log.pending((50_001, 2)).unwrap(), None);
        assert_eq!(log.pending((70_000, 2)).unwrap(), None);
        assert_eq!(log.due(50_001, 10).unwrap(), vec![((50_000, 1), 5)]);
        // Loaded: cancelling what is not pending writes and counts nothing.
        log.cancel((50_001, 2)).unwrap();
        assert_eq!(log.len(), 1);
        log.retain_below(1).unwrap();
        assert!(log.is_empty());
    }

    #[test]
    fn reopening_cuts_back_to_the_checkpoint_and_drops_unlisted_files() {
        let (dir, mut log) = fresh();
        log.add((10_000, 1), 5).unwrap();
        let cap = log.capture().unwrap();
        cap.sync().unwrap();
        log.add((10_500, 2), 5).unwrap(); // after the snapshot: cut on reopen
        log.add((90_000, 3), 5).unwrap(); // a file the snapshot does not list: deleted
        log.capture().unwrap();
        drop(log);
        let mut log = open(dir.path(), cap.checkpoint.clone());
        assert_eq!(log.len(), 1);
        assert!(!dir.path().join(file_name(90_000)).exists());
        assert_eq!(log.due(u64::MAX / 2, 10).unwrap(), vec![((10_000, 1), 5)]);

        // A file shorter than recorded, or a unit of no known kind, is an error naming the file.
        let mut short = cap.checkpoint.clone();
        short.get_mut(&10_000).unwrap().len = 48;
        let e = TimerLog::open(dir.path(), short, []).unwrap_err();
        assert!(e.to_string().contains("00000000000000010000.log"), "{e}");
        std::fs::write(dir.path().join(file_name(10_000)), [7u8; UNIT]).unwrap();
        let mut log = open(dir.path(), cap.checkpoint);
        let e = log.due(20_000, 1).unwrap_err();
        assert!(e.to_string().contains("unknown kind 7 at offset 0"), "{e}");
    }

    #[test]
    fn the_pending_set_of_an_older_snapshot_is_imported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path()).unwrap();
        std::fs::write(dir.path().join(file_name(0)), [0u8; UNIT]).unwrap(); // not listed: deleted
        let mut log = TimerLog::open(dir.path(), TimerCheckpoint::new(), [((5_000, 9), 3), ((25_000, 4), 7)]).unwrap();
        assert_eq!((log.len(), log.buckets.len()), (2, 2));
        assert_eq!(log.pending((5_000, 9)).unwrap(), Some(3));
        assert_eq!(log.min_physical_offset(), Some(4));
        assert_eq!(log.due(30_000, 10).unwrap(), vec![((5_000, 9), 3)]);
    }
}
