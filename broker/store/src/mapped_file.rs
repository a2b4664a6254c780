//! Fixed-size memory-mapped segment files and the ordered queue of them that backs the CommitLog
//! and every ConsumeQueue (RocketMQ `MappedFile` / `MappedFileQueue`). A segment is named by the
//! 20-digit global offset of its first byte, so the name alone says where it belongs.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::MmapRaw;
use parking_lot::RwLock;

/// Bytes reserved ahead of a write that needs new blocks: one fallocate serves the next 64 KiB
/// (3,276 ConsumeQueue or IndexFile entries), and a queue that holds little costs little disk.
const RESERVE_AHEAD: u64 = 64 * 1024;

/// One segment: a file of exactly `size` bytes, mapped read-write.
///
/// Concurrency contract (as in RocketMQ): one writer appends above a published write position;
/// readers only touch bytes below a position that was published to them after it was written.
/// The two ranges never overlap, which is what makes the unsynchronised accesses below sound.
///
/// Writes never fault: a store through the mapping into a hole the filesystem cannot back kills
/// the process with SIGBUS, so [`MappedFile::write`] first reserves the blocks it writes to
/// (fallocate) and returns ENOSPC as an error instead. Reads of holes are safe (zero pages).
pub struct MappedFile {
    path: PathBuf,
    start: u64,
    size: u64,
    map: MmapRaw,
    /// Bytes `0..backed` have their blocks reserved (written only by the file's one writer).
    backed: AtomicU64,
}

