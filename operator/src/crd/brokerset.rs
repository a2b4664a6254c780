//! `BrokerSet`: a Ferrocket cluster — nameservers, the master election controller (nameservers
//! forming one Raft group) and `brokerGroups` broker groups of one master and `slavesPerGroup`
//! slaves.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Broker config keys the operator sets itself; `spec.config` may not name them.
pub const OWNED_CONFIG_KEYS: &[&str] = &[
    "listen",
    "advertised_addr",
    "data_dir",
    "namesrv_addrs",
    "broker_name",
    "broker_id",
    "broker_role",
    "controller_addr",
    "enable_controller",
    "controller_peers",
    "controller_id",
    "replication",
    "min_in_sync_replicas",
    "flush_disk_type",
    "metrics_listen",
    "ha_master_addr",
    "auth_enabled",
    "auth_access_key",
    "auth_secret_key",
    "tls_mode",
    "tls_cert_file",
    "tls_key_file",
    "tls_ca_file",
    "tls_server_name",
];

/// Desired state of a BrokerSet.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferrocket.io",
    version = "v1alpha1",
    kind = "BrokerSet",
    namespaced,
    doc = "A Ferrocket cluster: nameservers, the master election controller and broker groups of a master and its slaves.",
    shortname = "fbs",
    status = "BrokerSetStatus",
    printcolumn(name = "Groups", type_ = "integer", json_path = ".spec.brokerGroups"),
    printcolumn(name = "Slaves", type_ = "integer", json_path = ".spec.slavesPerGroup"),
    printcolumn(name = "Replication", type_ = "string", json_path = ".spec.replication"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    cel,
    validation = Rule::new("!has(self.minInSyncReplicas) || self.minInSyncReplicas <= self.slavesPerGroup + 1")
        .message("minInSyncReplicas cannot exceed the replicas of a group (slavesPerGroup + 1)")
)]
#[serde(rename_all = "camelCase")]
pub struct BrokerSetSpec {
    /// Number of broker groups (each a master and its slaves).
    #[schemars(range(min = 1, max = 64))]
    pub broker_groups: i32,
    /// Slaves per broker group (0: masters alone, no failover).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 4))]
    pub slaves_per_group: i32,
    /// `Async` (acknowledge after the master's write) or `Sync` (after the in-sync replicas').
    #[serde(default)]
    pub replication: Replication,
    /// Replicas (master included) that must hold a message before a `Sync` send is acknowledged;
    /// default 1 with one slave per group (so a group stays writable after a failover), else 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5))]
    pub min_in_sync_replicas: Option<i32>,
    /// `Async` (fsync every 500 ms) or `Sync` (fsync before acknowledging).
    #[serde(default)]
    pub flush_disk_type: FlushDiskType,
    /// The nameservers.
    #[serde(default)]
    pub nameservers: NameserverSpec,
    /// The election controller: a StatefulSet of nameservers forming one Raft group.
    #[serde(default)]
    pub controller: ControllerSpec,
    /// Container image of `ferrocket` (one binary for nameservers and brokers).
    #[schemars(length(min = 1))]
    pub image: String,
    /// Resources of each broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Each broker's data volume.
    pub storage: StorageSpec,
    /// Extra broker config keys (`commitlog_segment_bytes`, `file_reserved_hours`, ...), as
    /// strings; keys the operator sets itself are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new(
        "self.all(k, !(k in ['listen', 'advertised_addr', 'data_dir', 'namesrv_addrs', 'broker_name', 'broker_id', 'broker_role', 'controller_addr', 'enable_controller', 'controller_peers', 'controller_id', 'replication', 'min_in_sync_replicas', 'flush_disk_type', 'metrics_listen', 'ha_master_addr', 'auth_enabled', 'auth_access_key', 'auth_secret_key', 'tls_mode', 'tls_cert_file', 'tls_key_file', 'tls_ca_file', 'tls_server_name']))"
    ).message("config may not set keys the operator owns (listen, data_dir, namesrv_addrs, broker_name, broker_id, broker_role, controller_addr, controller_peers, replication, min_in_sync_replicas, flush_disk_type, metrics_listen, auth_*, tls_*, ...)"))]
    pub config: BTreeMap<String, String>,
    /// Where broker and nameserver pods may run.
    #[serde(default)]
    pub scheduling: Scheduling,
    /// The PodDisruptionBudget of each broker group.
    #[serde(default)]
    pub pod_disruption_budget: PdbSpec,
    /// Authentication (RocketMQ 5.3 `authenticationEnabled`): on unless `enabled: false`.
    #[serde(default)]
    pub auth: AuthSpec,
    /// TLS with a certificate from a Secret; unset: each process serves a self-signed
    /// certificate beside plaintext, and its own connections are plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

fn one() -> i32 {
    1
}

fn yes() -> bool {
    true
}

/// Key of the cluster's access key in the credentials Secret.
pub const ACCESS_KEY: &str = "accessKey";
/// Key of the cluster's secret key in the credentials Secret.
pub const SECRET_KEY: &str = "secretKey";

/// Authentication of every process of the BrokerSet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Every request must be signed by a user (default true). Clients need credentials: a
    /// `User`'s, or the cluster's own.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Secret (keys `accessKey`, `secretKey`) with the cluster's own super user, which its
    /// processes and the operator sign with; unset: `<name>-auth`, which the operator generates
    /// (owned by the BrokerSet) if it does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

