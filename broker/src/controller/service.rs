//! A controller member: its Raft node (openraft, over [`LogStore`] and [`Machine`]), the election
//! scan its leader runs, and the `ferrocket.v1.Controller` service brokers call. Only the leader
//! answers, after a majority confirmed it still leads (openraft's `ensure_linearizable`, reused
//! for a lease far shorter than the followers' own), so a leader cut off from the others never
//! hands out a stale view; the others refuse with UNAVAILABLE and name the leader in
//! [`LEADER_HEADER`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use parking_lot::Mutex;
use tonic::{Request, Response, Status};

use super::elector::Elector;
use super::log_store::LogStore;
use super::machine::Machine;
use super::network::{Network, RaftService};
use super::state::{view, Answer, Decision, Groups, Refusal};
use super::Raft;
use crate::config::Config;
use crate::proto::dial::Dialer;
use crate::proto::namesrv::controller_raft_server::ControllerRaftServer;
use crate::proto::namesrv::controller_server::{self, ControllerServer};
use crate::proto::namesrv::*;
use crate::store::files::load_json;

/// Response metadata naming the leader's `host:port`, on a follower's UNAVAILABLE.
pub const LEADER_HEADER: &str = "x-ferrocket-controller-leader";

/// Longest a leader waits for a majority to confirm it still leads, or to commit a decision.
const QUORUM_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the leader compares the group's members with `controller_peers`.
const MEMBERSHIP_CHECK: Duration = Duration::from_secs(2);
/// Longest the leader waits for a new member to catch up before making it a voter.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Raft's election timeout, ms (up to twice this): a dead leader is replaced within about three
/// times it, since followers also refuse votes for twice it after last hearing from the leader.
const ELECTION_TIMEOUT_MIN_MS: u64 = 600;
/// How long a majority's confirmation that this member leads is relied on. Followers refuse any
/// other candidate for `2 * ELECTION_TIMEOUT_MIN_MS` after their last append from the leader,
/// and the confirmation's clock starts before it was asked for, so no other member can have
/// been elected within it.
const LEASE: Duration = Duration::from_millis(ELECTION_TIMEOUT_MIN_MS / 2);

/// One member of the controller group.
pub struct ControllerNode {
    id: u64,
    members: BTreeMap<u64, String>,
    raft: Raft,
    machine: Machine,
    /// The elector of the term this member leads in (reset whenever it takes office).
    elector: Mutex<Option<(u64, Elector)>>,
    /// When a majority last confirmed this member leads (the instant before it asked), and in
    /// which term.
    confirmed: Mutex<Option<(Instant, u64)>>,
    timeout: Duration,
    /// A single controller's table from before (`controller.json`), until it is imported.
    legacy: tokio::sync::Mutex<Option<(PathBuf, Groups)>>,
}

/// The gRPC services of a started member: `Controller` for brokers, `ControllerRaft` for the
/// other members.
pub struct Services {
    /// The service brokers and the CLI call.
    pub controller: ControllerServer<ControllerService>,
    /// The members' Raft traffic.
    pub raft: ControllerRaftServer<RaftService>,
    /// This member's readiness (`/readyz`, see [`ready`]).
    pub ready: Arc<dyn Fn() -> Result<(), String> + Send + Sync>,
}

/// Whether a member is part of a working group, from its Raft metrics: a follower or learner
/// knows the leader of its term (a leader's appends reached it since it started, so it is
/// catching up), a leader had a majority's acknowledgement within four minimum election
/// timeouts, and a member not yet added to any group has nothing to catch up. A member of a
/// group that knows no leader (a candidate), or a leader cut off from its majority, is not ready: the operator
/// rolls the next controller pod only once the restarted one is ready, so a rolling restart never
/// takes a majority away. Errors: why not, for `/readyz`.
pub fn ready(m: &openraft::RaftMetrics<u64, BasicNode>) -> Result<(), String> {
    let membership = m.membership_config.membership();
    let alone = membership.voter_ids().eq([m.id]);
    // Not yet added (a new pod of a scale-up, waiting for the leader): nothing to catch up, no vote.
    let outside = membership.nodes().next().is_none();
    match (m.state, m.current_leader, m.millis_since_quorum_ack) {
        (_, None, _) if outside => Ok(()),
        (ServerState::Leader, _, _) if alone => Ok(()),
        (ServerState::Leader, _, Some(ms)) if ms < 4 * ELECTION_TIMEOUT_MIN_MS => Ok(()),
        (ServerState::Leader, _, ms) => Err(format!(
            "controller member {} leads term {} but no majority acknowledged it for {ms:?} ms",
            m.id, m.current_term
        )),
        (_, Some(_), _) => Ok(()),
        (state, None, _) => {
            Err(format!("controller member {} ({state:?}) knows no leader in term {}", m.id, m.current_term))
        }
    }
}

