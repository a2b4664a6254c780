//! `ConsumerGroup`: a subscription group configured on every broker group of a BrokerSet.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::DeletionPolicy;

/// Desired state of a ConsumerGroup.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferrocket.io",
    version = "v1alpha1",
    kind = "ConsumerGroup",
    namespaced,
    doc = "A consumer (subscription) group on every broker group of a BrokerSet.",
    shortname = "fcg",
    status = "ConsumerGroupStatus",
    printcolumn(name = "BrokerSet", type_ = "string", json_path = ".spec.brokerSet"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.consumeType"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    cel,
    validation = Rule::new("has(self.groupName) == has(oldSelf.groupName) && (!has(self.groupName) || self.groupName == oldSelf.groupName)")
        .message("groupName is immutable"),
    validation = Rule::new("self.brokerSet == oldSelf.brokerSet").message("brokerSet is immutable")
)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupSpec {
    /// Name of the BrokerSet (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub broker_set: String,
    /// Group name on the brokers; defaults to `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[%|a-zA-Z0-9_-]{1,120}$"))]
    pub group_name: Option<String>,
    /// `Concurrent` or `Fifo` (one message of a message group at a time, in order).
    #[serde(default)]
    pub consume_type: ConsumeType,
    /// Delivery attempts before a message goes to `%DLQ%<group>` (17: the first and 16 retries).
    #[serde(default = "seventeen")]
    #[schemars(range(min = 1, max = 64))]
    pub max_delivery_attempts: i32,
    /// Retry backoff; the broker's delay levels from level 3 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Every consumer gets every message (progress per client) instead of sharing them.
    #[serde(default)]
    pub broadcast: bool,
    /// What deleting this resource does on the brokers.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn seventeen() -> i32 {
    17
}

/// Consumption mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum ConsumeType {
    /// Messages in parallel.
    #[default]
    Concurrent,
    /// In order per message group.
    Fifo,
}

/// Retry backoff: exponential, or one delay per attempt.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    validation = Rule::new("has(self.exponential) != has(self.customizedMs)")
        .message("backoff takes exactly one of exponential and customizedMs")
)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// `initialMs * multiplier^(attempt-1)`, at most `maxMs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential: Option<ExponentialBackoff>,
    /// The delay before each retry, ms (the last repeats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub customized_ms: Option<Vec<i64>>,
}

/// Exponential retry backoff.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExponentialBackoff {
    /// First delay, ms.
    #[schemars(range(min = 1))]
    pub initial_ms: i64,
    /// Longest delay, ms.
    #[schemars(range(min = 1))]
    pub max_ms: i64,
    /// Growth per attempt.
    #[schemars(range(min = 1.0))]
    pub multiplier: f64,
}

/// Observed state of a ConsumerGroup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Degraded`, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `%RETRY%<group>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_topic: Option<String>,
    /// `%DLQ%<group>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlq_topic: Option<String>,
}

impl ConsumerGroup {
    /// The group's name on the brokers: `spec.groupName`, else `metadata.name`.
    pub fn group_name(&self) -> String {
        self.spec.group_name.clone().or_else(|| self.metadata.name.clone()).unwrap_or_default()
    }
}
