//! A delta log: state on disk, written by what changed (consumer progress in `progress/`, open
//! transactions in `transactions/`).
//!
//! One generation is one file, `<dir>/<generation, 20 digits>.log`, of JSON lines, each a delta
//! ([`LogLine`]) of at most [`LINE_ENTRIES`] entries: the first write holds the whole state, each
//! later one what changed between two checkpoints. Replaying the lines in order onto an empty
//! state gives the state as of the last one. A checkpoint appends its lines and fsyncs them, so
//! the bytes written follow the changes, not how much state exists; once the lines after the
//! first write outgrow it (and [`COMPACT_MIN_BYTES`]), the next checkpoint starts a new
//! generation with the whole state instead (RocketMQ rewrites its consumer offsets whole every
//! 5 s; its pop checkpoints and transaction ops live in the CommitLog).
//!
//! The state snapshot records the generation and its length as of the snapshot's CommitLog
//! offset; a start cuts the file back to that length (a line written after it, or cut short by a
//! crash, goes) and deletes every other generation. The records after the offset are replayed
//! from the CommitLog.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The lines after a generation's first are compacted into a new generation once they are larger
/// than the first and than this, bytes.
pub const COMPACT_MIN_BYTES: u64 = 16 * 1024;

/// Entries (offsets acked, in flight or neither; transactions) per line at most: a whole state of
/// a million deliveries in flight is read back a line at a time, never as one 40 MiB line.
pub const LINE_ENTRIES: usize = 4096;

/// One line of a delta log: what changed between two checkpoints, or part of a whole state.
pub trait LogLine: Serialize + DeserializeOwned {
    /// Nothing changed (no line is written).
    fn is_empty(&self) -> bool;
    /// Cuts this into lines of at most [`LINE_ENTRIES`] entries that, replayed in order, give
    /// the same state.
    fn split(self) -> Vec<Self>;
}

/// What the state snapshot keeps of a delta log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCheckpoint {
    /// The generation (its file's name).
    pub generation: u64,
    /// Its length as of the snapshot, bytes.
    pub len: u64,
    /// The length of its whole state (the lines of its first write), bytes.
    #[serde(default)]
    pub base: u64,
}

/// One delta log of lines `L` (see the module doc).
#[derive(Debug)]
pub struct DeltaLog<L> {
    dir: PathBuf,
    /// What it holds, for messages ("progress log").
    what: &'static str,
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
    lines: std::marker::PhantomData<fn(L)>,
}

fn file_name(generation: u64) -> String {
    format!("{generation:020}.log")
}

fn invalid(log: &str, path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{log} {}: {what}", path.display()))
}

impl<L: LogLine> DeltaLog<L> {
    /// Opens the log (`what`, e.g. "progress log", names it in errors) in `dir` as `checkpoint`
    /// recorded it, passing each line it holds to `apply` in order: the recorded generation is
    /// cut back to its recorded length, every other file deleted. Without a checkpoint every
    /// file is deleted and nothing is applied. Errors: I/O; [`io::ErrorKind::InvalidData`],
    /// naming the file (and the byte offset of a bad line), when the file is missing, shorter
    /// than recorded or unreadable.
    pub fn open(
        dir: &Path,
        what: &'static str,
        checkpoint: Option<LogCheckpoint>,
        mut apply: impl FnMut(L),
    ) -> io::Result<DeltaLog<L>> {
        std::fs::create_dir_all(dir)?;
        let keep = checkpoint.map(|c| file_name(c.generation));
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if Some(entry.file_name().to_string_lossy().as_ref()) != keep.as_deref() {
                std::fs::remove_file(entry.path())?;
            }
        }
        let mut log = DeltaLog {
            dir: dir.to_path_buf(),
            what,
            generation: 0,
            file: None,
            len: 0,
            base: 0,
            whole_next: true,
            retired: Vec::new(),
            lines: std::marker::PhantomData,
        };
        let Some(cp) = checkpoint else { return Ok(log) };
        let path = dir.join(file_name(cp.generation));
        let file = match OpenOptions::new().read(true).append(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(invalid(what, &path, format!("missing; the state snapshot recorded {} bytes", cp.len)))
            }
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len < cp.len {
            return Err(invalid(what, &path, format!("{len} bytes, the state snapshot recorded {}", cp.len)));
        }
        file.set_len(cp.len)?;
        let mut reader = BufReader::with_capacity(256 * 1024, &file);
        let (mut at, mut line) = (0u64, Vec::new());
        while at < cp.len {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)? as u64;
            if n == 0 || line.last() != Some(&b'\n') {
                return Err(invalid(what, &path, format!("line at byte {at} is cut short")));
            }
            let delta: L =
                serde_json::from_slice(&line).map_err(|e| invalid(what, &path, format!("line at byte {at}: {e}")))?;
            apply(delta);
            at += n;
        }
        (log.generation, log.len, log.base) = (cp.generation, cp.len, cp.base.min(cp.len));
        log.file = Some(file);
        log.whole_next = cp.len == 0;
        Ok(log)
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
    /// `whole` (see [`DeltaLog::needs_whole`]), as the first lines of a new one. Returns what
    /// the state snapshot records. Errors: I/O; the next write is then whole.
    pub fn write(&mut self, delta: L, whole: bool) -> io::Result<LogCheckpoint> {
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
    pub fn checkpoint(&self) -> LogCheckpoint {
        LogCheckpoint { generation: self.generation, len: self.len, base: self.base }
    }

    fn start_generation(&mut self, delta: L) -> io::Result<()> {
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

    fn append(&mut self, delta: L) -> io::Result<()> {
        if delta.is_empty() {
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
                    tracing::warn!(file = %path.display(), error = %e, log = self.what, "cannot delete an old generation");
                }
            }
        }
    }
}

/// Appends `delta` as JSON lines of at most [`LINE_ENTRIES`] entries each ([`LogLine::split`])
/// and fsyncs them; returns the file's new length.
fn write_lines<L: LogLine>(file: &File, delta: L) -> io::Result<u64> {
    let mut w = BufWriter::with_capacity(256 * 1024, file);
    for line in delta.split() {
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    drop(w);
    file.sync_data()?;
    Ok(file.metadata()?.len())
}
