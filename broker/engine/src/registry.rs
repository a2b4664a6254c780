//! A named-config registry persisted as one JSON file (`config/topics.json`,
//! `config/groups.json`): loaded at start, every change written atomically before it is visible.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::files::write_atomic;

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
    entries: RwLock<BTreeMap<String, T>>,
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
        Ok(Registry { path: path.to_path_buf(), entries: RwLock::new(entries) })
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
        let file = File { entries: next.values().cloned().collect() };
        write_atomic(&self.path, &file).map_err(|e| io_err(self.path.clone(), e))?;
        *entries = next;
        Ok(r)
    }
}
