//! IndexFile: a persistent hash index from a key (`<topic>#<message key>`, `#id#<message id>`) to
//! CommitLog offsets, in RocketMQ's layout (`IndexFile`, `IndexHeader`): a 40-byte header, a table
//! of hash slots (4 bytes each: the newest entry of the slot), then entries of 20 bytes (key hash
//! i32, CommitLog offset i64, seconds since the file's first entry i32, previous entry of the same
//! slot i32). Entry 0 is unused so 0 means "none". A full file is followed by a new one.
//!
//! Hits are candidates only: the caller must read the record and compare the key, since distinct
//! keys share hashes and, after a crash, an entry may point past the recovered CommitLog end.

use std::io;
use std::path::{Path, PathBuf};

use super::mapped_file::MappedFile;

const HEADER: u64 = 40;
const SLOT: u64 = 4;
const ENTRY: u64 = 20;

/// One IndexFile.
struct IndexFile {
    /// Sequence number, the file's name (files are created in order and deleted oldest first).
    seq: u64,
    file: MappedFile,
    slots: u32,
    max_entries: u32,
}

fn java_hash(key: &str) -> i32 {
    // RocketMQ: Math.abs, with Integer.MIN_VALUE mapped to 0.
    super::consume_queue::java_string_hash(key).checked_abs().unwrap_or(0)
}

impl IndexFile {
    fn open(dir: &Path, seq: u64, slots: u32, max_entries: u32) -> io::Result<IndexFile> {
        let size = HEADER + slots as u64 * SLOT + max_entries as u64 * ENTRY;
        let path = dir.join(format!("{seq:020}"));
        let file = MappedFile::open(&path, 0, size)?;
        // Opening writes nothing (a restart on a full disk must not need space); the header is
        // written with the first entry.
        let f = IndexFile { seq, file, slots, max_entries };
        if f.get_i32(36) != 0 && f.get_i32(32) != slots as i32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} has a different slot count", path.display()),
            ));
        }
        Ok(f)
    }
    fn get_i32(&self, at: u64) -> i32 {
        i32::from_be_bytes(self.file.slice(at, 4).try_into().expect("4"))
    }
    fn get_i64(&self, at: u64) -> i64 {
        i64::from_be_bytes(self.file.slice(at, 8).try_into().expect("8"))
    }
    fn put_i32(&self, at: u64, v: i32) -> io::Result<()> {
        self.file.write(at, &v.to_be_bytes())
    }
    fn put_i64(&self, at: u64, v: i64) -> io::Result<()> {
        self.file.write(at, &v.to_be_bytes())
    }
    /// Next free entry index (starts at 1; a new file's header holds 0).
    fn count(&self) -> u32 {
        self.get_i32(36).max(1) as u32
    }
    fn is_full(&self) -> bool {
        self.count() >= self.max_entries
    }
    /// CommitLog offset of the newest entry (header `endPhyOffset`); 0 when empty.
    fn end_physical(&self) -> u64 {
        self.get_i64(24) as u64
    }
    fn slot_at(&self, hash: i32) -> u64 {
        HEADER + (hash as u32 % self.slots) as u64 * SLOT
    }
    fn entry_at(&self, idx: u32) -> u64 {
        HEADER + self.slots as u64 * SLOT + idx as u64 * ENTRY
    }

    /// Adds one entry. Errors: reserving blocks (ENOSPC): the blocks up to the new entry are
    /// reserved first (the slot table lies below the entries), so nothing is half written.
    fn put(&self, key: &str, physical: u64, store_ms: u64) -> io::Result<()> {
        let hash = java_hash(key);
        let idx = self.count();
        self.file.reserve_to(self.entry_at(idx) + ENTRY)?;
        let slot = self.slot_at(hash);
        let mut prev = self.get_i32(slot);
        if prev < 0 || prev as u32 >= idx {
            prev = 0; // stale after a crash: never let a chain point forward
        }
        let begin = if idx == 1 { store_ms as i64 } else { self.get_i64(0) };
        let e = self.entry_at(idx);
        self.put_i32(e, hash)?;
        self.put_i64(e + 4, physical as i64)?;
        self.put_i32(e + 12, ((store_ms as i64 - begin) / 1000) as i32)?;
        self.put_i32(e + 16, prev)?;
        self.put_i32(slot, idx as i32)?;
        // Header: begin/end timestamp, begin/end CommitLog offset, slot count, entry count.
        if idx == 1 {
            self.put_i64(0, begin)?;
            self.put_i64(16, physical as i64)?;
            self.put_i32(32, self.slots as i32)?;
        }
        self.put_i64(8, store_ms as i64)?;
        self.put_i64(24, physical as i64)?;
        self.put_i32(36, idx as i32 + 1)
    }

    fn query(&self, key: &str, out: &mut Vec<u64>, max: usize) {
        let hash = java_hash(key);
        let count = self.count();
        let mut idx = self.get_i32(self.slot_at(hash));
        let mut hops = 0;
        while idx > 0 && (idx as u32) < count && out.len() < max && hops < self.max_entries {
            let e = self.entry_at(idx as u32);
            if self.get_i32(e) == hash {
                out.push(self.get_i64(e + 4) as u64);
            }
            let prev = self.get_i32(e + 16);
            if prev >= idx {
                break;
            }
            idx = prev;
            hops += 1;
        }
    }
}

