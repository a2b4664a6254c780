//! The operator process: leader election on a Lease, one controller per kind and watched
//! namespace, `/metrics`, `/healthz` and `/readyz`, and errors retried with exponential backoff.
//!
//! Only the Lease holder reconciles. Losing the Lease ends the process with an error (the
//! Deployment restarts it as a standby), as controller-runtime's leader election does: two
//! operators must never apply at once.

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::admin::Brokers;
use crate::crd::{BrokerSet, ConsumerGroup, Topic, User};
use crate::reconcile::{brokerset, consumergroup, topic, user, Context, Error};

/// First retry delay after a failed reconcile; doubles per consecutive failure.
const BACKOFF_FIRST: Duration = Duration::from_secs(2);
/// Longest retry delay after failures.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How the operator runs: the `ferrocket-operator run` flags, each also read from the
/// environment variable named (the chart's Deployment sets them).
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Namespaces to watch, comma-separated; empty: every namespace.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',', default_value = "")]
    pub watch_namespaces: Vec<String>,
    /// Take part in leader election (a Lease); off only for a single local replica.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader election Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "ferrocket-operator")]
    pub lease_name: String,
    /// This replica's identity in the Lease; the pod name in a cluster.
    #[arg(long, env = "POD_NAME", default_value_t = format!("ferrocket-operator-{}", std::process::id()))]
    pub identity: String,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    pub metrics_listen: SocketAddr,
    /// Reach every BrokerSet's nameservers here instead of through their Service (an operator
    /// run outside the cluster).
    #[arg(long, env = "NAMESERVER_OVERRIDE")]
    pub nameserver_override: Option<String>,
}

/// Runs the operator until SIGTERM/SIGINT. Errors: no Kubernetes configuration (in-cluster or
/// kubeconfig), the metrics address cannot be bound, or the Lease was lost.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let client = Client::try_default().await.map_err(|e| anyhow::anyhow!("no Kubernetes configuration: {e}"))?;
    let brokers = Brokers { nameserver_override: opts.nameserver_override.clone() };
    let ctx = Arc::new(Context::with_brokers(client.clone(), brokers));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics = ctx.metrics.clone();
    // A standby is ready too: readiness says the process works, not that it holds the Lease.
    ferrocket_runtime::serve(opts.metrics_listen, Arc::new(move || metrics.render()), Arc::new(|| Ok(())), stop_rx)
        .await?;

    let controllers = async {
        let lost = if opts.leader_election { Some(lead(&client, &opts).await?) } else { None };
        tracing::info!(namespaces = ?opts.watch_namespaces, "reconciling");
        let all =
            futures::future::join_all(scopes(&opts).into_iter().map(|ns| controllers(client.clone(), ns, ctx.clone())));
        match lost {
            Some(mut lost) => tokio::select! {
                _ = all => Ok(()),
                _ = lost.wait_for(|leader| !leader) => anyhow::bail!("lost the Lease {}/{}", opts.lease_namespace, opts.lease_name),
            },
            None => {
                all.await;
                Ok(())
            }
        }
    };
    let result = tokio::select! {
        r = controllers => r,
        _ = ferrocket_runtime::shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    };
    let _ = stop_tx.send(true);
    result
}

/// Waits until this replica holds the Lease; returns the channel that tells when it stops.
async fn lead(client: &Client, opts: &Options) -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &opts.lease_name)
        .with_namespace(&opts.lease_namespace)
        .with_identity(&opts.identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await?;
    let (mut leader, _task) = manager.watch().await;
    tracing::info!(lease = %opts.lease_name, identity = %opts.identity, "waiting for the Lease");
    leader.wait_for(|l| *l).await?;
    tracing::info!(lease = %opts.lease_name, "holding the Lease");
    Ok(leader)
}

fn scopes(opts: &Options) -> Vec<Option<String>> {
    let named: Vec<Option<String>> =
        opts.watch_namespaces.iter().filter(|n| !n.is_empty()).cloned().map(Some).collect();
    if named.is_empty() {
        vec![None]
    } else {
        named
    }
}

fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The four controllers of one scope (a namespace, or all), until shutdown.
async fn controllers(client: Client, ns: Option<String>, ctx: Arc<Context>) {
    // Only what the operator made: its objects carry this label.
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={}", crate::render::FIELD_MANAGER));
    let broker_sets = Controller::new(api::<BrokerSet>(&client, &ns), watcher::Config::default())
        .owns(api::<StatefulSet>(&client, &ns), owned.clone())
        .owns(api::<Deployment>(&client, &ns), owned.clone())
        .owns(api::<Service>(&client, &ns), owned.clone())
        .owns(api::<ConfigMap>(&client, &ns), owned)
        .run(|o, c| instrumented(o, c, brokerset::reconcile), error_policy, ctx.clone())
        .for_each(log_result);

    let topics = dependents(&client, &ns, ctx.clone(), topic::reconcile, |t: &Topic| &t.spec.broker_set);
    let groups =
        dependents(&client, &ns, ctx.clone(), consumergroup::reconcile, |c: &ConsumerGroup| &c.spec.broker_set);
    let users = dependents(&client, &ns, ctx, user::reconcile, |u: &User| &u.spec.broker_set);
    futures::join!(broker_sets, topics, groups, users);
}

/// The controller of a kind that names a BrokerSet (Topic, ConsumerGroup, User): its resources also
/// reconcile when their BrokerSet changes, so a new broker group gets every topic placed on all
/// groups.
async fn dependents<K, R, Fut>(
    client: &Client,
    ns: &Option<String>,
    ctx: Arc<Context>,
    reconcile: R,
    broker_set: fn(&K) -> &String,
) where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    K: Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    R: Fn(Arc<K>, Arc<Context>) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let controller = Controller::new(api::<K>(client, ns), watcher::Config::default());
    let store = controller.store();
    controller
        .watches(api::<BrokerSet>(client, ns), watcher::Config::default(), move |bs| referring(&store, &bs, broker_set))
        .run(move |o, c| instrumented(o, c, reconcile), error_policy, ctx)
        .for_each(log_result)
        .await
}

/// The resources in `store` naming `bs` as their BrokerSet.
fn referring<K>(store: &Store<K>, bs: &BrokerSet, broker_set: impl Fn(&K) -> &String) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    store
        .state()
        .iter()
        .filter(|k| k.namespace() == bs.namespace() && *broker_set(k) == bs.name_any())
        .map(|k| ObjectRef::from_obj(k.as_ref()))
        .collect()
}

async fn log_result<K: Resource<DynamicType = ()>>(
    r: Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<Error, watcher::Error>>,
) {
    use kube::runtime::controller::Error as Controller;
    match r {
        Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
        // A watch event for an object deleted meanwhile: nothing to do.
        Err(Controller::ObjectNotFound(obj)) => tracing::debug!(object = %obj, "gone before its reconcile"),
        // Failed reconciles are logged by the error policy.
        Err(Controller::ReconcilerFailed(..)) => {}
        Err(e) => tracing::warn!(error = %e, "controller error"),
    }
}

fn object_key<K: Resource<DynamicType = ()>>(o: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), o.namespace().unwrap_or_default(), o.name_any())
}

/// Runs `reconcile` on `obj`, counting and timing it by kind; a success resets the object's
/// backoff.
async fn instrumented<K, F, Fut>(obj: Arc<K>, ctx: Arc<Context>, reconcile: F) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
    let started = Instant::now();
    let key = object_key(obj.as_ref());
    let result = reconcile(obj, ctx.clone()).await;
    ctx.metrics.observe(&K::kind(&()), result.is_ok(), started.elapsed());
    if result.is_ok() {
        ctx.failures.lock().expect("not poisoned").remove(&key);
    }
    result
}

/// After a failed reconcile: a Warning Event on the object, and a retry after a delay that
/// doubles per consecutive failure, from [`BACKOFF_FIRST`] to [`BACKOFF_MAX`].
fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    let n = {
        let mut f = ctx.failures.lock().expect("not poisoned");
        let n = f.entry(object_key(obj.as_ref())).or_insert(0);
        *n += 1;
        *n
    };
    let delay = backoff(n);
    tracing::warn!(object = %object_key(obj.as_ref()), error = %error, retry_in = ?delay, "reconcile failed");
    let (reason, note) = (error.reason(), error.to_string());
    // Logged just above: the Event only.
    tokio::spawn(async move { ctx.publish(obj.as_ref(), EventType::Warning, reason, &note).await });
    Action::requeue(delay)
}

/// The retry delay after `n` consecutive failures.
pub fn backoff(n: u32) -> Duration {
    BACKOFF_FIRST.saturating_mul(1u32 << n.saturating_sub(1).min(16)).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_five_minutes() {
        let d: Vec<u64> = [1, 2, 3, 4, 8, 9, 40].iter().map(|&n| backoff(n).as_secs()).collect();
        assert_eq!(d, [2, 4, 8, 16, 256, 300, 300]);
    }
}
