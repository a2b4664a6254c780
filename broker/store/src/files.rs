//! Small files that must survive a crash whole: written to a temp file, fsynced, renamed and the
//! directory fsynced, so a crash leaves either the old or the new contents; read back with errors
//! that name the file. The checkpoint, the topic and group registries, the state snapshot, epoch
//! histories and the controller's state all go through here.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

/// Reads the JSON file at `path` (one written by [`write_atomic`]); `None` if it does not exist.
/// Errors: I/O or malformed contents, the message naming the file.
pub fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    let named = |kind, e: &dyn std::fmt::Display| io::Error::new(kind, format!("{}: {e}", path.display()));
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| named(io::ErrorKind::InvalidData, &e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(named(e.kind(), &e)),
    }
}

/// Writes `value` as indented JSON to `path` atomically (temp file, fsync, rename, fsync of the
/// directory), so a crash leaves either the old or the new contents. For small files people read
/// (topics, groups, the checkpoint). Errors: I/O.
pub fn write_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    write_atomic_with(path, 0o644, |w| Ok(serde_json::to_writer_pretty(w, value)?))
}

/// [`write_atomic`] for contents `write` produces itself (a binary log, say). Errors: I/O,
/// including what `write` returns.
pub fn write_atomic_raw(
    path: &Path,
    write: impl FnOnce(&mut io::BufWriter<std::fs::File>) -> io::Result<()>,
) -> io::Result<()> {
    write_atomic_with(path, 0o644, write)
}

/// [`write_atomic`] for a file only this process's user may read (mode 0600): secrets, such as
/// the users' secret keys. Errors: I/O.
pub fn write_atomic_private<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    write_atomic_with(path, 0o600, |w| Ok(serde_json::to_writer_pretty(w, value)?))
}

/// [`write_atomic`] for files whose loss costs only time (the checkpoint, the state snapshot:
/// recovery replays the CommitLog from the older copy): on a full disk (ENOSPC, EDQUOT) the write
/// is skipped and `false` returned, logged once per run of failures under `what`; a later
/// success is logged too. Errors: any other I/O error.
pub fn write_or_skip<T: Serialize>(path: &Path, value: &T, what: &'static str) -> io::Result<bool> {
    let r = write_atomic_with(path, 0o644, |w| Ok(serde_json::to_writer(w, value)?));
    Ok(skip_if_full(path, what, r)?.is_some())
}

/// The outcome `r` of writing `path`, with a full disk (ENOSPC, EDQUOT) turned into `None`:
/// logged once per run of failures under `what`, and a later success logged too (see
/// [`write_or_skip`]). Errors: any other I/O error.
pub fn skip_if_full<T>(path: &Path, what: &'static str, r: io::Result<T>) -> io::Result<Option<T>> {
    static SKIPPING: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut skipping = SKIPPING.lock().unwrap_or_else(|p| p.into_inner());
    let was = skipping.iter().position(|s| *s == what);
    match r {
        Ok(v) => {
            if let Some(i) = was {
                skipping.swap_remove(i);
                tracing::info!(file = %path.display(), "{what} written again");
            }
            Ok(Some(v))
        }
        Err(e) if is_no_space(&e) => {
            if was.is_none() {
                skipping.push(what);
                tracing::warn!(file = %path.display(), error = %e, "disk full: {what} skipped until there is space (recovery replays from the last one)");
            }
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// True for the errors of a full disk or an exhausted quota (ENOSPC, EDQUOT).
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

fn write_atomic_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut io::BufWriter<std::fs::File>) -> io::Result<()>,
) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let written = (|| {
        // A temp file left from a crash may have another mode: start afresh.
        let _ = std::fs::remove_file(&tmp);
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        let mut w = io::BufWriter::new(file);
        write(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // A half-written temp file would hold on to the space a full disk needs.
        let _ = std::fs::remove_file(&tmp);
        return Err(io::Error::new(e.kind(), format!("writing {}: {e}", path.display())));
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