impl MappedFile {
    /// Opens `path`, creating it sparse with `size` bytes if absent.
    /// Errors: I/O; an existing file whose size is not `size` (the message names the file).
    pub fn open(path: &Path, start: u64, size: u64) -> io::Result<MappedFile> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let len = file.metadata()?.len();
        if len == 0 {
            file.set_len(size)?;
        } else if len != size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is {len} bytes, expected {size} (was the segment size changed?)", path.display()),
            ));
        }
        let map = MmapRaw::map_raw(&file).map_err(|e| map_error(path, e))?;
        advise(&map, path, memmap2::Advice::Random);
        // The mapping outlives the descriptor: holding one per segment would put 10,000 topics of
        // 8 queues past the usual open-file limit. `reserve_to` reopens the file when it must.
        drop(file);
        Ok(MappedFile { path: path.to_path_buf(), start, size, map, backed: AtomicU64::new(0) })
    }

    /// Global offset of the first byte.
    pub fn start(&self) -> u64 {
        self.start
    }
    /// Size of the segment, bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Global offset one past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
    /// The segment file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes at segment-relative `pos..pos+len`.
    ///
    /// Panics if the range is outside the segment. The caller must only read bytes that were
    /// published to it by the writer (see the type's contract).
    pub fn slice(&self, pos: u64, len: usize) -> &[u8] {
        assert!(pos + len as u64 <= self.size, "read past the end of {}", self.path.display());
        // SAFETY: in bounds (checked above); the map lives as long as `self`; bytes below the
        // published write position are never written again while readers may see them.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(pos as usize), len) }
    }

    /// Writes `data` at segment-relative `pos`, reserving the blocks first (see the type's docs).
    /// Only the single writer of this segment may call it, and only above the position it has
    /// published to readers. Errors: ENOSPC or another fallocate failure, naming the file and the
    /// offset; nothing is written then.
    pub fn write(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        assert!(pos + data.len() as u64 <= self.size, "write past the end of {}", self.path.display());
        self.reserve_to(pos + data.len() as u64)?;
        // SAFETY: in bounds; the single writer owns this unpublished range (type contract), and
        // its blocks are reserved, so the store cannot fault.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(pos as usize), data.len()) }
        if pos + data.len() as u64 == self.size {
            self.seal(); // full: the writer has moved on to the next segment
        }
        Ok(())
    }

    /// Makes sure bytes `0..end` have disk blocks: reserves up to [`RESERVE_AHEAD`] bytes past
    /// `end` in one fallocate, or only what `end` needs when the disk has no more. Blocks that are
    /// already allocated cost nothing (a file reopened after a restart starts unknown). Errors:
    /// the reservation failed (ENOSPC), naming the file and offset.
    pub fn reserve_to(&self, end: u64) -> io::Result<()> {
        let backed = self.backed.load(Ordering::Acquire);
        if end <= backed {
            return Ok(());
        }
        let ahead = end.max(backed + RESERVE_AHEAD).min(self.size);
        let file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {} to reserve blocks: {e}", self.path.display())))?;
        let reserved = match allocate(&file, backed, ahead - backed) {
            Err(e) if e == rustix::io::Errno::NOSPC || e == rustix::io::Errno::DQUOT => {
                allocate(&file, backed, end - backed).map(|()| end)
            }
            r => r.map(|()| ahead),
        };
        match reserved {
            Ok(to) => self.backed.store(to, Ordering::Release),
            Err(rustix::io::Errno::OPNOTSUPP) => {
                tracing::warn!(file = %self.path.display(), "the filesystem cannot preallocate; writes rely on free space");
                self.backed.store(self.size, Ordering::Release);
            }
            Err(e) => {
                return Err(io::Error::new(
                    io::Error::from(e).kind(),
                    format!("reserving {} at offset {backed}..{end}: {e}", self.path.display()),
                ))
            }
        }
        Ok(())
    }

    /// Maps segment-relative `from..to` writable now (MADV_POPULATE_WRITE, Linux 5.14), clipped
    /// to the bytes whose blocks are reserved, so the writer's later stores there do not fault.
    /// The contents are unchanged: the writer may store into the range meanwhile. Returns the
    /// segment-relative end that is now mapped. Errors: the kernel refused (EINVAL before 5.14;
    /// the pages then fault in as before).
    pub fn populate(&self, from: u64, to: u64) -> io::Result<u64> {
        let to = to.min(self.backed.load(Ordering::Acquire));
        if to > from {
            self.map.advise_range(memmap2::Advice::PopulateWrite, from as usize, (to - from) as usize)?;
        }
        Ok(to.max(from))
    }

    /// Tells the kernel that the segment is only read from now on (it is full, and a later segment
    /// takes the writes): consumers catching up read it sequentially, so it gets readahead again.
    fn seal(&self) {
        advise(&self.map, &self.path, memmap2::Advice::Normal);
    }

    /// Records that every block of the file is reserved (it was created with [`create_allocated`]).
    fn mark_backed(&self) {
        self.backed.store(self.size, Ordering::Release);
    }

    /// Writes dirty pages of segment-relative `from..to` to disk (msync).
    pub fn flush(&self, from: u64, to: u64) -> io::Result<()> {
        if to > from {
            self.map.flush_range(from as usize, (to - from) as usize)?;
        }
        Ok(())
    }

    /// Zeroes segment-relative `from..` to the end, touching only pages that hold data, so a
    /// sparse file stays sparse. Used to cut a torn tail; flushes what it changed.
    pub fn zero_from(&self, from: u64) -> io::Result<()> {
        const PAGE: u64 = 4096;
        let mut pos = from;
        while pos < self.size {
            let end = ((pos / PAGE) + 1) * PAGE;
            let end = end.min(self.size);
            let len = (end - pos) as usize;
            if self.slice(pos, len).iter().any(|b| *b != 0) {
                self.write(pos, &vec![0u8; len])?;
            }
            pos = end;
        }
        self.flush(from, self.size)
    }
}

/// Creates `path` with `size` bytes whose disk blocks are reserved (fallocate), so a full disk
/// fails here with an error instead of killing the process with SIGBUS on a later write through
/// the mapping. Filesystems without fallocate get a sparse file (logged). Errors: I/O, ENOSPC
/// (the message names the file; a half-created file is removed).
fn create_allocated(path: &Path, size: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).create_new(true).open(path)?;
    match allocate(&file, 0, size) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => {
            tracing::warn!(file = %path.display(), "the filesystem cannot preallocate; segment left sparse");
            Ok(())
        }
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(path);
            Err(io::Error::new(
                io::Error::from(e).kind(),
                format!("allocating {size} bytes for {}: {e}", path.display()),
            ))
        }
    }
}

