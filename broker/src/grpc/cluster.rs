//! The cluster as operators see it (`ferrocket cluster status`, Admin ClusterStatus): each
//! broker's replication state as it reports it, joined with the nameservers' registry and the
//! controller's groups.

use std::time::Duration;

use tonic::transport::Channel;

use crate::broker::Broker;
use crate::namesrv::registration::Nameservers;
use crate::proto::admin::admin_client::AdminClient;
use crate::proto::admin::{BrokerStatus, ClusterStatusResponse, ReplicaStatus, ReplicaStatusRequest, SlaveStatus};

/// Longest a broker is given to report its state.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// This broker's replication state: role, epoch, CommitLog range, its master, or its slaves
/// with their lag (bytes) and the in-sync set.
pub fn replica_status(broker: &Broker) -> ReplicaStatus {
    let (cfg, store, role) = (broker.config(), broker.store(), broker.role());
    let end = store.commitlog_end();
    let replicas = broker.replicas();
    let in_sync = if role.is_master() { replicas.waited_on(end) } else { Default::default() };
    let slaves = if role.is_master() { replicas.slaves() } else { Default::default() };
    ReplicaStatus {
        broker_name: cfg.broker_name.clone(),
        endpoint: cfg.advertised(),
        role: if role.is_master() { "master" } else { "slave" }.into(),
        epoch: role.epoch,
        min_offset: store.commitlog_min_offset(),
        max_offset: end,
        master: role.master().unwrap_or_default().to_string(),
        slaves: slaves
            .iter()
            .map(|(e, s)| SlaveStatus {
                endpoint: e.clone(),
                offset: s.offset,
                lag_bytes: end.saturating_sub(s.offset),
                in_sync: in_sync.contains(e),
            })
            .collect(),
        in_sync: in_sync.into_iter().collect(),
        replication_lag_bytes: if role.is_master() { None } else { broker.replication_lag() },
        replication: cfg.replication.clone(),
    }
}

/// Asks one broker for its [`ReplicaStatus`]. Errors: it did not answer within 3 s.
async fn ask(endpoint: &str) -> anyhow::Result<ReplicaStatus> {
    let ch = Channel::from_shared(format!("http://{endpoint}"))?.connect_timeout(ASK_TIMEOUT).timeout(ASK_TIMEOUT);
    let mut c = AdminClient::new(ch.connect().await?);
    Ok(c.replica_status(ReplicaStatusRequest {}).await?.into_inner())
}

/// Every broker the nameservers know (stale registrations included), each with the state it
/// reports (or why it did not), and the controller's groups if a nameserver runs it. Errors:
/// no nameserver answered.
pub async fn cluster_status(ns: &Nameservers) -> anyhow::Result<ClusterStatusResponse> {
    let registrations = ns.cluster_info().await?;
    // Asked concurrently, so one dead broker costs one timeout, not one each.
    let asks: Vec<_> = registrations
        .into_iter()
        .map(|r| {
            tokio::spawn(async move {
                let broker = r.broker.unwrap_or_default();
                let (replica, error) = match ask(&broker.endpoint).await {
                    Ok(s) => (Some(s), String::new()),
                    Err(e) => (None, e.to_string()),
                };
                BrokerStatus { topics: r.topics, broker: Some(broker), replica, error }
            })
        })
        .collect();
    let mut brokers = Vec::new();
    for a in asks {
        brokers.push(a.await?);
    }
    let controller = ns.controller_groups().await.unwrap_or_default();
    Ok(ClusterStatusResponse { brokers, controller })
}
