//! SEND_MESSAGE, SEND_MESSAGE_V2 and SEND_BATCH_MESSAGE (RocketMQ `SendMessageProcessor`):
//! header and properties into engine records, the message type from the properties (as
//! RocketMQ 5's `TopicMessageType.parseFromMessageProperty`), delay levels and timer
//! properties into delivery times, and the offset message id back.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::broker::{refusal, RemotingBroker};
use super::codes::*;
use super::command::Command;
use super::conn::Connection;
use super::header::{Header, Refusal};
use super::wire::{decode_batch, offset_msg_id};
use crate::broker::{Outgoing, ANY_QUEUE, PROP_DELAY_LEVEL};
use crate::store::now_ms;
use crate::store::record::{decode_properties, Record};
use crate::store::{PROP_MESSAGE_GROUP, PROP_MSG_ID};
use crate::topics::{self, MessageType};

/// Property: a transactional (half) message (RocketMQ `TRAN_MSG`).
const PROP_TRANSACTION_PREPARED: &str = "TRAN_MSG";
/// Timer properties of 5.x producers: absolute delivery time (ms), or a delay (s or ms).
const PROP_TIMER_DELIVER_MS: &str = "TIMER_DELIVER_MS";
const PROP_TIMER_DELAY_SEC: &str = "TIMER_DELAY_SEC";
const PROP_TIMER_DELAY_MS: &str = "TIMER_DELAY_MS";
/// sysFlag: a prepared transaction message (`MessageSysFlag.TRANSACTION_PREPARED_TYPE`).
const SYS_FLAG_PREPARED: u32 = 0x4;
/// sysFlag: both transaction type bits (prepared 0x4, commit 0x8, rollback 0xC).
const SYS_FLAG_TRANSACTION_BITS: u32 = 0xC;

/// When to deliver a message with delay properties (ms since the epoch), and the properties
/// without the ones that asked for it; None for a message to deliver now.
fn delivery_time(rb: &RemotingBroker, props: &mut BTreeMap<String, String>, now: u64) -> Result<Option<u64>, Refusal> {
    let num = |props: &BTreeMap<String, String>, k: &str| -> Result<Option<i64>, Refusal> {
        props
            .get(k)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| (MESSAGE_ILLEGAL, format!("property {k} is not a number: {v:?}")))
            })
            .transpose()
    };
    if let Some(level) = num(props, PROP_DELAY_LEVEL)? {
        props.remove(PROP_DELAY_LEVEL);
        return Ok(rb.broker.delay_level_due(level.max(0) as u32, now));
    }
    let due = if let Some(at) = num(props, PROP_TIMER_DELIVER_MS)? {
        at.max(0) as u64
    } else if let Some(s) = num(props, PROP_TIMER_DELAY_SEC)? {
        now + s.max(0) as u64 * 1000
    } else if let Some(ms) = num(props, PROP_TIMER_DELAY_MS)? {
        now + ms.max(0) as u64
    } else {
        return Ok(None);
    };
    for k in [PROP_TIMER_DELIVER_MS, PROP_TIMER_DELAY_SEC, PROP_TIMER_DELAY_MS] {
        props.remove(k);
    }
    Ok(Some(due))
}

/// A unique message id for a message that came without one (RocketMQ's broker sets `UNIQ_KEY`
/// then too): 32 uppercase hex digits.
fn new_message_id() -> String {
    hex::encode_upper(rand::random::<[u8; 16]>())
}