/// Sets the kernel's paging advice for a whole mapping; a refusal only costs speed, so it is logged.
///
/// Segments that are written get `Random`. With the default advice, faults on a file mapping read
/// ahead into large folios (2 MiB on this machine's Linux 6.18 ext4), and the first store into a clean
/// large folio dirties all of it: each SYNC_FLUSH msync of one 1 KiB message then wrote the whole
/// folio back, 2 MiB of disk writes per message once the readahead window had grown
/// (docs/BENCHMARKS.md run 9). `Random` turns readahead off, so faults map single 4 KiB pages.
fn advise(map: &MmapRaw, path: &Path, advice: memmap2::Advice) {
    if let Err(e) = map.advise(advice) {
        tracing::warn!(file = %path.display(), error = %e, ?advice, "madvise refused");
    }
}

/// The error of a mapping that failed, naming the file; ENOMEM usually means the process holds
/// `vm.max_map_count` mappings (one per ConsumeQueue file: 8 per topic of 8 queues), which the
/// message says how to raise.
fn map_error(path: &Path, e: io::Error) -> io::Error {
    let hint = if e.raw_os_error() == Some(rustix::io::Errno::NOMEM.raw_os_error()) {
        let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap_or_default();
        format!(
            " (the process may be at vm.max_map_count = {}: each ConsumeQueue file is one mapping; raise it, \
             e.g. sysctl -w vm.max_map_count=655360 as RocketMQ's os.sh does)",
            limit.trim()
        )
    } else {
        String::new()
    };
    io::Error::new(e.kind(), format!("mapping {}: {e}{hint}", path.display()))
}

/// Reserves the blocks of `len` bytes at `offset` (fallocate without changing the size).
fn allocate(file: &File, offset: u64, len: u64) -> rustix::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), offset, len)
}

/// The segments of one log, ordered by start offset, all of the same size.
pub struct MappedFileQueue {
    dir: PathBuf,
    segment_bytes: u64,
    files: RwLock<Vec<Arc<MappedFile>>>,
    /// Reserve the blocks of new segments (see [`create_allocated`]).
    preallocate: bool,
}

