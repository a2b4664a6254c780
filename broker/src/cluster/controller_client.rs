//! With a controller, the loop that keeps a broker's role (RocketMQ 5 `ReplicasManager`): it
//! heartbeats the controller every `controller_heartbeat_interval_ms`, becomes master or slave as
//! the controller's view says, and, as master, proposes in-sync set changes to the controller
//! before relying on them. With a controller group it talks to the leader: a member that is not
//! the leader names it ([`LEADER_HEADER`]), and a member that does not answer is passed over for
//! the next in `controller_addr`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::watch;

use crate::proto::dial::Dialer;
use crate::proto::signing::SignedChannel;

use crate::broker::Broker;
use crate::controller::service::LEADER_HEADER;
use crate::proto::namesrv::controller_client::ControllerClient;
use crate::proto::namesrv::{AlterSyncStateSetRequest, ControllerHeartbeat, GroupView};

/// How often the loop looks at the in-sync set (heartbeats go at their own interval).
const SYNC_SET_CHECK: Duration = Duration::from_millis(200);
/// Longest one controller call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The controller group as one broker sees it: every member's address, a lazily connected client
/// to each, and which one it believes leads.
struct Controllers {
    addrs: Vec<String>,
    clients: HashMap<String, ControllerClient<SignedChannel>>,
    current: String,
    dialer: Dialer,
}

impl Controllers {
    fn client(&mut self, addr: &str) -> Result<ControllerClient<SignedChannel>, tonic::Status> {
        if let Some(c) = self.clients.get(addr) {
            return Ok(c.clone());
        }
        let channel = self
            .dialer
            .endpoint(addr)
            .map_err(|e| tonic::Status::invalid_argument(format!("cannot dial the controller {addr}: {e:#}")))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        let c = ControllerClient::with_interceptor(channel, self.dialer.signer());
        self.clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Runs `call` on the member believed to lead; on a redirect, on the leader it names; on a
    /// failure that is not [`is_final`], on the next member. At most one try per member, plus one redirect each.
    /// Errors: the last member's, when none answered.
    async fn call<T, Fut>(&mut self, call: impl Fn(ControllerClient<SignedChannel>) -> Fut) -> Result<T, tonic::Status>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last = tonic::Status::unavailable("no controller address configured");
        for _ in 0..self.addrs.len() * 2 {
            let addr = self.current.clone();
            match call(self.client(&addr)?).await {
                Ok(r) => return Ok(r.into_inner()),
                // The member answered for itself (a refusal that would be the same anywhere).
                Err(e) if is_final(&e) => return Err(e),
                Err(e) => {
                    let hint = e.metadata().get(LEADER_HEADER).and_then(|v| v.to_str().ok()).map(String::from);
                    self.current = match hint {
                        Some(leader) if leader != addr => leader,
                        _ => {
                            let i = self.addrs.iter().position(|a| *a == addr).map_or(0, |i| i + 1);
                            self.addrs[i % self.addrs.len()].clone()
                        }
                    };
                    last = e;
                }
            }
        }
        Err(last)
    }
}

/// True for an answer any member would give alike (fenced, malformed, refused credentials);
/// anything else (a redirect, a timeout, a member without a controller) is worth the next one.
fn is_final(e: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(e.code(), FailedPrecondition | InvalidArgument | PermissionDenied | Unauthenticated)
}

