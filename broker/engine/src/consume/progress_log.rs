//! The progress log: consumer progress on disk, written by what changed.
//!
//! One generation is one file, `progress/<generation, 20 digits>.log`, of JSON lines, each a
//! [`ProgressDelta`] of at most [`LINE_ENTRIES`] entries: the first write holds every queue's
//! whole state, each later one what changed between two checkpoints (offsets acked, put in flight or given a new invisible time; queues added,
//! reset or removed). Replaying the lines in order gives the progress as of the last one. A
//! checkpoint appends one line and fsyncs it, so the bytes written follow the changes, not how
//! much progress exists; once the lines after the first outgrow it (and [`COMPACT_MIN_BYTES`]),
//! the next checkpoint starts a new generation with the whole state instead (RocketMQ rewrites
//! its consumer offsets whole every 5 s; its pop checkpoints live in the CommitLog).
//!
//! The state snapshot records the generation and its length as of the snapshot's CommitLog
//! offset; a start cuts the file back to that length (a line written after it, or cut short by a
//! crash, goes) and deletes every other generation. The ack records after the offset are
//! replayed from the CommitLog, as before.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::{ConsumeState, ProgressDelta, QueueDelta};

/// The lines after a generation's first are compacted into a new generation once they are larger
/// than the first and than this, bytes.
pub const COMPACT_MIN_BYTES: u64 = 16 * 1024;

/// Entries (offsets acked, in flight or neither) per line at most: a whole state of a million
/// deliveries in flight is read back a line at a time, never as one 40 MiB line.
pub const LINE_ENTRIES: usize = 4096;

/// What the state snapshot keeps of the progress log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressCheckpoint {
    /// The generation (its file's name).
    pub generation: u64,
    /// Its length as of the snapshot, bytes.
    pub len: u64,
    /// The length of its whole state (the lines of its first write), bytes.
    #[serde(default)]
    pub base: u64,
}

/// The progress log of one broker (see the module doc).
#[derive(Debug)]
pub struct ProgressLog {
    dir: PathBuf,
    generation: u64,
    /// The current generation's file, open for appending; `None` before the first write.
    file: Option<File>,
    /// Bytes written to it, and of its first line.
    len: u64,
    base: u64,
    /// The next write starts a new generation (none yet, or the last write failed).
    whole_next: bool,
    /// Earlier generations, deleted once a snapshot no longer lists them.
    retired: Vec<u64>,
}

fn file_name(generation: u64) -> String {
    format!("{generation:020}.log")
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("progress log {}: {what}", path.display()))
}