impl MappedFileQueue {
    /// Loads every segment in `dir` (created if missing). Errors: I/O, a file name that is not a
    /// 20-digit offset, a file of the wrong size, or a gap between segments; each names the file.
    pub fn load(dir: &Path, segment_bytes: u64) -> io::Result<MappedFileQueue> {
        std::fs::create_dir_all(dir)?;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                continue;
            }
            let start: u64 = name.parse().ok().filter(|_| name.len() == 20).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected file {} in segment directory", entry.path().display()),
                )
            })?;
            names.push((start, entry.path()));
        }
        names.sort();
        let mut files: Vec<Arc<MappedFile>> = Vec::with_capacity(names.len());
        for (start, path) in names {
            if let Some(prev) = files.last() {
                if prev.end() != start {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} starts at {start}, but the previous segment ends at {}",
                            path.display(),
                            prev.end()
                        ),
                    ));
                }
            }
            if start % segment_bytes != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} starts at {start}, not a multiple of the segment size {segment_bytes}", path.display()),
                ));
            }
            files.push(Arc::new(MappedFile::open(&path, start, segment_bytes)?));
        }
        // The last segment may be the CommitLog's spare, so the one before it may still be
        // written; every earlier one is only read.
        for f in files.iter().rev().skip(2) {
            f.seal();
        }
        Ok(MappedFileQueue { dir: dir.to_path_buf(), segment_bytes, files: RwLock::new(files), preallocate: false })
    }

    /// Reserves all the disk blocks of every segment created from now on (the CommitLog's: every
    /// message and ack lands there, and a whole spare segment is what keeps control records
    /// writable on a full disk). Other logs reserve as they are written ([`MappedFile::write`]).
    pub fn preallocated(mut self) -> Self {
        self.preallocate = true;
        self
    }

    /// Size of every segment, bytes.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// The segment holding global `offset`, if it exists.
    pub fn find(&self, offset: u64) -> Option<Arc<MappedFile>> {
        let files = self.files.read();
        let first = files.first()?.start();
        let idx = offset.checked_sub(first)? / self.segment_bytes;
        files.get(idx as usize).cloned()
    }

    /// The segment holding global `offset`, creating it (and only it) if `offset` is at or past
    /// the end of the last one. Errors: I/O creating the file.
    pub fn find_or_create(&self, offset: u64) -> io::Result<Arc<MappedFile>> {
        if let Some(f) = self.find(offset) {
            return Ok(f);
        }
        let start = offset - offset % self.segment_bytes;
        let path = self.dir.join(format!("{start:020}"));
        let created = self.preallocate && !path.exists();
        if created {
            create_allocated(&path, self.segment_bytes)?;
        }
        let file = Arc::new(MappedFile::open(&path, start, self.segment_bytes)?);
        if created {
            file.mark_backed();
        }
        self.files.write().push(file.clone());
        Ok(file)
    }

    /// Number of segments.
    pub fn count(&self) -> usize {
        self.files.read().len()
    }

    /// All segments, oldest first.
    pub fn segments(&self) -> Vec<Arc<MappedFile>> {
        self.files.read().clone()
    }

    /// Global offset of the first byte kept, or `None` when empty.
    pub fn min_offset(&self) -> Option<u64> {
        self.files.read().first().map(|f| f.start())
    }

    /// Flushes global `from..to` across segments.
    pub fn flush(&self, from: u64, to: u64) -> io::Result<()> {
        for f in self.segments() {
            let (a, b) = (from.max(f.start()), to.min(f.end()));
            if a < b {
                f.flush(a - f.start(), b - f.start())?;
            }
        }
        Ok(())
    }

    /// Deletes the `count` oldest segments (retention). The last segment, where writes go, is never
    /// deleted: `count` is capped below the number of segments. Readers holding a segment keep
    /// its mapping until they drop it. Returns the paths deleted. Errors: I/O unlinking a file
    /// (the segments before it are gone, it and the rest stay, so the queue has no gap).
    pub fn delete_first(&self, count: usize) -> io::Result<Vec<PathBuf>> {
        let mut deleted = Vec::new();
        let mut files = self.files.write();
        let count = count.min(files.len().saturating_sub(1));
        for _ in 0..count {
            std::fs::remove_file(files[0].path())
                .map_err(|e| io::Error::new(e.kind(), format!("deleting {}: {e}", files[0].path().display())))?;
            deleted.push(files.remove(0).path().to_path_buf());
        }
        Ok(deleted)
    }

    /// Deletes every segment that starts at or after `offset` (used when recovery cuts a tail).
    pub fn remove_from(&self, offset: u64) -> io::Result<()> {
        let mut files = self.files.write();
        while files.last().is_some_and(|f| f.start() >= offset) {
            let f = files.pop().expect("checked non-empty");
            std::fs::remove_file(f.path())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_named_by_offset_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let q = MappedFileQueue::load(dir.path(), 4096).unwrap();
        let f = q.find_or_create(5000).unwrap();
        assert_eq!(f.start(), 4096);
        f.write(10, b"abc").unwrap();
        assert!(dir.path().join("00000000000000004096").exists());
        drop((f, q));
        let q = MappedFileQueue::load(dir.path(), 4096).unwrap();
        assert_eq!(q.find(4096 + 10).unwrap().slice(10, 3), b"abc");
        assert!(q.find(0).is_none());
    }

    /// The first line starting with `field` in the block of `f`'s mapping in /proc/self/smaps
    /// (each block ends with its VmFlags).
    fn smaps_line(f: &MappedFile, field: &str) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let start = format!("{:x}-", f.map.as_ptr() as usize);
        let mut mapping = smaps.lines().skip_while(|l| !l.starts_with(&start));
        mapping.find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} for {start} in smaps")).to_string()
    }

    /// Whether the kernel marks `f`'s mapping random-read (the `rr` VmFlag).
    fn random_read(f: &MappedFile) -> bool {
        smaps_line(f, "VmFlags").split_whitespace().any(|w| w == "rr")
    }

    #[test]
    fn segments_are_random_read_while_written_and_read_ahead_once_full() {
        let dir = tempfile::tempdir().unwrap();
        let q = MappedFileQueue::load(dir.path(), 8192).unwrap();
        let (first, second) = (q.find_or_create(0).unwrap(), q.find_or_create(8192).unwrap());
        assert!(random_read(&first) && random_read(&second), "new segments turn readahead off");
        first.write(0, &[1; 4096]).unwrap();
        assert!(random_read(&first), "a segment being written keeps readahead off");
        first.write(4096, &[2; 4096]).unwrap();
        assert!(!random_read(&first), "a full segment gets readahead back");
        assert!(random_read(&second));
        drop((first, second, q));
        for start in [16384, 24576] {
            MappedFileQueue::load(dir.path(), 8192).unwrap().find_or_create(start).unwrap();
        }
        let q = MappedFileQueue::load(dir.path(), 8192).unwrap();
        let modes: Vec<bool> = q.segments().iter().map(|f| random_read(f)).collect();
        assert_eq!(modes, [false, false, true, true], "on reload, all but the last two are only read");
    }

    /// Resident bytes of `f`'s mapping (its `Rss`).
    fn resident(f: &MappedFile) -> u64 {
        smaps_line(f, "Rss:").split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }

    #[test]
    fn populate_maps_reserved_pages_only_and_keeps_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let sparse = MappedFileQueue::load(dir.path().join("sparse").as_path(), 1 << 20).unwrap();
        let f = sparse.find_or_create(0).unwrap();
        assert_eq!(f.populate(0, 1 << 20).unwrap(), 0, "no block is reserved yet, so nothing is mapped");
        assert_eq!(resident(&f), 0);
        let q = MappedFileQueue::load(dir.path().join("full").as_path(), 1 << 20).unwrap().preallocated();
        let f = q.find_or_create(0).unwrap();
        f.write(0, b"kept").unwrap();
        assert_eq!(f.populate(4096, 256 << 10).unwrap(), 256 << 10);
        assert!(resident(&f) >= (256 << 10) - 4096, "{} bytes resident", resident(&f));
        assert_eq!(f.slice(0, 4), b"kept");
        assert!(f.slice(4096, 4096).iter().all(|b| *b == 0), "populating writes nothing");
        f.write(8192, b"after").unwrap();
        assert_eq!(f.slice(8192, 5), b"after");
    }

    #[test]
    fn preallocated_segments_own_their_blocks() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let q = MappedFileQueue::load(dir.path(), 1 << 20).unwrap().preallocated();
        let f = q.find_or_create(0).unwrap();
        let allocated = std::fs::metadata(f.path()).unwrap().blocks() * 512;
        assert!(allocated >= 1 << 20, "only {allocated} bytes allocated");
    }

    #[test]
    fn writes_reserve_blocks_ahead_of_themselves_only() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let q = MappedFileQueue::load(dir.path(), 16 << 20).unwrap();
        let f = q.find_or_create(0).unwrap();
        let allocated = || std::fs::metadata(f.path()).unwrap().blocks() * 512;
        assert_eq!(allocated(), 0, "a new sparse file holds no blocks");
        f.write(100, b"entry").unwrap();
        let after = allocated();
        assert!((RESERVE_AHEAD..4 * RESERVE_AHEAD).contains(&after), "{after} bytes allocated");
        f.write(RESERVE_AHEAD - 20, b"still inside").unwrap();
        assert_eq!(allocated(), after, "no new reservation inside the reserved range");
        f.reserve_to(RESERVE_AHEAD * 2).unwrap();
        assert!(allocated() >= 2 * RESERVE_AHEAD);
    }

    #[test]
    fn delete_first_keeps_the_last_segment_and_finds_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let q = MappedFileQueue::load(dir.path(), 4096).unwrap();
        for i in 0..3 {
            q.find_or_create(i * 4096).unwrap().write(0, &[i as u8 + 1]).unwrap();
        }
        assert_eq!(q.delete_first(10).unwrap().len(), 2);
        assert_eq!(q.min_offset(), Some(8192));
        assert!(q.find(100).is_none());
        assert_eq!(q.find(8192).unwrap().slice(0, 1), [3]);
        assert!(!dir.path().join(format!("{:020}", 0)).exists());
        drop(q);
        assert_eq!(MappedFileQueue::load(dir.path(), 4096).unwrap().min_offset(), Some(8192));
    }

    #[test]
    fn wrong_size_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{:020}", 0)), b"short").unwrap();
        let err = MappedFileQueue::load(dir.path(), 4096).err().unwrap();
        assert!(err.to_string().contains("00000000000000000000"), "{err}");
    }
}
