//! A named-config registry persisted as one JSON file (`config/topics.json`,
//! `config/groups.json`): loaded at start, every change written atomically before it is visible.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::files::{is_no_space, write_atomic, write_atomic_private};

/// An entry of a [`Registry`]: plain data with a unique name.
pub trait Named: Clone + PartialEq + Serialize + DeserializeOwned {
    /// The entry's key.
    fn name(&self) -> &str;
}

#[derive(Serialize, Deserialize)]
struct File<T> {
    #[serde(alias = "topics", alias = "groups")]
    entries: Vec<T>,
}

/// Entries by name, persisted in one file.
pub struct Registry<T> {
    path: PathBuf,
    /// Written readable by this process's user only ([`Registry::load_private`]).
    private: bool,
    entries: RwLock<BTreeMap<String, T>>,
    /// Set while an entry is current but not in the file ([`Registry::insert_unpersisted`]).
    dirty: AtomicBool,
}

impl<T: Named> Registry<T> {
    /// Loads `path` (absent means empty). Errors: I/O, or malformed JSON naming the file.
    pub fn load(path: &Path) -> io::Result<Registry<T>> {
        let entries = match std::fs::read(path) {
            Ok(b) => {
                serde_json::from_slice::<File<T>>(&b)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?
                    .entries
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let entries = entries.into_iter().map(|t| (t.name().to_string(), t)).collect();
        Ok(Registry {
            path: path.to_path_buf(),
            private: false,
            entries: RwLock::new(entries),
            dirty: AtomicBool::new(false),
        })
    }

    /// [`Registry::load`] for entries holding secrets: the file is written with mode 0600.
    /// Errors: as [`Registry::load`].
    pub fn load_private(path: &Path) -> io::Result<Registry<T>> {
        Ok(Registry { private: true, ..Registry::load(path)? })
    }

    /// The entry, if it exists.
    pub fn get(&self, name: &str) -> Option<T> {
        self.entries.read().get(name).cloned()
    }

    /// Every entry, by name.
    pub fn list(&self) -> Vec<T> {
        self.entries.read().values().cloned().collect()
    }

    /// Applies `change` to a copy of the entries and, if it returns `Ok` and changed something,
    /// persists the copy and makes it current (an identical re-apply writes nothing). `change` sees the current entries and may refuse with its own error.
    /// Errors: `change`'s, or I/O writing the file (mapped by `io_err` with the file's path).
    pub fn update<R, E>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, T>) -> Result<R, E>,
        io_err: impl FnOnce(PathBuf, io::Error) -> E,
    ) -> Result<R, E> {
        let mut entries = self.entries.write();
        let mut next = entries.clone();
        let r = change(&mut next)?;
        if next == *entries {
            return Ok(r);
        }
        self.write(&next).map_err(|e| io_err(self.path.clone(), e))?;
        *entries = next;
        self.dirty.store(false, Ordering::Release);
        Ok(r)
    }

    /// Writes `entries` to the file atomically. Errors: I/O.
    fn write(&self, entries: &BTreeMap<String, T>) -> io::Result<()> {
        let file = File { entries: entries.values().cloned().collect() };
        if self.private {
            write_atomic_private(&self.path, &file)
        } else {
            write_atomic(&self.path, &file)
        }
    }

    /// Makes `entry` current without writing the file, unless one of its name exists: for what
    /// the broker creates by itself (auto-created topics and groups, DLQ topics) when the disk
    /// is full, so a drain or a dead letter does not wait for space. The file gets it with the
    /// next change or [`Registry::persist_if_dirty`]; a crash before then forgets it, and it is
    /// created again on first use.
    pub fn insert_unpersisted(&self, entry: T) {
        let mut entries = self.entries.write();
        if !entries.contains_key(entry.name()) {
            entries.insert(entry.name().to_string(), entry);
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Writes the file if [`Registry::insert_unpersisted`] left it behind; a full disk leaves it
    /// behind still. Errors: other I/O.
    pub fn persist_if_dirty(&self) -> io::Result<()> {
        if !self.dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.write(&self.entries.read()) {
            Ok(()) => {
                self.dirty.store(false, Ordering::Release);
                Ok(())
            }
            Err(e) if is_no_space(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
