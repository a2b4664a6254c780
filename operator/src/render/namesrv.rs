//! The nameservers (a Deployment) and the election controller (a one-pod StatefulSet with a
//! volume for its epoch store), behind one headless Service that brokers resolve to all of them.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service, ServicePort, ServiceSpec, VolumeMount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::broker::data_claim;
use super::pod::{container, env, pod_spec, template_meta};
use super::{hash, labels, selector, Ctx, Manifests, NAMESRV_PORT};

/// Size of the controller's volume: it holds one small JSON file.
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

    // The controller: exactly one pod, with its state on a volume.
    let name = format!("{}-controller", ctx.name);
    let mut pod_labels = labels(&ctx.name, "controller", None);
    pod_labels.insert("ferrocket.io/namesrv".into(), "true".into());
    let c = container(
        ctx,
        &["namesrv", "--listen", &listen, "--data-dir", "/data"],
        &[("namesrv", NAMESRV_PORT)],
        env_with(vec![env("FERROCKET_ENABLE_CONTROLLER", "true"), env("FERROCKET_METRICS_LISTEN", &metrics)]),
        [VolumeMount { name: "data".into(), mount_path: "/data".into(), ..Default::default() }]
            .into_iter()
            .chain(sec.mounts.iter().cloned())
            .collect(),
    );
    m.stateful_sets.push(StatefulSet {
        metadata: ctx.meta(&name, labels(&ctx.name, "controller", None)),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name.clone()),
            selector: LabelSelector {
                match_labels: Some(selector(&ctx.name, "controller", None)),
                ..Default::default()
            },
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
