//! What Topic and ConsumerGroup reconciles share: finding the BrokerSet they name, the broker
//! groups they go to and those groups' masters, settling which of two resources claiming the same
//! name on the brokers owns it, and writing their status.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::conditions::{condition, merge, DEGRADED, NOTHING_WRONG, READY, RECONCILING};
use super::{Context, Error};
use ferrocket_proto::dial::Dialer;

use crate::admin::AdminError;
use crate::crd::BrokerSet;
use crate::render::group_name;

/// Finalizer of Topics and ConsumerGroups: deletion waits until `deletionPolicy` was carried out
/// on the brokers.
pub const FINALIZER: &str = "ferrocket.io/cleanup";

/// Requeue while broker groups have no master yet, or a conflict may resolve.
pub const SOON: Duration = Duration::from_secs(15);
/// Requeue once applied (a broker group that lost its state, say, gets it back).
pub const LATER: Duration = Duration::from_secs(300);

/// Where a resource goes, or why it cannot go anywhere yet.
pub enum Targets {
    /// Broker group name -> its master's endpoint (`None`: no master registered yet), and how
    /// to call them (the cluster's credentials and TLS trust).
    Masters(BTreeMap<String, Option<String>>, Dialer),
    /// The resource cannot be applied now: Ready=False with this reason and message.
    Blocked(&'static str, String),
}

/// The BrokerSet `name` in `ns`, if it exists and is not being deleted.
pub async fn broker_set(ctx: &Context, ns: &str, name: &str) -> Result<Option<BrokerSet>, Error> {
    let bs = Api::<BrokerSet>::namespaced(ctx.client.clone(), ns).get_opt(name).await?;
    Ok(bs.filter(|b| b.metadata.deletion_timestamp.is_none()))
}

/// The masters of `groups` (every group of the BrokerSet when empty) of BrokerSet `name`.
/// Errors: API calls; brokers that cannot be reached are [`Error::Admin`] (retried with backoff).
pub async fn masters(ctx: &Context, ns: &str, name: &str, groups: &[String]) -> Result<Targets, Error> {
    let Some(bs) = broker_set(ctx, ns, name).await? else {
        return Ok(Targets::Blocked("BrokerSetNotFound", format!("BrokerSet {ns}/{name} does not exist")));
    };
    let all: Vec<String> = (0..bs.spec.broker_groups).map(|g| group_name(name, g)).collect();
    let unknown: Vec<&String> = groups.iter().filter(|g| !all.contains(g)).collect();
    if !unknown.is_empty() {
        return Ok(Targets::Blocked(
            "InvalidPlacement",
            format!("placement names broker groups {unknown:?}; BrokerSet {name} has {all:?}"),
        ));
    }
    let chosen = if groups.is_empty() { all } else { groups.to_vec() };
    let dialer = crate::credentials::dialer(&ctx.client, &bs).await?;
    let mut found = ctx.brokers.masters(&bs, &dialer).await?;
    let masters = chosen.into_iter().map(|g| (g.clone(), found.remove(&g))).collect();
    Ok(Targets::Masters(masters, dialer))
}

/// Fails a reconcile with `e`, first writing what went wrong into the status (`write` with the
/// reason and message) when the brokers or the credentials are at fault; the Event comes from
/// the error policy. Errors: `e`, or the status write's.
pub async fn fail<Fut>(e: Error, write: impl FnOnce(&'static str, String) -> Fut) -> Result<Action, Error>
where
    Fut: Future<Output = Result<(), Error>>,
{
    if let Error::Admin(a) = &e {
        write(e.reason(), a.to_string()).await?;
    }
    Err(e)
}

/// One apply pass over the masters of a resource's broker groups.
pub struct Pass<T> {
    /// The groups that took the call, with what each returned.
    pub applied: Vec<(String, T)>,
    /// `Ok`, or the reason and message of what is missing.
    pub result: Result<(), (&'static str, String)>,
    /// The user must act (a broker refused), rather than wait.
    pub degraded: bool,
    /// When to reconcile again.
    pub action: Action,
}

/// Calls `call` with the endpoint of every master in `masters` (each once, in group order). A
/// group with no master, or one that cannot be reached, is waited for (`WaitingForBrokers`,
/// again [`SOON`]); a refusal makes `obj` degraded (`Refused`, a Warning Event).
pub async fn on_masters<K, T, F, Fut>(
    ctx: &Context,
    obj: &K,
    masters: &BTreeMap<String, Option<String>>,
    call: F,
) -> Pass<T>
where
    K: Resource<DynamicType = ()>,
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<T, AdminError>>,
{
    let (mut applied, mut waiting, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    for (group, master) in masters {
        let Some(endpoint) = master else {
            waiting.push(group.clone());
            continue;
        };
        match call(endpoint.clone()).await {
            Ok(v) => applied.push((group.clone(), v)),
            Err(AdminError::Unreachable(_)) => waiting.push(group.clone()),
            Err(e) => refused.push(format!("{group}: {e}")),
        }
    }
    let (result, degraded, after) = if !refused.is_empty() {
        let msg = format!("refused by the brokers: {}", refused.join("; "));
        ctx.warn(obj, "Refused", &msg).await;
        (Err(("Refused", msg)), true, LATER)
    } else if !waiting.is_empty() {
        (Err(("WaitingForBrokers", format!("no reachable master yet in {waiting:?}"))), false, SOON)
    } else {
        (Ok(()), false, LATER)
    };
    Pass { applied, result, degraded, action: Action::requeue(after) }
}

/// Of the resources in `all` claiming the broker-side `key` of `me`, the one that owns it if it
/// is not `me`: the oldest (creation time, then name), not being deleted.
pub fn owner_of<'a, K: Resource>(all: &'a [K], me: &K, key: impl Fn(&K) -> (String, String)) -> Option<&'a K> {
    let mine = key(me);
    let rank = |k: &K| (k.meta().creation_timestamp.clone().map(|t| t.0), k.name_any());
    all.iter()
        .filter(|k| key(k) == mine && k.meta().deletion_timestamp.is_none())
        .min_by_key(|k| rank(k))
        .filter(|k| k.name_any() != me.name_any())
}

/// `current` conditions with those of [`outcome`] merged in.
pub fn conditions(
    current: Option<&Vec<Condition>>,
    result: Result<(), (&str, String)>,
    degraded: bool,
    generation: Option<i64>,
) -> Vec<Condition> {
    merge(current.map_or(&[][..], |c| c.as_slice()), outcome(result, degraded, generation))
}

/// Ready, Reconciling and Degraded for an outcome: `Ok` (applied), or the reason and message of
/// what is missing, `degraded` when the user must act rather than wait.
pub fn outcome(result: Result<(), (&str, String)>, degraded: bool, generation: Option<i64>) -> Vec<Condition> {
    match result {
        Ok(()) => vec![
            condition(READY, true, "Applied", "applied on every chosen broker group", generation),
            condition(RECONCILING, false, "Applied", "nothing left to apply", generation),
            condition(DEGRADED, false, "AsExpected", NOTHING_WRONG, generation),
        ],
        Err((reason, msg)) => vec![
            condition(READY, false, reason, msg.clone(), generation),
            condition(RECONCILING, !degraded, reason, msg.clone(), generation),
            condition(DEGRADED, degraded, reason, if degraded { msg } else { NOTHING_WRONG.into() }, generation),
        ],
    }
}

/// Reconciles `obj` under [`FINALIZER`] (kube's finalizer helper): `apply` while it lives (the
/// finalizer added first), `cleanup` once it is being deleted (the finalizer removed when that
/// succeeds) — unless it is paused or unmanaged ([`hands_off`]). Errors: those of `apply` and
/// `cleanup`, and API calls.
pub async fn with_finalizer<K, A, FA, C, FC>(
    obj: Arc<K>,
    ctx: Arc<Context>,
    apply: A,
    cleanup: C,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    A: FnOnce(Arc<K>, Arc<Context>) -> FA,
    FA: Future<Output = Result<Action, Error>>,
    C: FnOnce(Arc<K>, Arc<Context>) -> FC,
    FC: Future<Output = Result<Action, Error>>,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    if let Some(action) = hands_off(&api, obj.as_ref(), FINALIZER).await? {
        return Ok(action);
    }
    finalizer(&api, FINALIZER, obj, |event| async move {
        match event {
            Finalizer::Apply(o) => apply(o, ctx).await,
            Finalizer::Cleanup(o) => cleanup(o, ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The name of the resource of `obj`'s kind (same namespace) that owns the broker-side `key` of
/// `obj`, if it is not `obj` (see [`owner_of`]). Errors: the list call.
pub async fn claimed_by_another<K>(
    ctx: &Context,
    obj: &K,
    key: impl Fn(&K) -> (String, String),
) -> Result<Option<String>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let all = Api::<K>::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default())
        .list(&ListParams::default())
        .await?;
    Ok(owner_of(&all.items, obj, key).map(|o| o.name_any()))
}

/// For a paused resource, or one handed back with `ferrocket.io/managed: "false"`, what the
/// reconcile does instead of applying: nothing while paused (a deletion waits too); an
/// unmanaged one loses the operator's finalizer, so deleting it touches no broker.
async fn hands_off<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<Option<Action>, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    if !super::skipped(obj) {
        return Ok(None);
    }
    let unmanaged = obj.annotations().get(super::MANAGED).is_some_and(|v| v == "false");
    if let Some(i) = obj.finalizers().iter().position(|f| f == finalizer).filter(|_| unmanaged) {
        // Tested removal (as kube's finalizer helper does): fails if the list changed meanwhile.
        let patch = serde_json::json!([
            {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": finalizer},
            {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
        ]);
        let patch = serde_json::from_value(patch).map_err(Error::Serialize)?;
        api.patch::<K>(&obj.name_any(), &PatchParams::default(), &Patch::Json(patch)).await?;
    }
    Ok(Some(Action::await_change()))
}
