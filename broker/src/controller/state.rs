//! The controller's replicated state (RocketMQ 5 `ReplicasInfoManager`): per broker group the
//! epoch, the master and the in-sync set, changed only by applying a committed [`Decision`].
//! Plain data and one pure function, so every member of the controller group that applies the
//! same log holds the same table.
//!
//! Safety rests on three rules, each checked here when a decision is applied rather than when it
//! is made, so a decision made from a stale view is refused instead of applied: an election names
//! the epoch it replaces (two elections for one epoch cannot both apply); an in-sync set may only
//! be changed by the master of the current epoch; and the master is always in its in-sync set.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::proto::namesrv::GroupView;

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

/// Every broker group's record, by group name.
pub type Groups = BTreeMap<String, GroupRecord>;

/// A change to [`Groups`], proposed by the controller leader and applied once committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Makes `master` the master of `group` in `epoch`, alone in its in-sync set (slaves join as
    /// they catch up). Applies only while the group's epoch is still `replaces`.
    Elect {
        /// Broker group.
        group: String,
        /// The new master's endpoint.
        master: String,
        /// The epoch this election ends (0 for a group's first).
        replaces: u64,
        /// The new epoch, above `replaces`.
        epoch: u64,
    },
    /// Sets the in-sync set of `group`, proposed by its master in `epoch`.
    AlterSyncStateSet {
        /// Broker group.
        group: String,
        /// Who proposed: must be the master of the current epoch.
        master: String,
        /// The epoch it proposed in.
        epoch: u64,
        /// The new set, the master included.
        set: BTreeSet<String>,
    },
    /// Adopts the table of a single controller's `controller.json` (the state before this
    /// controller was a Raft group). Applies only to an empty table.
    Import(Groups),
}

/// Why a [`Decision`] was not applied; the table is then unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Refusal {
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
    /// An election was decided from an epoch that has since been replaced, or would not raise it.
    #[error("election in {group} for epoch {epoch} replacing {replaces} is stale: the epoch is now {current}")]
    Stale {
        /// Broker group.
        group: String,
        /// The epoch the election replaces.
        replaces: u64,
        /// The epoch it would set.
        epoch: u64,
        /// The group's epoch when it was applied.
        current: u64,
    },
    /// An import over a table that already holds groups.
    #[error("the controller already holds {0} broker groups: nothing imported")]
    NotEmpty(usize),
}

/// What applying one log entry answers: the group's record after it, or why it was refused.
/// Entries that are not decisions (Raft's own) answer an empty record.
pub type Answer = Result<GroupRecord, Refusal>;

/// Applies `d` to `groups`. Errors: see [`Refusal`]; on any error `groups` is unchanged.
pub fn apply(groups: &mut Groups, d: Decision) -> Answer {
    match d {
        Decision::Elect { group, master, replaces, epoch } => {
            let current = groups.get(&group).map_or(0, |r| r.epoch);
            if current != replaces || epoch <= replaces {
                return Err(Refusal::Stale { group, replaces, epoch, current });
            }
            let record = GroupRecord { epoch, master: master.clone(), sync_state_set: BTreeSet::from([master]) };
            groups.insert(group, record.clone());
            Ok(record)
        }
        Decision::AlterSyncStateSet { group, master, epoch, set } => {
            let current = groups.get(&group).cloned().unwrap_or_default();
            if current.master != master || current.epoch != epoch {
                return Err(Refusal::Fenced {
                    group,
                    proposer: master,
                    epoch,
                    master: current.master,
                    current: current.epoch,
                });
            }
            if !set.contains(&master) {
                return Err(Refusal::NoMaster(group));
            }
            let record = GroupRecord { sync_state_set: set, ..current };
            groups.insert(group, record.clone());
            Ok(record)
        }
        Decision::Import(imported) => {
            if !groups.is_empty() {
                return Err(Refusal::NotEmpty(groups.len()));
            }
            *groups = imported;
            Ok(GroupRecord::default())
        }
    }
}

/// The view of `group` brokers are sent (epoch 0 and no master if it is unknown).
pub fn view(groups: &Groups, group: &str) -> GroupView {
    let r = groups.get(group).cloned().unwrap_or_default();
    GroupView {
        broker_name: group.to_string(),
        epoch: r.epoch,
        master: r.master,
        sync_state_set: r.sync_state_set.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &[&str]) -> BTreeSet<String> {
        s.iter().map(|e| e.to_string()).collect()
    }

    fn elect(master: &str, replaces: u64, epoch: u64) -> Decision {
        Decision::Elect { group: "g".into(), master: master.into(), replaces, epoch }
    }

    fn alter(master: &str, epoch: u64, s: &[&str]) -> Decision {
        Decision::AlterSyncStateSet { group: "g".into(), master: master.into(), epoch, set: set(s) }
    }

    #[test]
    fn elections_apply_once_per_epoch_and_only_raise_it() {
        let mut g = Groups::new();
        assert_eq!(apply(&mut g, elect("a:1", 0, 1)).unwrap().sync_state_set, set(&["a:1"]));
        // A second election decided from epoch 0 (two leaders' views) is refused.
        assert!(matches!(apply(&mut g, elect("b:1", 0, 1)), Err(Refusal::Stale { current: 1, .. })));
        assert!(matches!(apply(&mut g, elect("b:1", 1, 1)), Err(Refusal::Stale { .. })));
        // Epochs may jump (a member reported a higher one) but never fall.
        assert_eq!(apply(&mut g, elect("b:1", 1, 7)).unwrap().epoch, 7);
        assert_eq!(view(&g, "g").master, "b:1");
    }

    #[test]
    fn only_the_current_master_alters_the_in_sync_set_and_stays_in_it() {
        let mut g = Groups::new();
        apply(&mut g, elect("a:1", 0, 1)).unwrap();
        let before = g.clone();
        assert!(matches!(apply(&mut g, alter("b:1", 1, &["b:1"])), Err(Refusal::Fenced { .. })));
        assert!(matches!(apply(&mut g, alter("a:1", 0, &["a:1"])), Err(Refusal::Fenced { .. })));
        assert!(matches!(apply(&mut g, alter("a:1", 1, &["b:1"])), Err(Refusal::NoMaster(_))));
        assert_eq!(g, before, "a refusal changes nothing");
        let r = apply(&mut g, alter("a:1", 1, &["a:1", "b:1"])).unwrap();
        assert_eq!((r.epoch, r.sync_state_set), (1, set(&["a:1", "b:1"])));
        // After an election the old master is fenced.
        apply(&mut g, elect("b:1", 1, 2)).unwrap();
        assert!(matches!(apply(&mut g, alter("a:1", 1, &["a:1"])), Err(Refusal::Fenced { current: 2, .. })));
    }

    #[test]
    fn an_import_applies_only_to_an_empty_table() {
        let mut g = Groups::new();
        let mut old = Groups::new();
        apply(&mut old, elect("a:1", 0, 5)).unwrap();
        apply(&mut g, Decision::Import(old.clone())).unwrap();
        assert_eq!(g, old);
        assert_eq!(apply(&mut g, Decision::Import(Groups::new())), Err(Refusal::NotEmpty(1)));
    }
}
