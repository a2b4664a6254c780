//! Reconciling a ConsumerGroup: create or update the subscription group through the Admin
//! service on the master of every broker group of the BrokerSet (groups added later included),
//! report its retry and DLQ topics, and on deletion carry out `deletionPolicy` before the
//! finalizer goes. Of two ConsumerGroups claiming the same group name, the older owns it.

use std::sync::Arc;

use ferrocket_proto::admin::{ExponentialBackoff, GroupConfig};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::targets::{self, Targets, SOON};
use super::{Context, Error};
use crate::admin::{self, AdminError};
use crate::crd::{ConsumeType, ConsumerGroup, ConsumerGroupStatus, DeletionPolicy};

/// One reconcile of `cg`. Errors: API calls, and brokers that cannot be reached (both retried
/// with backoff).
pub async fn reconcile(cg: Arc<ConsumerGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    targets::with_finalizer(cg, ctx, apply, cleanup).await
}

/// (BrokerSet, group name): what two ConsumerGroups must not both claim.
fn key(c: &ConsumerGroup) -> (String, String) {
    (c.spec.broker_set.clone(), c.group_name())
}

async fn apply(c: Arc<ConsumerGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (c, ctx) = (c.as_ref(), ctx.as_ref());
    if let Some(owner) = targets::claimed_by_another(ctx, c, key).await? {
        let msg = format!(
            "consumer group {} on BrokerSet {} is already claimed by ConsumerGroup {owner}; this one changes nothing",
            c.group_name(),
            c.spec.broker_set
        );
        ctx.warn(c, "ResourceConflict", &msg).await;
        write_status(ctx, c, Err(("ResourceConflict", msg)), true).await?;
        return Ok(Action::requeue(SOON));
    }
    let ns = c.namespace().unwrap_or_default();
    let (masters, dialer) = match targets::masters(ctx, &ns, &c.spec.broker_set, &[]).await {
        Ok(Targets::Masters(m, dialer)) => (m, dialer),
        Ok(Targets::Blocked(reason, msg)) => {
            ctx.warn(c, reason, &msg).await;
            write_status(ctx, c, Err((reason, msg)), false).await?;
            return Ok(Action::requeue(SOON));
        }
        Err(e) => return targets::fail(e, |reason, msg| write_status(ctx, c, Err((reason, msg)), false)).await,
    };
    let config = group_config(c);
    let pass = targets::on_masters(ctx, c, &masters, |endpoint| {
        let (config, dialer) = (config.clone(), dialer.clone());
        async move { admin::apply_group(&endpoint, &dialer, config).await }
    })
    .await;
    write_status(ctx, c, pass.result, pass.degraded).await?;
    Ok(pass.action)
}

/// Deletion: with `deletionPolicy: Delete`, the group (offsets, retry state) goes from every
/// broker group, unless another ConsumerGroup owns the name or the BrokerSet is gone.
async fn cleanup(c: Arc<ConsumerGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (c, ctx) = (c.as_ref(), ctx.as_ref());
    if c.spec.deletion_policy == DeletionPolicy::Retain || targets::claimed_by_another(ctx, c, key).await?.is_some() {
        return Ok(Action::await_change());
    }
    let ns = c.namespace().unwrap_or_default();
    let (masters, dialer) = match targets::masters(ctx, &ns, &c.spec.broker_set, &[]).await? {
        Targets::Masters(m, dialer) => (m, dialer),
        Targets::Blocked(..) => return Ok(Action::await_change()),
    };
    for (group, master) in masters {
        let Some(endpoint) = master else {
            return Err(Error::Admin(AdminError::NoMaster(group)));
        };
        admin::delete_group(&endpoint, &dialer, &c.group_name()).await?;
    }
    Ok(Action::await_change())
}

async fn write_status(
    ctx: &Context,
    c: &ConsumerGroup,
    result: Result<(), (&str, String)>,
    degraded: bool,
) -> Result<(), Error> {
    let generation = c.metadata.generation;
    let name = c.group_name();
    let status = ConsumerGroupStatus {
        observed_generation: generation,
        conditions: targets::conditions(c.status.as_ref().map(|s| &s.conditions), result, degraded, generation),
        retry_topic: Some(format!("%RETRY%{name}")),
        dlq_topic: Some(format!("%DLQ%{name}")),
    };
    super::patch_status(ctx, c, serde_json::to_value(status).map_err(Error::Serialize)?).await
}

/// The Admin service's form of `c`.
pub fn group_config(c: &ConsumerGroup) -> GroupConfig {
    let backoff = c.spec.backoff.as_ref();
    GroupConfig {
        name: c.group_name(),
        fifo: c.spec.consume_type == ConsumeType::Fifo,
        max_delivery_attempts: c.spec.max_delivery_attempts as u32,
        customized_backoff_ms: backoff
            .and_then(|b| b.customized_ms.as_ref())
            .map(|v| v.iter().map(|&ms| ms.max(0) as u64).collect())
            .unwrap_or_default(),
        exponential_backoff: backoff.and_then(|b| b.exponential.as_ref()).map(|e| ExponentialBackoff {
            initial_ms: e.initial_ms.max(0) as u64,
            max_ms: e.max_ms.max(0) as u64,
            multiplier: e.multiplier as f32,
        }),
        broadcast: c.spec.broadcast,
    }
}
