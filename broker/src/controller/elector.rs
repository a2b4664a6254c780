//! What the controller leader knows of brokers beyond the replicated table: what each member
//! said in its last heartbeat (in memory, on the leader only) and the elections that follow from
//! it (RocketMQ 5 `scanNotActiveBroker` + `electMaster`). It only decides; a [`Decision`] changes
//! the table once the Raft group has committed it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::state::{view, Decision, GroupRecord, Groups};
use crate::proto::namesrv::{ControllerGroup, ControllerHeartbeat, ControllerMember};

/// What a member said in its last heartbeat.
#[derive(Debug, Clone)]
struct Member {
    epoch: u64,
    max_offset: u64,
    preferred: bool,
    last_seen: Instant,
}

/// Liveness of every broker group's members, as heard by this leader.
pub struct Elector {
    members: BTreeMap<String, BTreeMap<String, Member>>,
    /// When each group was first heard of by this leader (a group without a preferred master
    /// elects one only after `timeout`, so every member has had the chance to say how much it
    /// holds).
    first_seen: BTreeMap<String, Instant>,
    /// When this member became leader: every master is given the timeout from then.
    since: Instant,
    timeout: Duration,
}

impl Elector {
    /// An elector for a leader that took office at `since`; a member is presumed dead after
    /// `timeout` without a heartbeat.
    pub fn new(since: Instant, timeout: Duration) -> Elector {
        Elector { members: BTreeMap::new(), first_seen: BTreeMap::new(), since, timeout }
    }

    /// Records a heartbeat received at `now`. Returns the first election of a group that has no
    /// master yet when the heartbeat comes from its preferred master (broker id 0 in its config).
    pub fn heard(&mut self, groups: &Groups, hb: &ControllerHeartbeat, now: Instant) -> Option<Decision> {
        let group = &hb.broker_name;
        self.first_seen.entry(group.clone()).or_insert(now);
        let member =
            Member { epoch: hb.epoch, max_offset: hb.max_offset, preferred: hb.preferred_master, last_seen: now };
        self.members.entry(group.clone()).or_default().insert(hb.endpoint.clone(), member);
        let has_master = groups.get(group).is_some_and(|r| !r.master.is_empty());
        (!has_master && hb.preferred_master).then(|| self.elect(groups, group, hb.endpoint.clone()))
    }

    /// An election of `master` in `group`: the epoch rises above both the table's and any epoch a
    /// member has reported (so a controller that lost its state still never reuses an epoch).
    fn elect(&self, groups: &Groups, group: &str, master: String) -> Decision {
        let replaces = groups.get(group).map_or(0, |r| r.epoch);
        let reported = self.members.get(group).into_iter().flatten().map(|(_, m)| m.epoch).max().unwrap_or(0);
        Decision::Elect { group: group.to_string(), master, replaces, epoch: replaces.max(reported) + 1 }
    }

    fn alive(&self, group: &str, endpoint: &str, now: Instant) -> Option<&Member> {
        self.members.get(group)?.get(endpoint).filter(|m| now.duration_since(m.last_seen) <= self.timeout)
    }

    /// One scan at `now`: a group whose master has been silent for longer than the timeout gets
    /// the alive member of its in-sync set with the most CommitLog bytes as master; a new group
    /// without a preferred master gets its fullest member once it has been known for the timeout.
    /// Returns the elections to propose.
    pub fn scan(&self, groups: &Groups, now: Instant) -> Vec<Decision> {
        let mut out = Vec::new();
        let names: BTreeSet<&String> = groups.keys().chain(self.members.keys()).collect();
        for group in names {
            let record = groups.get(group).cloned().unwrap_or_default();
            let best = |candidates: Vec<(&String, &Member)>| {
                candidates
                    .into_iter()
                    .max_by_key(|(e, m)| (m.max_offset, m.preferred, std::cmp::Reverse(*e)))
                    .map(|(e, _)| e.clone())
            };
            let choice = if record.master.is_empty() {
                let known_for = self.first_seen.get(group).map_or(Duration::ZERO, |t| now.duration_since(*t));
                if known_for <= self.timeout {
                    continue;
                }
                let members: Vec<(&String, &Member)> =
                    self.members.get(group).map(|m| m.iter().collect()).unwrap_or_default();
                best(members.into_iter().filter(|(e, _)| self.alive(group, e, now).is_some()).collect())
            } else {
                if !self.master_silent(group, &record, now) {
                    continue;
                }
                let candidates: Vec<(&String, &Member)> = record
                    .sync_state_set
                    .iter()
                    .filter(|e| **e != record.master)
                    .filter_map(|e| self.alive(group, e, now).map(|m| (e, m)))
                    .collect();
                let choice = best(candidates);
                if choice.is_none() {
                    tracing::warn!(group, master = %record.master, in_sync = ?record.sync_state_set,
                        "master silent and no other in-sync replica alive: no election");
                }
                choice
            };
            if let Some(master) = choice {
                out.push(self.elect(groups, group, master));
            }
        }
        out
    }

