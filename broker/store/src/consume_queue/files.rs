//! The file-per-queue ConsumeQueue (RocketMQ's default store): per topic and queue, a log of
//! fixed 20-byte entries (CommitLog offset u64, size u32, tag hash u64), so the n-th message of
//! a queue is found at byte 20·n (RocketMQ `ConsumeQueue`, `CQ_STORE_UNIT_SIZE`).
//!
//! Beside it, under `consumequeue_ext/<topic>/<queue id>/` (RocketMQ keeps its
//! `ConsumeQueueExt` there too), an extension of 8 bytes per entry holds the hash of the
//! message's message group, so a FIFO consumer group's gate reads 8 bytes instead of the whole
//! message. Its segments are created only from the first message with a message group on (and
//! then without gaps); an entry outside them, or 0, means no message group. Queues dispatched
//! before the extension existed are listed once in `consumequeue_ext/legacy.json` with the
//! offset it starts at: below that, the group is unknown and read from the message.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{CqEntry, QueueKey};
use crate::mapped_file::MappedFileQueue;

/// Size of one entry, bytes.
pub const ENTRY_BYTES: u64 = 20;
/// Size of one extension entry (a message group hash), bytes.
pub const EXT_ENTRY_BYTES: u64 = 8;
/// File under the extension root listing queues older than the extension (see the module doc).
const LEGACY_FILE: &str = "legacy.json";

/// One queue of one topic, in its own files.
pub struct FileQueue {
    files: MappedFileQueue,
    /// Directory of the message-group extension.
    ext_dir: PathBuf,
    /// The extension, once it has a segment (created by the dispatcher only, so never raced).
    ext: std::sync::OnceLock<MappedFileQueue>,
    /// Offsets below this were dispatched before the extension existed (group unknown).
    ext_from: u64,
    /// One past the last entry written (the queue's max offset).
    max: AtomicU64,
    /// Lowest queue offset whose message is still in the CommitLog (RocketMQ `minLogicOffset`):
    /// retention deletes whole ConsumeQueue files, so the first kept file can start with
    /// entries that point at deleted CommitLog segments.
    min: AtomicU64,
    /// Set by each write, cleared by [`FileQueue::flush`]: a flush pass skips clean queues,
    /// so it costs what was written, not how many queues exist.
    dirty: AtomicBool,
}

impl FileQueue {
    /// Loads (or starts) the queue in `dir` with its message-group extension in `ext_dir` (read
    /// if it exists, created with the first message group); offsets below `ext_from` predate
    /// the extension. Errors: I/O or a malformed segment (named).
    pub fn load(dir: &Path, ext_dir: &Path, ext_from: u64, entries_per_file: u64) -> io::Result<FileQueue> {
        let files = MappedFileQueue::load(dir, entries_per_file * ENTRY_BYTES)?;
        let first = files.min_offset().unwrap_or(0) / ENTRY_BYTES;
        let ext = std::sync::OnceLock::new();
        if ext_dir.exists() {
            let _ = ext.set(MappedFileQueue::load(ext_dir, entries_per_file * EXT_ENTRY_BYTES)?);
        }
        let cq = FileQueue {
            files,
            ext_dir: ext_dir.to_path_buf(),
            ext,
            ext_from,
            max: AtomicU64::new(0),
            min: AtomicU64::new(first),
            dirty: AtomicBool::new(false),
        };
        let mut max = first;
        if let Some(last) = cq.files.segments().last() {
            // The last segment's entries end at the first never-written (size 0) slot.
            let n = last.size() / ENTRY_BYTES;
            let used = (0..n).take_while(|i| cq.entry_in(last, *i).size != 0).count() as u64;
            max = last.start() / ENTRY_BYTES + used;
        }
        cq.max.store(max, Ordering::Release);
        Ok(cq)
    }

    fn entry_in(&self, file: &crate::mapped_file::MappedFile, idx: u64) -> CqEntry {
        let b = file.slice(idx * ENTRY_BYTES, ENTRY_BYTES as usize);
        CqEntry {
            physical_offset: u64::from_be_bytes(b[0..8].try_into().expect("8")),
            size: u32::from_be_bytes(b[8..12].try_into().expect("4")),
            tag_hash: u64::from_be_bytes(b[12..20].try_into().expect("8")),
        }
    }

    /// One past the highest queue offset written.
    pub fn max_offset(&self) -> u64 {
        self.max.load(Ordering::Acquire)
    }

