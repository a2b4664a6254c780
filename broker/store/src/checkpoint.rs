//! The checkpoint: the CommitLog offset below which every ConsumeQueue and IndexFile entry is on
//! disk, so recovery re-dispatches only what lies past it (RocketMQ `StoreCheckpoint`).

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Contents of `checkpoint`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// CommitLog offset: records below it are dispatched and their entries flushed.
    pub dispatched: u64,
    /// When it was written, ms since the Unix epoch.
    pub written_ms: u64,
}

/// Reads the checkpoint at `path`; `None` if it does not exist.
/// Errors: I/O, or malformed contents (the message names the file).
pub fn load(path: &Path) -> io::Result<Option<Checkpoint>> {
    crate::files::load_json(path)
}
