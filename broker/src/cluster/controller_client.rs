//! With a controller, the loop that keeps a broker's role (RocketMQ 5 `ReplicasManager`): it
//! heartbeats the controller every `controller_heartbeat_interval_ms`, becomes master or slave as
//! the controller's view says, and, as master, proposes in-sync set changes to the controller
//! before relying on them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::proto::dial::Dialer;
use crate::proto::signing::SignedChannel;

use crate::broker::Broker;
use crate::proto::namesrv::controller_client::ControllerClient;
use crate::proto::namesrv::{AlterSyncStateSetRequest, ControllerHeartbeat, GroupView};

/// How often the loop looks at the in-sync set (heartbeats go at their own interval).
const SYNC_SET_CHECK: Duration = Duration::from_millis(200);
/// Longest one controller call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `broker`'s controller loop until `stopping` turns true. Errors are logged once per
/// outage; while the controller cannot be reached the broker keeps its role (a master goes on
/// serving: a controller outage must not stop writes, and no one else can be elected meanwhile).
/// `dialer` reaches the controller.
pub fn spawn(broker: Arc<Broker>, dialer: &Dialer, controller_addr: String, mut stopping: watch::Receiver<bool>) {
    let channel = match dialer.endpoint(&controller_addr) {
        Ok(c) => c.connect_timeout(CALL_TIMEOUT).timeout(CALL_TIMEOUT).connect_lazy(),
        Err(e) => {
            tracing::error!(controller = %controller_addr, error = %format!("{e:#}"), "cannot dial the controller; the broker stays read-only");
            return;
        }
    };
    let mut client = ControllerClient::with_interceptor(channel, dialer.signer());
    tokio::spawn(async move {
        let interval = Duration::from_millis(broker.config().controller_heartbeat_interval_ms);
        let mut last_heartbeat: Option<tokio::time::Instant> = None;
        let mut failing = false;
        loop {
            if last_heartbeat.is_none_or(|t| t.elapsed() >= interval) {
                last_heartbeat = Some(tokio::time::Instant::now());
                match heartbeat(&broker, &mut client).await {
                    Ok(view) => {
                        if failing {
                            tracing::info!(controller = %controller_addr, "controller reachable again");
                            failing = false;
                        }
                        apply(&broker, view).await;
                    }
                    Err(e) if !failing => {
                        tracing::warn!(controller = %controller_addr, error = %e, "controller heartbeat failed; keeping the current role");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
            if broker.role().is_master() {
                if let Err(e) = maintain_sync_set(&broker, &mut client).await {
                    tracing::warn!(error = %e, "in-sync set change refused; asking the controller again");
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

async fn heartbeat(broker: &Broker, client: &mut ControllerClient<SignedChannel>) -> Result<GroupView, tonic::Status> {
    let cfg = broker.config();
    let hb = ControllerHeartbeat {
        broker_name: cfg.broker_name.clone(),
        endpoint: cfg.advertised(),
        epoch: broker.role().epoch,
        max_offset: broker.store().commitlog_end(),
        preferred_master: cfg.broker_id == 0,
    };
    Ok(client.heartbeat(hb).await?.into_inner())
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
async fn maintain_sync_set(broker: &Broker, client: &mut ControllerClient<SignedChannel>) -> Result<(), tonic::Status> {
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
    let view = client.alter_sync_state_set(req).await?.into_inner();
    if broker.role() == role {
        tracing::info!(in_sync = ?view.sync_state_set, epoch = view.epoch, "in-sync set changed");
        broker.confirm_sync_set(view.sync_state_set.into_iter().filter(|e| *e != me).collect());
    }
    Ok(())
}
