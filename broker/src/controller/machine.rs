//! The controller's state machine for openraft's `RaftStateMachine`: the [`Groups`] table with
//! the last applied log id and membership, held in memory and made durable by snapshots
//! (`snapshot.json`, written atomically). After a restart openraft replays the log from the
//! snapshot's last entry, so applying needs no write of its own.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::state::{apply, Answer, GroupRecord, Groups};
use super::TypeConfig;
use crate::store::files::{load_json, write_atomic};

type NodeId = u64;
type Meta = SnapshotMeta<NodeId, BasicNode>;

/// What has been applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    groups: Groups,
}

/// `snapshot.json`: the snapshot's metadata and the state it holds.
#[derive(Serialize, Deserialize)]
struct Stored {
    meta: Meta,
    state: Applied,
}

/// The state machine of one controller member, its snapshot in `dir`. Cheap to clone; clones
/// share the state (the snapshot builder and the controller service read it).
#[derive(Clone)]
pub struct Machine {
    path: PathBuf,
    state: Arc<RwLock<Applied>>,
    /// Held while `snapshot.json` is written: the builder runs on a task of its own, beside an
    /// InstallSnapshot from the leader.
    writing: Arc<Mutex<()>>,
}

impl Machine {
    /// Opens the state machine from the snapshot in `dir`, if any. Errors: the snapshot cannot be
    /// read or parsed, naming the file.
    pub fn open(dir: &Path) -> io::Result<Machine> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("snapshot.json");
        let state = load_json::<Stored>(&path)?.map(|s| s.state).unwrap_or_default();
        Ok(Machine { path, state: Arc::new(RwLock::new(state)), writing: Arc::default() })
    }

    /// The broker groups as applied so far.
    pub fn groups(&self) -> Groups {
        self.state.read().groups.clone()
    }

    /// The membership as last applied: committed.
    pub fn membership(&self) -> StoredMembership<NodeId, BasicNode> {
        self.state.read().membership.clone()
    }

    /// Writes `stored` as `snapshot.json` unless the file already holds a later snapshot (one
    /// built from an older state must never replace one installed meanwhile: the log behind the
    /// installed one may be purged). Returns whether it was written. Errors: I/O.
    fn persist(&self, stored: &Stored) -> io::Result<bool> {
        let _writing = self.writing.lock();
        if load_json::<Stored>(&self.path)?.is_some_and(|cur| cur.meta.last_log_id > stored.meta.last_log_id) {
            return Ok(false);
        }
        write_atomic(&self.path, stored)?;
        Ok(true)
    }

    fn stored(&self) -> io::Result<Option<Snapshot<TypeConfig>>> {
        let Some(s) = load_json::<Stored>(&self.path)? else { return Ok(None) };
        let data = serde_json::to_vec(&s.state)?;
        Ok(Some(Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

fn snapshot_err(meta: Option<&Meta>, e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(meta.map(|m| m.signature()), &e).into()
}

impl RaftSnapshotBuilder<TypeConfig> for Machine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let state = self.state.read().clone();
        let id = state.last_applied.map_or("0-0".to_string(), |l| format!("{}-{}", l.leader_id.term, l.index));
        let meta = Meta { last_log_id: state.last_applied, last_membership: state.membership.clone(), snapshot_id: id };
        let data = serde_json::to_vec(&state).map_err(|e| snapshot_err(Some(&meta), e))?;
        let stored = Stored { meta: meta.clone(), state };
        if !self.persist(&stored).map_err(|e| snapshot_err(Some(&meta), e))? {
            // A later snapshot was installed while this one was built: that one is current.
            if let Some(later) = self.stored().map_err(|e| snapshot_err(Some(&meta), e))? {
                return Ok(later);
            }
        }
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for Machine {
    type SnapshotBuilder = Machine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>> {
        let s = self.state.read();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Answer>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut s = self.state.write();
        let mut answers = Vec::new();
        for entry in entries {
            s.last_applied = Some(entry.log_id);
            answers.push(match entry.payload {
                EntryPayload::Blank => Ok(GroupRecord::default()),
                EntryPayload::Normal(d) => {
                    let answer = apply(&mut s.groups, d.clone());
                    match &answer {
                        Ok(_) => {
                            tracing::info!(index = entry.log_id.index, decision = ?d, "controller decision applied")
                        }
                        Err(e) => {
                            tracing::info!(index = entry.log_id.index, refused = %e, "controller decision refused")
                        }
                    }
                    answer
                }
                EntryPayload::Membership(m) => {
                    s.membership = StoredMembership::new(Some(entry.log_id), m);
                    Ok(GroupRecord::default())
                }
            });
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Machine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let state: Applied = serde_json::from_slice(snapshot.get_ref()).map_err(|e| snapshot_err(Some(meta), e))?;
        self.persist(&Stored { meta: meta.clone(), state: state.clone() }).map_err(|e| snapshot_err(Some(meta), e))?;
        *self.state.write() = state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        self.stored().map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(index: u64) -> Stored {
        let last = LogId::new(openraft::CommittedLeaderId::new(1, 1), index);
        let meta =
            Meta { last_log_id: Some(last), last_membership: Default::default(), snapshot_id: format!("1-{index}") };
        Stored { meta, state: Applied { last_applied: Some(last), ..Default::default() } }
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let m = Machine::open(dir.path()).unwrap();
        assert!(m.persist(&at(10)).unwrap());
        assert!(!m.persist(&at(5)).unwrap(), "built from an older state than the one installed");
        let kept = m.stored().unwrap().unwrap();
        assert_eq!(kept.meta.last_log_id.unwrap().index, 10);
        assert!(m.persist(&at(20)).unwrap());
    }
}
