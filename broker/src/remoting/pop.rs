//! The 5.x pop consumer over Remoting (RocketMQ `QueryAssignmentProcessor`, `PopMessageProcessor`,
//! `AckMessageProcessor`, `ChangeInvisibleTimeProcessor`; REMOTING.md §2): a push consumer with
//! `clientRebalance=false` asks the broker for its queues, pops, and acks or changes the invisible
//! time of each message. Pops go through the same engine receive as gRPC receives, so one group
//! can mix Remoting pop consumers and gRPC consumers and still get each message once.
//!
//! Each popped message carries the `POP_CK` property the client acks with: RocketMQ's eight
//! space-separated fields (`ExtraInfoUtil`: ckQueueOffset, popTime, invisibleTime, reviveQid,
//! topic type, brokerName, queueId, queueOffset) and, as a ninth, the random id of the delivery
//! in decimal, which with brokerName, queueId and queueOffset is the engine's receipt handle.
//! The Java client reads the first eight fields, the Rust client a ninth as a number (its retry
//! generation); both send the whole string back as `extraInfo`.

use serde::Deserialize;
use serde_json::json;

use super::broker::{refusal, RemotingBroker};
use super::codes::*;
use super::command::Command;
use super::header::{Header, Refusal};
use super::pull::{filter_of, heartbeat_filter};
use super::wire::encode_message;
use crate::broker::{BrokerError, Consumer};
use crate::consume::handle::ReceiptHandle;
use crate::store::now_ms;

/// Most messages one pop returns (RocketMQ refuses more than 32 per pop).
const MAX_POP_BATCH: usize = 32;
/// Longest a pop is held, ms, whatever the client asks (Java's pop timeout is 20 s past it).
const MAX_POLL_MS: u64 = 30_000;
/// The `POP_CK` property (`MessageConst.PROPERTY_POP_CK`).
const PROPERTY_POP_CK: &str = "POP_CK";

/// QueryAssignmentRequestBody (`protocol/body/QueryAssignmentRequestBody.java`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssignmentRequest {
    topic: String,
    consumer_group: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    message_model: Option<String>,
}

/// Answers QUERY_ASSIGNMENT. A topic is popped: the answer is one POP assignment with queue id
/// -1, every queue of this broker (RocketMQ's allocation when `popShareQueueNum` is at most 0),
/// so every member pops everything and the engine hands each message to one of them. A retry
/// topic (`%RETRY%<group>`, written by pull consumers' send-backs) is pulled, as RocketMQ
/// requires: its queues are shared out averagely among the group's members, as
/// `AllocateMessageQueueAveragely` does. Errors: a body that is not the JSON above
/// (SYSTEM_ERROR), TOPIC_NOT_EXIST.
pub fn query_assignment(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let body: AssignmentRequest = serde_json::from_slice(&req.body)
        .map_err(|e| (SYSTEM_ERROR, format!("QUERY_ASSIGNMENT body is not QueryAssignmentRequestBody JSON: {e}")))?;
    let broker = &rb.broker;
    let cfg = broker.check_receivable(&body.topic).map_err(|e| refusal(&e))?;
    let broker_name = &broker.config().broker_name;
    let queue = |q: i64| json!({"topic": body.topic, "brokerName": broker_name, "queueId": q});
    let broadcast = body.message_model.as_deref().is_some_and(|m| m.eq_ignore_ascii_case("BROADCASTING"));
    let assignments: Vec<serde_json::Value> =
        if body.topic.starts_with(crate::consume::groups::RETRY_PREFIX) || broadcast {
            let mut ids = rb.clients.consumer_ids(&body.consumer_group);
            ids.sort();
            let queues = if broadcast { 0..cfg.queue_count } else { averagely(cfg.queue_count, &ids, &body.client_id) };
            queues.map(|q| json!({"messageQueue": queue(q as i64), "mode": "PULL"})).collect()
        } else {
            vec![json!({"messageQueue": queue(-1), "mode": "POP"})]
        };
    let mut r = Command::response_to(req, SUCCESS, None);
    r.body = json!({ "messageQueueAssignments": assignments }).to_string().into_bytes();
    Ok(r)
}

