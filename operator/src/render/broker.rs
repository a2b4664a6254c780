//! One broker group: its ConfigMap, StatefulSet, headless and client Services and
//! PodDisruptionBudget.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodTemplateSpec, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pod::{container, env, field_env, pod_spec, template_meta};
use super::{hash, labels, selector, Ctx, Manifests, BROKER_PORT, METRICS_PORT, REMOTING_PORT};
use crate::crd::{BrokerSet, FlushDiskType, Replication};

/// Where a broker pod finds its config file.
pub const CONFIG_FILE: &str = "/etc/ferrocket/broker.toml";

/// Name of broker group `g` of BrokerSet `name` (its `brokerName`, StatefulSet and Services).
pub fn group_name(name: &str, g: i32) -> String {
    format!("{name}-{g}")
}

/// The `broker.toml` of group `group`: the keys the operator owns. The BrokerSet's
/// `spec.config` reaches the brokers as `FERROCKET_<KEY>` environment variables instead (their
/// values are strings; the broker reads env values as numbers, booleans or lists as the key
/// needs). Each pod adds `broker_id`, `advertised_addr` and `remoting_advertised_addr` from its
/// own name, also as env. The cluster name (RocketMQ `brokerClusterName`) is the BrokerSet's.
pub fn broker_config(bs: &BrokerSet, cluster: &str, group: &str, namesrv_addr: &str, controller_addr: &str) -> String {
    let s = &bs.spec;
    let quoted = |v: &str| serde_json::to_string(v).expect("strings serialize");
    [
        ("listen", quoted(&format!("0.0.0.0:{BROKER_PORT}"))),
        ("remoting_listen", quoted(&format!("0.0.0.0:{REMOTING_PORT}"))),
        ("cluster_name", quoted(cluster)),
        ("data_dir", quoted("/data")),
        ("metrics_listen", quoted(&format!("0.0.0.0:{METRICS_PORT}"))),
        ("broker_name", quoted(group)),
        ("namesrv_addrs", format!("[{}]", quoted(namesrv_addr))),
        ("controller_addr", quoted(controller_addr)),
        ("replication", quoted(if s.replication == Replication::Sync { "sync" } else { "async" })),
        ("min_in_sync_replicas", s.effective_min_in_sync().to_string()),
        ("flush_disk_type", quoted(if s.flush_disk_type == FlushDiskType::Sync { "sync" } else { "async" })),
    ]
    .iter()
    .map(|(k, v)| format!("{k} = {v}\n"))
    .collect()
}

