//! Rolling a broker group's pods to a new StatefulSet revision (the StatefulSets use `OnDelete`,
//! so nothing rolls unless the operator deletes a pod): one pod per group at a time, slaves
//! before the master, and only while every pod is ready and every replica is in sync, so a
//! restart never takes the last up-to-date copy of acknowledged messages away. The same order
//! as Strimzi's KafkaRoller (controller last) and RocketMQ's advice for master/slave restarts.
//!
//! The controller's members roll by the same rule: "in sync" is their readiness (part of a
//! working group), and the leader goes last ([`controller_leader`]).
//!
//! Also: a group's roles as its brokers report them ([`roles`]).

use ferrocket_proto::admin::ClusterStatusResponse;

use crate::crd::GroupStatus;

/// One pod of a broker group, as the API server shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Pod name (`<group>-<ordinal>`).
    pub pod: String,
    /// The pod's StatefulSet revision (label `controller-revision-hash`).
    pub revision: Option<String>,
    /// The pod's `Ready` condition is true and it is not being deleted.
    pub ready: bool,
}

/// What to do next for a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Every pod runs the current revision.
    UpToDate,
    /// Pods are outdated but deleting one now could lose availability or data: why.
    Wait(String),
    /// Delete this pod (the StatefulSet recreates it at the current revision).
    Delete(String),
}

/// The next step of rolling a group of `replicas` pods to `update_revision`. `master` is the
/// master's pod name and `in_sync` the pods in sync with it (master included), as the brokers
/// report them; `None` when they could not be asked.
pub fn next_step(
    update_revision: &str,
    replicas: i32,
    members: &[Member],
    master: Option<&str>,
    in_sync: Option<&[String]>,
) -> Step {
    let outdated: Vec<&Member> = members.iter().filter(|m| m.revision.as_deref() != Some(update_revision)).collect();
    if outdated.is_empty() {
        return Step::UpToDate; // missing pods are the StatefulSet's to create, at the new revision
    }
    let not_ready: Vec<&str> = members.iter().filter(|m| !m.ready).map(|m| m.pod.as_str()).collect();
    if (members.len() as i32) < replicas || !not_ready.is_empty() {
        return Step::Wait(format!(
            "waiting for pods to be ready ({} of {replicas} ready)",
            replicas as usize - not_ready.len().min(replicas as usize)
        ));
    }
    if replicas > 1 {
        let Some(in_sync) = in_sync else {
            return Step::Wait("the brokers' in-sync state is unknown".into());
        };
        let behind: Vec<&str> =
            members.iter().map(|m| m.pod.as_str()).filter(|p| !in_sync.iter().any(|s| s == p)).collect();
        if !behind.is_empty() {
            return Step::Wait(format!("waiting for {behind:?} to be in sync with the master"));
        }
    }
    // The master last: with a controller, deleting it moves the role to an up-to-date slave.
    let master = master
        .map(str::to_string)
        .or_else(|| members.iter().find(|m| ordinal(&m.pod) == Some(0)).map(|m| m.pod.clone()));
    let mut order = outdated;
    order.sort_by_key(|m| (Some(&m.pod) == master.as_ref(), std::cmp::Reverse(ordinal(&m.pod))));
    Step::Delete(order[0].pod.clone())
}

fn ordinal(pod: &str) -> Option<i32> {
    pod.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
}

/// The pod name in a broker endpoint (`<pod>.<service>.<namespace>.svc:8081`); other
/// endpoints (an IP) are kept whole.
pub fn pod_of(endpoint: &str) -> String {
    match endpoint.split_once('.') {
        Some((pod, rest)) if !pod.chars().all(|c| c.is_ascii_digit()) && rest.contains(".svc") => pod.into(),
        _ => endpoint.into(),
    }
}

/// The pod of the controller group's leader, from its `id=host:port` member list; `None` while no
/// leader answered.
pub fn controller_leader(cluster: &ClusterStatusResponse) -> Option<String> {
    let l = cluster.controller_leader.as_ref()?;
    let me = format!("{}=", l.leader_id);
    l.members.iter().find_map(|m| m.strip_prefix(&me)).map(pod_of)
}

