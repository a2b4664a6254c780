//! Rendering: pure functions from a [`BrokerSet`] to the Kubernetes objects that run it. No
//! client, no I/O: the reconciler applies what these return, and tests (and `ferrocket-operator
//! render`) can look at them directly.
//!
//! Per BrokerSet `N` in namespace `NS`:
//! - nameservers: Deployment `N-namesrv` and headless Service `N-namesrv` (brokers look its
//!   name up and use every address); the election controller: a one-pod StatefulSet
//!   `N-controller` with its own volume (its epoch store must survive restarts) and headless
//!   Service `N-controller`, also a nameserver;
//! - per broker group `N-<g>` (g = 0..brokerGroups): ConfigMap `N-<g>-config` (`broker.toml`),
//!   StatefulSet `N-<g>` (pod 0 is the preferred first master, the others its slaves; roles
//!   after that are the controller's), headless Service `N-<g>` (stable pod names, reachable
//!   before ready so slaves can replicate), client Service `N-<g>-client`, and a
//!   PodDisruptionBudget `N-<g>`.
//!
//! Every object carries the BrokerSet as controlling owner reference and the labels of
//! [`labels`].

mod broker;
mod namesrv;
mod pod;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::BrokerSet;

pub use broker::{broker_config, group_name, CONFIG_FILE};

/// gRPC port of brokers (RocketMQ 5 proxy's default).
pub const BROKER_PORT: i32 = 8081;
/// RocketMQ Remoting port of every broker (RocketMQ `listenPort`).
pub const REMOTING_PORT: i32 = 10911;
/// Port of nameservers (gRPC and Remoting on one port) and of the controller.
pub const NAMESRV_PORT: i32 = 9876;
/// Port of `/metrics`, `/healthz` and `/readyz` on every pod.
pub const METRICS_PORT: i32 = 9100;
/// Pod template annotation holding the hash of the configuration a pod runs with: a change of
/// it rolls the pods.
pub const CONFIG_HASH: &str = "ferrocket.io/config-hash";
/// Field manager of every server-side apply of the operator.
pub const FIELD_MANAGER: &str = "ferrocket-operator";

/// Why a BrokerSet cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// The BrokerSet has no name or namespace (it was not read from a cluster).
    #[error("the BrokerSet has no {0}")]
    Missing(&'static str),
    /// `spec.config` sets a key the operator owns.
    #[error("spec.config may not set {0}: the operator sets it")]
    OwnedKey(String),
}

/// Everything one BrokerSet runs as.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifests {
    /// One `broker.toml` per broker group.
    pub config_maps: Vec<ConfigMap>,
    /// One per broker group, then the controller's.
    pub stateful_sets: Vec<StatefulSet>,
    /// The nameserver Deployment.
    pub deployments: Vec<Deployment>,
    /// Headless and client Services of every group, the nameservers' and the controller's.
    pub services: Vec<Service>,
    /// One per broker group.
    pub pod_disruption_budgets: Vec<PodDisruptionBudget>,
}

impl Manifests {
    /// Every object as JSON, in apply order (config first, workloads last).
    pub fn to_values(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut push = |v: Result<serde_json::Value, serde_json::Error>| out.push(v.expect("k8s objects serialize"));
        self.config_maps.iter().for_each(|o| push(serde_json::to_value(o)));
        self.services.iter().for_each(|o| push(serde_json::to_value(o)));
        self.pod_disruption_budgets.iter().for_each(|o| push(serde_json::to_value(o)));
        self.deployments.iter().for_each(|o| push(serde_json::to_value(o)));
        self.stateful_sets.iter().for_each(|o| push(serde_json::to_value(o)));
        out
    }
}

/// What the API server takes, where it differs between the Kubernetes versions the operator
/// supports (1.20 and later): the reconciler discovers it and renders for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `policy/v1` PodDisruptionBudgets (Kubernetes 1.21).
    pub pdb_v1: bool,
    /// The StatefulSet field `persistentVolumeClaimRetentionPolicy` (on by default from 1.27).
    pub pvc_retention: bool,
    /// The pod label `apps.kubernetes.io/pod-index` (1.28), the brokers' `broker_id`.
    pub pod_index_label: bool,
}

impl Capabilities {
    /// A current Kubernetes: everything.
    pub const CURRENT: Capabilities = Capabilities { pdb_v1: true, pvc_retention: true, pod_index_label: true };

