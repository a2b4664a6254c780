//! This broker's part of the cluster as operators see it (Admin ReplicaStatus); the whole
//! cluster (`ferrocket cluster status`, Admin ClusterStatus) joins these through
//! [`ferrocket_proto::clients::cluster_status`].

use crate::broker::Broker;
use crate::proto::admin::{ReplicaStatus, SlaveStatus};

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
        replication: cfg.replication.as_str().into(),
    }
}