/// The queues `me` takes of `count` queues shared among the sorted `ids`
/// (`AllocateMessageQueueAveragely`): consecutive blocks, the first `count % n` members one more.
/// Empty when `me` is not a member.
fn averagely(count: u32, ids: &[String], me: &str) -> std::ops::Range<u32> {
    let Some(index) = ids.iter().position(|id| id == me) else {
        return 0..0;
    };
    let (n, index) = (ids.len() as u32, index as u32);
    let rem = count % n;
    let size = if count <= n {
        1
    } else if rem > 0 && index < rem {
        count / n + 1
    } else {
        count / n
    };
    let start = if rem > 0 && index < rem { index * size } else { index * size + rem };
    start.min(count)..(start + size).min(count)
}

/// Answers POP_MESSAGE: up to `maxMsgNums` messages of the topic from any of its queues, held as
/// a long poll of `pollTime` while nothing is deliverable; each invisible for `invisibleTime` ms.
/// The subscription is the header's `exp` / `expType`, else the heartbeat's. SUCCESS with the
/// messages, else POLLING_TIMEOUT. Errors: a missing field, INVALID_PARAMETER for an invisible
/// time outside 1 ms..=`max_invisible_ms` or an orderly pop (not supported), the engine's
/// errors as [`refusal`] maps them.
pub async fn pop(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let h = Header::of(req);
    let group = h.text("consumerGroup")?;
    let topic = h.text("topic")?;
    let batch = h.num::<i64>("maxMsgNums")?.clamp(1, MAX_POP_BATCH as i64) as usize;
    let invisible_ms = h.num::<i64>("invisibleTime")?;
    let poll_ms = h.opt_num::<i64>("pollTime")?.unwrap_or(0).clamp(0, MAX_POLL_MS as i64) as u64;
    let broker = &rb.broker;
    let max_invisible = broker.config().max_invisible_ms;
    if invisible_ms <= 0 || invisible_ms as u64 > max_invisible {
        return Err((INVALID_PARAMETER, format!("invisibleTime {invisible_ms} ms is outside 1..={max_invisible} ms")));
    }
    if h.get("order").is_some_and(|o| o.eq_ignore_ascii_case("true")) {
        return Err((INVALID_PARAMETER, "orderly pop is not supported; consume orderly with pull".into()));
    }
    let filter = match h.get("exp") {
        Some(exp) => filter_of(exp, h.get("expType"))?,
        None => heartbeat_filter(rb, group, topic)?,
    };
    let consumer = Consumer { group, client_id: "" };
    let poll = std::time::Duration::from_millis(poll_ms);
    let popped = broker
        .receive_long(consumer, topic, &filter, batch, invisible_ms as u64, poll)
        .await
        .map_err(|e| refusal(&e))?;
    // popTime + invisibleTime is exactly when the deliveries become visible again (one instant
    // for a whole receive), so a batch ack, which names deliveries by the two, finds them.
    let pop_time = popped.first().map_or_else(now_ms, |d| d.visible_at_ms - invisible_ms as u64);
    let code = if popped.is_empty() { POLLING_TIMEOUT } else { SUCCESS };
    let mut r = Command::response_to(req, code, None);
    r.put("popTime", pop_time).put("invisibleTime", invisible_ms).put("reviveQid", 0).put("restNum", 0);
    if popped.is_empty() {
        return Ok(r);
    }
    // Per queue, its first offset and every offset popped (`ExtraInfoUtil.buildStartOffsetInfo`,
    // `buildMsgOffsetInfo`); clients parse them even though the `POP_CK` below is complete.
    let mut queues: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
    for d in &popped {
        queues.entry(d.record.queue_id).or_default().push(d.record.queue_offset);
    }
    let start = queues.iter().map(|(q, offs)| format!("0 {q} {}", offs[0])).collect::<Vec<_>>().join(";");
    let offsets = queues
        .iter()
        .map(|(q, offs)| format!("0 {q} {}", offs.iter().map(u64::to_string).collect::<Vec<_>>().join(",")))
        .collect::<Vec<_>>()
        .join(";");
    r.put("startOffsetInfo", start).put("msgOffsetInfo", offsets);
    let broker_name = &broker.config().broker_name;
    for d in popped {
        let mut rec = d.record;
        let pop_id = ReceiptHandle::decode(&d.receipt_handle).expect("the engine's own handle").pop_id;
        let ck = format!(
            "{o} {pop_time} {invisible_ms} 0 0 {broker_name} {q} {o} {pop_id}",
            o = rec.queue_offset,
            q = rec.queue_id
        );
        rec.properties.insert(PROPERTY_POP_CK.into(), ck);
        rec.reconsume_times = d.attempt.saturating_sub(1);
        encode_message(&rec, &rb.store_host, &mut r.body);
    }
    Ok(r)
}

