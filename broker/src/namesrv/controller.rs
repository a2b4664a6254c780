//! The master election controller's state (RocketMQ 5 `ReplicasInfoManager`): per broker group
//! the epoch, the master and the in-sync set, kept in one JSON file that is fsynced (and its
//! directory too) before any answer that depends on it; plus what each member last said in its
//! heartbeat, kept in memory only. Plain data; [`super::controller_service`] serves it.
//!
//! Safety rests on three rules: there is one controller (its file is the only place an epoch is
//! decided, so two masters can never be elected for one epoch); a new master is only chosen from
//! the in-sync set, whose every member holds every acknowledged message (the master shrinks the
//! set here before it acknowledges without a slave); and every election raises the epoch, which
//! fences the old master when it heartbeats again or proposes an in-sync set.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::proto::namesrv::{ControllerGroup, ControllerHeartbeat, ControllerMember, GroupView};
use crate::store::files::{load_json, write_atomic};

/// The durable part of one broker group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Raised by every election; 0 before the first.
    pub epoch: u64,
    /// The master's endpoint; empty before the first election.
    pub master: String,
    /// Endpoints in sync with the master, the master included.
    pub sync_state_set: BTreeSet<String>,
}

/// What a member said in its last heartbeat.
#[derive(Debug, Clone)]
struct Member {
    epoch: u64,
    max_offset: u64,
    preferred: bool,
    last_seen: Instant,
}

/// Why an in-sync set proposal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlterError {
    /// The proposer is not the master of the group's current epoch (it was fenced).
    #[error(
        "{proposer} in epoch {epoch} is not the master of {group}: the controller has {master:?} in epoch {current}"
    )]
    Fenced {
        /// Broker group.
        group: String,
        /// Who proposed.
        proposer: String,
        /// The epoch it proposed in.
        epoch: u64,
        /// The current master.
        master: String,
        /// The current epoch.
        current: u64,
    },
    /// The proposed set leaves out the master itself.
    #[error("the in-sync set of {0} must contain its master")]
    NoMaster(String),
    /// The controller's file could not be written (the proposal was not applied).
    #[error("cannot persist the controller state: {0}")]
    Io(String),
}

/// The controller of every broker group.
pub struct Controller {
    path: PathBuf,
    groups: BTreeMap<String, GroupRecord>,
    members: BTreeMap<String, BTreeMap<String, Member>>,
    /// When each group was first heard of since start (a group without a preferred master elects
    /// one only after `timeout`, so every member has had the chance to say how much it holds).
    first_seen: BTreeMap<String, Instant>,
    started: Instant,
    timeout: Duration,
}

impl Controller {
    /// Opens the controller whose state is the file at `path` (created on first write). A
    /// member is presumed dead after `timeout` without a heartbeat. Errors: the file exists but
    /// cannot be read or parsed (the message names it; a controller never starts from a blank
    /// state over a damaged one, which could elect a second master).
    pub fn open(path: &Path, timeout: Duration) -> io::Result<Controller> {
        Ok(Controller {
            path: path.to_path_buf(),
            groups: load_json(path)?.unwrap_or_default(),
            members: BTreeMap::new(),
            first_seen: BTreeMap::new(),
            started: Instant::now(),
            timeout,
        })
    }

    fn save(&self) -> io::Result<()> {
        write_atomic(&self.path, &self.groups)
    }

    /// The group's current view (epoch 0 and no master if it is unknown).
    pub fn view(&self, group: &str) -> GroupView {
        let r = self.groups.get(group).cloned().unwrap_or_default();
        GroupView {
            broker_name: group.to_string(),
            epoch: r.epoch,
            master: r.master,
            sync_state_set: r.sync_state_set.into_iter().collect(),
        }
    }

    /// Records a heartbeat received at `now` and answers with the group's view. The first
    /// master of a new group is elected here when the heartbeat comes from its preferred master
    /// (broker id 0 in its config). Errors: the state file cannot be written (nothing changed).
    pub fn heartbeat(&mut self, hb: &ControllerHeartbeat, now: Instant) -> io::Result<GroupView> {
        let group = hb.broker_name.clone();
        self.first_seen.entry(group.clone()).or_insert(now);
        let member =
            Member { epoch: hb.epoch, max_offset: hb.max_offset, preferred: hb.preferred_master, last_seen: now };
        self.members.entry(group.clone()).or_default().insert(hb.endpoint.clone(), member);
        let has_master = self.groups.get(&group).is_some_and(|r| !r.master.is_empty());
        if !has_master && hb.preferred_master {
            self.elect(&group, hb.endpoint.clone())?;
        }
        Ok(self.view(&group))
    }