    /// The capabilities of Kubernetes 1.`minor` that serves `policy/v1` or not.
    pub fn of(minor: u32, pdb_v1: bool) -> Capabilities {
        Capabilities { pdb_v1, pvc_retention: minor >= 27, pod_index_label: minor >= 28 }
    }

    /// What is missing, and what that means, one sentence each.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.pdb_v1 {
            out.push("policy/v1 is not served: no PodDisruptionBudgets, so voluntary evictions are not limited");
        }
        if !self.pvc_retention {
            out.push(
                "StatefulSet PVC retention needs Kubernetes 1.27: claims are kept whatever storage.deleteClaim says",
            );
        }
        if !self.pod_index_label {
            out.push("the pod-index label needs Kubernetes 1.28: pod 0 is not preferred as first master (the controller picks the first broker to report)");
        }
        out
    }
}

/// Renders every object of `bs` for a current Kubernetes. Errors: [`RenderError`].
pub fn render(bs: &BrokerSet) -> Result<Manifests, RenderError> {
    render_for(bs, Capabilities::CURRENT)
}

/// Renders every object of `bs` for a server with `caps` (what it lacks is left out). Errors:
/// [`RenderError`].
pub fn render_for(bs: &BrokerSet, caps: Capabilities) -> Result<Manifests, RenderError> {
    let ctx = Ctx::new(bs, caps)?;
    if let Some(k) = bs.spec.config.keys().find(|k| crate::crd::OWNED_CONFIG_KEYS.contains(&k.as_str())) {
        return Err(RenderError::OwnedKey(k.clone()));
    }
    let mut m = Manifests::default();
    namesrv::render(&ctx, &mut m);
    for g in 0..bs.spec.broker_groups.max(0) {
        broker::render(&ctx, g, &mut m);
    }
    Ok(m)
}

/// What every rendering function needs: the BrokerSet, its name, namespace and owner reference.
pub(crate) struct Ctx<'a> {
    pub bs: &'a BrokerSet,
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
    pub caps: Capabilities,
}

impl<'a> Ctx<'a> {
    fn new(bs: &'a BrokerSet, caps: Capabilities) -> Result<Ctx<'a>, RenderError> {
        let name = bs.metadata.name.clone().ok_or(RenderError::Missing("metadata.name"))?;
        let namespace = bs.metadata.namespace.clone().ok_or(RenderError::Missing("metadata.namespace"))?;
        let owner = bs.controller_owner_ref(&()).ok_or(RenderError::Missing("metadata.uid"))?;
        Ok(Ctx { bs, name, namespace, owner, caps })
    }

    /// Metadata of an object named `name` with `component` labels.
    pub fn meta(&self, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }

    /// `host:port` of the nameservers as brokers use it (see [`namesrv_address`]).
    pub fn namesrv_addr(&self) -> String {
        namesrv_address(&self.name, &self.namespace)
    }

    /// `host:port` of the election controller (its one pod, by its stable name).
    pub fn controller_addr(&self) -> String {
        format!("{0}-controller-0.{0}-controller.{1}.svc:{NAMESRV_PORT}", self.name, self.namespace)
    }
}

/// `host:port` of the nameservers of BrokerSet `name` in `namespace`: their headless Service,
/// whose DNS name resolves to every nameserver pod.
pub fn namesrv_address(name: &str, namespace: &str) -> String {
    format!("{name}-namesrv.{namespace}.svc:{NAMESRV_PORT}")
}

/// `labels` as a label selector query (`k=v,k=v`).
pub fn selector_query(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The labels of an object of BrokerSet `instance`: `app.kubernetes.io/{name,instance,component,
/// managed-by}`, plus `ferrocket.io/broker-group` for a group's objects and
/// `ferrocket.io/namesrv: "true"` on nameserver pods (the controller's included).
pub fn labels(instance: &str, component: &str, group: Option<&str>) -> BTreeMap<String, String> {
    let mut l = selector(instance, component, group);
    l.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    l
}

/// The labels that select one component's pods (a subset of [`labels`]).
pub fn selector(instance: &str, component: &str, group: Option<&str>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "ferrocket".to_string()),
        ("app.kubernetes.io/instance".to_string(), instance.to_string()),
        ("app.kubernetes.io/component".to_string(), component.to_string()),
    ]);
    if let Some(g) = group {
        l.insert("ferrocket.io/broker-group".into(), g.into());
    }
    l
}