/// Handles one send request.
pub async fn send(rb: &RemotingBroker, conn: &Arc<Connection>, req: &Command) -> Result<Command, Refusal> {
    let h = if req.code == SEND_MESSAGE { Header::of(req) } else { Header::of_send_v2(req) };
    let topic = h.text("topic")?;
    topics::validate_name(topic).map_err(|e| (SYSTEM_ERROR, e.to_string()))?;
    let producer = h.get("producerGroup").unwrap_or("");
    let queue_id: i32 = h.num("queueId")?;
    let sys_flag: u32 = h.opt_num::<i32>("sysFlag")?.unwrap_or(0) as u32;
    let reconsume_times: u32 = h.opt_num::<i32>("reconsumeTimes")?.unwrap_or(0).max(0) as u32;
    let max_reconsume: Option<u32> = h.opt_num::<i32>("maxReconsumeTimes")?.map(|m| m.max(0) as u32);
    let born: u64 = h.opt_num::<i64>("bornTimestamp")?.unwrap_or(0).max(0) as u64;
    let flag: u32 = h.opt_num::<i32>("flag")?.unwrap_or(0) as u32;
    let header_props = decode_properties(h.get("properties").unwrap_or(""));
    let prepared =
        sys_flag & SYS_FLAG_PREPARED != 0 || header_props.get(PROP_TRANSACTION_PREPARED).is_some_and(|v| v == "true");
    let target = rb.broker.send_target(topic, reconsume_times, max_reconsume).map_err(|e| refusal(&e))?;
    let max_body = rb.broker.config().max_body_bytes;
    let items: Vec<(u32, BTreeMap<String, String>, Vec<u8>)> = if h.flag("batch") || req.code == SEND_BATCH_MESSAGE {
        decode_batch(&req.body)
            .map_err(|e| (MESSAGE_ILLEGAL, format!("batch body: {e}")))?
            .into_iter()
            .map(|m| (m.flag, m.properties, m.body))
            .collect()
    } else {
        vec![(flag, header_props, req.body.clone())]
    };
    if items.is_empty() {
        return Err((MESSAGE_ILLEGAL, "the batch holds no message".into()));
    }
    let now = now_ms();
    let mut batch = Vec::with_capacity(items.len());
    for (flag, mut props, body) in items {
        if body.len() as u64 > max_body {
            return Err((
                MESSAGE_ILLEGAL,
                format!("message body of {} bytes exceeds max_body_bytes = {max_body}", body.len()),
            ));
        }
        let deliver_at_ms = delivery_time(rb, &mut props, now)?;
        props.entry(PROP_MSG_ID.into()).or_insert_with(new_message_id);
        let ty = if prepared {
            MessageType::Transaction
        } else if deliver_at_ms.is_some() {
            MessageType::Delay
        } else if props.contains_key(PROP_MESSAGE_GROUP) {
            MessageType::Fifo
        } else {
            MessageType::Normal
        };
        let record = Record {
            topic: target.clone(),
            queue_id: if queue_id < 0 { ANY_QUEUE } else { queue_id as u32 },
            flag,
            // The transaction type bits describe the send, not the stored message.
            sys_flag: sys_flag & 0xFFFF & !SYS_FLAG_TRANSACTION_BITS,
            born_timestamp: if born == 0 { now } else { born },
            born_host: conn.peer_text.clone(),
            store_host: rb.store_host.clone(),
            reconsume_times,
            properties: props,
            body,
            ..Default::default()
        };
        // No type check, as RocketMQ's broker makes none for Remoting (only its proxy, for gRPC).
        batch.push(Outgoing { record, ty, deliver_at_ms, check_type: false });
    }
    let results = rb.broker.send_batch(&mut batch, producer).await;
    let mut ids = Vec::with_capacity(results.len());
    let mut first = None;
    for r in results {
        let sent = r.map_err(|e| refusal(&e))?;
        ids.push(offset_msg_id(&rb.store_host, sent.at.physical_offset));
        first.get_or_insert(sent);
    }
    let sent = first.expect("a batch of at least one message");
    let at = sent.at;
    let mut resp = Command::response_to(req, SUCCESS, None);
    if !sent.transaction_id.is_empty() {
        // The producer echoes it in END_TRANSACTION (`SendResult.transactionId`).
        resp.put("transactionId", &sent.transaction_id);
    }
    resp.put("msgId", ids.join(","))
        .put("queueId", at.queue_id)
        .put("queueOffset", at.queue_offset)
        .put("MSG_REGION", "DefaultRegion")
        .put("TRACE_ON", "true");
    Ok(resp)
}