/// The engine's receipt handle an `extraInfo` names (see the module docs). Errors: NO_MESSAGE
/// when it names none (not popped from this broker, or rebuilt by a client after an
/// invisible-time change, without the ninth field).
fn handle_of(extra_info: &str) -> Result<String, Refusal> {
    let f: Vec<&str> = extra_info.split(' ').collect();
    let handle = match f[..] {
        [_, _, _, _, _, broker, q, offset, pop_id, ..] => (|| {
            Some(ReceiptHandle {
                queue_id: q.parse().ok()?,
                queue_offset: offset.parse().ok()?,
                pop_id: pop_id.parse().ok()?,
                broker_name: broker.to_string(),
            })
        })(),
        _ => None,
    };
    handle
        .map(|h| h.encode())
        .ok_or_else(|| (NO_MESSAGE, format!("extraInfo {extra_info:?} names no delivery of this broker")))
}

fn no_message(e: BrokerError) -> Refusal {
    match e {
        BrokerError::InvalidHandle(why) => (NO_MESSAGE, why),
        e => refusal(&e),
    }
}

/// Answers ACK_MESSAGE: acks the delivery named by `extraInfo`, once the ack is flushed.
/// Errors: NO_MESSAGE for a stale or foreign `extraInfo`, store errors.
pub async fn ack(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let h = Header::of(req);
    let group = h.text("consumerGroup")?;
    let topic = h.text("topic")?;
    let handle = handle_of(h.text("extraInfo")?)?;
    let consumer = Consumer { group, client_id: "" };
    let result = rb.broker.ack(consumer, topic, &[handle.as_str()]).await.pop().expect("one result per handle");
    result.map_err(no_message)?;
    Ok(Command::response_to(req, SUCCESS, None))
}

/// BatchAckMessageRequestBody (`protocol/body/BatchAckMessageRequestBody.java`).
#[derive(Debug, Deserialize)]
struct BatchAckBody {
    acks: Vec<BatchAck>,
}

/// One queue's acks in a batch (`BatchAck`, fastjson short names).
#[derive(Debug, Deserialize)]
struct BatchAck {
    #[serde(rename = "c", alias = "consumerGroup")]
    group: String,
    #[serde(rename = "t", alias = "topic")]
    topic: String,
    #[serde(rename = "so", alias = "startOffset")]
    start_offset: u64,
    #[serde(rename = "q", alias = "queueId")]
    queue_id: u32,
    #[serde(rename = "pt", alias = "popTime")]
    pop_time: u64,
    #[serde(rename = "it", alias = "invisibleTime")]
    invisible_time: u64,
    /// `java.util.BitSet.toByteArray()`: bit `i` acks `startOffset + i`. Java sends it as a
    /// base64 string (fastjson's byte arrays), the Rust client as an array of numbers.
    #[serde(rename = "b", alias = "bitSet")]
    bits: serde_json::Value,
}

impl BatchAck {
    /// The acked queue offsets. Errors: `b` is neither base64 nor an array of bytes.
    fn offsets(&self) -> Result<Vec<u64>, String> {
        use base64::Engine as _;
        let bytes: Vec<u8> = match &self.bits {
            serde_json::Value::String(s) => {
                base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| format!("bitSet: {e}"))?
            }
            v => serde_json::from_value(v.clone()).map_err(|e| format!("bitSet: {e}"))?,
        };
        let set = (0..bytes.len() * 8).filter(|i| bytes[i / 8] & (1 << (i % 8)) != 0);
        Ok(set.map(|i| self.start_offset + i as u64).collect())
    }
}