/// The roles of broker group `group` as its brokers report them: master, slaves, in-sync set
/// (master included) and epoch, as pod names. The master's own report wins; the controller's
/// view stands in while the master cannot be asked. `None` when no member of the group is known.
pub fn roles(group: &str, cluster: &ClusterStatusResponse) -> Option<GroupStatus> {
    let members: Vec<_> =
        cluster.brokers.iter().filter(|b| b.broker.as_ref().is_some_and(|i| i.broker_name == group)).collect();
    let reported_master = members.iter().filter_map(|b| b.replica.as_ref()).find(|r| r.role == "master");
    let view = cluster.controller.iter().filter_map(|c| c.view.as_ref()).find(|v| v.broker_name == group);
    let (master, in_sync, epoch) = match (reported_master, view) {
        (Some(r), _) => (
            r.endpoint.clone(),
            std::iter::once(r.endpoint.clone()).chain(r.in_sync.iter().cloned()).collect(),
            r.epoch,
        ),
        (None, Some(v)) if !v.master.is_empty() => (v.master.clone(), v.sync_state_set.clone(), v.epoch),
        _ if members.is_empty() => return None,
        _ => (String::new(), Vec::new(), 0),
    };
    let mut slaves: Vec<String> = members
        .iter()
        .filter_map(|b| b.broker.as_ref())
        .map(|i| i.endpoint.clone())
        .filter(|e| *e != master)
        .map(|e| pod_of(&e))
        .collect();
    slaves.sort();
    slaves.dedup();
    Some(GroupStatus {
        name: group.into(),
        master: (!master.is_empty()).then(|| pod_of(&master)),
        slaves,
        ready_replicas: 0,
        in_sync: in_sync.iter().map(|e| pod_of(e)).collect(),
        epoch: epoch as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pod: &str, rev: &str, ready: bool) -> Member {
        Member { pod: pod.into(), revision: Some(rev.into()), ready }
    }

    fn all(pods: &[&str]) -> Vec<String> {
        pods.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn slaves_roll_first_highest_ordinal_first_and_the_master_last() {
        let pods = [m("g-0", "old", true), m("g-1", "old", true), m("g-2", "old", true)];
        let sync = all(&["g-0", "g-1", "g-2"]);
        assert_eq!(next_step("new", 3, &pods, Some("g-0"), Some(&sync)), Step::Delete("g-2".into()));
        // After a failover the master is g-2: it goes last.
        assert_eq!(next_step("new", 3, &pods, Some("g-2"), Some(&sync)), Step::Delete("g-1".into()));
        let pods = [m("g-0", "old", true), m("g-1", "new", true), m("g-2", "new", true)];
        assert_eq!(next_step("new", 3, &pods, Some("g-0"), Some(&sync)), Step::Delete("g-0".into()));
        let pods = [m("g-0", "new", true), m("g-1", "new", true), m("g-2", "new", true)];
        assert_eq!(next_step("new", 3, &pods, Some("g-1"), Some(&sync)), Step::UpToDate);
    }

    #[test]
    fn nothing_is_deleted_while_a_pod_is_not_ready_missing_or_behind() {
        let sync = all(&["g-0", "g-1"]);
        let pods = [m("g-0", "old", true), m("g-1", "new", false)];
        assert!(matches!(next_step("new", 2, &pods, Some("g-0"), Some(&sync)), Step::Wait(_)));
        let pods = [m("g-0", "old", true)];
        assert!(matches!(next_step("new", 2, &pods, Some("g-0"), Some(&sync)), Step::Wait(_)));
        let pods = [m("g-0", "old", true), m("g-1", "new", true)];
        let step = next_step("new", 2, &pods, Some("g-0"), Some(&all(&["g-0"])));
        assert_eq!(step, Step::Wait("waiting for [\"g-1\"] to be in sync with the master".into()));
        assert!(matches!(next_step("new", 2, &pods, Some("g-0"), None), Step::Wait(_)));
        // A group of one has nobody to be in sync with.
        assert_eq!(next_step("new", 1, &[m("g-0", "old", true)], None, None), Step::Delete("g-0".into()));
    }

    #[test]
    fn the_controller_leader_is_found_by_its_id_in_the_member_list() {
        let leader = ferrocket_proto::namesrv::ListControllerGroupsResponse {
            leader_id: 2,
            term: 5,
            members: all(&[
                "1=demo-controller-0.demo-controller.ns.svc:9876",
                "2=demo-controller-1.demo-controller.ns.svc:9876",
            ]),
            ..Default::default()
        };
        let mut cluster = ClusterStatusResponse { controller_leader: Some(leader), ..Default::default() };
        assert_eq!(controller_leader(&cluster).as_deref(), Some("demo-controller-1"));
        cluster.controller_leader = None;
        assert_eq!(controller_leader(&cluster), None);
    }

    #[test]
    fn pod_names_come_from_stable_network_identities() {
        assert_eq!(pod_of("demo-0-1.demo-0.prod.svc:8081"), "demo-0-1");
        assert_eq!(pod_of("127.0.0.1:8081"), "127.0.0.1:8081");
    }
}
