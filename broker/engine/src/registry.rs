//! A named-config registry persisted as one JSON file (`config/topics.json`,
//! `config/groups.json`, `config/users.json`, `config/acls.json`) and a journal of the changes
//! since it was written (`<file>.journal`): loaded at start, every change appended and fsynced
//! before it is visible.
//!
//! A change costs what it changed, not what the registry holds (10,000 topics are created one
//! by one in time linear in their number): it appends one line to the journal, a JSON array of
//! `{"put": entry}` and `{"delete": name}`. Once the journal is larger than the file (and than
//! [`COMPACT_MIN_BYTES`]), the file is rewritten whole and the journal removed, so the bytes
//! written stay within a small multiple of the bytes changed. RocketMQ rewrites
//! `topics.json` whole on every change (`ConfigManager.persist`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::files::{is_no_space, write_atomic, write_atomic_private};

/// The journal is folded into the file once it is larger than the file and than this, bytes.
#[cfg(not(test))]
pub const COMPACT_MIN_BYTES: u64 = 256 * 1024;
/// Small in unit tests, so a few changes fold the journal.
#[cfg(test)]
pub const COMPACT_MIN_BYTES: u64 = 4 * 1024;

/// An entry of a [`Registry`]: plain data with a unique name.
pub trait Named: Clone + PartialEq + Serialize + DeserializeOwned {
    /// The entry's key.
    fn name(&self) -> &str;
}

#[derive(Serialize, Deserialize)]
struct FileContents<T> {
    #[serde(alias = "topics", alias = "groups")]
    entries: Vec<T>,
}

/// One change of a journal line.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op<T> {
    Put(T),
    Delete(String),
}

/// The entries as a change sees them: reads, and writes the registry then persists (or undoes,
/// if persisting fails or the change returns an error).
pub struct Changes<'a, T> {
    map: &'a mut BTreeMap<String, T>,
    /// Each name written, with its value before the change (first write only), in order.
    before: Vec<(String, Option<T>)>,
    touched: BTreeSet<String>,
}

impl<T: Named> Changes<'_, T> {
    fn touch(&mut self, name: &str) {
        if self.touched.insert(name.to_string()) {
            self.before.push((name.to_string(), self.map.get(name).cloned()));
        }
    }

    /// The entry, if it exists.
    pub fn get(&self, name: &str) -> Option<&T> {
        self.map.get(name)
    }

    /// The entry to change in place, if it exists.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut T> {
        if !self.map.contains_key(name) {
            return None;
        }
        self.touch(name);
        self.map.get_mut(name)
    }

    /// The entry to change in place, made with `make` if it does not exist.
    pub fn get_or_insert_with(&mut self, name: &str, make: impl FnOnce() -> T) -> &mut T {
        self.touch(name);
        self.map.entry(name.to_string()).or_insert_with(make)
    }

    /// Puts `entry` under its name; returns the entry it replaced.
    pub fn insert(&mut self, entry: T) -> Option<T> {
        self.touch(entry.name());
        self.map.insert(entry.name().to_string(), entry)
    }

    /// Removes an entry; returns it.
    pub fn remove(&mut self, name: &str) -> Option<T> {
        if !self.map.contains_key(name) {
            return None;
        }
        self.touch(name);
        self.map.remove(name)
    }

    /// Makes the entries exactly `entries` (a slave copying its master).
    pub fn replace_all(&mut self, entries: Vec<T>) {
        let keep: BTreeSet<String> = entries.iter().map(|e| e.name().to_string()).collect();
        let gone: Vec<String> = self.map.keys().filter(|k| !keep.contains(*k)).cloned().collect();
        for name in gone {
            self.remove(&name);
        }
        for e in entries {
            if self.map.get(e.name()) != Some(&e) {
                self.insert(e);
            }
        }
    }
}

struct Inner<T> {
    entries: BTreeMap<String, T>,
    /// Names [`Registry::insert_unpersisted`] made current that no file or journal holds yet.
    unpersisted: BTreeSet<String>,
    /// Size of the file as last written, bytes.
    file_bytes: u64,
    /// Size of the journal, bytes, and the journal open for appending.
    journal_bytes: u64,
    journal: Option<File>,
}

