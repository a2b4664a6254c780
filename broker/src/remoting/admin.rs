//! The broker requests of RocketMQ's `mqadmin` (`AdminBrokerProcessor`): UPDATE_AND_CREATE_TOPIC
//! GET_TOPIC_CONFIG and GET_CONSUME_STATS.

use super::broker::{refusal, RemotingBroker};
use super::codes::*;
use super::command::Command;
use super::header::{Header, Refusal};
use crate::broker::BrokerError;
use crate::topics::{MessageType, Permission, TopicConfig};

/// UPDATE_AND_CREATE_TOPIC (`mqadmin updateTopic`): queues are the larger of the read and write
/// counts (Ferrocket's queues are both); `perm` is RocketMQ's bits (READ 4, WRITE 2);
/// `attributes` may set `+message.type=` (see [`message_types`]). MESSAGE_ILLEGAL for malformed
/// attributes or an unknown type.
pub fn create_topic(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let h = Header::of(req);
    let name = h.text("topic")?;
    let message_types = message_types(h.get("attributes").unwrap_or(""))?;
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
        message_types,
    };
    rb.broker.topics().upsert(cfg).map_err(|e| refusal(&BrokerError::Topic(e)))?;
    Ok(Command::response_to(req, SUCCESS, None))
}

/// The accepted message types an `attributes` modification sets, RocketMQ's
/// `+key=value,-key` (`AttributeParser`): `+message.type=` NORMAL, FIFO, DELAY or TRANSACTION
/// accepts that type; MIXED, UNSPECIFIED or no `message.type` accepts every type (RocketMQ takes
/// NORMAL for none, but Remoting producers are not checked, and gRPC clients keep working with a
/// topic created without it). Other attributes are ignored.
fn message_types(attributes: &str) -> Result<Vec<MessageType>, Refusal> {
    let mut types = MessageType::ALL.to_vec();
    for kv in attributes.split(',').filter(|kv| !kv.is_empty()) {
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) if k.starts_with('+') => (&k[1..], v),
            None if kv.starts_with('-') => continue,
            _ => return Err((MESSAGE_ILLEGAL, format!("attribute {kv:?} is not +key=value or -key"))),
        };
        if key != "message.type" {
            continue;
        }
        types = match value {
            "NORMAL" => vec![MessageType::Normal],
            "FIFO" => vec![MessageType::Fifo],
            "DELAY" => vec![MessageType::Delay],
            "TRANSACTION" => vec![MessageType::Transaction],
            "MIXED" | "UNSPECIFIED" => MessageType::ALL.to_vec(),
            other => {
                return Err((
                    MESSAGE_ILLEGAL,
                    format!("message.type {other:?} is not one of NORMAL, FIFO, DELAY, TRANSACTION, MIXED"),
                ))
            }
        };
    }
    Ok(types)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_attributes_set_the_accepted_types() {
        assert_eq!(message_types("").unwrap(), MessageType::ALL.to_vec());
        assert_eq!(message_types("+message.type=FIFO").unwrap(), vec![MessageType::Fifo]);
        assert_eq!(message_types("+queue.type=BatchCQ,+message.type=DELAY").unwrap(), vec![MessageType::Delay]);
        assert_eq!(message_types("+message.type=MIXED,-other").unwrap(), MessageType::ALL.to_vec());
        assert_eq!(message_types("+message.type=LITE").unwrap_err().0, MESSAGE_ILLEGAL);
        assert_eq!(message_types("message.type=FIFO").unwrap_err().0, MESSAGE_ILLEGAL);
    }
}
