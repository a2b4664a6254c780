//! The broker requests of RocketMQ's `mqadmin` (`AdminBrokerProcessor`): UPDATE_AND_CREATE_TOPIC
//! GET_TOPIC_CONFIG and GET_CONSUME_STATS.

use super::broker::{refusal, RemotingBroker};
use super::codes::*;
use super::command::Command;
use super::header::{Header, Refusal};
use crate::broker::BrokerError;
use crate::topics::{MessageType, Permission, TopicConfig};

/// UPDATE_AND_CREATE_TOPIC (`mqadmin updateTopic`): queues are the larger of the read and write
/// counts (Ferrocket's queues are both); `perm` is RocketMQ's bits (READ 4, WRITE 2).
pub fn create_topic(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let h = Header::of(req);
    let name = h.text("topic")?;
    let queues = h.opt_num::<u32>("writeQueueNums")?.unwrap_or(0).max(h.opt_num::<u32>("readQueueNums")?.unwrap_or(0));
    let permission = match h.opt_num::<u32>("perm")?.unwrap_or(6) & 6 {
        6 => Permission::ReadWrite,
        4 => Permission::Read,
        2 => Permission::Write,
        _ => Permission::None,
    };
    let cfg = TopicConfig {
        name: name.to_string(),
        queue_count: if queues == 0 { rb.broker.config().default_queue_count } else { queues },
        permission,
        message_types: MessageType::ALL.to_vec(),
    };
    rb.broker.topics().upsert(cfg).map_err(|e| refusal(&BrokerError::Topic(e)))?;
    Ok(Command::response_to(req, SUCCESS, None))
}

/// GET_CONSUME_STATS (`mqadmin consumerProgress`): per queue of the header's `topic`, or of every
/// topic the group has progress on, the broker offset (max offset), the consumer offset (acked)
/// and the pull offset (the same: in flight is not split out). The body is RocketMQ's
/// `ConsumeStats` as fastjson writes it: `offsetTable` keyed by MessageQueue objects.
pub fn consume_stats(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let h = Header::of(req);
    let group = h.text("consumerGroup")?;
    let topics = match h.get("topic").filter(|t| !t.is_empty()) {
        Some(t) => vec![t.to_string()],
        None => rb.broker.group_topics(group),
    };
    let broker_name = &rb.broker.config().broker_name;
    let mut table = Vec::new();
    for topic in &topics {
        for (q, acked, max, _) in rb.broker.group_progress(group, topic) {
            let key = serde_json::json!({ "brokerName": broker_name, "queueId": q, "topic": topic });
            let value = serde_json::json!({
                "brokerOffset": max, "consumerOffset": acked, "pullOffset": acked, "lastTimestamp": 0,
            });
            table.push(format!("{key}:{value}"));
        }
    }
    let mut r = Command::response_to(req, SUCCESS, None);
    r.body = format!("{{\"consumeTps\":0.0,\"offsetTable\":{{{}}}}}", table.join(",")).into_bytes();
    Ok(r)
}

/// GET_TOPIC_CONFIG (`mqadmin` reads it for `consumerProgress`, `topicStatus` of static topics):
/// RocketMQ's `TopicConfigAndQueueMapping` JSON, without a mapping (Ferrocket has no static
/// topics). TOPIC_NOT_EXIST if this broker does not have the topic.
pub fn topic_config(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let name = Header::of(req).text("topic")?;
    let Some(t) = rb.broker.topics().get(name) else {
        return Err((TOPIC_NOT_EXIST, format!("No topic in this broker. topic: {name}")));
    };
    let perm = match t.permission {
        Permission::ReadWrite => 6,
        Permission::Read => 4,
        Permission::Write => 2,
        Permission::None => 0,
    };
    let mut r = Command::response_to(req, SUCCESS, None);
    r.body = serde_json::json!({
        "topicName": t.name, "readQueueNums": t.queue_count, "writeQueueNums": t.queue_count, "perm": perm,
        "topicFilterType": "SINGLE_TAG", "topicSysFlag": 0, "order": false, "attributes": {},
    })
    .to_string()
    .into_bytes();
    Ok(r)
}
