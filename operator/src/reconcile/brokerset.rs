//! Reconciling a BrokerSet: render it, refuse what must not happen (an invalid spec, removing
//! broker groups without the annotation that allows it, shrinking the controller group),
//! server-side apply every object with one field manager (so a spec change reaches the cluster
//! and drift is reverted), roll pods to a new revision one at a time, and report readiness in the
//! status. Nothing here sleeps: waiting is a requeue.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::conditions::{condition, merge, DEGRADED, NOTHING_WRONG, READY, RECONCILING};
use super::rolling::{self, Member, Step};
use super::{Context, Error, ALLOW_SCALE_DOWN};
use crate::crd::{BrokerSet, BrokerSetStatus, ControllerStatus, GroupStatus};
use crate::render::{self, group_name, selector, selector_query, Manifests, FIELD_MANAGER};

/// Requeue while pods are coming up.
const SOON: Duration = Duration::from_secs(15);
/// Requeue once everything is ready (drift the watches miss).
const LATER: Duration = Duration::from_secs(300);

/// One reconcile of `bs`. Errors: API calls that failed (the controller retries with backoff).
pub async fn reconcile(bs: Arc<BrokerSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    if super::skipped(bs.as_ref()) {
        return Ok(Action::await_change());
    }
    let ns = bs.namespace().ok_or(Error::Render(render::RenderError::Missing("metadata.namespace")))?;
    let name = bs.name_any();
    let generation = bs.metadata.generation;
    let caps = capabilities(&ctx).await?;
    let mut manifests = match render::render_for(&bs, caps) {
        Ok(m) => m,
        Err(e) => {
            ctx.warn(bs.as_ref(), "InvalidSpec", &e.to_string()).await;
            let conditions = vec![
                condition(READY, false, "InvalidSpec", e.to_string(), generation),
                condition(DEGRADED, true, "InvalidSpec", e.to_string(), generation),
                condition(RECONCILING, false, "InvalidSpec", "fix the spec", generation),
            ];
            patch_status(&ctx, &bs, conditions, Vec::new(), None).await?;
            return Ok(Action::await_change());
        }
    };

    // Removing a broker group deletes the only copy of the messages and queues it holds.
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let brokers = selector_query(&selector(&name, "broker", None));
    let existing = sts_api.list(&ListParams::default().labels(&brokers)).await?;
    let wanted: Vec<String> = (0..bs.spec.broker_groups).map(|g| group_name(&name, g)).collect();
    let extra: Vec<String> = existing.items.iter().map(|s| s.name_any()).filter(|n| !wanted.contains(n)).collect();
    let allowed = bs.annotations().get(ALLOW_SCALE_DOWN).is_some_and(|v| v == "true");
    if !extra.is_empty() && !allowed {
        let msg = format!(
            "refusing to remove broker groups {extra:?}: they may hold queues and unconsumed messages; annotate the BrokerSet with {ALLOW_SCALE_DOWN}=\"true\" to allow it"
        );
        return refuse(&ctx, &bs, &existing.items, "ScaleDownRefused", msg).await;
    }

    // The controller group only grows: removing members takes a Raft membership change the
    // operator does not make (see docs/OPERATIONS.md), and shrinking the StatefulSet first
    // could leave the group without a majority.
    let controller_name = format!("{name}-controller");
    let mut controller_sts = sts_api.get_opt(&controller_name).await?;
    let running = controller_sts.as_ref().and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas).unwrap_or(0);
    if bs.spec.controller.replicas < running {
        let msg = format!(
            "refusing to shrink the controller group from {running} to {} members: scaling the controller down is not supported; set spec.controller.replicas back to {running}",
            bs.spec.controller.replicas
        );
        return refuse(&ctx, &bs, &existing.items, "ControllerScaleDownRefused", msg).await;
    }
    // A controller StatefulSet made with ordered pods (by an earlier operator) cannot change its
    // podManagementPolicy in place: it is deleted with its pods orphaned (they keep running) and
    // made again once it is gone, adopting them.
    let replacing = match &controller_sts {
        Some(s) if s.metadata.deletion_timestamp.is_some() => true,
        Some(s)
            if s.spec.as_ref().and_then(|sp| sp.pod_management_policy.as_deref())
                != Some(render::CONTROLLER_POD_MANAGEMENT) =>
        {
            let orphan = DeleteParams { propagation_policy: Some(PropagationPolicy::Orphan), ..Default::default() };
            sts_api.delete(&controller_name, &orphan).await?;
            let note = format!(
                "replacing StatefulSet {controller_name} to start its pods in parallel (podManagementPolicy cannot change in place); its pods keep running"
            );
            ctx.publish(bs.as_ref(), EventType::Normal, "ControllerStatefulSetReplaced", &note).await;
            true
        }
        _ => false,
    };
    if replacing {
        manifests.stateful_sets.retain(|s| s.name_any() != controller_name);
        controller_sts = None;
    }

    // The pods read the cluster's credentials from it: made before they are.
    if let Some(secret) = crate::credentials::ensure_generated(&ctx.client, &bs).await? {
        let note = format!("generated Secret {secret} with the cluster's credentials");
        ctx.publish(bs.as_ref(), EventType::Normal, "CredentialsGenerated", &note).await;
    }
    apply_all(&ctx, &ns, &manifests).await?;
    for gone in &extra {
        // Allowed by the annotation; the claims follow storage.deleteClaim (retention policy).
        sts_api.delete(gone, &Default::default()).await?;
    }

    // Roles come from the brokers (best effort: a new BrokerSet has none to ask yet), asked as
    // the cluster's super user; without its Secret the pods cannot start either: said below.
    let (cluster, credentials) = match crate::credentials::dialer(&ctx.client, &bs).await {
        Ok(dialer) => match ctx.brokers.cluster_status(&bs, &dialer).await {
            Ok(c) => (Some(c), None),
            Err(e) => {
                tracing::debug!(brokerset = %name, error = %e, "broker status unavailable");
                (None, None)
            }
        },
        Err(e) => (None, Some(e.to_string())),
    };
    // Applying changes no pod's readiness: the list read before it still tells it (a group
    // created just now has no ready pod yet).
    let replicas = 1 + bs.spec.slaves_per_group;
    let (mut status, mut rolling) = (Vec::new(), Vec::new());
    for w in &wanted {
        let sts = existing.items.iter().find(|s| s.name_any() == *w);
        let mut g = cluster.as_ref().and_then(|c| rolling::roles(w, c)).unwrap_or_default();
        g.name = w.clone();
        g.ready_replicas = sts.map_or(0, ready_replicas);
        if let Some(sts) = sts {
            let labels = selector_query(&selector(&name, "broker", Some(w)));
            let step = match outdated_pods(&ctx, &ns, sts, &labels, replicas).await? {
                None => Step::UpToDate,
                Some((revision, members)) => {
                    let in_sync = cluster.is_some().then_some(g.in_sync.as_slice());
                    rolling::next_step(&revision, replicas, &members, g.master.as_deref(), in_sync)
                }
            };
            take_step(&ctx, &bs, &ns, w, step, &mut rolling).await?;
        }
        status.push(g);
    }
    let mut not_ready: Vec<&str> =
        status.iter().filter(|g| g.ready_replicas < replicas).map(|g| g.name.as_str()).collect();
    // The controller's members: ready means part of a working group (a majority with a leader),
    // so rolling one only after every member is ready never takes a majority away; the leader
    // goes last, so the group elects once per roll.
    let members = bs.spec.controller.replicas;
    if let Some(sts) = &controller_sts {
        if ready_replicas(sts) < members {
            not_ready.push(&controller_name);
        }
        let labels = selector_query(&selector(&name, "controller", None));
        let step = match outdated_pods(&ctx, &ns, sts, &labels, members).await? {
            None => Step::UpToDate,
            Some((revision, pods)) => {
                let leader = cluster.as_ref().and_then(rolling::controller_leader);
                let all: Vec<String> = pods.iter().map(|p| p.pod.clone()).collect();
                rolling::next_step(&revision, members, &pods, leader.as_deref(), Some(&all))
            }
        };
        take_step(&ctx, &bs, &ns, &controller_name, step, &mut rolling).await?;
    } else if replacing {
        rolling.push(format!("{controller_name}: waiting for the old StatefulSet to be replaced"));
    }
    let ready = not_ready.is_empty() && rolling.is_empty();
    // An older server runs the BrokerSet without what it lacks: said once per reconcile.
    let missing = caps.missing();
    let degraded = if let Some(msg) = credentials {
        ctx.warn(bs.as_ref(), "CredentialsUnavailable", &msg).await;
        condition(DEGRADED, true, "CredentialsUnavailable", msg, generation)
    } else if missing.is_empty() {
        condition(DEGRADED, false, "AsExpected", NOTHING_WRONG, generation)
    } else {
        let msg = format!("this Kubernetes lacks features the BrokerSet uses: {}", missing.join("; "));
        ctx.warn(bs.as_ref(), "FeaturesUnavailable", &msg).await;
        condition(DEGRADED, true, "FeaturesUnavailable", msg, generation)
    };
    let conditions = if ready {
        vec![
            condition(READY, true, "AllGroupsReady", "every broker group has all its pods ready", generation),
            condition(RECONCILING, false, "Applied", "the spec is applied", generation),
            degraded,
        ]
    } else {
        let (reason, msg) = if rolling.is_empty() {
            ("PodsNotReady", format!("waiting for the pods of {not_ready:?} to be ready"))
        } else {
            ("RollingUpdate", format!("rolling pods to the new revision: {}", rolling.join("; ")))
        };
        vec![
            condition(READY, false, reason, msg.clone(), generation),
            condition(RECONCILING, true, reason, msg, generation),
            degraded,
        ]
    };
    let controller = cluster.as_ref().and_then(|c| c.controller_leader.as_ref()).map(|l| ControllerStatus {
        leader: l.leader_id as i64,
        term: l.term as i64,
        members: l.members.clone(),
    });
    patch_status(&ctx, &bs, conditions, status, controller).await?;
    Ok(Action::requeue(if ready { LATER } else { SOON }))
}