/// Entries by name, persisted in one file and its journal.
pub struct Registry<T> {
    path: PathBuf,
    journal_path: PathBuf,
    /// Written readable by this process's user only ([`Registry::load_private`]).
    private: bool,
    inner: RwLock<Inner<T>>,
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()))
}

impl<T: Named> Registry<T> {
    /// Loads `path` and then its journal (absent means empty). A journal whose last line was
    /// cut short by a crash loses that line (a change that was never acknowledged). Errors: I/O,
    /// malformed JSON naming the file (and, in the journal, the byte offset of the line).
    pub fn load(path: &Path) -> io::Result<Registry<T>> {
        let (entries, file_bytes) = match std::fs::read(path) {
            Ok(b) => {
                let entries = serde_json::from_slice::<FileContents<T>>(&b).map_err(|e| invalid(path, e))?.entries;
                (entries, b.len() as u64)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Vec::new(), 0),
            Err(e) => return Err(e),
        };
        let mut entries: BTreeMap<String, T> = entries.into_iter().map(|t| (t.name().to_string(), t)).collect();
        let journal_path = journal_path(path);
        let journal_bytes = replay_journal(&journal_path, &mut entries)?;
        Ok(Registry {
            path: path.to_path_buf(),
            journal_path,
            private: false,
            inner: RwLock::new(Inner {
                entries,
                unpersisted: BTreeSet::new(),
                file_bytes,
                journal_bytes,
                journal: None,
            }),
        })
    }

    /// [`Registry::load`] for entries holding secrets: the file and journal are written with
    /// mode 0600. Errors: as [`Registry::load`].
    pub fn load_private(path: &Path) -> io::Result<Registry<T>> {
        Ok(Registry { private: true, ..Registry::load(path)? })
    }

    /// The entry, if it exists.
    pub fn get(&self, name: &str) -> Option<T> {
        self.inner.read().entries.get(name).cloned()
    }

    /// Every entry, by name.
    pub fn list(&self) -> Vec<T> {
        self.inner.read().entries.values().cloned().collect()
    }

