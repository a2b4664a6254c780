//! Reconciling a Topic: create or update it through the Admin service on the master of every
//! chosen broker group (every group of the BrokerSet, groups added later included, unless
//! `placement.groups` names some), report the queues applied per group, and on deletion carry out
//! `deletionPolicy` before the finalizer goes. Of two Topics claiming the same name on the same
//! BrokerSet, the older owns it; the newer gets `Ready=False` reason `ResourceConflict`.

use std::sync::Arc;

use ferrocket_proto::admin::TopicConfig;
use ferrocket_proto::v2;
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::targets::{self, Targets, SOON};
use super::{Context, Error};
use crate::admin::{self, AdminError};
use crate::crd::{DeletionPolicy, MessageType, Permission, QueueAllocation, Topic, TopicStatus};

/// One reconcile of `topic`. Errors: API calls, and brokers that cannot be reached (both
/// retried with backoff).
pub async fn reconcile(topic: Arc<Topic>, ctx: Arc<Context>) -> Result<Action, Error> {
    targets::with_finalizer(topic, ctx, apply, cleanup).await
}

/// (BrokerSet, topic name): what two Topics must not both claim.
fn key(t: &Topic) -> (String, String) {
    (t.spec.broker_set.clone(), t.topic_name())
}

async fn apply(t: Arc<Topic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (t, ctx) = (t.as_ref(), ctx.as_ref());
    if let Some(owner) = targets::claimed_by_another(ctx, t, key).await? {
        let msg = format!(
            "topic {} on BrokerSet {} is already claimed by Topic {owner}; this Topic changes nothing",
            t.topic_name(),
            t.spec.broker_set
        );
        ctx.warn(t, "ResourceConflict", &msg).await;
        write_status(ctx, t, Vec::new(), Err(("ResourceConflict", msg)), true).await?;
        return Ok(Action::requeue(SOON));
    }
    let ns = t.namespace().unwrap_or_default();
    let (masters, dialer) = match targets::masters(ctx, &ns, &t.spec.broker_set, &t.spec.placement.groups).await {
        Ok(Targets::Masters(m, dialer)) => (m, dialer),
        Ok(Targets::Blocked(reason, msg)) => {
            ctx.warn(t, reason, &msg).await;
            let degraded = reason == "InvalidPlacement";
            write_status(ctx, t, Vec::new(), Err((reason, msg)), degraded).await?;
            return Ok(if degraded { Action::await_change() } else { Action::requeue(SOON) });
        }
        Err(e) => {
            let applied = t.status.as_ref().map(|s| s.queues.clone()).unwrap_or_default();
            return targets::fail(e, |reason, msg| write_status(ctx, t, applied, Err((reason, msg)), false)).await;
        }
    };
    let config = topic_config(t);
    let pass = targets::on_masters(ctx, t, &masters, |endpoint| {
        let (config, dialer) = (config.clone(), dialer.clone());
        async move { admin::apply_topic(&endpoint, &dialer, config).await }
    })
    .await;
    let applied = pass
        .applied
        .into_iter()
        .map(|(group, stored)| QueueAllocation { group, queues: stored.queue_count as i32 })
        .collect();
    write_status(ctx, t, applied, pass.result, pass.degraded).await?;
    Ok(pass.action)
}

/// Deletion: with `deletionPolicy: Delete`, the topic goes from every group it was applied to,
/// unless another Topic owns the name or the BrokerSet (and its brokers) is gone.
async fn cleanup(t: Arc<Topic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (t, ctx) = (t.as_ref(), ctx.as_ref());
    if t.spec.deletion_policy == DeletionPolicy::Retain || targets::claimed_by_another(ctx, t, key).await?.is_some() {
        return Ok(Action::await_change());
    }
    let ns = t.namespace().unwrap_or_default();
    let groups: Vec<String> = t.status.iter().flat_map(|s| s.queues.iter().map(|q| q.group.clone())).collect();
    if groups.is_empty() {
        return Ok(Action::await_change()); // never applied anywhere
    }
    let (masters, dialer) = match targets::masters(ctx, &ns, &t.spec.broker_set, &[]).await? {
        Targets::Masters(m, dialer) => (m, dialer),
        Targets::Blocked(..) => return Ok(Action::await_change()), // the BrokerSet went first
    };
    for group in groups {
        let Some(Some(endpoint)) = masters.get(&group) else {
            return Err(Error::Admin(AdminError::NoMaster(group)));
        };
        admin::delete_topic(endpoint, &dialer, &t.topic_name()).await?;
    }
    Ok(Action::await_change())
}

async fn write_status(
    ctx: &Context,
    t: &Topic,
    queues: Vec<QueueAllocation>,
    result: Result<(), (&str, String)>,
    degraded: bool,
) -> Result<(), Error> {
    let generation = t.metadata.generation;
    let status = TopicStatus {
        observed_generation: generation,
        conditions: targets::conditions(t.status.as_ref().map(|s| &s.conditions), result, degraded, generation),
        queues,
    };
    super::patch_status(ctx, t, serde_json::to_value(status).map_err(Error::Serialize)?).await
}

/// The Admin service's form of `t`.
pub fn topic_config(t: &Topic) -> TopicConfig {
    let permission = match t.spec.permission {
        Permission::ReadWrite => v2::Permission::ReadWrite,
        Permission::Read => v2::Permission::Read,
        Permission::Write => v2::Permission::Write,
    };
    let message_type = match t.spec.message_type {
        MessageType::Normal => v2::MessageType::Normal,
        MessageType::Fifo => v2::MessageType::Fifo,
        MessageType::Delay => v2::MessageType::Delay,
        MessageType::Transaction => v2::MessageType::Transaction,
    };
    TopicConfig {
        name: t.topic_name(),
        queue_count: t.spec.queues as u32,
        permission: permission as i32,
        accept_message_types: vec![message_type as i32],
    }
}