/// Answers BATCH_ACK_MESSAGE: per queue, the offsets of a bit set acked together, each naming
/// its delivery by queue, offset and popTime + invisibleTime ([`Broker::handle_at`]). Acks
/// that name a delivery in flight are made durable; SUCCESS when every one did, else
/// NO_MESSAGE saying how many did not (the client then acks those one by one or lets them be
/// redelivered). Errors: a body that is not the JSON above (SYSTEM_ERROR).
///
/// [`Broker::handle_at`]: crate::broker::Broker::handle_at
pub async fn batch_ack(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let body: BatchAckBody = serde_json::from_slice(&req.body)
        .map_err(|e| (SYSTEM_ERROR, format!("BATCH_ACK_MESSAGE body is not BatchAckMessageRequestBody JSON: {e}")))?;
    let (mut missed, mut total) = (0, 0);
    for a in &body.acks {
        let offsets = a.offsets().map_err(|e| (SYSTEM_ERROR, e))?;
        let consumer = Consumer { group: &a.group, client_id: "" };
        let visible_at = a.pop_time + a.invisible_time;
        let handles: Vec<String> = offsets
            .iter()
            .filter_map(|o| rb.broker.handle_at(consumer, &a.topic, a.queue_id, *o, visible_at))
            .collect();
        total += offsets.len();
        missed += offsets.len() - handles.len();
        let refs: Vec<&str> = handles.iter().map(String::as_str).collect();
        for r in rb.broker.ack(consumer, &a.topic, &refs).await {
            if let Err(e) = r {
                missed += 1;
                if !matches!(e, BrokerError::InvalidHandle(_)) {
                    return Err(refusal(&e));
                }
            }
        }
    }
    if missed > 0 {
        return Err((NO_MESSAGE, format!("{missed} of {total} acks name no delivery in flight")));
    }
    Ok(Command::response_to(req, SUCCESS, None))
}

/// Answers CHANGE_MESSAGE_INVISIBLETIME: the delivery named by `extraInfo` becomes visible again
/// `invisibleTime` ms from now (RECONSUME_LATER). The reply carries `popTime`, `invisibleTime`
/// and `reviveQid`, from which the client builds its new `extraInfo`. Errors: NO_MESSAGE,
/// INVALID_PARAMETER for a time outside 0..=`max_invisible_ms`.
pub fn change_invisible(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let h = Header::of(req);
    let group = h.text("consumerGroup")?;
    let topic = h.text("topic")?;
    let handle = handle_of(h.text("extraInfo")?)?;
    let invisible_ms = h.num::<i64>("invisibleTime")?;
    let max_invisible = rb.broker.config().max_invisible_ms;
    if invisible_ms < 0 || invisible_ms as u64 > max_invisible {
        return Err((INVALID_PARAMETER, format!("invisibleTime {invisible_ms} ms is outside 0..={max_invisible} ms")));
    }
    let consumer = Consumer { group, client_id: "" };
    rb.broker.change_invisible(consumer, topic, &handle, invisible_ms as u64).map_err(no_message)?;
    let mut r = Command::response_to(req, SUCCESS, None);
    r.put("popTime", now_ms()).put("invisibleTime", invisible_ms).put("reviveQid", 0);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_are_shared_out_as_allocate_message_queue_averagely_does() {
        let ids: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let got: Vec<_> = ids.iter().map(|me| averagely(8, &ids, me)).collect();
        assert_eq!(got, vec![0..3, 3..6, 6..8]);
        assert_eq!(averagely(1, &ids, "a"), 0..1);
        assert_eq!(averagely(1, &ids, "c"), 1..1, "more members than queues: the last get none");
        assert_eq!(averagely(4, &ids, "stranger"), 0..0);
    }

    #[test]
    fn a_batch_ack_bit_set_reads_as_java_and_rust_clients_send_it() {
        let ack = |b: serde_json::Value| BatchAck {
            group: "g".into(),
            topic: "t".into(),
            start_offset: 10,
            queue_id: 0,
            pop_time: 0,
            invisible_time: 0,
            bits: b,
        };
        // Bits 0, 2 and 9: BitSet.toByteArray() = [0b101, 0b10].
        assert_eq!(ack(json!("BQI=")).offsets().unwrap(), vec![10, 12, 19], "Java: base64");
        assert_eq!(ack(json!([5, 2, 0, 0, 0, 0, 0, 0])).offsets().unwrap(), vec![10, 12, 19], "Rust: numbers");
        assert!(ack(json!("not base64!")).offsets().is_err());
    }

    #[test]
    fn extra_info_names_the_receipt_handle_by_broker_queue_offset_and_pop_id() {
        assert_eq!(handle_of("5 1700 60000 0 0 broker-a 2 5 255").unwrap(), "v1.2.5.00000000000000ff.broker-a");
        assert_eq!(handle_of("5 1700 60000 0 0 broker-a 2 5").unwrap_err().0, NO_MESSAGE);
        assert_eq!(handle_of("5 1700 60000 0 0 broker-a 2 5 x").unwrap_err().0, NO_MESSAGE);
    }
}