impl ProgressLog {
    /// Opens the progress log in `dir` as `checkpoint` recorded it and returns it with the
    /// progress it holds: the recorded generation cut back to its recorded length, every other
    /// file deleted. Without a checkpoint every file is deleted and the progress is empty.
    /// Errors: I/O; [`io::ErrorKind::InvalidData`], naming the file (and the byte offset of a
    /// bad line), when the file is missing, shorter than recorded or unreadable.
    pub fn open(dir: &Path, checkpoint: Option<ProgressCheckpoint>) -> io::Result<(ProgressLog, ConsumeState)> {
        std::fs::create_dir_all(dir)?;
        let keep = checkpoint.map(|c| file_name(c.generation));
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if Some(entry.file_name().to_string_lossy().as_ref()) != keep.as_deref() {
                std::fs::remove_file(entry.path())?;
            }
        }
        let mut log = ProgressLog {
            dir: dir.to_path_buf(),
            generation: 0,
            file: None,
            len: 0,
            base: 0,
            whole_next: true,
            retired: Vec::new(),
        };
        let mut state = ConsumeState::default();
        let Some(cp) = checkpoint else { return Ok((log, state)) };
        let path = dir.join(file_name(cp.generation));
        let file = match OpenOptions::new().read(true).append(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(invalid(&path, format!("missing; the state snapshot recorded {} bytes", cp.len)))
            }
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len < cp.len {
            return Err(invalid(&path, format!("{len} bytes, the state snapshot recorded {}", cp.len)));
        }
        file.set_len(cp.len)?;
        let mut reader = BufReader::with_capacity(256 * 1024, &file);
        let (mut at, mut line) = (0u64, Vec::new());
        while at < cp.len {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)? as u64;
            if n == 0 || line.last() != Some(&b'\n') {
                return Err(invalid(&path, format!("line at byte {at} is cut short")));
            }
            let delta: ProgressDelta =
                serde_json::from_slice(&line).map_err(|e| invalid(&path, format!("line at byte {at}: {e}")))?;
            state.apply_changes(&delta);
            at += n;
        }
        (log.generation, log.len, log.base) = (cp.generation, cp.len, cp.base.min(cp.len));
        log.file = Some(file);
        log.whole_next = cp.len == 0;
        Ok((log, state))
    }

    /// Whether the next checkpoint writes the whole state (a new generation): there is none yet,
    /// the last write failed, or the changes have outgrown the whole state.
    pub fn needs_whole(&self) -> bool {
        self.whole_next || self.len - self.base > self.base.max(COMPACT_MIN_BYTES)
    }

    /// Makes the next checkpoint write the whole state (the changes taken for this one were not
    /// written).
    pub fn force_whole(&mut self) {
        self.whole_next = true;
    }

    /// Writes one checkpoint's `delta` and fsyncs it: appended to the current generation, or, if
    /// `whole` (see [`ProgressLog::needs_whole`]), as the first lines of a new one. Returns what
    /// the state snapshot records. Errors: I/O; the next write is then whole.
    pub fn write(&mut self, delta: ProgressDelta, whole: bool) -> io::Result<ProgressCheckpoint> {
        let written = if whole { self.start_generation(delta) } else { self.append(delta) };
        if written.is_err() {
            self.whole_next = true;
        }
        written?;
        Ok(self.checkpoint())
    }

    /// The directory of its files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the state snapshot records now.
    pub fn checkpoint(&self) -> ProgressCheckpoint {
        ProgressCheckpoint { generation: self.generation, len: self.len, base: self.base }
    }

    fn start_generation(&mut self, delta: ProgressDelta) -> io::Result<()> {
        let generation = self.generation + 1;
        let path = self.dir.join(file_name(generation));
        if self.file.is_some() {
            self.retired.push(self.generation);
        }
        self.generation = generation;
        self.file = None;
        // A file of this generation can only be left by a write that failed: it is not recorded.
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = OpenOptions::new().create_new(true).append(true).open(&path)?;
        let len = write_lines(&file, delta)?;
        File::open(&self.dir)?.sync_all()?;
        (self.file, self.len, self.base, self.whole_next) = (Some(file), len, len, false);
        Ok(())
    }

    fn append(&mut self, delta: ProgressDelta) -> io::Result<()> {
        if delta.removed.is_empty() && delta.queues.is_empty() {
            return Ok(());
        }
        let file = self.file.as_ref().expect("a generation exists unless whole_next");
        match write_lines(file, delta) {
            Ok(len) => {
                self.len = len;
                Ok(())
            }
            Err(e) => {
                // Cut a partial line off, so that the next one starts clean (the next write is
                // whole anyway, in a new file).
                let _ = file.set_len(self.len);
                Err(e)
            }
        }
    }

    /// Deletes the generations before the current one, once a written snapshot lists it.
    pub fn forget_retired(&mut self) {
        for generation in self.retired.drain(..) {
            let path = self.dir.join(file_name(generation));
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(file = %path.display(), error = %e, "cannot delete an old progress log");
                }
            }
        }
    }
}