/// Refuses a change of the spec that must not happen (`reason`, saying why in `msg`): a Warning
/// Event, Degraded with `reason`, Reconciling false, the broker groups of `existing` in the status,
/// and nothing applied until the spec changes again. Errors: the status patch failed.
async fn refuse(
    ctx: &Context,
    bs: &Arc<BrokerSet>,
    existing: &[StatefulSet],
    reason: &str,
    msg: String,
) -> Result<Action, Error> {
    let generation = bs.metadata.generation;
    ctx.warn(bs.as_ref(), reason, &msg).await;
    let conditions = vec![
        condition(DEGRADED, true, reason, msg.clone(), generation),
        condition(RECONCILING, false, reason, msg, generation),
    ];
    let mut status: Vec<GroupStatus> = existing.iter().map(group_status).collect();
    status.sort_by(|a, b| a.name.cmp(&b.name));
    patch_status(ctx, bs, conditions, status, None).await?;
    Ok(Action::await_change())
}

/// What the API server takes (its version, and whether it serves `policy/v1`). Errors: the
/// discovery calls failed.
async fn capabilities(ctx: &Context) -> Result<render::Capabilities, Error> {
    let version = ctx.client.apiserver_version().await?;
    // "20", or "20+" from some distributions; anything unreadable counts as current.
    let minor = version.minor.trim_end_matches('+').parse().unwrap_or(u32::MAX);
    let pdb_v1 = match ctx.client.list_api_group_resources("policy/v1").await {
        Ok(list) => list.resources.iter().any(|r| r.name == "poddisruptionbudgets"),
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        Err(e) => return Err(e.into()),
    };
    Ok(render::Capabilities::of(minor, pdb_v1))
}