/// Starts this nameserver's controller member: opens `<data_dir>/controller/`, joins (or, on a
/// first start, initializes) the group of `controller_peers`, and runs the election scan every
/// half `controller_heartbeat_interval_ms`. `dialer` reaches the other members. Errors: the
/// members are misconfigured, the log, snapshot or a `controller.json` to import is damaged (each
/// named), or openraft refuses its configuration.
pub async fn start(cfg: &Config, dialer: Dialer) -> anyhow::Result<Services> {
    let members = cfg.controller_members()?;
    let id = cfg.controller_self_id(&members)?;
    let dir = cfg.data_dir.join("controller");
    let legacy_path = cfg.data_dir.join("controller.json");
    let legacy = load_json::<Groups>(&legacy_path)?.map(|g| (legacy_path, g));
    let raft_config = openraft::Config {
        cluster_name: "ferrocket-controller".into(),
        heartbeat_interval: 150,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: 2 * ELECTION_TIMEOUT_MIN_MS,
        install_snapshot_timeout: 3_000,
        // A chunk travels as a JSON array of numbers (up to 4 bytes a byte): keep it well under
        // tonic's 4 MiB message limit.
        snapshot_max_chunk_size: 256 * 1024,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1_000),
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    }
    .validate()?;
    let log = LogStore::open(&dir)?;
    let machine = Machine::open(&dir)?;
    let raft = Raft::new(id, Arc::new(raft_config), Network { dialer }, log, machine.clone()).await?;
    // Only the lowest id founds the group; the others wait to be replicated to. So a member added
    // later (a group grown from one controller to three) joins the group instead of founding a
    // second one with the other new members.
    if !raft.is_initialized().await? && members.keys().next() == Some(&id) {
        let nodes: BTreeMap<u64, BasicNode> = members.iter().map(|(i, a)| (*i, BasicNode::new(a))).collect();
        if let Err(e) = raft.initialize(nodes).await {
            tracing::info!(error = %e, "controller group already initialized");
        }
    }
    let timeout = Duration::from_millis(cfg.controller_heartbeat_timeout_ms);
    tracing::info!(id, ?members, dir = %dir.display(), timeout_ms = cfg.controller_heartbeat_timeout_ms, "controller member started");
    let node = Arc::new(ControllerNode {
        id,
        members,
        raft: raft.clone(),
        machine,
        elector: Mutex::new(None),
        confirmed: Mutex::new(None),
        timeout,
        legacy: tokio::sync::Mutex::new(legacy),
    });
    let members_loop = node.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(MEMBERSHIP_CHECK);
        loop {
            tick.tick().await;
            members_loop.sync_membership().await;
        }
    });
    let scan = node.clone();
    let every = Duration::from_millis(cfg.controller_heartbeat_interval_ms.clamp(50, 1_000) / 2);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            scan.scan().await;
        }
    });
    let metrics = raft.metrics();
    Ok(Services {
        controller: ControllerServer::new(ControllerService { node }),
        raft: ControllerRaftServer::new(RaftService { raft }),
        ready: Arc::new(move || ready(&metrics.borrow())),
    })
}

/// UNAVAILABLE naming the leader (if known) in [`LEADER_HEADER`].
fn not_leader(f: &ForwardToLeader<u64, BasicNode>) -> Status {
    let leader = f.leader_node.as_ref().map(|n| n.addr.clone());
    let mut status = Status::unavailable(match &leader {
        Some(addr) => format!("this controller member is not the leader; the leader is {addr}"),
        None => "this controller member is not the leader, and no leader is known yet".to_string(),
    });
    if let Some(v) = leader.and_then(|a| a.parse().ok()) {
        status.metadata_mut().insert(LEADER_HEADER, v);
    }
    status
}

impl ControllerNode {
    /// Confirms this member leads, with a majority (bounded by [`QUORUM_TIMEOUT`]; a confirmation
    /// younger than [`LEASE`] is reused), and returns its term. Errors: UNAVAILABLE, naming the
    /// leader if another member leads.
    async fn lead(&self) -> Result<u64, Status> {
        let term = self.raft.metrics().borrow().current_term;
        let fresh = self.confirmed.lock().is_some_and(|(at, t)| t == term && at.elapsed() < LEASE);
        if !fresh {
            let asked = Instant::now();
            match tokio::time::timeout(QUORUM_TIMEOUT, self.raft.ensure_linearizable()).await {
                Err(_) => {
                    return Err(Status::unavailable("the controller leader cannot reach a majority of its group"))
                }
                Ok(Err(e)) => {
                    return Err(match e.forward_to_leader() {
                        Some(f) => not_leader(f),
                        None => Status::unavailable(format!("controller: {e}")),
                    });
                }
                Ok(Ok(_)) => {}
            }
            // The term read before asking: if it changed meanwhile this member led in neither for
            // sure, so the next call asks again.
            *self.confirmed.lock() = Some((asked, term));
        }
        self.import().await?;
        Ok(term)
    }