    /// Lowest queue offset still stored (its message is in the CommitLog).
    pub fn min_offset(&self) -> u64 {
        self.min.load(Ordering::Acquire).min(self.max_offset())
    }

    /// The entry at queue `offset`, or `None` if not written (or deleted, or a hole left by a
    /// corrupt CommitLog record).
    pub fn get(&self, offset: u64) -> Option<CqEntry> {
        if offset < self.min.load(Ordering::Acquire) {
            return None;
        }
        self.get_raw(offset)
    }

    /// The entry at `offset` if its file still exists, ignoring the corrected minimum.
    fn get_raw(&self, offset: u64) -> Option<CqEntry> {
        if offset >= self.max_offset() {
            return None;
        }
        let pos = offset * ENTRY_BYTES;
        let file = self.files.find(pos)?;
        let e = self.entry_in(&file, (pos - file.start()) / ENTRY_BYTES);
        (e.size != 0).then_some(e)
    }

    /// The message group hash ([`message_group_hash`], 0 for none) of the message at `offset`,
    /// or `None` if the queue was dispatched there before the extension existed (read the
    /// message instead).
    pub fn message_group(&self, offset: u64) -> Option<u64> {
        if offset < self.ext_from {
            return None;
        }
        let Some(ext) = self.ext.get() else { return Some(0) };
        let pos = offset * EXT_ENTRY_BYTES;
        let Some(file) = ext.find(pos) else { return Some(0) };
        Some(u64::from_be_bytes(file.slice(pos - file.start(), 8).try_into().expect("8")))
    }

    /// Writes the message group hash of queue `offset` into the extension: creates its segments
    /// (from the one holding `offset`, or on from the last, without gaps) for a group; for none,
    /// clears an entry a cut tail may have left. Errors: I/O.
    fn put_message_group(&self, offset: u64, group: u64) -> io::Result<()> {
        let pos = offset * EXT_ENTRY_BYTES;
        let ext = match self.ext.get() {
            Some(ext) => ext,
            None if group == 0 => return Ok(()),
            None => {
                let _ = self.ext.set(MappedFileQueue::load(
                    &self.ext_dir,
                    self.files.segment_bytes() / ENTRY_BYTES * EXT_ENTRY_BYTES,
                )?);
                self.ext.get().expect("just set")
            }
        };
        let file = match ext.find(pos) {
            Some(f) => f,
            None if group == 0 => return Ok(()),
            None => {
                // Segments up to the one holding `pos`, so the extension has no gap.
                let last_end = ext.segments().last().map(|f| f.end());
                let mut at = last_end.filter(|e| *e <= pos).unwrap_or(pos);
                loop {
                    let f = ext.find_or_create(at)?;
                    if pos < f.end() {
                        break f;
                    }
                    at = f.end();
                }
            }
        };
        file.write(pos - file.start(), &group.to_be_bytes())
    }

