//! Reaching a BrokerSet's brokers: its nameservers (for the masters of each broker group and the
//! cluster status) and each master's Admin gRPC service (`ferrocket.v1.Admin`, the broker's own
//! wire contract). Every call is bounded by [`CALL_TIMEOUT`].

use std::collections::BTreeMap;
use std::time::Duration;

use ferrocket_proto::admin::admin_client::AdminClient;
use ferrocket_proto::admin::{
    AclRule, ClusterStatusResponse, CreateTopicRequest, DeleteAclRuleRequest, DeleteGroupRequest, DeleteTopicRequest,
    DeleteUserRequest, GroupConfig, ListAclsRequest, PutAclRuleRequest, TopicConfig, UpsertGroupRequest,
    UpsertUserRequest, User,
};
use ferrocket_proto::clients::Nameservers;
use ferrocket_proto::dial::Dialer;
use ferrocket_proto::signing::SignedChannel;
use kube::ResourceExt;

use crate::crd::BrokerSet;

/// Longest one Admin call (connection included) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an Admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No nameserver or broker answered in time.
    #[error("brokers unreachable: {0}")]
    Unreachable(String),
    /// A broker group has no master registered with the nameservers (starting, or failing over).
    #[error("broker group {0} has no master registered with the nameservers")]
    NoMaster(String),
    /// The cluster's credentials or TLS trust cannot be read (a Secret or a key missing).
    #[error("credentials: {0}")]
    Credentials(String),
    /// A broker refused the call (gRPC status code and message).
    #[error("{endpoint} refused: {code:?}: {message}")]
    Refused {
        /// The master's endpoint.
        endpoint: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The broker's message.
        message: String,
    },
}

/// How the operator finds BrokerSets' nameservers.
#[derive(Clone, Debug, Default)]
pub struct Brokers {
    /// Used for every BrokerSet instead of its nameserver Service (an operator run outside the
    /// cluster, with the nameservers port-forwarded or on loopback in tests).
    pub nameserver_override: Option<String>,
}

impl Brokers {
    /// The nameserver address (`host:port`) of `bs`: its headless Service
    /// `<name>-namesrv.<namespace>.svc:9876` (every pod's address), unless overridden.
    pub fn nameserver_address(&self, bs: &BrokerSet) -> String {
        self.nameserver_override
            .clone()
            .unwrap_or_else(|| crate::render::namesrv_address(&bs.name_any(), &bs.namespace().unwrap_or_default()))
    }

    /// The master endpoint of every broker group of `bs` registered with its nameservers, by
    /// group name, asked as `dialer` dials and signs. Errors: [`AdminError::Unreachable`] when
    /// no nameserver answered.
    pub async fn masters(&self, bs: &BrokerSet, dialer: &Dialer) -> Result<BTreeMap<String, String>, AdminError> {
        let ns = Nameservers::from_list(&self.nameserver_address(bs), dialer.clone());
        match tokio::time::timeout(CALL_TIMEOUT, ns.masters()).await {
            Ok(Ok(m)) => Ok(m.into_iter().collect()),
            Ok(Err(e)) => Err(AdminError::Unreachable(e.to_string())),
            Err(_) => Err(AdminError::Unreachable(format!("nameservers silent for {CALL_TIMEOUT:?}"))),
        }
    }

    /// Roles, epochs, offsets and in-sync sets of every broker of `bs` (the Admin
    /// `ClusterStatus` the CLI's `cluster status` prints), asked as `dialer` dials and signs.
    /// Errors: no nameserver answered.
    pub async fn cluster_status(&self, bs: &BrokerSet, dialer: &Dialer) -> Result<ClusterStatusResponse, AdminError> {
        let ns = Nameservers::from_list(&self.nameserver_address(bs), dialer.clone());
        // Dead brokers cost one Admin timeout (3 s), asked concurrently.
        match tokio::time::timeout(CALL_TIMEOUT * 2, ferrocket_proto::clients::cluster_status(&ns)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(AdminError::Unreachable(e.to_string())),
            Err(_) => Err(AdminError::Unreachable(format!("cluster status not answered in {:?}", CALL_TIMEOUT * 2))),
        }
    }
}

async fn admin(endpoint: &str, dialer: &Dialer) -> Result<AdminClient<SignedChannel>, AdminError> {
    let unreachable = |e: String| AdminError::Unreachable(format!("{endpoint}: {e}"));
    let ch = dialer
        .endpoint(endpoint)
        .map_err(|e| unreachable(e.to_string()))?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    Ok(AdminClient::with_interceptor(ch.connect().await.map_err(|e| unreachable(e.to_string()))?, dialer.signer()))
}