/// Appends `delta` as JSON lines of at most [`LINE_ENTRIES`] entries each (see [`split`]) and
/// fsyncs them; returns the file's new length.
fn write_lines(file: &File, delta: ProgressDelta) -> io::Result<u64> {
    let mut w = BufWriter::with_capacity(256 * 1024, file);
    for line in split(delta) {
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    drop(w);
    file.sync_data()?;
    Ok(file.metadata()?.len())
}

/// Splits `delta` into lines that replay to the same state, each of at most [`LINE_ENTRIES`]
/// entries: a queue with more is cut into pieces, the first as `delta` had it (whole or not), the
/// others adding their entries to it (not whole).
fn split(delta: ProgressDelta) -> Vec<ProgressDelta> {
    let mut lines = vec![ProgressDelta { removed: delta.removed, queues: Vec::new() }];
    let mut budget = LINE_ENTRIES;
    for mut q in delta.queues {
        loop {
            let n = q.done.len() + q.inflight.len() + q.open.len();
            if n <= budget {
                budget -= n;
                lines.last_mut().expect("one line at least").queues.push(q);
                break;
            }
            if budget > 0 {
                let inflight = budget.min(q.inflight.len());
                let done = (budget - inflight).min(q.done.len());
                let open = (budget - inflight - done).min(q.open.len());
                let piece = QueueDelta {
                    key: q.key.clone(),
                    ack_offset: q.ack_offset,
                    next_offset: q.next_offset,
                    whole: q.whole,
                    done: q.done.drain(..done).collect(),
                    inflight: q.inflight.drain(..inflight).collect(),
                    open: q.open.drain(..open).collect(),
                };
                lines.last_mut().expect("one line at least").queues.push(piece);
                q.whole = false; // the rest adds to the piece
            }
            lines.push(ProgressDelta::default());
            budget = LINE_ENTRIES;
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consume::state::{AckRecord, QueueState};

    fn ack(state: &mut ConsumeState, q: u32, offsets: &[u64]) {
        state.get_or_insert_with(("g".into(), "t".into(), q), || QueueState::starting_at(0));
        let offsets = offsets.iter().map(|o| (q, *o)).collect();
        state.apply(&AckRecord { group: "g".into(), topic: "t".into(), offsets, set: vec![] });
    }

    fn checkpoint(log: &mut ProgressLog, state: &mut ConsumeState) -> ProgressCheckpoint {
        let whole = log.needs_whole();
        log.write(state.take_changes(whole), whole).unwrap()
    }

    fn acked(state: &ConsumeState, q: u32) -> u64 {
        state.lock(&("g".into(), "t".into(), q)).map_or(0, |s| s.ack_offset())
    }

    #[test]
    fn reopening_at_a_checkpoint_gives_its_progress_and_drops_later_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = ProgressLog::open(dir.path(), None).unwrap();
        ack(&mut state, 0, &[0, 1, 2]);
        let first = checkpoint(&mut log, &mut state);
        ack(&mut state, 1, &[0]);
        ack(&mut state, 0, &[3]);
        let second = checkpoint(&mut log, &mut state);
        assert_eq!(second.generation, first.generation, "a delta is appended");
        ack(&mut state, 0, &[4]);
        checkpoint(&mut log, &mut state); // written, but no snapshot lists it
        drop(log);
        let (_, at_second) = ProgressLog::open(dir.path(), Some(second)).unwrap();
        assert_eq!((acked(&at_second, 0), acked(&at_second, 1)), (4, 1));
        let (_, at_first) = ProgressLog::open(dir.path(), Some(first)).unwrap();
        assert_eq!((acked(&at_first, 0), acked(&at_first, 1)), (3, 0));
    }

    #[test]
    fn changes_that_outgrow_the_state_start_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = ProgressLog::open(dir.path(), None).unwrap();
        let mut cp = checkpoint(&mut log, &mut state);
        let first = cp.generation;
        for o in 0..2_000 {
            ack(&mut state, 0, &[o]);
            cp = checkpoint(&mut log, &mut state);
            if cp.generation != first {
                break;
            }
        }
        assert_eq!(cp.generation, first + 1, "compacted after {} bytes", cp.len);
        let files = || std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files(), 2, "the old generation stays until a snapshot lists the new one");
        log.forget_retired();
        assert_eq!(files(), 1);
        let (_, reopened) = ProgressLog::open(dir.path(), Some(cp)).unwrap();
        assert_eq!(acked(&reopened, 0), acked(&state, 0));
    }

    #[test]
    fn large_states_are_written_in_lines_of_bounded_entries_that_replay_to_the_same_state() {
        let mut live = ConsumeState::default();
        let inflight = crate::consume::state::Inflight { pop_id: 1, attempt: 1, visible_at_ms: 5, group: 0 };
        for q in 0..3u32 {
            let st = live.get_or_insert_with(("g".into(), "t".into(), q), || QueueState::starting_at(0));
            for _ in 0..(LINE_ENTRIES as u64 * 2 + 7) / (q as u64 + 1) {
                let o = st.take_next();
                st.set_inflight(o, inflight);
            }
            st.mark_acked(st.next_offset() - 1);
        }
        let whole = live.take_changes(true);
        let lines = split(whole.clone());
        assert!(lines.len() > 2, "{} lines", lines.len());
        let mut replayed = ConsumeState::default();
        for line in &lines {
            let n: usize = line.queues.iter().map(|q| q.done.len() + q.inflight.len() + q.open.len()).sum();
            assert!(n <= LINE_ENTRIES, "{n} entries in a line");
            replayed.apply_changes(line);
        }
        assert_eq!(replayed.take_changes(true), whole);
    }

    #[test]
    fn a_short_missing_or_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = ProgressLog::open(dir.path(), None).unwrap();
        ack(&mut state, 0, &[0]);
        let cp = checkpoint(&mut log, &mut state);
        drop(log);
        let path = dir.path().join(file_name(cp.generation));
        let longer = ProgressCheckpoint { len: cp.len + 1, ..cp };
        let e = ProgressLog::open(dir.path(), Some(longer)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] = b'x';
        std::fs::write(&path, bytes).unwrap();
        let e = ProgressLog::open(dir.path(), Some(cp)).unwrap_err();
        assert!(e.to_string().contains("line at byte 0"), "{e}");
        let e = ProgressLog::open(dir.path(), Some(ProgressCheckpoint { generation: 9, len: 5, base: 5 })).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