/// The IndexFiles of a broker, under `index/`, oldest first.
pub struct IndexService {
    dir: PathBuf,
    slots: u32,
    max_entries: u32,
    files: Vec<IndexFile>,
    /// Set while entries cannot be written (full disk): the failure is logged once.
    failing: bool,
}

impl IndexService {
    /// Loads every IndexFile in `dir` (files named by a 20-digit sequence number). Errors: I/O,
    /// an unexpected file name or a malformed file (named).
    pub fn load(dir: &Path, slots: u32, max_entries: u32) -> io::Result<IndexService> {
        std::fs::create_dir_all(dir)?;
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let seq: u64 = name.parse().ok().filter(|_| name.len() == 20).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected file {} in index directory", entry.path().display()),
                )
            })?;
            seqs.push(seq);
        }
        seqs.sort();
        let files = seqs.into_iter().map(|s| IndexFile::open(dir, s, slots, max_entries)).collect::<Result<_, _>>()?;
        Ok(IndexService { dir: dir.to_path_buf(), slots, max_entries, files, failing: false })
    }

    /// Adds `key` -> `physical` (CommitLog offset) stored at `store_ms`. Errors: I/O creating a
    /// file or reserving its blocks (ENOSPC); the entry is then not added.
    pub fn put(&mut self, key: &str, physical: u64, store_ms: u64) -> io::Result<()> {
        if self.files.last().is_none_or(|f| f.is_full()) {
            let seq = self.files.last().map_or(0, |f| f.seq + 1);
            self.files.push(IndexFile::open(&self.dir, seq, self.slots, self.max_entries)?);
        }
        self.files.last().expect("just ensured").put(key, physical, store_ms)
    }

    /// Logs the outcome of a [`IndexService::put`] whose failure is not fatal: the first failure
    /// of a run, and the first success after one.
    pub fn note(&mut self, put: io::Result<()>) {
        match put {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!("IndexFile entries written again");
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::error!(error = %e, "IndexFile entries skipped (lookups by key miss these messages) until there is space");
            }
            Err(_) => {}
        }
    }

    /// CommitLog offsets that may hold `key`, newest first, without duplicates, at most `max`.
    pub fn query(&self, key: &str, max: usize) -> Vec<u64> {
        let mut out = Vec::new();
        for f in self.files.iter().rev() {
            f.query(key, &mut out, max.saturating_mul(2));
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|o| seen.insert(*o));
        out.truncate(max);
        out
    }

    /// Deletes every IndexFile but the newest whose entries all point below CommitLog offset
    /// `min_physical` (retention deleted them; RocketMQ `IndexService.deleteExpiredFile`).
    /// Returns how many were deleted. Errors: I/O unlinking a file (named).
    pub fn delete_below_physical(&mut self, min_physical: u64) -> io::Result<usize> {
        let expired = self
            .files
            .iter()
            .take(self.files.len().saturating_sub(1))
            .take_while(|f| f.end_physical() < min_physical)
            .count();
        for f in self.files.drain(..expired) {
            std::fs::remove_file(f.file.path())
                .map_err(|e| io::Error::new(e.kind(), format!("deleting {}: {e}", f.file.path().display())))?;
        }
        Ok(expired)
    }

    /// Flushes every file. Errors: I/O.
    pub fn flush(&self) -> io::Result<()> {
        for f in &self.files {
            f.file.flush(0, f.file.size())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_across_files_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = IndexService::load(dir.path(), 8, 5).unwrap();
        for i in 0..20u64 {
            idx.put(&format!("t#k{}", i % 3), i * 10, 1_000 + i).unwrap();
        }
        let hits = idx.query("t#k1", 100);
        assert_eq!(hits, vec![190, 160, 130, 100, 70, 40, 10]);
        drop(idx);
        let mut idx = IndexService::load(dir.path(), 8, 5).unwrap();
        assert_eq!(idx.query("t#k1", 2), vec![190, 160]);
        // 4 entries per file: files end at offsets 30, 70, 110, 150, 190.
        assert_eq!(idx.delete_below_physical(100).unwrap(), 2);
        assert_eq!(idx.query("t#k1", 100), vec![190, 160, 130, 100]);
        idx.put("t#k1", 200, 2_000).unwrap();
        idx.put("t#k1", 210, 2_001).unwrap();
        drop(idx);
        let idx = IndexService::load(dir.path(), 8, 5).unwrap();
        assert_eq!(idx.query("t#k1", 2), vec![210, 200]);
    }
}