/// The outcome of a delete call: done, or already gone (`NOT_FOUND`), or refused.
fn deleted<T>(endpoint: &str, r: Result<T, tonic::Status>) -> Result<(), AdminError> {
    match r {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(refused(endpoint, s)),
    }
}

fn refused(endpoint: &str, s: tonic::Status) -> AdminError {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            AdminError::Unreachable(format!("{endpoint}: {}", s.message()))
        }
        code => AdminError::Refused { endpoint: endpoint.into(), code, message: s.message().into() },
    }
}

/// Creates or updates `topic` on the master at `endpoint` (called as `dialer` dials and signs, as
/// every call below); returns the topic as stored.
/// Errors: unreachable, or refused (`FAILED_PRECONDITION` for fewer queues than it has, or from
/// a slave; `INVALID_ARGUMENT` for a bad name).
pub async fn apply_topic(endpoint: &str, dialer: &Dialer, topic: TopicConfig) -> Result<TopicConfig, AdminError> {
    let r = admin(endpoint, dialer)
        .await?
        .create_topic(CreateTopicRequest { topic: Some(topic) })
        .await
        .map_err(|s| refused(endpoint, s))?;
    Ok(r.into_inner().topic.unwrap_or_default())
}

/// Deletes topic `name` (and its messages) on the master at `endpoint`; a topic already gone
/// counts as deleted. Errors: unreachable, or refused.
pub async fn delete_topic(endpoint: &str, dialer: &Dialer, name: &str) -> Result<(), AdminError> {
    let r = admin(endpoint, dialer).await?.delete_topic(DeleteTopicRequest { name: name.into() }).await;
    deleted(endpoint, r)
}

/// Creates or updates subscription group `group` on the master at `endpoint`. Errors:
/// unreachable, or refused.
pub async fn apply_group(endpoint: &str, dialer: &Dialer, group: GroupConfig) -> Result<(), AdminError> {
    admin(endpoint, dialer)
        .await?
        .upsert_group(UpsertGroupRequest { group: Some(group) })
        .await
        .map_err(|s| refused(endpoint, s))?;
    Ok(())
}

/// Deletes subscription group `name` (its offsets and retry state) on the master at `endpoint`;
/// a group already gone counts as deleted. Errors: unreachable, or refused.
pub async fn delete_group(endpoint: &str, dialer: &Dialer, name: &str) -> Result<(), AdminError> {
    let r = admin(endpoint, dialer).await?.delete_group(DeleteGroupRequest { name: name.into() }).await;
    deleted(endpoint, r)
}

/// Creates or updates `user` on the master at `endpoint` and makes its access rules exactly
/// `rules` (rules on other resources removed, the others put). Errors: unreachable, or refused
/// (`INVALID_ARGUMENT` for a bad secret, resource or source range).
pub async fn apply_user(endpoint: &str, dialer: &Dialer, user: User, rules: Vec<AclRule>) -> Result<(), AdminError> {
    let mut c = admin(endpoint, dialer).await?;
    let name = user.name.clone();
    c.upsert_user(UpsertUserRequest { user: Some(user) }).await.map_err(|s| refused(endpoint, s))?;
    let acls = c.list_acls(ListAclsRequest { user: name.clone() }).await.map_err(|s| refused(endpoint, s))?;
    let stale: Vec<String> = acls
        .into_inner()
        .acls
        .into_iter()
        .flat_map(|a| a.rules)
        .map(|r| r.resource)
        .filter(|res| !rules.iter().any(|r| r.resource == *res))
        .collect();
    for resource in stale {
        deleted(endpoint, c.delete_acl_rule(DeleteAclRuleRequest { user: name.clone(), resource }).await)?;
    }
    for rule in rules {
        c.put_acl_rule(PutAclRuleRequest { user: name.clone(), rule: Some(rule) })
            .await
            .map_err(|s| refused(endpoint, s))?;
    }
    Ok(())
}

/// Deletes user `name` and its access rules on the master at `endpoint`; a user already gone
/// counts as deleted. Errors: unreachable, or refused.
pub async fn delete_user(endpoint: &str, dialer: &Dialer, name: &str) -> Result<(), AdminError> {
    let mut c = admin(endpoint, dialer).await?;
    deleted(endpoint, c.delete_acl_rule(DeleteAclRuleRequest { user: name.into(), resource: String::new() }).await)?;
    deleted(endpoint, c.delete_user(DeleteUserRequest { name: name.into() }).await)
}