    /// Applies `change` and, if it returns `Ok` and changed something, persists what it changed
    /// before anyone sees it (an identical re-apply writes nothing); if it returns an error or
    /// persisting fails, the entries are as before. Errors: `change`'s, or I/O writing (mapped
    /// by `io_err` with the file's path).
    pub fn update<R, E>(
        &self,
        change: impl FnOnce(&mut Changes<'_, T>) -> Result<R, E>,
        io_err: impl FnOnce(PathBuf, io::Error) -> E,
    ) -> Result<R, E> {
        let mut inner = self.inner.write();
        let mut changes = Changes { map: &mut inner.entries, before: Vec::new(), touched: BTreeSet::new() };
        let r = change(&mut changes);
        let before = std::mem::take(&mut changes.before);
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                undo(&mut inner.entries, before);
                return Err(e);
            }
        };
        // What changed, and what insert_unpersisted left for the next write.
        let mut names: BTreeSet<&String> =
            before.iter().filter(|(name, old)| old.as_ref() != inner.entries.get(name)).map(|(name, _)| name).collect();
        names.extend(inner.unpersisted.iter());
        let ops: Vec<Op<T>> = names
            .into_iter()
            .map(|name| match inner.entries.get(name) {
                Some(e) => Op::Put(e.clone()),
                None => Op::Delete(name.clone()),
            })
            .collect();
        if ops.is_empty() {
            return Ok(r);
        }
        if let Err(e) = self.persist(&mut inner, &ops) {
            undo(&mut inner.entries, before);
            return Err(io_err(self.path.clone(), e));
        }
        Ok(r)
    }

    /// Appends `ops` (already applied) to the journal and fsyncs it, or rewrites the file whole
    /// once the journal would outgrow it. Errors: I/O.
    fn persist(&self, inner: &mut Inner<T>, ops: &[Op<T>]) -> io::Result<()> {
        let mut line = serde_json::to_vec(ops).map_err(io::Error::other)?;
        line.push(b'\n');
        let journal = inner.journal_bytes + line.len() as u64;
        if journal > COMPACT_MIN_BYTES.max(inner.file_bytes) {
            return self.compact(inner);
        }
        if inner.journal.is_none() {
            use std::os::unix::fs::OpenOptionsExt;
            let mode = if self.private { 0o600 } else { 0o644 };
            let created = !self.journal_path.exists();
            let f = OpenOptions::new().create(true).append(true).mode(mode).open(&self.journal_path)?;
            if created {
                if let Some(dir) = self.journal_path.parent() {
                    File::open(dir)?.sync_all()?;
                }
            }
            inner.journal = Some(f);
        }
        let f = inner.journal.as_mut().expect("opened above");
        let written = f.write_all(&line).and_then(|()| f.sync_data());
        if let Err(e) = written {
            // A partial line is cut at the next load; later lines must not follow it.
            inner.journal = None;
            let _ =
                OpenOptions::new().write(true).open(&self.journal_path).and_then(|f| f.set_len(inner.journal_bytes));
            return Err(io::Error::new(e.kind(), format!("writing {}: {e}", self.journal_path.display())));
        }
        inner.journal_bytes = journal;
        inner.unpersisted.clear();
        Ok(())
    }

    /// Writes every entry to the file atomically, then removes the journal (a crash in between
    /// replays changes the file already holds, to the same result). Errors: I/O.
    fn compact(&self, inner: &mut Inner<T>) -> io::Result<()> {
        let file = FileContents { entries: inner.entries.values().cloned().collect() };
        if self.private {
            write_atomic_private(&self.path, &file)?;
        } else {
            write_atomic(&self.path, &file)?;
        }
        inner.file_bytes = std::fs::metadata(&self.path)?.len();
        inner.journal = None;
        match std::fs::remove_file(&self.journal_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        inner.journal_bytes = 0;
        inner.unpersisted.clear();
        Ok(())
    }

    /// Makes `entry` current without writing, unless one of its name exists: for what the broker
    /// creates by itself (auto-created topics and groups, DLQ topics) when the disk is full, so a
    /// drain or a dead letter does not wait for space. It is written with the next change or
    /// [`Registry::persist_if_dirty`]; a crash before then forgets it, and it is created again
    /// on first use.
    pub fn insert_unpersisted(&self, entry: T) {
        let mut inner = self.inner.write();
        if !inner.entries.contains_key(entry.name()) {
            inner.unpersisted.insert(entry.name().to_string());
            inner.entries.insert(entry.name().to_string(), entry);
        }
    }

    /// Writes what [`Registry::insert_unpersisted`] left behind; a full disk leaves it behind
    /// still. Errors: other I/O.
    pub fn persist_if_dirty(&self) -> io::Result<()> {
        let mut inner = self.inner.write();
        let ops: Vec<Op<T>> =
            inner.unpersisted.iter().filter_map(|n| inner.entries.get(n)).map(|e| Op::Put(e.clone())).collect();
        if ops.is_empty() {
            inner.unpersisted.clear();
            return Ok(());
        }
        match self.persist(&mut inner, &ops) {
            Err(e) if is_no_space(&e) => Ok(()),
            r => r,
        }
    }
}

/// Puts back the values `before` recorded.
fn undo<T>(entries: &mut BTreeMap<String, T>, before: Vec<(String, Option<T>)>) {
    for (name, old) in before {
        match old {
            Some(v) => entries.insert(name, v),
            None => entries.remove(&name),
        };
    }
}

fn journal_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".journal");
    path.with_file_name(name)
}