/// The pods of StatefulSet `sts` (those matching the label query `labels`) and the revision to
/// roll them to; `None` while nothing is to roll (every one of `replicas` pods is at the
/// current revision, or the StatefulSet controller has not caught up with a change yet). The
/// pods are listed only when there is a revision to roll to.
async fn outdated_pods(
    ctx: &Context,
    ns: &str,
    sts: &StatefulSet,
    labels: &str,
    replicas: i32,
) -> Result<Option<(String, Vec<Member>)>, Error> {
    let st = sts.status.clone().unwrap_or_default();
    let Some(update_revision) = st.update_revision.filter(|_| st.observed_generation >= sts.metadata.generation) else {
        return Ok(None); // the StatefulSet controller has not caught up yet
    };
    if st.current_revision.as_deref() == Some(update_revision.as_str()) && st.updated_replicas == Some(replicas) {
        return Ok(None);
    }
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns).list(&ListParams::default().labels(labels)).await?;
    let members: Vec<Member> = pods
        .items
        .iter()
        .map(|p| Member {
            pod: p.name_any(),
            revision: p.labels().get("controller-revision-hash").cloned(),
            ready: p.metadata.deletion_timestamp.is_none()
                && p.status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .any(|c| c.type_ == "Ready" && c.status == "True"),
        })
        .collect();
    Ok(Some((update_revision, members)))
}

