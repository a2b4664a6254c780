//! `User`: a user of every broker group of a BrokerSet (RocketMQ 5.3's ACL 2.0 user and its
//! access rules), with its secret key in a Kubernetes Secret.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Desired state of a User.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferrocket.io",
    version = "v1alpha1",
    kind = "User",
    namespaced,
    doc = "A user (access key, secret key and access rules) on every broker group of a BrokerSet.",
    shortname = "fuser",
    status = "UserStatus",
    printcolumn(name = "BrokerSet", type_ = "string", json_path = ".spec.brokerSet"),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    cel,
    validation = Rule::new("has(self.userName) == has(oldSelf.userName) && (!has(self.userName) || self.userName == oldSelf.userName)")
        .message("userName is immutable"),
    validation = Rule::new("self.brokerSet == oldSelf.brokerSet").message("brokerSet is immutable")
)]
#[serde(rename_all = "camelCase")]
pub struct UserSpec {
    /// Name of the BrokerSet (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub broker_set: String,
    /// The user's access key on the brokers; defaults to `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-zA-Z0-9_.-]{1,64}$"))]
    pub user_name: Option<String>,
    /// Secret holding the secret key (key `secretKey`, 6 to 128 bytes); defaults to
    /// `<metadata.name>-credentials`. Created with a random key (and `accessKey`) if it does not
    /// exist, owned by this User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// A super user may call Admin and everything else, and no rule limits it.
    #[serde(default)]
    pub super_user: bool,
    /// A disabled user is refused and kept.
    #[serde(default)]
    pub disabled: bool,
    /// Access rules; the user may do nothing no rule allows. Exactly these are kept on the
    /// brokers (rules added by hand for this user are removed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub acls: Vec<AclRuleSpec>,
}

/// One access rule (RocketMQ 5.3 `Policy` entry).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AclRuleSpec {
    /// `Topic:<name>`, `Group:<name>` (a trailing `*` makes a prefix) or `*`.
    #[schemars(regex(pattern = r"^(\*|(Topic|Group):[%|a-zA-Z0-9_*-]{1,128})$"))]
    pub resource: String,
    /// `Pub`, `Sub` or `All`.
    #[schemars(length(min = 1, max = 3))]
    pub actions: Vec<AclAction>,
    /// Addresses or CIDR ranges the user may come from; none: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub source_ips: Vec<String>,
    /// `Allow` (default) or `Deny`.
    #[serde(default)]
    pub decision: AclDecision,
}

/// What a rule covers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum AclAction {
    /// Send (and transactions).
    Pub,
    /// Receive, acknowledge, offsets.
    Sub,
    /// Both.
    All,
}

/// Whether a rule allows or denies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum AclDecision {
    /// Allows the actions.
    #[default]
    Allow,
    /// Denies them, whatever a less specific rule says.
    Deny,
}

/// Observed state of a User.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Degraded`, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Secret with the user's keys (`accessKey`, `secretKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The broker groups the user is configured on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl User {
    /// The user's access key on the brokers: `spec.userName`, else `metadata.name`.
    pub fn user_name(&self) -> String {
        self.spec.user_name.clone().or_else(|| self.metadata.name.clone()).unwrap_or_default()
    }

    /// The Secret with its secret key: `spec.secretName`, else `<metadata.name>-credentials`.
    pub fn secret_name(&self) -> String {
        self.spec
            .secret_name
            .clone()
            .unwrap_or_else(|| format!("{}-credentials", self.metadata.name.clone().unwrap_or_default()))
    }
}
