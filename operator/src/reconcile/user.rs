//! Reconciling a User: its secret key from its Secret (made if absent), then the user and
//! exactly its access rules through the Admin service on the master of every broker group of the
//! BrokerSet (groups added later included; slaves copy them from their master). Deleting the
//! User deletes the user and its rules on every group before the finalizer goes. Of two Users
//! claiming the same user name on one BrokerSet, the older owns it.

use std::sync::Arc;

use ferrocket_proto::admin::{AclRule, User as UserPb};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::targets::{self, Targets, SOON};
use super::{Context, Error};
use crate::admin::{self, AdminError};
use crate::crd::{AclAction, AclDecision, User, UserStatus};

/// One reconcile of `user`. Errors: API calls, missing credentials, and brokers that cannot be
/// reached (all retried with backoff).
pub async fn reconcile(user: Arc<User>, ctx: Arc<Context>) -> Result<Action, Error> {
    targets::with_finalizer(user, ctx, apply, cleanup).await
}

/// (BrokerSet, user name): what two Users must not both claim.
fn key(u: &User) -> (String, String) {
    (u.spec.broker_set.clone(), u.user_name())
}

async fn apply(u: Arc<User>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (u, ctx) = (u.as_ref(), ctx.as_ref());
    if let Some(owner) = targets::claimed_by_another(ctx, u, key).await? {
        let msg = format!(
            "user {} on BrokerSet {} is already claimed by User {owner}; this one changes nothing",
            u.user_name(),
            u.spec.broker_set
        );
        ctx.warn(u, "ResourceConflict", &msg).await;
        write_status(ctx, u, Vec::new(), Err(("ResourceConflict", msg)), true).await?;
        return Ok(Action::requeue(SOON));
    }
    let ns = u.namespace().unwrap_or_default();
    let failed = |reason, msg| write_status(ctx, u, Vec::new(), Err((reason, msg)), false);
    let (masters, dialer) = match targets::masters(ctx, &ns, &u.spec.broker_set, &[]).await {
        Ok(Targets::Masters(m, dialer)) => (m, dialer),
        Ok(Targets::Blocked(reason, msg)) => {
            ctx.warn(u, reason, &msg).await;
            failed(reason, msg).await?;
            return Ok(Action::requeue(SOON));
        }
        Err(e) => return targets::fail(e, failed).await,
    };
    let secret = match crate::credentials::user_secret_key(&ctx.client, u).await {
        Ok(s) => s,
        Err(a) => return targets::fail(Error::Admin(a), failed).await,
    };
    let user = UserPb { name: u.user_name(), secret, super_user: u.spec.super_user, disabled: u.spec.disabled };
    let rules = acl_rules(u);
    let pass = targets::on_masters(ctx, u, &masters, |endpoint| {
        let (user, rules, dialer) = (user.clone(), rules.clone(), dialer.clone());
        async move { admin::apply_user(&endpoint, &dialer, user, rules).await }
    })
    .await;
    let groups = pass.applied.into_iter().map(|(g, ())| g).collect();
    write_status(ctx, u, groups, pass.result, pass.degraded).await?;
    Ok(pass.action)
}

/// Deletion: the user and its rules go from every broker group, unless another User owns the
/// name or the BrokerSet is gone. Its generated Secret goes with it (owned by the User).
async fn cleanup(u: Arc<User>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (u, ctx) = (u.as_ref(), ctx.as_ref());
    if targets::claimed_by_another(ctx, u, key).await?.is_some() {
        return Ok(Action::await_change());
    }
    let ns = u.namespace().unwrap_or_default();
    let (masters, dialer) = match targets::masters(ctx, &ns, &u.spec.broker_set, &[]).await? {
        Targets::Masters(m, dialer) => (m, dialer),
        Targets::Blocked(..) => return Ok(Action::await_change()),
    };
    for (group, master) in masters {
        let Some(endpoint) = master else {
            return Err(Error::Admin(AdminError::NoMaster(group)));
        };
        admin::delete_user(&endpoint, &dialer, &u.user_name()).await?;
    }
    Ok(Action::await_change())
}

async fn write_status(
    ctx: &Context,
    u: &User,
    groups: Vec<String>,
    result: Result<(), (&str, String)>,
    degraded: bool,
) -> Result<(), Error> {
    let generation = u.metadata.generation;
    let status = UserStatus {
        observed_generation: generation,
        conditions: targets::conditions(u.status.as_ref().map(|s| &s.conditions), result, degraded, generation),
        secret_name: Some(u.secret_name()),
        groups,
    };
    super::patch_status(ctx, u, serde_json::to_value(status).map_err(Error::Serialize)?).await
}

/// The Admin service's form of `u`'s access rules.
pub fn acl_rules(u: &User) -> Vec<AclRule> {
    let action = |a: &AclAction| match a {
        AclAction::Pub => "PUB",
        AclAction::Sub => "SUB",
        AclAction::All => "ALL",
    };
    u.spec
        .acls
        .iter()
        .map(|r| AclRule {
            resource: r.resource.clone(),
            actions: r.actions.iter().map(|a| action(a).to_string()).collect(),
            source_ips: r.source_ips.clone(),
            deny: r.decision == AclDecision::Deny,
        })
        .collect()
}
