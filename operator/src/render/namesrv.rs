//! The nameservers (a Deployment) and the election controller (a StatefulSet of nameservers that
//! form one Raft group, each with a volume for its log; a PodDisruptionBudget keeps a majority),
//! behind one headless Service that brokers resolve to all of them.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service, ServicePort, ServiceSpec, VolumeMount};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::broker::data_claim;
use super::pod::{container, env, field_env, pod_spec, template_meta};
use super::{hash, labels, selector, Ctx, Manifests, NAMESRV_PORT};

/// Size of each controller pod's volume: its Raft log and snapshots (a few hundred KiB).
const CONTROLLER_VOLUME: &str = "1Gi";

pub(super) fn render(ctx: &Ctx, m: &mut Manifests) {
    let listen = format!("0.0.0.0:{NAMESRV_PORT}");
    let metrics = format!("0.0.0.0:{}", super::METRICS_PORT);
    let sec = super::security::render(ctx);
    let image_hash = hash(&[&ctx.bs.spec.image, &sec.hash_text]);
    let env_with = |mut own: Vec<k8s_openapi::api::core::v1::EnvVar>| {
        own.extend(sec.env.iter().cloned());
        own
    };
    let port = ServicePort {
        name: Some("namesrv".into()),
        port: NAMESRV_PORT,
        target_port: Some(IntOrString::String("namesrv".into())),
        // Explicit: the port lists' merge key is (port, protocol); Kubernetes < 1.21 does not
        // default it in server-side apply.
        protocol: Some("TCP".into()),
        ..Default::default()
    };

    // Nameservers: stateless, any number.
    let name = format!("{}-namesrv", ctx.name);
    let mut pod_labels = labels(&ctx.name, "namesrv", None);
    pod_labels.insert("ferrocket.io/namesrv".into(), "true".into());
    let c = container(
        ctx,
        &["namesrv", "--listen", &listen],
        &[("namesrv", NAMESRV_PORT)],
        env_with(vec![env("FERROCKET_METRICS_LISTEN", &metrics)]),
        sec.mounts.clone(),
    );
    m.deployments.push(Deployment {
        metadata: ctx.meta(&name, labels(&ctx.name, "namesrv", None)),
        spec: Some(DeploymentSpec {
            replicas: Some(ctx.bs.spec.nameservers.replicas),
            selector: LabelSelector { match_labels: Some(selector(&ctx.name, "namesrv", None)), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(template_meta(pod_labels.clone(), &image_hash)),
                spec: Some(pod_spec(ctx, c, sec.volumes.clone())),
            },
            ..Default::default()
        }),
        ..Default::default()
    });
    // Every nameserver pod, the controller's included: brokers register with all of them.
    let mut all_namesrv = selector(&ctx.name, "namesrv", None);
    all_namesrv.remove("app.kubernetes.io/component");
    all_namesrv.insert("ferrocket.io/namesrv".into(), "true".into());
    m.services.push(Service {
        metadata: ctx.meta(&name, labels(&ctx.name, "namesrv", None)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(all_namesrv),
            ports: Some(vec![port.clone()]),
            ..Default::default()
        }),
        ..Default::default()
    });

    // The controller: member i+1 is pod i, found by the address it advertises (its stable name).
    let name = format!("{}-controller", ctx.name);
    let mut pod_labels = labels(&ctx.name, "controller", None);
    pod_labels.insert("ferrocket.io/namesrv".into(), "true".into());
    let replicas = ctx.bs.spec.controller.replicas;
    let peers: Vec<String> =
        (0..replicas).map(|i| format!("{}={}", i + 1, controller_pod_addr(ctx, &i.to_string()))).collect();
    let c = container(
        ctx,
        &["namesrv", "--listen", &listen, "--data-dir", "/data"],
        &[("namesrv", NAMESRV_PORT)],
        env_with(vec![
            field_env("POD_NAME", "metadata.name"),
            env("FERROCKET_ENABLE_CONTROLLER", "true"),
            env("FERROCKET_CONTROLLER_PEERS", &serde_json::to_string(&peers).expect("strings serialize")),
            env("FERROCKET_ADVERTISED_ADDR", &controller_pod_addr(ctx, "$(POD_NAME)")),
            env("FERROCKET_METRICS_LISTEN", &metrics),
        ]),
        [VolumeMount { name: "data".into(), mount_path: "/data".into(), ..Default::default() }]
            .into_iter()
            .chain(sec.mounts.iter().cloned())
            .collect(),
    );
    m.stateful_sets.push(StatefulSet {
        metadata: ctx.meta(&name, labels(&ctx.name, "controller", None)),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(name.clone()),
            selector: LabelSelector {
                match_labels: Some(selector(&ctx.name, "controller", None)),
                ..Default::default()
            },
            // A member is ready only within a working group (a majority with a leader): started
            // in order, the first would wait for a readiness that needs the second.
            pod_management_policy: Some(CONTROLLER_POD_MANAGEMENT.into()),
            // The operator rolls the members itself: one at a time, each only once every member
            // is ready, the leader last (reconcile::rolling).
            update_strategy: Some(StatefulSetUpdateStrategy { type_: Some("OnDelete".into()), ..Default::default() }),
            template: PodTemplateSpec {
                metadata: Some(template_meta(pod_labels, &image_hash)),
                spec: Some(pod_spec(ctx, c, sec.volumes.clone())),
            },
            volume_claim_templates: Some(vec![data_claim(
                &Quantity(CONTROLLER_VOLUME.into()),
                ctx.bs.spec.storage.storage_class_name.clone(),
            )]),
            ..Default::default()
        }),
        ..Default::default()
    });
    // Voluntary evictions keep a majority: a minority may be down (none of a single controller,
    // whose loss already stops elections).
    if ctx.caps.pdb_v1 && replicas > 1 {
        m.pod_disruption_budgets.push(PodDisruptionBudget {
            metadata: ctx.meta(&name, labels(&ctx.name, "controller", None)),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int((replicas - 1) / 2)),
                selector: Some(LabelSelector {
                    match_labels: Some(selector(&ctx.name, "controller", None)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    m.services.push(Service {
        metadata: ctx.meta(&name, labels(&ctx.name, "controller", None)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(&ctx.name, "controller", None)),
            ports: Some(vec![port]),
            ..Default::default()
        }),
        ..Default::default()
    });
}

/// The controller StatefulSet's `podManagementPolicy`. The field is immutable: a StatefulSet made
/// with another (by an operator before this one) is replaced, its pods orphaned and adopted.
pub const CONTROLLER_POD_MANAGEMENT: &str = "Parallel";

/// `host:port` of controller pod `pod` (an ordinal, or `$(POD_NAME)`'s expansion for a full pod
/// name) by its stable name under the headless Service `<name>-controller`.
pub(super) fn controller_pod_addr(ctx: &Ctx, pod: &str) -> String {
    let pod =
        if pod.chars().all(|c| c.is_ascii_digit()) { format!("{}-controller-{pod}", ctx.name) } else { pod.into() };
    format!("{pod}.{}-controller.{}.svc:{NAMESRV_PORT}", ctx.name, ctx.namespace)
}