    fn master_silent(&self, group: &str, record: &GroupRecord, now: Instant) -> bool {
        let heard = self
            .members
            .get(group)
            .and_then(|m| m.get(&record.master))
            .map_or(self.since, |m| m.last_seen.max(self.since));
        now.duration_since(heard) > self.timeout
    }

    /// Every group with its members as last heard, by group name.
    pub fn list(&self, groups: &Groups, now: Instant) -> Vec<ControllerGroup> {
        let names: BTreeSet<&String> = groups.keys().chain(self.members.keys()).collect();
        names
            .into_iter()
            .map(|g| ControllerGroup {
                view: Some(view(groups, g)),
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
    use super::super::state::apply;
    use super::*;

    fn hb(endpoint: &str, epoch: u64, max_offset: u64, preferred: bool) -> ControllerHeartbeat {
        ControllerHeartbeat {
            broker_name: "g".into(),
            endpoint: endpoint.into(),
            epoch,
            max_offset,
            preferred_master: preferred,
        }
    }

    const T: Duration = Duration::from_secs(3);

    /// Applies every decision, as a committed log would.
    fn commit(groups: &mut Groups, ds: impl IntoIterator<Item = Decision>) {
        for d in ds {
            apply(groups, d).unwrap();
        }
    }

    #[test]
    fn elects_the_fullest_live_in_sync_replica_once_the_master_is_silent() {
        let (mut g, t0) = (Groups::new(), Instant::now());
        let mut e = Elector::new(t0, T);
        // The preferred master is elected at once; slaves are not.
        let first = e.heard(&g, &hb("a:1", 0, 0, true), t0);
        commit(&mut g, first);
        assert!(e.heard(&g, &hb("b:1", 0, 0, false), t0).is_none());
        assert!(e.heard(&g, &hb("c:1", 0, 0, false), t0).is_none());
        assert_eq!((g["g"].epoch, g["g"].master.as_str()), (1, "a:1"));
        let set = ["a:1", "b:1"].map(String::from).into();
        commit(&mut g, [Decision::AlterSyncStateSet { group: "g".into(), master: "a:1".into(), epoch: 1, set }]);

        // The master falls silent: c is fuller but out of sync, so b is elected.
        let t1 = t0 + Duration::from_secs(2);
        e.heard(&g, &hb("b:1", 1, 100, false), t1);
        e.heard(&g, &hb("c:1", 1, 900, false), t1);
        assert!(e.scan(&g, t1).is_empty(), "the master is not silent for long enough yet");
        let ds = e.scan(&g, t0 + Duration::from_secs(4));
        assert_eq!(ds, [Decision::Elect { group: "g".into(), master: "b:1".into(), replaces: 1, epoch: 2 }]);

        // A new leader gives the master the full timeout from taking office.
        let fresh = Elector::new(t0 + Duration::from_secs(4), T);
        assert!(fresh.scan(&g, t0 + Duration::from_secs(5)).is_empty());
    }

    #[test]
    fn no_election_without_a_live_in_sync_replica_and_a_new_group_waits_for_its_members() {
        let (mut g, t0) = (Groups::new(), Instant::now());
        let mut e = Elector::new(t0, T);
        // No preferred master: the fullest member is elected once the group is known for T.
        e.heard(&g, &hb("a:1", 0, 10, false), t0);
        e.heard(&g, &hb("b:1", 0, 20, false), t0);
        assert!(e.scan(&g, t0 + Duration::from_secs(1)).is_empty());
        let t3 = t0 + Duration::from_secs(3);
        e.heard(&g, &hb("a:1", 0, 10, false), t3);
        e.heard(&g, &hb("b:1", 0, 20, false), t3);
        let ds = e.scan(&g, t0 + Duration::from_secs(4));
        commit(&mut g, ds);
        assert_eq!(g["g"].master, "b:1");
        // b dies while alone in its in-sync set: a (out of sync) is never elected.
        let later = t0 + Duration::from_secs(20);
        e.heard(&g, &hb("a:1", 1, 10, false), later);
        assert!(e.scan(&g, later).is_empty());
    }

    #[test]
    fn a_controller_that_lost_its_table_never_reuses_an_epoch_a_member_reports() {
        let (g, t0) = (Groups::new(), Instant::now());
        let mut e = Elector::new(t0, T);
        e.heard(&g, &hb("b:1", 6, 0, false), t0);
        let d = e.heard(&g, &hb("a:1", 4, 0, true), t0).unwrap();
        assert_eq!(d, Decision::Elect { group: "g".into(), master: "a:1".into(), replaces: 0, epoch: 7 });
    }
}