    /// Writes the entry for queue `offset` (dispatcher only) and its message group hash
    /// ([`message_group_hash`], 0 for none). Re-writing an existing offset (after recovery) is
    /// harmless. Errors: I/O creating a segment or reserving its blocks (ENOSPC).
    pub fn put(&self, offset: u64, e: CqEntry, group: u64) -> io::Result<()> {
        self.put_message_group(offset, group)?;
        let pos = offset * ENTRY_BYTES;
        let file = self.files.find_or_create(pos)?;
        let mut b = [0u8; ENTRY_BYTES as usize];
        b[0..8].copy_from_slice(&e.physical_offset.to_be_bytes());
        b[8..12].copy_from_slice(&e.size.to_be_bytes());
        b[12..20].copy_from_slice(&e.tag_hash.to_be_bytes());
        file.write(pos - file.start(), &b)?;
        self.max.fetch_max(offset + 1, Ordering::AcqRel);
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Drops every entry that points at CommitLog offset `physical` or later (recovery re-dispatches
    /// them). Errors: I/O.
    pub fn truncate_from_physical(&self, physical: u64) -> io::Result<()> {
        let mut max = self.max_offset();
        let min = self.min_offset();
        while max > min {
            match self.get(max - 1) {
                Some(e) if e.physical_offset < physical => break,
                _ => {}
            }
            let pos = (max - 1) * ENTRY_BYTES;
            if let Some(f) = self.files.find(pos) {
                f.write(pos - f.start(), &[0u8; ENTRY_BYTES as usize])?;
            }
            max -= 1;
        }
        self.max.store(max, Ordering::Release);
        self.dirty.store(true, Ordering::Release);
        let first_cut = (max * ENTRY_BYTES).div_ceil(self.files.segment_bytes());
        if let Some(ext) = self.ext.get() {
            ext.remove_from(first_cut * ext.segment_bytes())?;
        }
        self.files.remove_from(first_cut * self.files.segment_bytes())
    }

    /// Forgets what points below CommitLog offset `min_physical` (retention deleted it): deletes
    /// every file but the last whose entries all point below it, then moves the queue's minimum
    /// to the first entry at or above it (RocketMQ `deleteExpiredFile` + `correctMinOffset`).
    /// Returns the number of files deleted. Errors: I/O unlinking a file (named).
    pub fn delete_below_physical(&self, min_physical: u64) -> io::Result<usize> {
        let per_file = self.files.segment_bytes() / ENTRY_BYTES;
        let segs = self.files.segments();
        let expired = segs
            .iter()
            .take(segs.len().saturating_sub(1))
            .take_while(|f| {
                // A full file's newest entry (holes left by corrupt records have size 0).
                let last = (0..per_file).rev().map(|i| self.entry_in(f, i)).find(|e| e.size != 0);
                last.is_none_or(|e| e.physical_offset < min_physical)
            })
            .count();
        let deleted = self.files.delete_first(expired)?.len();
        if let (Some(ext), Some(first)) = (self.ext.get(), self.files.min_offset()) {
            // The extension's segments wholly below the first ConsumeQueue entry kept.
            let below = first / ENTRY_BYTES * EXT_ENTRY_BYTES;
            ext.delete_first(ext.segments().iter().take_while(|f| f.end() <= below).count())?;
        }
        let mut min = self.min.load(Ordering::Acquire).max(self.files.min_offset().unwrap_or(0) / ENTRY_BYTES);
        let max = self.max_offset();
        while min < max && self.get_raw(min).is_none_or(|e| e.physical_offset < min_physical) {
            min += 1;
        }
        self.min.fetch_max(min, Ordering::AcqRel);
        Ok(deleted)
    }

    /// Flushes every entry to disk; nothing if nothing was written since the last flush.
    pub fn flush(&self) -> io::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let ext = self.ext.get().map_or(Ok(()), |ext| ext.flush(0, self.max_offset() * EXT_ENTRY_BYTES));
        let flushed = ext.and_then(|()| self.files.flush(0, self.max_offset() * ENTRY_BYTES));
        if flushed.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        flushed
    }
}

/// Where the file-per-queue ConsumeQueues live: `consumequeue/<topic>/<queue id>/`, with their
/// message-group extensions under `consumequeue_ext/`.
pub struct FileRoot {
    root: PathBuf,
    ext_root: PathBuf,
    entries_per_file: u64,
}

impl FileRoot {
    /// Loads every queue under `root`, with the extensions under `ext_root`. The first time
    /// `ext_root` is missing over existing queues, it is created with `legacy.json` listing
    /// them. Errors: I/O or a malformed directory or file (named).
    pub fn load(
        root: &Path,
        ext_root: &Path,
        entries_per_file: u64,
    ) -> io::Result<(FileRoot, Vec<(QueueKey, FileQueue)>)> {
        std::fs::create_dir_all(root)?;
        let mut dirs = Vec::new();
        for topic in std::fs::read_dir(root)? {
            let topic = topic?;
            let name = topic.file_name().to_string_lossy().into_owned();
            for q in std::fs::read_dir(topic.path())? {
                let q = q?;
                let id: u32 = q.file_name().to_string_lossy().parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("unexpected directory {}", q.path().display()))
                })?;
                dirs.push(((name.clone(), id), q.path()));
            }
        }
        let legacy_path = ext_root.join(LEGACY_FILE);
        let mut legacy: HashMap<QueueKey, u64> = HashMap::new();
        let upgrading = !ext_root.exists();
        if !upgrading {
            let listed: Vec<(String, u32, u64)> = crate::files::load_json(&legacy_path)?.unwrap_or_default();
            legacy = listed.into_iter().map(|(t, q, from)| ((t, q), from)).collect();
        }
        let mut queues = Vec::new();
        let mut found_legacy = Vec::new();
        for (key, dir) in dirs {
            let ext_dir = ext_root.join(&key.0).join(key.1.to_string());
            let mut q = FileQueue::load(&dir, &ext_dir, legacy.get(&key).copied().unwrap_or(0), entries_per_file)?;
            if upgrading {
                // Every queue predates the extension: the group is unknown up to its end.
                q.ext_from = q.max_offset();
                found_legacy.push((key.0.clone(), key.1, q.ext_from));
            }
            queues.push((key, q));
        }
        if upgrading {
            // Made complete beside it and renamed, so a crash never leaves a root without the list.
            let tmp = ext_root.with_extension("tmp");
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp)?;
            crate::files::write_atomic(&tmp.join(LEGACY_FILE), &found_legacy)?;
            std::fs::rename(&tmp, ext_root)?;
        }
        let me = FileRoot { root: root.to_path_buf(), ext_root: ext_root.to_path_buf(), entries_per_file };
        Ok((me, queues))
    }

    /// A new queue (its directory is made with its first segment). Errors: I/O.
    pub fn create(&self, topic: &str, queue_id: u32) -> io::Result<FileQueue> {
        let dir = self.root.join(topic).join(queue_id.to_string());
        let ext_dir = self.ext_root.join(topic).join(queue_id.to_string());
        // Every queue that predates the extension was loaded: a new one is written with it.
        FileQueue::load(&dir, &ext_dir, 0, self.entries_per_file)
    }

    /// Deletes the directories of `topic`'s queues and extensions (the topic was deleted).
    /// Errors: I/O removing a directory (named).
    pub fn remove_topic(&self, topic: &str) -> io::Result<()> {
        for dir in [self.root.join(topic), self.ext_root.join(topic)] {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io::Error::new(e.kind(), format!("deleting {}: {e}", dir.display())))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::message_group_hash;
    use super::*;

    #[test]
    fn queues_hold_no_file_descriptor_and_flush_only_when_written() {
        let open_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        let dir = tempfile::tempdir().unwrap();
        let (root, _) = FileRoot::load(&dir.path().join("cq"), &dir.path().join("ext"), 1024).unwrap();
        let before = open_fds();
        let mut queues = Vec::new();
        for t in 0..300 {
            let q = root.create(&format!("t{t}"), 0).unwrap();
            q.put(0, CqEntry { physical_offset: t, size: 10, tag_hash: 0 }, 0).unwrap();
            queues.push(q);
        }
        // Other tests open files meanwhile; 300 queues holding one each would show.
        assert!(open_fds() < before + 100, "{} descriptors for 300 queues", open_fds() - before);
        let q = &queues[7];
        assert!(q.dirty.load(Ordering::Acquire));
        q.flush().unwrap();
        assert!(!q.dirty.load(Ordering::Acquire), "flushed");
        q.put(1, CqEntry { physical_offset: 1000, size: 10, tag_hash: 0 }, 0).unwrap();
        assert!(q.dirty.load(Ordering::Acquire));
        drop((queues, root));
        let (_, again) = FileRoot::load(&dir.path().join("cq"), &dir.path().join("ext"), 1024).unwrap();
        let t7 = again.iter().find(|(k, _)| k == &("t7".to_string(), 0)).unwrap();
        assert_eq!(t7.1.get(1).unwrap().physical_offset, 1000);
    }

    #[test]
    fn entries_survive_reload_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let cq = FileQueue::load(&dir.path().join("cq"), &dir.path().join("ext"), 0, 4).unwrap();
        for i in 0..10u64 {
            cq.put(i, CqEntry { physical_offset: i * 100, size: 50, tag_hash: i }, 0).unwrap();
        }
        assert_eq!(cq.max_offset(), 10);
        drop(cq);
        let cq = FileQueue::load(&dir.path().join("cq"), &dir.path().join("ext"), 0, 4).unwrap();
        assert_eq!(cq.max_offset(), 10);
        assert_eq!(cq.get(7).unwrap().physical_offset, 700);
        cq.truncate_from_physical(450).unwrap();
        assert_eq!(cq.max_offset(), 5);
        assert!(cq.get(5).is_none());
        drop(cq);
        assert_eq!(FileQueue::load(&dir.path().join("cq"), &dir.path().join("ext"), 0, 4).unwrap().max_offset(), 5);
    }

    #[test]
    fn delete_below_physical_drops_whole_files_and_moves_the_minimum() {
        let dir = tempfile::tempdir().unwrap();
        let cq = FileQueue::load(&dir.path().join("cq"), &dir.path().join("ext"), 0, 4).unwrap();
        for i in 0..10u64 {
            cq.put(i, CqEntry { physical_offset: i * 100, size: 50, tag_hash: 0 }, 0).unwrap();
        }
        // Entries 0..=5 point below 550: file 0 (entries 0..4) goes, file 1 stays with its minimum at 6.
        assert_eq!(cq.delete_below_physical(550).unwrap(), 1);
        assert_eq!(cq.min_offset(), 6);
        assert!(cq.get(5).is_none());
        assert_eq!(cq.get(6).unwrap().physical_offset, 600);
        // Everything expired: the last file stays (writes go there), the queue reads as empty.
        assert_eq!(cq.delete_below_physical(10_000).unwrap(), 1);
        assert_eq!((cq.min_offset(), cq.max_offset()), (10, 10));
        cq.put(10, CqEntry { physical_offset: 10_000, size: 50, tag_hash: 0 }, 0).unwrap();
        assert_eq!(cq.get(10).unwrap().physical_offset, 10_000);
    }

    #[test]
    fn message_groups_are_kept_beside_the_queue_without_gaps_and_follow_cuts_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let (cq_dir, ext_dir) = (dir.path().join("cq"), dir.path().join("ext"));
        let cq = FileQueue::load(&cq_dir, &ext_dir, 0, 4).unwrap();
        let e = |i: u64| CqEntry { physical_offset: i * 100, size: 50, tag_hash: 0 };
        for i in 0..6u64 {
            cq.put(i, e(i), 0).unwrap();
        }
        assert!(!ext_dir.exists(), "no message group yet, so no extension");
        assert_eq!(cq.message_group(3), Some(0));
        // The first group lands in the second file (entries 4..8): only that file is made.
        cq.put(6, e(6), message_group_hash("order-1")).unwrap();
        assert_eq!(std::fs::read_dir(&ext_dir).unwrap().count(), 1);
        // A group three files on fills the gap.
        for i in 7..13u64 {
            cq.put(i, e(i), if i == 12 { 7 } else { 0 }).unwrap();
        }
        assert_eq!(std::fs::read_dir(&ext_dir).unwrap().count(), 3);
        drop(cq);
        let cq = FileQueue::load(&cq_dir, &ext_dir, 0, 4).unwrap();
        assert_eq!(cq.message_group(6), Some(message_group_hash("order-1")));
        assert_eq!((cq.message_group(7), cq.message_group(12)), (Some(0), Some(7)));
        // A cut tail re-dispatched without a group reads as none.
        cq.truncate_from_physical(1_200).unwrap();
        cq.put(12, e(12), 0).unwrap();
        assert_eq!(cq.message_group(12), Some(0));
        // Retention drops the extension's files below the first ConsumeQueue file kept.
        cq.delete_below_physical(900).unwrap();
        // (ConsumeQueue files 0 and 1 go; so does the extension's file of entries 4..8.)
        assert_eq!(cq.message_group(9), Some(0));
        assert_eq!(std::fs::read_dir(&ext_dir).unwrap().count(), 1);
    }

    #[test]
    fn queues_older_than_the_extension_are_listed_once_and_read_as_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let (cq_root, ext_root) = (dir.path().join("cq"), dir.path().join("ext"));
        let old = FileQueue::load(&cq_root.join("T").join("0"), &dir.path().join("nowhere"), 0, 4).unwrap();
        for i in 0..3u64 {
            old.put(i, CqEntry { physical_offset: i, size: 1, tag_hash: 0 }, 0).unwrap();
        }
        drop(old);
        for _ in 0..2 {
            let (root, queues) = FileRoot::load(&cq_root, &ext_root, 4).unwrap();
            let q = &queues.iter().find(|(k, _)| k == &("T".to_string(), 0)).unwrap().1;
            assert_eq!((q.message_group(2), q.message_group(3)), (None, Some(0)));
            let new = root.create("U", 0).unwrap();
            assert_eq!(new.message_group(0), Some(0));
        }
        table_survives_topic_deletion(&cq_root, &ext_root);
    }

    fn table_survives_topic_deletion(cq_root: &Path, ext_root: &Path) {
        let (root, _) = FileRoot::load(cq_root, ext_root, 4).unwrap();
        root.create("U", 0).unwrap().put(0, CqEntry { physical_offset: 9, size: 1, tag_hash: 0 }, 5).unwrap();
        assert!(ext_root.join("U").exists());
        root.remove_topic("U").unwrap();
        assert!(!ext_root.join("U").exists() && !cq_root.join("U").exists());
    }
}