    /// Runs `f` on the elector of `term`, a fresh one if this member just took office (every
    /// master then gets the full timeout from now).
    fn with_elector<T>(&self, term: u64, f: impl FnOnce(&mut Elector) -> T) -> T {
        let mut slot = self.elector.lock();
        if slot.as_ref().is_none_or(|(t, _)| *t != term) {
            *slot = Some((term, Elector::new(Instant::now(), self.timeout)));
        }
        f(&mut slot.as_mut().expect("set above").1)
    }

    /// Commits `d` and returns what applying it answered. Errors: UNAVAILABLE when this member
    /// no longer leads (naming the leader) or no majority commits it within the bound.
    async fn decide(&self, d: Decision) -> Result<Answer, Status> {
        match tokio::time::timeout(QUORUM_TIMEOUT, self.raft.client_write(d)).await {
            Err(_) => Err(Status::unavailable("the controller decision was not committed in time")),
            Ok(Ok(r)) => Ok(r.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => Err(not_leader(&f)),
            Ok(Err(e)) => Err(Status::unavailable(format!("controller: {e}"))),
        }
    }

    /// On the leader, once: adopts a single controller's `controller.json` if the group holds no
    /// broker group yet, then renames it `controller.json.imported`. Errors: the import was not
    /// committed (tried again on the next call).
    async fn import(&self) -> Result<(), Status> {
        let mut legacy = self.legacy.lock().await;
        let Some((path, groups)) = legacy.as_ref() else { return Ok(()) };
        if self.machine.groups().is_empty() {
            match self.decide(Decision::Import(groups.clone())).await? {
                Ok(_) => {
                    tracing::warn!(file = %path.display(), groups = groups.len(), "single controller state imported")
                }
                Err(e) => tracing::warn!(file = %path.display(), reason = %e, "single controller state not imported"),
            }
        }
        let done = path.with_extension("json.imported");
        if let Err(e) = std::fs::rename(path, &done) {
            tracing::warn!(file = %path.display(), error = %e, "cannot rename the imported controller state");
        }
        *legacy = None;
        Ok(())
    }

    /// openraft's metrics while this member believes it leads (unconfirmed: for the loops that
    /// only propose, which a majority then accepts or not).
    fn leading(&self) -> Option<openraft::RaftMetrics<u64, BasicNode>> {
        let m = self.raft.metrics().borrow().clone();
        (m.state == ServerState::Leader).then_some(m)
    }

    /// The group's voters as committed (not as configured), each `id=host:port`; during a
    /// member change, the voters of the configuration being left.
    fn voters(&self) -> Vec<String> {
        let stored = self.machine.membership();
        let membership = stored.membership();
        let ids = membership.get_joint_config().first().cloned().unwrap_or_default();
        ids.iter().map(|id| format!("{id}={}", membership.get_node(id).map_or("?", |n| n.addr.as_str()))).collect()
    }

    /// On the leader: makes the group's voters those of `controller_peers` (openraft's joint
    /// consensus), a new member first added as a learner and caught up. Runs beside the election
    /// scan, so a member that is not up yet delays no election. Errors are logged and the change
    /// tried again on the next check.
    async fn sync_membership(&self) {
        let Some(m) = self.leading() else { return };
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let wanted: BTreeSet<u64> = self.members.keys().copied().collect();
        if voters == wanted || membership.get_joint_config().len() > 1 {
            return;
        }
        tracing::warn!(?voters, ?wanted, "controller group members differ from controller_peers: changing them");
        for id in wanted.difference(&voters) {
            let node = BasicNode::new(&self.members[id]);
            match tokio::time::timeout(CATCH_UP_TIMEOUT, self.raft.add_learner(*id, node, true)).await {
                Ok(Ok(_)) => tracing::info!(id, "controller member added and caught up"),
                Ok(Err(e)) => return tracing::warn!(id, error = %e, "cannot add a controller member; retrying"),
                Err(_) => return tracing::warn!(id, "a new controller member did not catch up in time; retrying"),
            }
        }
        match tokio::time::timeout(QUORUM_TIMEOUT, self.raft.change_membership(wanted.clone(), false)).await {
            Ok(Ok(_)) => tracing::warn!(members = ?wanted, "controller group members changed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot change the controller group's members; retrying"),
            Err(_) => tracing::warn!("the controller group's member change was not committed in time; retrying"),
        }
    }

    /// One election scan, on the leader only: commits every election the elector decides.
    async fn scan(&self) {
        let Some(term) = self.leading().map(|m| m.current_term) else { return };
        if self.import().await.is_err() {
            return;
        }
        let groups = self.machine.groups();
        for d in self.with_elector(term, |e| e.scan(&groups, Instant::now())) {
            match self.decide(d.clone()).await {
                Ok(Ok(r)) => tracing::warn!(decision = ?d, epoch = r.epoch, master = %r.master, "master elected"),
                Ok(Err(e)) => tracing::info!(refused = %e, "election not applied"),
                Err(e) => tracing::warn!(error = %e.message(), "election not committed; retrying on the next scan"),
            }
        }
    }
}

/// The `Controller` service over one member.
#[derive(Clone)]
pub struct ControllerService {
    node: Arc<ControllerNode>,
}

#[tonic::async_trait]
impl controller_server::Controller for ControllerService {
    async fn heartbeat(&self, req: Request<ControllerHeartbeat>) -> Result<Response<GroupView>, Status> {
        let hb = req.into_inner();
        if hb.broker_name.is_empty() || hb.endpoint.is_empty() {
            return Err(Status::invalid_argument("a controller heartbeat needs broker_name and endpoint"));
        }
        let node = &self.node;
        let term = node.lead().await?;
        let mut groups = node.machine.groups();
        if let Some(d) = node.with_elector(term, |e| e.heard(&groups, &hb, Instant::now())) {
            match node.decide(d).await? {
                Ok(r) => {
                    tracing::warn!(group = %hb.broker_name, master = %r.master, epoch = r.epoch, "first master elected")
                }
                Err(e) => tracing::info!(refused = %e, "first election not applied"),
            }
            groups = node.machine.groups();
        }
        Ok(Response::new(view(&groups, &hb.broker_name)))
    }

