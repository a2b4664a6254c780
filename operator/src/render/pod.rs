//! What every Ferrocket pod has: the `ferrocket` container with its ports, probes on
//! `/healthz` and `/readyz`, the restricted security context (Pod Security Standards
//! "restricted": non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp,
//! read-only root file system) and the BrokerSet's scheduling.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PodSecurityContext, PodSpec, Probe, SeccompProfile, SecurityContext, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Ctx, METRICS_PORT};

/// UID and GID the image runs as (see the Dockerfile).
pub const RUN_AS: i64 = 65532;

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Default::default()
    }
}

/// An env var from the pod's own metadata (`metadata.name`, `metadata.namespace`, ...).
pub fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A plain env var.
pub fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

/// The `ferrocket` container: `args`, its named `ports` (name, port), the metrics port, the
/// probes (liveness `/healthz`; readiness `/readyz`; a startup probe that allows 10 minutes of
/// recovery), `env` and `mounts`.
pub fn container(
    ctx: &Ctx,
    args: &[&str],
    ports: &[(&str, i32)],
    env: Vec<EnvVar>,
    mounts: Vec<VolumeMount>,
) -> Container {
    // Protocol explicit: (containerPort, protocol) is the merge key server-side apply needs.
    let port = |name: &str, port: i32| ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Container {
        name: "ferrocket".into(),
        image: Some(ctx.bs.spec.image.clone()),
        args: Some(args.iter().map(|a| a.to_string()).collect()),
        ports: Some(ports.iter().map(|(n, p)| port(n, *p)).chain([port("metrics", METRICS_PORT)]).collect()),
        env: Some(env),
        volume_mounts: Some(mounts),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        startup_probe: Some(probe("/healthz", 5, 120)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod spec around `container` with the BrokerSet's scheduling and the restricted pod
/// security context; `volumes` as given.
pub fn pod_spec(ctx: &Ctx, container: Container, volumes: Vec<k8s_openapi::api::core::v1::Volume>) -> PodSpec {
    let s = &ctx.bs.spec.scheduling;
    PodSpec {
        containers: vec![container],
        volumes: (!volumes.is_empty()).then_some(volumes),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        node_selector: (!s.node_selector.is_empty()).then(|| s.node_selector.clone()),
        tolerations: (!s.tolerations.is_empty()).then(|| s.tolerations.clone()),
        affinity: s.affinity.clone(),
        topology_spread_constraints: (!s.topology_spread_constraints.is_empty())
            .then(|| s.topology_spread_constraints.clone()),
        // A broker drains and flushes on SIGTERM within 5 s (DESIGN.md §7); leave it room.
        termination_grace_period_seconds: Some(30),
        ..Default::default()
    }
}

/// `labels` plus the config hash annotation, for a pod template.
pub fn template_meta(
    labels: BTreeMap<String, String>,
    config_hash: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(super::CONFIG_HASH.to_string(), config_hash.to_string())])),
        ..Default::default()
    }
}