impl Default for AuthSpec {
    fn default() -> Self {
        AuthSpec { enabled: true, secret_name: None }
    }
}

/// TLS of every port and of the processes' own connections.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret with `tls.crt`, `tls.key` and `ca.crt` (what cert-manager writes). The
    /// certificate must name the addresses processes dial (pod and Service DNS names, e.g.
    /// `*.<name>-0.<namespace>.svc`, `<name>-namesrv.<namespace>.svc`) or `serverName`. A
    /// renewed certificate is served without a restart.
    #[schemars(length(min = 1))]
    pub secret_name: String,
    /// `Enforcing` (default): TLS only; `Permissive`: plaintext clients too.
    #[serde(default)]
    pub mode: TlsMode,
    /// The name the processes and the operator check the certificate for, instead of the
    /// dialled host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// What the ports accept (the broker's `tls_mode`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum TlsMode {
    /// TLS only.
    #[default]
    Enforcing,
    /// TLS and plaintext.
    Permissive,
}

/// Master/slave replication mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Replication {
    /// Acknowledge after the master's write.
    #[default]
    Async,
    /// Acknowledge once every in-sync replica holds the message.
    Sync,
}

/// CommitLog flush policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum FlushDiskType {
    /// fsync in the background.
    #[default]
    Async,
    /// fsync before acknowledging (group commit).
    Sync,
}

/// The nameserver Deployment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NameserverSpec {
    /// Nameserver pods (2 by default; the controller runs in a separate one-pod StatefulSet).
    #[schemars(range(min = 1, max = 5))]
    pub replicas: i32,
}

impl Default for NameserverSpec {
    fn default() -> Self {
        NameserverSpec { replicas: 2 }
    }
}

/// The election controller's StatefulSet `<name>-controller`: nameservers that are also the
/// members of the controller's Raft group (member i+1 is pod i).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    validation = Rule::new("self.replicas >= oldSelf.replicas")
        .message("controller.replicas cannot decrease: the controller group only grows")
)]
#[serde(rename_all = "camelCase")]
pub struct ControllerSpec {
    /// Controller pods (3 by default: elections go on with one down; 5 with two). 1 runs a
    /// single controller, which stops elections while it is down. Scaling up adds members to the
    /// running group through Raft; scaling down is refused (by this rule and by the operator):
    /// it takes a membership change before a pod goes, which the operator does not make.
    #[schemars(range(min = 1, max = 7))]
    pub replicas: i32,
}

impl Default for ControllerSpec {
    fn default() -> Self {
        ControllerSpec { replicas: 3 }
    }
}

/// A broker's PersistentVolumeClaim.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)")
        .message("storage.storageClassName is immutable")
)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each broker's volume (e.g. `50Gi`).
    pub size: Quantity,
    /// StorageClass of the volumes; immutable (a StatefulSet's claim templates cannot change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Delete the claims when the BrokerSet is deleted or scaled down (default false: data is
    /// kept).
    #[serde(default)]
    pub delete_claim: bool,
}

/// Pod placement, applied to broker and nameserver pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    /// Node labels a pod requires.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints a pod tolerates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node and pod (anti-)affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Spread constraints (a group's master and slaves on different nodes or zones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

/// The PodDisruptionBudget of each broker group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PdbSpec {
    /// Pods of a group that may be down at once for voluntary disruptions (default 1).
    #[schemars(range(min = 1))]
    pub max_unavailable: i32,
}

impl Default for PdbSpec {
    fn default() -> Self {
        PdbSpec { max_unavailable: 1 }
    }
}

/// Observed state of a BrokerSet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerSetStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Degraded`, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// One entry per broker group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupStatus>,
    /// `host:port` of the nameserver Service clients and brokers use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameserver_address: Option<String>,
    /// The controller group's leader as last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<ControllerStatus>,
}

/// The election controller's Raft group as last observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControllerStatus {
    /// The leader's member id (pod ordinal + 1).
    pub leader: i64,
    /// The leader's Raft term.
    pub term: i64,
    /// The committed voting members, `id=host:port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
}

/// One broker group as last observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    /// Broker group name (`brokerName`).
    pub name: String,
    /// The master's endpoint, if one is elected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// The slaves' endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slaves: Vec<String>,
    /// Ready pods of the group.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The in-sync set (master included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_sync: Vec<String>,
    /// Controller epoch.
    #[serde(default)]
    pub epoch: i64,
}

impl BrokerSetSpec {
    /// The Secret with the cluster's credentials, when authentication is on.
    pub fn auth_secret(&self, name: &str) -> Option<String> {
        self.auth.enabled.then(|| self.auth.secret_name.clone().unwrap_or_else(|| format!("{name}-auth")))
    }

    /// `minInSyncReplicas` as the brokers get it: the spec's, or 1 with at most one slave (a
    /// group stays writable after a failover) and 2 otherwise.
    pub fn effective_min_in_sync(&self) -> i32 {
        self.min_in_sync_replicas.unwrap_or(if self.slaves_per_group <= 1 { 1 } else { 2 })
    }
}