    /// Sets a new in-sync set proposed by the master of the current epoch. Errors: see
    /// [`AlterError`]; on any error the state is unchanged.
    pub fn alter_sync_state_set(
        &mut self,
        group: &str,
        master: &str,
        epoch: u64,
        set: BTreeSet<String>,
    ) -> Result<GroupView, AlterError> {
        let current = self.groups.get(group).cloned().unwrap_or_default();
        if current.master != master || current.epoch != epoch {
            return Err(AlterError::Fenced {
                group: group.to_string(),
                proposer: master.to_string(),
                epoch,
                master: current.master,
                current: current.epoch,
            });
        }
        if !set.contains(master) {
            return Err(AlterError::NoMaster(group.to_string()));
        }
        if current.sync_state_set != set {
            let previous = self.groups.insert(group.to_string(), GroupRecord { sync_state_set: set, ..current });
            if let Err(e) = self.save() {
                self.groups.insert(group.to_string(), previous.unwrap_or_default());
                return Err(AlterError::Io(e.to_string()));
            }
        }
        Ok(self.view(group))
    }

    fn alive(&self, group: &str, endpoint: &str, now: Instant) -> Option<&Member> {
        self.members.get(group)?.get(endpoint).filter(|m| now.duration_since(m.last_seen) <= self.timeout)
    }

    /// Makes `master` the group's master in a new epoch, alone in its in-sync set (slaves join
    /// as they catch up), and persists it before anyone is told. Errors: I/O (nothing changed).
    fn elect(&mut self, group: &str, master: String) -> io::Result<GroupView> {
        let previous = self.groups.get(group).cloned();
        let epoch = previous.as_ref().map_or(0, |r| r.epoch) + 1;
        let record = GroupRecord { epoch, master: master.clone(), sync_state_set: BTreeSet::from([master.clone()]) };
        self.groups.insert(group.to_string(), record);
        if let Err(e) = self.save() {
            match previous {
                Some(p) => self.groups.insert(group.to_string(), p),
                None => self.groups.remove(group),
            };
            return Err(e);
        }
        tracing::warn!(group, master = %master, epoch, "master elected");
        Ok(self.view(group))
    }

    /// One scan at `now` (RocketMQ `scanNotActiveBroker` + `electMaster`): a group whose master
    /// has been silent for longer than the timeout gets the alive member of its in-sync set with
    /// the most CommitLog bytes as master; a new group without a preferred master gets its
    /// fullest member once it has been known for the timeout. After a controller restart every
    /// master is given the timeout from the restart. Returns the views of the groups that got a
    /// new master. Errors: I/O persisting an election (that group keeps its old master).
    pub fn tick(&mut self, now: Instant) -> io::Result<Vec<GroupView>> {
        let mut elected = Vec::new();
        let names: BTreeSet<String> = self.groups.keys().chain(self.members.keys()).cloned().collect();
        for group in names {
            let record = self.groups.get(&group).cloned().unwrap_or_default();
            let best = |candidates: Vec<(&String, &Member)>| {
                candidates
                    .into_iter()
                    .max_by_key(|(e, m)| (m.max_offset, m.preferred, std::cmp::Reverse(*e)))
                    .map(|(e, _)| e.clone())
            };
            let choice = if record.master.is_empty() {
                let known_for = self.first_seen.get(&group).map_or(Duration::ZERO, |t| now.duration_since(*t));
                if known_for <= self.timeout {
                    continue;
                }
                let members: Vec<(&String, &Member)> =
                    self.members.get(&group).map(|m| m.iter().collect()).unwrap_or_default();
                best(members.into_iter().filter(|(e, _)| self.alive(&group, e, now).is_some()).collect())
            } else {
                let heard = self
                    .members
                    .get(&group)
                    .and_then(|m| m.get(&record.master))
                    .map_or(self.started, |m| m.last_seen.max(self.started));
                if now.duration_since(heard) <= self.timeout {
                    continue;
                }
                let candidates: Vec<(&String, &Member)> = record
                    .sync_state_set
                    .iter()
                    .filter(|e| **e != record.master)
                    .filter_map(|e| self.alive(&group, e, now).map(|m| (e, m)))
                    .collect();
                let choice = best(candidates);
                if choice.is_none() {
                    tracing::warn!(group, master = %record.master, in_sync = ?record.sync_state_set,
                        "master silent and no other in-sync replica alive: no election");
                }
                choice
            };
            if let Some(master) = choice {
                elected.push(self.elect(&group, master)?);
            }
        }
        Ok(elected)
    }