    async fn alter_sync_state_set(
        &self,
        req: Request<AlterSyncStateSetRequest>,
    ) -> Result<Response<GroupView>, Status> {
        let r = req.into_inner();
        self.node.lead().await?;
        let set: BTreeSet<String> = r.sync_state_set.into_iter().collect();
        let d = Decision::AlterSyncStateSet { group: r.broker_name.clone(), master: r.master, epoch: r.epoch, set };
        match self.node.decide(d).await? {
            Ok(_) => Ok(Response::new(view(&self.node.machine.groups(), &r.broker_name))),
            Err(e @ (Refusal::Fenced { .. } | Refusal::NoMaster(_))) => Err(Status::failed_precondition(e.to_string())),
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }

    async fn list_groups(
        &self,
        _req: Request<ListControllerGroupsRequest>,
    ) -> Result<Response<ListControllerGroupsResponse>, Status> {
        let node = &self.node;
        let term = node.lead().await?;
        let groups = node.machine.groups();
        Ok(Response::new(ListControllerGroupsResponse {
            groups: node.with_elector(term, |e| e.list(&groups, Instant::now())),
            leader_id: node.id,
            term,
            members: node.voters(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_ready_with_a_leader_and_a_leader_with_a_recent_majority() {
        let mut m = openraft::RaftMetrics::<u64, BasicNode>::new_initial(2);
        m.state = ServerState::Follower;
        assert!(ready(&m).is_ok(), "not yet added to a group: nothing to wait for");
        let nodes = BTreeMap::from([(1, BasicNode::new("a:1")), (2, BasicNode::new("b:1"))]);
        let membership = openraft::Membership::new(vec![BTreeSet::from([1, 2])], nodes);
        m.membership_config = Arc::new(openraft::StoredMembership::new(None, membership));
        assert!(ready(&m).unwrap_err().contains("knows no leader"));
        m.current_leader = Some(1);
        assert!(ready(&m).is_ok());
        m.state = ServerState::Candidate;
        m.current_leader = None;
        assert!(ready(&m).is_err());
        m.state = ServerState::Leader;
        m.current_leader = Some(2);
        m.millis_since_quorum_ack = Some(100);
        assert!(ready(&m).is_ok());
        m.millis_since_quorum_ack = Some(60_000);
        assert!(ready(&m).unwrap_err().contains("no majority"));
        m.millis_since_quorum_ack = None;
        assert!(ready(&m).is_err());
    }
}