/// Applies the journal at `path` to `entries`; returns its length in bytes after cutting a torn
/// last line. Errors: I/O, a line that is not JSON (naming the file and the line's offset).
fn replay_journal<T: Named>(path: &Path, entries: &mut BTreeMap<String, T>) -> io::Result<u64> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut at = 0;
    while let Some(len) = bytes[at..].iter().position(|b| *b == b'\n') {
        let ops: Vec<Op<T>> = serde_json::from_slice(&bytes[at..at + len])
            .map_err(|e| invalid(path, format_args!("the line at byte {at}: {e}")))?;
        for op in ops {
            match op {
                Op::Put(e) => entries.insert(e.name().to_string(), e),
                Op::Delete(name) => entries.remove(&name),
            };
        }
        at += len + 1;
    }
    if at < bytes.len() {
        tracing::warn!(file = %path.display(), offset = at, "journal line cut short by a crash; dropped");
        OpenOptions::new().write(true).open(path)?.set_len(at as u64)?;
    }
    Ok(at as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct E {
        name: String,
        v: u32,
    }

    impl Named for E {
        fn name(&self) -> &str {
            &self.name
        }
    }

    fn e(name: &str, v: u32) -> E {
        E { name: name.into(), v }
    }

    /// A new registry in a temporary directory: (the directory, the file's path, the registry).
    fn fresh() -> (tempfile::TempDir, PathBuf, Registry<E>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        let r = Registry::<E>::load(&path).unwrap();
        (dir, path, r)
    }

    fn put(r: &Registry<E>, entry: E) {
        r.update(|c| Ok::<_, io::Error>(c.insert(entry)), |_, e| e).unwrap();
    }

    #[test]
    fn changes_are_journaled_replayed_and_compacted() {
        let (_dir, path, r) = fresh();
        put(&r, e("a", 1));
        put(&r, e("b", 2));
        put(&r, e("b", 2)); // identical: nothing written
        r.update(|c| Ok::<_, io::Error>(c.remove("a")), |_, e| e).unwrap();
        let journal = std::fs::read_to_string(journal_path(&path)).unwrap();
        assert_eq!(journal.lines().count(), 3, "{journal}");
        assert!(!path.exists(), "no change rewrote the file");
        assert_eq!(Registry::<E>::load(&path).unwrap().list(), vec![e("b", 2)]);

        // A refused change and its partial writes are undone.
        let refused = r.update(
            |c| {
                c.insert(e("c", 3));
                c.get_mut("b").unwrap().v = 9;
                Err::<(), _>(io::Error::other("no"))
            },
            |_, e| e,
        );
        assert!(refused.is_err());
        assert_eq!(r.list(), vec![e("b", 2)]);

        // The journal is folded into the file once it outgrows it.
        for i in 0..300 {
            put(&r, e(&format!("n{i:05}"), i));
        }
        let journal = std::fs::metadata(journal_path(&path)).map_or(0, |m| m.len());
        assert!(journal <= COMPACT_MIN_BYTES.max(std::fs::metadata(&path).unwrap().len()));
        assert!(path.exists());
        let again = Registry::<E>::load(&path).unwrap();
        assert_eq!(again.list().len(), 301);
        assert_eq!(again.get("n00299"), Some(e("n00299", 299)));
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_a_bad_line_is_named() {
        let (_dir, path, r) = fresh();
        put(&r, e("a", 1));
        let j = journal_path(&path);
        let mut f = OpenOptions::new().append(true).open(&j).unwrap();
        f.write_all(br#"[{"put":{"name":"b","v""#).unwrap();
        let r = Registry::<E>::load(&path).unwrap();
        assert_eq!(r.list(), vec![e("a", 1)]);
        put(&r, e("c", 3));
        assert_eq!(Registry::<E>::load(&path).unwrap().list().len(), 2, "appends follow the cut");

        std::fs::write(&j, "[]\nnot json\n").unwrap();
        let err = Registry::<E>::load(&path).err().unwrap();
        assert!(err.to_string().contains("x.json.journal: the line at byte 3"), "{err}");
    }

    #[test]
    fn a_private_registry_writes_its_file_and_journal_for_its_user_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        let r = Registry::<E>::load_private(&path).unwrap();
        put(&r, e("a", 1));
        for i in 0..200 {
            put(&r, e("big", i)); // until the journal is folded into the file
        }
        put(&r, e("b", 2));
        for p in [&path, &journal_path(&path)] {
            let mode = std::fs::metadata(p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", p.display());
        }
    }

    #[test]
    fn replace_all_and_unpersisted_entries() {
        let (_dir, path, r) = fresh();
        put(&r, e("a", 1));
        put(&r, e("b", 2));
        r.update(
            |c| {
                c.replace_all(vec![e("b", 2), e("c", 3)]);
                Ok::<_, io::Error>(())
            },
            |_, e| e,
        )
        .unwrap();
        r.insert_unpersisted(e("d", 4));
        assert_eq!(Registry::<E>::load(&path).unwrap().list(), vec![e("b", 2), e("c", 3)]);
        r.persist_if_dirty().unwrap();
        assert_eq!(Registry::<E>::load(&path).unwrap().list(), vec![e("b", 2), e("c", 3), e("d", 4)]);
    }
}