/// Does `step` for StatefulSet `what`: deletes the pod to roll (with an Event) and notes what
/// rolling waits for in `rolling`. Errors: the delete failed.
async fn take_step(
    ctx: &Context,
    bs: &BrokerSet,
    ns: &str,
    what: &str,
    step: Step,
    rolling: &mut Vec<String>,
) -> Result<(), Error> {
    match step {
        Step::UpToDate => {}
        Step::Wait(why) => rolling.push(format!("{what}: {why}")),
        Step::Delete(pod) => {
            Api::<Pod>::namespaced(ctx.client.clone(), ns).delete(&pod, &Default::default()).await?;
            let note = format!("restarting {pod} of {what} at the new revision");
            ctx.publish(bs, EventType::Normal, "RollingPod", &note).await;
            rolling.push(format!("{what}: {note}"));
        }
    }
    Ok(())
}

/// Server-side applies every object (forced: the operator owns these fields; another manager's
/// change to them is drift and is reverted).
async fn apply_all(ctx: &Context, ns: &str, m: &Manifests) -> Result<(), Error> {
    apply::<ConfigMap>(ctx, ns, &m.config_maps).await?;
    apply::<Service>(ctx, ns, &m.services).await?;
    apply::<PodDisruptionBudget>(ctx, ns, &m.pod_disruption_budgets).await?;
    apply::<Deployment>(ctx, ns, &m.deployments).await?;
    apply::<StatefulSet>(ctx, ns, &m.stateful_sets).await?;
    Ok(())
}

async fn apply<K>(ctx: &Context, ns: &str, objects: &[K]) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for o in objects {
        api.patch(&o.name_any(), &params, &Patch::Apply(&with_type_meta::<K>(o)?)).await?;
    }
    Ok(())
}

/// `o` as JSON with `apiVersion` and `kind` set, as server-side apply requires.
fn with_type_meta<K: Resource + Serialize>(o: &K) -> Result<serde_json::Value, Error>
where
    K::DynamicType: Default,
{
    let mut v = serde_json::to_value(o).map_err(Error::Serialize)?;
    let dt = K::DynamicType::default();
    v["apiVersion"] = K::api_version(&dt).into();
    v["kind"] = K::kind(&dt).into();
    Ok(v)
}

/// A broker group's StatefulSet as a status entry: its name and ready pods (roles, epochs and
/// in-sync sets come from the brokers, not from Kubernetes).
fn group_status(s: &StatefulSet) -> GroupStatus {
    GroupStatus { name: s.name_any(), ready_replicas: ready_replicas(s), ..Default::default() }
}

fn ready_replicas(s: &StatefulSet) -> i32 {
    s.status.as_ref().and_then(|st| st.ready_replicas).unwrap_or(0)
}

/// Writes `conditions` (merged into the current ones), the groups, the controller group's
/// leader (`None` keeps the last one observed) and `observedGeneration` to the status
/// subresource.
async fn patch_status(
    ctx: &Context,
    bs: &BrokerSet,
    conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    groups: Vec<GroupStatus>,
    controller: Option<ControllerStatus>,
) -> Result<(), Error> {
    let current = bs.status.clone().unwrap_or_default();
    let status = BrokerSetStatus {
        observed_generation: bs.metadata.generation,
        conditions: merge(&current.conditions, conditions),
        groups,
        nameserver_address: Some(render::namesrv_address(&bs.name_any(), &bs.namespace().unwrap_or_default())),
        controller: controller.or(current.controller),
    };
    super::patch_status(ctx, bs, serde_json::to_value(status).map_err(Error::Serialize)?).await
}