/// Hex SHA-256 of `parts` (each length-prefixed, so different splits never collide).
pub fn hash(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BrokerSetSpec;

    fn example() -> BrokerSet {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/kubernetes/brokerset.yaml"))
                .expect("example BrokerSet");
        let mut bs: BrokerSet = serde_yaml_ng::from_str(&text).expect("example parses");
        bs.metadata.uid = Some("uid-1".into());
        bs
    }

    #[test]
    fn a_brokerset_renders_every_object_owned_and_labelled() {
        let bs = example();
        let m = render(&bs).unwrap();
        assert_eq!(m.config_maps.len(), 2);
        let sts: Vec<&str> = m.stateful_sets.iter().map(|s| s.metadata.name.as_deref().unwrap()).collect();
        assert_eq!(sts, ["demo-controller", "demo-0", "demo-1"]);
        let svcs: Vec<&str> = m.services.iter().map(|s| s.metadata.name.as_deref().unwrap()).collect();
        assert_eq!(svcs, ["demo-namesrv", "demo-controller", "demo-0", "demo-0-client", "demo-1", "demo-1-client"]);
        assert_eq!(m.deployments[0].spec.as_ref().unwrap().replicas, Some(2));
        assert_eq!(m.pod_disruption_budgets.len(), 2);
        for v in m.to_values() {
            let owner = &v["metadata"]["ownerReferences"][0];
            assert_eq!((owner["kind"].as_str(), owner["controller"].as_bool()), (Some("BrokerSet"), Some(true)), "{v}");
            assert_eq!(v["metadata"]["namespace"], "default");
            assert_eq!(v["metadata"]["labels"]["app.kubernetes.io/instance"], "demo");
        }
        // A group: master + one slave, its config, stable names, the operator rolls pods itself.
        let g0 = m.stateful_sets.iter().find(|s| s.metadata.name.as_deref() == Some("demo-0")).unwrap();
        let spec = g0.spec.as_ref().unwrap();
        assert_eq!((spec.replicas, spec.service_name.as_deref()), (Some(2), Some("demo-0")));
        assert_eq!(spec.update_strategy.as_ref().unwrap().type_.as_deref(), Some("OnDelete"));
        let toml = &m.config_maps[0].data.as_ref().unwrap()["broker.toml"];
        for line in [
            "broker_name = \"demo-0\"",
            "namesrv_addrs = [\"demo-namesrv.default.svc:9876\"]",
            "controller_addr = \"demo-controller-0.demo-controller.default.svc:9876\"",
            "replication = \"sync\"",
            "min_in_sync_replicas = 1",
        ] {
            assert!(toml.contains(line), "{line} missing from\n{toml}");
        }
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        let env: BTreeMap<&str, Option<&str>> =
            c.env.as_ref().unwrap().iter().map(|e| (e.name.as_str(), e.value.as_deref())).collect();
        assert_eq!(env["FERROCKET_FILE_RESERVED_HOURS"], Some("48"));
        assert_eq!(env["FERROCKET_ADVERTISED_ADDR"], Some("$(POD_NAME).demo-0.$(POD_NAMESPACE).svc:8081"));
        assert_eq!(c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
    }

    fn config_hash(m: &Manifests, sts: &str) -> String {
        let s = m.stateful_sets.iter().find(|s| s.metadata.name.as_deref() == Some(sts)).unwrap();
        s.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()[CONFIG_HASH].clone()
    }

    #[test]
    fn the_config_hash_follows_the_config_and_nothing_else() {
        let bs = example();
        let before = render(&bs).unwrap();
        let mut scaled = bs.clone();
        scaled.spec.nameservers.replicas = 3;
        assert_eq!(config_hash(&render(&scaled).unwrap(), "demo-0"), config_hash(&before, "demo-0"));
        let mut changed = bs.clone();
        changed.spec.config.insert("commitlog_segment_bytes".into(), "268435456".into());
        assert_ne!(config_hash(&render(&changed).unwrap(), "demo-0"), config_hash(&before, "demo-0"));
        let mut sync_flush = bs;
        sync_flush.spec.flush_disk_type = crate::crd::FlushDiskType::Sync;
        assert_ne!(config_hash(&render(&sync_flush).unwrap(), "demo-1"), config_hash(&before, "demo-1"));
    }

    #[test]
    fn owned_config_keys_and_objects_without_identity_are_refused() {
        let mut bs = example();
        bs.spec.config.insert("broker_name".into(), "x".into());
        assert_eq!(render(&bs), Err(RenderError::OwnedKey("broker_name".into())));
        let anonymous = BrokerSet::new("x", BrokerSetSpec { ..example().spec });
        assert_eq!(render(&anonymous), Err(RenderError::Missing("metadata.namespace")));
    }
}
