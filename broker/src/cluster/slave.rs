//! A slave's replication session (RocketMQ `HAClient`): it finds its master, streams the
//! CommitLog bytes it lacks over `ferrocket.v1.Ha`, writes them, reports how far it got, and
//! keeps its topic and group configuration in step with the master's. The master's side is
//! [`crate::grpc::ha`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::proto::signing::SignedChannel;

use crate::broker::Broker;
use crate::grpc::ha::{epochs_from_pb, epochs_to_pb};
use crate::proto::admin::admin_client::AdminClient;
use crate::proto::admin::{ListAclsRequest, ListGroupsRequest, ListTopicsRequest, ListUsersRequest};
use crate::proto::clients::Nameservers;
use crate::proto::dial::Dialer;
use crate::proto::namesrv::ha_client::HaClient;
use crate::proto::namesrv::SlaveReport;

/// How often a slave copies its master's topics and groups.
const CONFIG_SYNC: Duration = Duration::from_secs(2);

/// The master to replicate from: the one the role names (the controller's choice, or
/// `ha_master_addr`), else the group's broker id 0 as the nameservers have it. `None` while this
/// broker is master, or has a controller that has not named a master yet.
async fn master_endpoint(broker: &Broker, nameservers: Option<&Nameservers>) -> anyhow::Result<Option<String>> {
    let role = broker.role();
    if role.is_master() {
        return Ok(None);
    }
    if let Some(m) = role.master() {
        return Ok(Some(m.to_string()));
    }
    let cfg = broker.config();
    if cfg.controller_addr.is_some() {
        return Ok(None);
    }
    let ns =
        nameservers.ok_or_else(|| anyhow::anyhow!("a slave needs ha_master_addr, controller_addr or namesrv_addrs"))?;
    ns.masters()
        .await?
        .into_iter()
        .find(|(group, _)| *group == cfg.broker_name)
        .map(|(_, endpoint)| Some(endpoint))
        .ok_or_else(|| anyhow::anyhow!("no master of broker group {} is registered", cfg.broker_name))
}

/// One replication session: connect, truncate to the point shared with the master if it says
/// so, then stream, write, report, until an error, a role change or the stop.
async fn session(
    broker: &Arc<Broker>,
    dialer: &Dialer,
    master: &str,
    stopping: &mut watch::Receiver<bool>,
    failing: &mut bool,
) -> anyhow::Result<()> {
    let ch = dialer.endpoint(master)?.connect_timeout(Duration::from_secs(3)).connect().await?;
    let (report_tx, report_rx) = mpsc::channel(16);
    let cfg = broker.config();
    let report = |offset| SlaveReport {
        broker_name: cfg.broker_name.clone(),
        broker_id: cfg.broker_id,
        offset,
        endpoint: cfg.advertised(),
        epochs: Vec::new(),
    };
    let first = SlaveReport { epochs: epochs_to_pb(&broker.epoch_history()), ..report(broker.store().commitlog_end()) };
    report_tx.send(first).await?;
    let mut chunks = HaClient::with_interceptor(ch.clone(), dialer.signer())
        .replicate(ReceiverStream::new(report_rx))
        .await?
        .into_inner();
    let hello = chunks.message().await?.ok_or_else(|| anyhow::anyhow!("the master ended the stream at once"))?;
    if hello.offset < broker.store().commitlog_end() {
        let (b, to) = (broker.clone(), hello.offset);
        tokio::task::spawn_blocking(move || b.truncate_to(to)).await??;
        report_tx.send(report(to)).await?;
    }
    if !hello.epochs.is_empty() {
        broker.adopt_epochs(epochs_from_pb(&hello.epochs))?;
    }
    broker.set_replication_lag(Some(hello.master_end.saturating_sub(broker.store().commitlog_end())));
    tracing::info!(master, from = broker.store().commitlog_end(), "replicating from master");
    *failing = false;
    let mut admin = AdminClient::with_interceptor(ch, dialer.signer());
    let mut last_sync = tokio::time::Instant::now() - CONFIG_SYNC;
    let role = broker.role();
    let mut role_rx = broker.subscribe_role();
    loop {
        if last_sync.elapsed() >= CONFIG_SYNC {
            sync_config(broker, &mut admin).await?;
            last_sync = tokio::time::Instant::now();
        }
        let next = tokio::select! {
            c = chunks.message() => c?,
            _ = tokio::time::sleep(CONFIG_SYNC) => continue,
            _ = stopping.wait_for(|s| *s) => return Ok(()),
            _ = role_rx.wait_for(|r| *r != role) => return Ok(()),
        };
        let Some(c) = next else { anyhow::bail!("the master ended the stream") };
        let master_end = c.master_end;
        let b = broker.clone();
        let end = tokio::task::spawn_blocking(move || b.apply_replicated(c.offset, &c.data)).await??;
        report_tx.send(report(end)).await?;
        broker.set_replication_lag(Some(master_end.saturating_sub(end)));
    }
}