    /// Every group with its members as last heard, by group name.
    pub fn list(&self, now: Instant) -> Vec<ControllerGroup> {
        let names: BTreeSet<&String> = self.groups.keys().chain(self.members.keys()).collect();
        names
            .into_iter()
            .map(|g| ControllerGroup {
                view: Some(self.view(g)),
                members: self
                    .members
                    .get(g)
                    .into_iter()
                    .flatten()
                    .map(|(e, m)| ControllerMember {
                        endpoint: e.clone(),
                        epoch: m.epoch,
                        max_offset: m.max_offset,
                        silent_ms: now.duration_since(m.last_seen).as_millis() as u64,
                    })
                    .collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(group: &str, endpoint: &str, epoch: u64, max_offset: u64, preferred: bool) -> ControllerHeartbeat {
        ControllerHeartbeat {
            broker_name: group.into(),
            endpoint: endpoint.into(),
            epoch,
            max_offset,
            preferred_master: preferred,
        }
    }

    const T: Duration = Duration::from_secs(3);

    #[test]
    fn elects_from_the_in_sync_set_raises_the_epoch_and_fences_the_old_master() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.json");
        let mut c = Controller::open(&path, T).unwrap();
        let t0 = Instant::now();
        // The preferred master is elected at once; a slave is told who the master is.
        let v = c.heartbeat(&hb("g", "a:1", 0, 0, true), t0).unwrap();
        assert_eq!((v.epoch, v.master.as_str()), (1, "a:1"));
        assert_eq!(c.heartbeat(&hb("g", "b:1", 0, 0, false), t0).unwrap().master, "a:1");
        assert_eq!(c.heartbeat(&hb("g", "c:1", 0, 0, false), t0).unwrap().master, "a:1");

        // Only the master of the current epoch may change the in-sync set.
        let set = |s: &[&str]| s.iter().map(|e| e.to_string()).collect::<BTreeSet<_>>();
        assert!(matches!(c.alter_sync_state_set("g", "b:1", 1, set(&["b:1"])), Err(AlterError::Fenced { .. })));
        assert!(matches!(c.alter_sync_state_set("g", "a:1", 1, set(&["b:1"])), Err(AlterError::NoMaster(_))));
        let v = c.alter_sync_state_set("g", "a:1", 1, set(&["a:1", "b:1"])).unwrap();
        assert_eq!(v.sync_state_set, ["a:1", "b:1"]);

        // The master falls silent: c is fuller but out of sync, so b is elected.
        let t1 = t0 + Duration::from_secs(2);
        c.heartbeat(&hb("g", "b:1", 1, 100, false), t1).unwrap();
        c.heartbeat(&hb("g", "c:1", 1, 900, false), t1).unwrap();
        assert!(c.tick(t1).unwrap().is_empty(), "the master is not silent for long enough yet");
        let t2 = t0 + Duration::from_secs(4);
        let elected = c.tick(t2).unwrap();
        assert_eq!(elected.len(), 1);
        assert_eq!((elected[0].epoch, elected[0].master.as_str()), (2, "b:1"));
        assert_eq!(elected[0].sync_state_set, ["b:1"]);

        // The old master returns: it is told the new master and can no longer change the set.
        let v = c.heartbeat(&hb("g", "a:1", 1, 150, true), t2).unwrap();
        assert_eq!((v.epoch, v.master.as_str()), (2, "b:1"));
        assert!(matches!(c.alter_sync_state_set("g", "a:1", 1, set(&["a:1"])), Err(AlterError::Fenced { .. })));

        // The state survives a controller restart, which gives the master a full timeout.
        drop(c);
        let mut c = Controller::open(&path, T).unwrap();
        assert_eq!(c.view("g").master, "b:1");
        assert_eq!(c.view("g").epoch, 2);
        assert!(c.tick(Instant::now()).unwrap().is_empty());
    }

    #[test]
    fn no_election_without_a_live_in_sync_replica_and_a_new_group_waits_for_its_members() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Controller::open(&dir.path().join("c.json"), T).unwrap();
        let t0 = Instant::now();
        // No preferred master: the fullest member is elected once the group is known for T.
        c.heartbeat(&hb("g", "a:1", 0, 10, false), t0).unwrap();
        c.heartbeat(&hb("g", "b:1", 0, 20, false), t0).unwrap();
        assert!(c.tick(t0 + Duration::from_secs(1)).unwrap().is_empty());
        c.heartbeat(&hb("g", "a:1", 0, 10, false), t0 + Duration::from_secs(3)).unwrap();
        c.heartbeat(&hb("g", "b:1", 0, 20, false), t0 + Duration::from_secs(3)).unwrap();
        let v = c.tick(t0 + Duration::from_secs(4)).unwrap();
        assert_eq!(v[0].master, "b:1");
        // b dies while alone in its in-sync set: a (out of sync) is never elected.
        let later = t0 + Duration::from_secs(20);
        c.heartbeat(&hb("g", "a:1", 1, 10, false), later).unwrap();
        assert!(c.tick(later).unwrap().is_empty());
        assert_eq!(c.view("g").master, "b:1");
    }

    #[test]
    fn a_damaged_state_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = Controller::open(&path, T).err().unwrap();
        assert!(err.to_string().contains("controller.json"), "{err}");
    }
}