/// Renders broker group `g` into `m`.
pub(super) fn render(ctx: &Ctx, g: i32, m: &mut Manifests) {
    let spec = &ctx.bs.spec;
    let group = group_name(&ctx.name, g);
    let all = labels(&ctx.name, "broker", Some(&group));
    let select = selector(&ctx.name, "broker", Some(&group));
    let config = broker_config(ctx.bs, &ctx.name, &group, &ctx.namesrv_addr(), &ctx.controller_addr());
    let config_map_name = format!("{group}-config");
    m.config_maps.push(ConfigMap {
        metadata: ctx.meta(&config_map_name, all.clone()),
        data: Some(BTreeMap::from([("broker.toml".to_string(), config.clone())])),
        ..Default::default()
    });

    // Extra keys as env, sorted (BTreeMap), so the hash and the pod template are stable.
    let extra: Vec<(String, String)> =
        spec.config.iter().map(|(k, v)| (format!("FERROCKET_{}", k.to_uppercase()), v.clone())).collect();
    let extra_text: String = extra.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let sec = super::security::render(ctx);
    let config_hash = hash(&[&config, &extra_text, &sec.hash_text]);
    let mut envs = vec![field_env("POD_NAME", "metadata.name"), field_env("POD_NAMESPACE", "metadata.namespace")];
    if ctx.caps.pod_index_label {
        // The StatefulSet ordinal (label set by Kubernetes >= 1.28): 0 is the preferred master.
        envs.push(field_env("FERROCKET_BROKER_ID", "metadata.labels['apps.kubernetes.io/pod-index']"));
    }
    envs.push(env("FERROCKET_ADVERTISED_ADDR", &format!("$(POD_NAME).{group}.$(POD_NAMESPACE).svc:{BROKER_PORT}")));
    envs.push(env(
        "FERROCKET_REMOTING_ADVERTISED_ADDR",
        &format!("$(POD_NAME).{group}.$(POD_NAMESPACE).svc:{REMOTING_PORT}"),
    ));
    envs.extend(extra.iter().map(|(k, v)| env(k, v)));
    envs.extend(sec.env);
    let mut c = container(
        ctx,
        &["broker", "--config", CONFIG_FILE],
        &[("grpc", BROKER_PORT), ("remoting", REMOTING_PORT)],
        envs,
        vec![
            VolumeMount { name: "data".into(), mount_path: "/data".into(), ..Default::default() },
            VolumeMount {
                name: "config".into(),
                mount_path: "/etc/ferrocket".into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]
        .into_iter()
        .chain(sec.mounts)
        .collect(),
    );
    c.resources = spec.resources.clone();
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource { name: config_map_name, ..Default::default() }),
        ..Default::default()
    }];
    volumes.extend(sec.volumes);
    let retention = if spec.storage.delete_claim { "Delete" } else { "Retain" };
    m.stateful_sets.push(StatefulSet {
        metadata: ctx.meta(&group, all.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(1 + spec.slaves_per_group),
            service_name: Some(group.clone()),
            selector: LabelSelector { match_labels: Some(select.clone()), ..Default::default() },
            // Start every replica at once: the controller elects; ordered start buys nothing.
            pod_management_policy: Some("Parallel".into()),
            // The operator rolls pods itself: one per group, slaves first, waiting for in-sync.
            update_strategy: Some(StatefulSetUpdateStrategy { type_: Some("OnDelete".into()), ..Default::default() }),
            persistent_volume_claim_retention_policy: ctx.caps.pvc_retention.then(|| {
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.into()),
                    when_scaled: Some(retention.into()),
                }
            }),
            template: PodTemplateSpec {
                metadata: Some(template_meta(all.clone(), &config_hash)),
                spec: Some(pod_spec(ctx, c, volumes)),
            },
            volume_claim_templates: Some(vec![data_claim(&spec.storage.size, spec.storage.storage_class_name.clone())]),
            ..Default::default()
        }),
        ..Default::default()
    });
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        // Explicit: the port lists' merge key is (port, protocol); Kubernetes < 1.21 does not
        // default it in server-side apply.
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    m.services.push(Service {
        metadata: ctx.meta(&group, all.clone()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Slaves must reach their master (and the controller them) before they are ready.
            publish_not_ready_addresses: Some(true),
            selector: Some(select.clone()),
            ports: Some(vec![
                port("grpc", BROKER_PORT),
                port("remoting", REMOTING_PORT),
                port("metrics", METRICS_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    });
    m.services.push(Service {
        metadata: ctx.meta(&format!("{group}-client"), all.clone()),
        spec: Some(ServiceSpec {
            selector: Some(select.clone()),
            ports: Some(vec![port("grpc", BROKER_PORT), port("remoting", REMOTING_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    });
    if !ctx.caps.pdb_v1 {
        return;
    }
    m.pod_disruption_budgets.push(PodDisruptionBudget {
        metadata: ctx.meta(&group, all),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(spec.pod_disruption_budget.max_unavailable)),
            selector: Some(LabelSelector { match_labels: Some(select), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    });
}

/// The `data` volume claim template.
pub(super) fn data_claim(
    size: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    class: Option<String>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta { name: Some("data".into()), ..Default::default() },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: class,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), size.clone())])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