/// Makes the slave's topics, consumer groups, users and access rules the master's (the slave must be able to
/// take over): creates and updates what the master has, deletes what it no longer has.
async fn sync_config(broker: &Arc<Broker>, admin: &mut AdminClient<SignedChannel>) -> anyhow::Result<()> {
    let topics = admin.list_topics(ListTopicsRequest {}).await?.into_inner().topics;
    let keep: std::collections::HashSet<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    for t in &topics {
        let t = crate::grpc::admin::from_pb(t).map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        broker.topics().upsert_any(t)?;
    }
    for gone in broker.topics().list().into_iter().filter(|t| !keep.contains(t.name.as_str())) {
        let b = broker.clone();
        tokio::task::spawn_blocking(move || b.delete_topic(&gone.name, true)).await??;
    }
    let groups = admin.list_groups(ListGroupsRequest {}).await?.into_inner().groups;
    let keep: std::collections::HashSet<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    for g in &groups {
        broker.groups().upsert(crate::grpc::admin::group_from_pb(g, broker.config()))?;
    }
    for gone in broker.groups().list().into_iter().filter(|g| !keep.contains(g.name.as_str())) {
        broker.groups().delete(&gone.name)?;
    }
    let users = admin.list_users(ListUsersRequest { with_secrets: true }).await?.into_inner().users;
    broker.auth().replace_users(users.iter().map(crate::grpc::admin::user_from_pb).collect())?;
    let acls = admin.list_acls(ListAclsRequest { user: String::new() }).await?.into_inner().acls;
    let acls = acls.iter().map(crate::grpc::admin::acl_from_pb).collect::<Result<_, _>>();
    broker.auth().acls()?.replace(acls.map_err(|s| anyhow::anyhow!("{}", s.message()))?)?;
    Ok(())
}

/// Runs replication whenever the broker is a slave, until `stopping` turns true: a session per
/// master, reconnecting a second after any failure (logged once per outage), and starting over
/// when the role changes (a promotion ends it; a new master restarts it).
/// `dialer` reaches the master.
pub fn spawn_slave(
    broker: Arc<Broker>,
    dialer: Dialer,
    nameservers: Option<Arc<Nameservers>>,
    mut stopping: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut failing = false;
        let mut role_rx = broker.subscribe_role();
        while !*stopping.borrow() {
            role_rx.borrow_and_update();
            let result = match master_endpoint(&broker, nameservers.as_deref()).await {
                Ok(Some(m)) => session(&broker, &dialer, &m, &mut stopping, &mut failing).await,
                Ok(None) => {
                    // Master, or no master named yet: wait for a role change.
                    tokio::select! {
                        _ = role_rx.changed() => {}
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                    continue;
                }
                Err(e) => Err(e),
            };
            broker.set_replication_lag(None);
            match result {
                Ok(()) => continue,
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "replication from the master failed; retrying every second");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    });
}
