//! `Topic`: a topic created on the masters of some or all broker groups of a BrokerSet.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::DeletionPolicy;

/// Desired state of a Topic.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferrocket.io",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    doc = "A topic on the broker groups of a BrokerSet.",
    shortname = "ftopic",
    status = "TopicStatus",
    printcolumn(name = "BrokerSet", type_ = "string", json_path = ".spec.brokerSet"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.messageType"),
    printcolumn(name = "Queues", type_ = "integer", json_path = ".spec.queues"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    cel,
    validation = Rule::new("has(self.topicName) == has(oldSelf.topicName) && (!has(self.topicName) || self.topicName == oldSelf.topicName)")
        .message("topicName is immutable"),
    validation = Rule::new("self.brokerSet == oldSelf.brokerSet").message("brokerSet is immutable")
)]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// Name of the BrokerSet (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub broker_set: String,
    /// Topic name on the brokers; defaults to `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[%|a-zA-Z0-9_-]{1,127}$"))]
    pub topic_name: Option<String>,
    /// Message type the topic accepts.
    #[serde(default)]
    pub message_type: MessageType,
    /// Queues on each chosen broker group (8 by default); may grow, never shrink.
    #[serde(default = "eight")]
    #[schemars(range(min = 1, max = 1024))]
    pub queues: i32,
    /// Who may read and write.
    #[serde(default)]
    pub permission: Permission,
    /// Which broker groups serve the topic.
    #[serde(default)]
    pub placement: Placement,
    /// What deleting this resource does on the brokers.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn eight() -> i32 {
    8
}

/// RocketMQ 5 message types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum MessageType {
    /// Plain messages.
    #[default]
    Normal,
    /// Ordered per message group.
    Fifo,
    /// Scheduled (delay levels or a delivery time).
    Delay,
    /// Transactional (half messages, commit or rollback, check-back).
    Transaction,
}

/// Topic permission (RocketMQ `perm`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Permission {
    /// Read and write.
    #[default]
    ReadWrite,
    /// Consumers only.
    Read,
    /// Producers only.
    Write,
}

/// Broker groups serving a topic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Broker group names (`<brokerset>-<n>`); empty means every group, including groups added
    /// later.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// Observed state of a Topic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Degraded`, with reasons (`ResourceConflict` when another Topic
    /// claims the same name first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The queues applied on each broker group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueAllocation>,
}

/// Queues of the topic on one broker group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueAllocation {
    /// Broker group.
    pub group: String,
    /// Queues there.
    pub queues: i32,
}

impl Topic {
    /// The topic's name on the brokers: `spec.topicName`, else `metadata.name`.
    pub fn topic_name(&self) -> String {
        self.spec.topic_name.clone().or_else(|| self.metadata.name.clone()).unwrap_or_default()
    }
}