/// Runs `broker`'s controller loop until `stopping` turns true. Errors are logged once per
/// outage; while no controller leader can be reached the broker keeps its role (a master goes on
/// serving: a controller outage must not stop writes, and no one else can be elected meanwhile).
/// `dialer` reaches the controller members at `addrs` (`controller_addr`).
pub fn spawn(broker: Arc<Broker>, dialer: &Dialer, addrs: Vec<String>, mut stopping: watch::Receiver<bool>) {
    let Some(first) = addrs.first().cloned() else {
        tracing::error!("controller_addr names no address; the broker stays read-only");
        return;
    };
    let mut controllers = Controllers { addrs, clients: HashMap::new(), current: first, dialer: dialer.clone() };
    // Until a controller answers, a master cannot prove it still is one.
    let lease = Duration::from_millis(broker.config().ha_fence_after_ms);
    broker.hold_lease(Some(std::time::Instant::now()));
    spawn_fence_log(broker.clone(), stopping.clone());
    tokio::spawn(async move {
        let interval = Duration::from_millis(broker.config().controller_heartbeat_interval_ms);
        let mut last_heartbeat: Option<Instant> = None;
        let mut failing = false;
        loop {
            if last_heartbeat.is_none_or(|t| t.elapsed() >= interval) {
                let sent = Instant::now();
                last_heartbeat = Some(sent);
                match heartbeat(&broker, &mut controllers).await {
                    Ok(view) => {
                        // The controller heard from this broker no earlier than `sent`, and
                        // names it master: it may take writes until `sent + lease`. (Named a
                        // slave, the lease is left to run out while `apply` demotes it.)
                        if view.master == broker.config().advertised() {
                            broker.hold_lease(Some((sent + lease).into_std()));
                        }
                        if failing {
                            tracing::info!(controller = %controllers.current, "controller reachable again");
                            failing = false;
                        }
                        apply(&broker, view).await;
                    }
                    Err(e) if !failing => {
                        tracing::warn!(controllers = ?controllers.addrs, error = %e.message(), "controller heartbeat failed; keeping the current role");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
            if broker.role().is_master() {
                if let Err(e) = maintain_sync_set(&broker, &mut controllers).await {
                    tracing::warn!(error = %e.message(), "in-sync set change refused; asking the controller again");
                    last_heartbeat = None;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(SYNC_SET_CHECK) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    });
}

/// Logs when this master's write lease runs out and when it is renewed (checked every 100 ms
/// until `stopping`); the writes themselves check the lease when they are made
/// ([`Broker::hold_lease`]).
fn spawn_fence_log(broker: Arc<Broker>, mut stopping: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut logged = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            let fenced = broker.role().is_master() && broker.is_fenced();
            if fenced != logged {
                let epoch = broker.role().epoch;
                match fenced {
                    true => tracing::warn!(epoch, "master fenced: no controller answer; writes refused"),
                    false => tracing::warn!(epoch, "master fence lifted: the controller answers"),
                }
                logged = fenced;
            }
        }
    });
}

async fn heartbeat(broker: &Broker, controllers: &mut Controllers) -> Result<GroupView, tonic::Status> {
    let cfg = broker.config();
    let hb = ControllerHeartbeat {
        broker_name: cfg.broker_name.clone(),
        endpoint: cfg.advertised(),
        epoch: broker.role().epoch,
        max_offset: broker.store().commitlog_end(),
        preferred_master: cfg.broker_id == 0,
    };
    controllers
        .call(|mut c| {
            let hb = hb.clone();
            async move { c.heartbeat(hb).await }
        })
        .await
}

/// Takes the role the controller's view gives this broker.
async fn apply(broker: &Arc<Broker>, view: GroupView) {
    let me = broker.config().advertised();
    let role = broker.role();
    if view.master.is_empty() || view.epoch < role.epoch {
        return;
    }
    if view.master == me {
        if !role.is_master() || role.epoch < view.epoch {
            let (b, epoch) = (broker.clone(), view.epoch);
            match tokio::task::spawn_blocking(move || b.promote(epoch, true)).await {
                Ok(Ok(())) => tracing::warn!(epoch, "this broker is now the master"),
                Ok(Err(e)) => tracing::error!(epoch, error = %e, "cannot become master; staying read-only"),
                Err(e) => tracing::error!(error = %e, "promotion task failed"),
            }
        }
        if broker.role().is_master() && broker.role().epoch == view.epoch {
            broker.confirm_sync_set(view.sync_state_set.into_iter().filter(|e| *e != me).collect());
        }
    } else if role.is_master() || role.epoch < view.epoch || role.master() != Some(view.master.as_str()) {
        tracing::warn!(master = %view.master, epoch = view.epoch, was_master = role.is_master(), "replicating from the elected master");
        broker.demote(view.master, view.epoch);
    }
}

/// As master: if the slaves in sync now differ from the set the controller confirmed, proposes
/// the new set and, once accepted, waits on it. Errors: the controller refused (this broker was
/// fenced) or could not be reached (the confirmed set stays: sends keep waiting on it).
async fn maintain_sync_set(broker: &Broker, controllers: &mut Controllers) -> Result<(), tonic::Status> {
    let replicas = broker.replicas();
    let live = replicas.in_sync(broker.store().commitlog_end());
    if replicas.confirmed().as_ref() == Some(&live) {
        return Ok(());
    }
    let me = broker.config().advertised();
    let role = broker.role();
    let mut set: BTreeSet<String> = live;
    set.insert(me.clone());
    let req = AlterSyncStateSetRequest {
        broker_name: broker.config().broker_name.clone(),
        master: me.clone(),
        epoch: role.epoch,
        sync_state_set: set.iter().cloned().collect(),
    };
    let view = controllers
        .call(|mut c| {
            let req = req.clone();
            async move { c.alter_sync_state_set(req).await }
        })
        .await?;
    if broker.role() == role {
        tracing::info!(in_sync = ?view.sync_state_set, epoch = view.epoch, "in-sync set changed");
        broker.confirm_sync_set(view.sync_state_set.into_iter().filter(|e| *e != me).collect());
    }
    Ok(())
}
