//! Translation between wire messages (`apache.rocketmq.v2.Message`) and CommitLog records, with
//! the checks RocketMQ's proxy makes on input (`GrpcValidator`, `MessageValidator`): every bad
//! field is refused with its own status code before anything is stored.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use md5::{Digest as _, Md5};
use prost_types::{Duration as PbDuration, Timestamp};

use crate::broker::{Delivery, Outgoing, ANY_QUEUE};
use crate::config::Config;
use crate::limits::GROUP_MAX_LEN;
use crate::proto::v2::{self, Code, DigestType, Encoding, MessageType as PbType, Resource};
use crate::store::record::Record;
use crate::store::{KEY_SEPARATOR, PROP_KEYS, PROP_MESSAGE_GROUP, PROP_MSG_ID, PROP_TAGS};
use crate::topics::{self, MessageType};

use super::status::status;

/// Property: the message type as sent.
pub const PROP_MESSAGE_TYPE: &str = "__MSG_TYPE";
/// Property: the producer's trace context.
pub const PROP_TRACE_CONTEXT: &str = "__TRACE_CONTEXT";
/// Property: body encoding when not IDENTITY.
pub const PROP_BODY_ENCODING: &str = "__BODY_ENCODING";

/// Property names user properties may not use (ours and RocketMQ's `MessageConst.STRING_HASH_SET`).
const RESERVED: &[&str] = &[
    PROP_TAGS,
    PROP_KEYS,
    PROP_MSG_ID,
    "DELAY",
    "WAIT",
    "RETRY_TOPIC",
    "REAL_TOPIC",
    "REAL_QID",
    "TRAN_MSG",
    "PGROUP",
    "MIN_OFFSET",
    "MAX_OFFSET",
    "BUYER_ID",
    "ORIGIN_MESSAGE_ID",
    "TRANSFER_FLAG",
    "CORRECTION_FLAG",
    "MQ2_FLAG",
    "RECONSUME_TIME",
    "MSG_REGION",
    "TRACE_ON",
    "MAX_RECONSUME_TIMES",
    "CONSUME_START_TIME",
    "TIMER_DELIVER_MS",
    "TIMER_DELAY_SEC",
    "TIMER_DELAY_MS",
    "CLUSTER",
    "INSTANCE_ID",
];
/// Longest message id, characters (RocketMQ proxy `maxMessageIdLength`... 128 is generous).
const MAX_MESSAGE_ID: usize = 128;
/// Longest message group, characters (RocketMQ proxy `maxMessageGroupSize`).
const MAX_MESSAGE_GROUP: usize = 64;
/// Largest total size of user properties, tag and keys, bytes (RocketMQ proxy
/// `maxUserPropertySize`, which counts the tag and keys too).
const MAX_PROPERTIES_BYTES: usize = 16 * 1024;
/// Most user properties of one message (RocketMQ proxy `userPropertyMaxNum`).
const MAX_USER_PROPERTIES: usize = 128;
/// Largest trace context, bytes (a W3C `traceparent` is 55; the proxy leaves it to the broker's
/// 32,767-byte limit on all properties, which this keeps clear of).
const MAX_TRACE_CONTEXT: usize = 4096;

/// A refused input: status code and message.
pub type Refusal = v2::Status;

fn refuse(code: Code, msg: impl Into<String>) -> Refusal {
    status(code, msg)
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Checks a consumer group name: RocketMQ's `checkConsumerGroup` (the topic-name rule), at most
/// [`GROUP_MAX_LEN`] characters (120, not RocketMQ's 255, so its retry topic is a legal topic).
/// Errors: ILLEGAL_CONSUMER_GROUP.
pub fn check_group(group: Option<&Resource>) -> Result<String, Refusal> {
    let name = group.map(|g| g.name.as_str()).unwrap_or("");
    if topics::is_legal_name(name, GROUP_MAX_LEN) {
        Ok(name.to_string())
    } else {
        Err(refuse(
            Code::IllegalConsumerGroup,
            format!("illegal consumer group {name:?}: 1..={GROUP_MAX_LEN} characters of [a-zA-Z0-9_%|-]"),
        ))
    }
}

/// Checks a topic resource. Errors: ILLEGAL_TOPIC.
pub fn check_topic(topic: Option<&Resource>) -> Result<String, Refusal> {
    let name = topic.map(|t| t.name.as_str()).unwrap_or("");
    topics::validate_name(name).map_err(|e| refuse(Code::IllegalTopic, e.to_string()))?;
    Ok(name.to_string())
}

/// Turns a wire message into a record for `SendMessage`. `store_host` is this broker's
/// `host:port` as records store it (at most 255 bytes, [`store_host`]); `peer` is the producer's
/// socket address, the born host of messages whose client sent none (formatted only then).
/// Errors: a status naming the first bad field.
pub fn to_record(
    msg: &v2::Message,
    cfg: &Config,
    store_host: &str,
    peer: Option<SocketAddr>,
) -> Result<Outgoing, Refusal> {
    let topic = check_topic(msg.topic.as_ref())?;
    if topics::is_system(&topic) {
        return Err(refuse(Code::IllegalTopic, format!("topic {topic} is reserved for the broker")));
    }
    let sp = msg.system_properties.as_ref().ok_or_else(|| refuse(Code::BadRequest, "system_properties missing"))?;
    let id = sp.message_id.as_str();
    if id.trim().is_empty() || id.len() > MAX_MESSAGE_ID || has_control(id) {
        return Err(refuse(
            Code::IllegalMessageId,
            format!("illegal message id {id:?}: 1..={MAX_MESSAGE_ID} printable characters"),
        ));
    }
    if msg.body.len() as u64 > cfg.max_body_bytes {
        return Err(refuse(
            Code::MessageBodyTooLarge,
            format!("body of {} bytes exceeds max_body_bytes = {}", msg.body.len(), cfg.max_body_bytes),
        ));
    }
    if msg.body.is_empty() {
        return Err(refuse(Code::MessageBodyEmpty, "message body is empty"));
    }
    if let Some(d) = &sp.body_digest {
        check_digest(d, &msg.body)?;
    }
    let mut props = BTreeMap::new();
    if msg.user_properties.len() > MAX_USER_PROPERTIES {
        return Err(refuse(
            Code::MessagePropertiesTooLarge,
            format!("{} user properties, at most {MAX_USER_PROPERTIES}", msg.user_properties.len()),
        ));
    }
    let mut user_bytes = 0;
    for (k, v) in &msg.user_properties {
        if k.is_empty() || has_control(k) || RESERVED.contains(&k.as_str()) || k.starts_with("__") {
            return Err(refuse(
                Code::IllegalMessagePropertyKey,
                format!("property name {k:?} is empty, reserved or has control characters"),
            ));
        }
        if v.contains(['\u{1}', '\u{2}']) {
            return Err(refuse(
                Code::IllegalMessagePropertyKey,
                format!("value of property {k:?} has a reserved separator character"),
            ));
        }
        user_bytes += k.len() + v.len();
        props.insert(k.clone(), v.clone());
    }
    if let Some(tag) = &sp.tag {
        if tag.trim().is_empty() || tag.contains('|') || has_control(tag) {
            return Err(refuse(
                Code::IllegalMessageTag,
                format!("illegal tag {tag:?}: not blank, no '|' or control characters"),
            ));
        }
        user_bytes += tag.len();
        props.insert(PROP_TAGS.into(), tag.clone());
    }
    if !sp.keys.is_empty() {
        for k in &sp.keys {
            if k.trim().is_empty() || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(refuse(
                    Code::IllegalMessageKey,
                    format!("illegal key {k:?}: not blank, no white space or control characters"),
                ));
            }
        }
        user_bytes += sp.keys.iter().map(String::len).sum::<usize>();
        props.insert(PROP_KEYS.into(), sp.keys.join(&KEY_SEPARATOR.to_string()));
    }
    if user_bytes > MAX_PROPERTIES_BYTES {
        return Err(refuse(
            Code::MessagePropertiesTooLarge,
            format!("user properties, tag and keys are {user_bytes} bytes, at most {MAX_PROPERTIES_BYTES}"),
        ));
    }
    if let Some(g) = &sp.message_group {
        if g.trim().is_empty() || g.len() > MAX_MESSAGE_GROUP || has_control(g) {
            return Err(refuse(
                Code::IllegalMessageGroup,
                format!("illegal message group {g:?}: 1..={MAX_MESSAGE_GROUP} printable characters"),
            ));
        }
        props.insert(PROP_MESSAGE_GROUP.into(), g.clone());
    }
    let ty = message_type(sp)?;
    if let (Some(d), MessageType::Transaction) = (&sp.orphaned_transaction_recovery_duration, ty) {
        let ms = duration_to_ms(d).ok_or_else(|| {
            refuse(Code::BadRequest, "orphaned_transaction_recovery_duration is negative or out of range")
        })?;
        props.insert(crate::txn::PROP_TX_RECOVERY_MS.into(), ms.to_string());
    }
    let mut deliver_at_ms = None;
    if let (MessageType::Delay, Some(t)) = (ty, &sp.delivery_timestamp) {
        let ms = ts_to_ms(t).ok_or_else(|| {
            refuse(Code::IllegalDeliveryTime, "delivery timestamp is before the epoch or out of range")
        })?;
        props.insert(crate::timer::PROP_DELIVER_MS.into(), ms.to_string());
        deliver_at_ms = Some(ms);
    }
    props.insert(PROP_MESSAGE_TYPE.into(), format!("{ty:?}").to_uppercase());
    props.insert(PROP_MSG_ID.into(), id.to_string());
    if let Some(tc) = sp.trace_context.as_ref().filter(|t| !t.is_empty() && !t.contains(['\u{1}', '\u{2}'])) {
        if tc.len() > MAX_TRACE_CONTEXT {
            return Err(refuse(
                Code::MessagePropertiesTooLarge,
                format!("trace context is {} bytes, at most {MAX_TRACE_CONTEXT}", tc.len()),
            ));
        }
        props.insert(PROP_TRACE_CONTEXT.into(), tc.clone());
    }
    if sp.body_encoding == Encoding::Gzip as i32 {
        props.insert(PROP_BODY_ENCODING.into(), "GZIP".into());
    }
    let born = match &sp.born_timestamp {
        None => crate::store::now_ms(),
        Some(t) => ts_to_ms(t).ok_or_else(|| refuse(Code::BadRequest, "born_timestamp out of range"))?,
    };
    let born_host = match (sp.born_host.is_empty(), peer) {
        (false, _) => sp.born_host.clone(),
        (true, Some(p)) => p.to_string(),
        (true, None) => String::new(),
    };
    let rec = Record {
        topic,
        // The broker picks the queue, as RocketMQ's proxy does (its `SendMessageQueueSelector`
        // ignores the client's queue id; the Python client never sets one).
        queue_id: ANY_QUEUE,
        born_timestamp: born,
        born_host: truncate(born_host, 255),
        store_host: store_host.to_owned(),
        properties: props,
        body: msg.body.clone(),
        ..Default::default()
    };
    Ok(Outgoing { record: rec, ty, deliver_at_ms, check_type: true })
}

/// The `store_host` of the records this broker writes: its advertised `host:port`, cut to the
/// 255 bytes a record holds. Computed once per service, not per message.
pub fn store_host(cfg: &Config) -> String {
    truncate(cfg.advertised(), 255)
}

fn truncate(mut s: String, max: usize) -> String {
    while s.len() > max {
        s.pop();
    }
    s
}

/// The message's type, checked against its properties (RocketMQ proxy `validateMessageType`).
fn message_type(sp: &v2::SystemProperties) -> Result<MessageType, Refusal> {
    let conflict = |m: &str| Err(refuse(Code::MessagePropertyConflictWithType, m.to_string()));
    let ty = PbType::try_from(sp.message_type).unwrap_or(PbType::Unspecified);
    let grouped = sp.message_group.is_some();
    let timed = sp.delivery_timestamp.is_some();
    match ty {
        PbType::Normal | PbType::Unspecified if grouped => {
            conflict("a NORMAL message may not have a message group (send it as FIFO)")
        }
        PbType::Normal | PbType::Unspecified if timed => {
            conflict("a NORMAL message may not have a delivery timestamp (send it as DELAY)")
        }
        PbType::Normal | PbType::Unspecified => Ok(MessageType::Normal),
        PbType::Fifo if !grouped => conflict("a FIFO message needs a message group"),
        PbType::Fifo => Ok(MessageType::Fifo),
        PbType::Transaction if grouped || timed => {
            conflict("a TRANSACTION message may not have a message group or delivery timestamp")
        }
        PbType::Transaction => Ok(MessageType::Transaction),
        PbType::Delay if grouped => conflict("a DELAY message may not have a message group"),
        PbType::Delay if !timed => conflict("a DELAY message needs a delivery timestamp"),
        PbType::Delay => Ok(MessageType::Delay),
        other => Err(refuse(Code::BadRequest, format!("unsupported message type {}", other.as_str_name()))),
    }
}

fn check_digest(d: &v2::Digest, body: &[u8]) -> Result<(), Refusal> {
    let computed = match DigestType::try_from(d.r#type).unwrap_or(DigestType::Unspecified) {
        DigestType::Md5 => hex::encode_upper(Md5::digest(body)),
        DigestType::Crc32 => format!("{:08X}", crc32fast::hash(body)),
        _ => return Ok(()), // SHA1 and unspecified digests are not checked
    };
    if computed.eq_ignore_ascii_case(&d.checksum) {
        Ok(())
    } else {
        Err(refuse(Code::MessageCorrupted, format!("body digest {} does not match the body ({computed})", d.checksum)))
    }
}

/// Milliseconds since the epoch of a protobuf timestamp; `None` for one before the epoch, with
/// `nanos` outside 0..1e9, or beyond what u64 milliseconds hold (checked, never wrapping).
pub fn ts_to_ms(t: &Timestamp) -> Option<u64> {
    proto_ms(t.seconds, t.nanos)
}

/// `seconds` and `nanos` of a protobuf Timestamp or Duration as milliseconds, checked.
fn proto_ms(seconds: i64, nanos: i32) -> Option<u64> {
    let nanos = u64::try_from(nanos).ok().filter(|n| *n < 1_000_000_000)?;
    u64::try_from(seconds).ok()?.checked_mul(1000)?.checked_add(nanos / 1_000_000)
}

/// A protobuf timestamp of milliseconds since the epoch.
pub fn ms_to_ts(ms: u64) -> Timestamp {
    Timestamp { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

/// A protobuf duration of milliseconds.
pub fn ms_to_duration(ms: u64) -> PbDuration {
    PbDuration { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

/// Milliseconds of a protobuf duration; `None` for a negative one, `nanos` outside 0..1e9, or
/// one beyond what u64 milliseconds hold (checked, never wrapping: the caller refuses it).
pub fn duration_to_ms(d: &PbDuration) -> Option<u64> {
    proto_ms(d.seconds, d.nanos)
}

/// The wire form of a delivered message (DESIGN.md §4: MD5 `body_digest` in upper-case hex,
/// receipt handle, attempt, store time, queue offset, invisible duration).
pub fn to_wire(d: &Delivery, namespace: &str) -> v2::Message {
    record_to_wire(&d.record, Some(d), namespace)
}

/// The wire form of a stored message; `delivery` adds the receipt handle, attempt and invisible
/// duration of a delivery (a transaction check-back has none).
pub fn record_to_wire(r: &Record, delivery: Option<&Delivery>, namespace: &str) -> v2::Message {
    let mut user = std::collections::HashMap::new();
    for (k, v) in &r.properties {
        if !RESERVED.contains(&k.as_str())
            && !k.starts_with("__")
            && k != crate::txn::PROP_REAL_TOPIC
            && k != crate::txn::PROP_REAL_QID
        {
            user.insert(k.clone(), v.clone());
        }
    }
    let ty = match r.properties.get(PROP_MESSAGE_TYPE).map(String::as_str) {
        Some("FIFO") => PbType::Fifo,
        Some("DELAY") => PbType::Delay,
        Some("TRANSACTION") => PbType::Transaction,
        _ => PbType::Normal,
    };
    let encoding = if r.properties.get(PROP_BODY_ENCODING).is_some_and(|e| e == "GZIP") {
        Encoding::Gzip
    } else {
        Encoding::Identity
    };
    let sp = v2::SystemProperties {
        tag: r.properties.get(PROP_TAGS).cloned(),
        keys: r
            .properties
            .get(PROP_KEYS)
            .map(|k| k.split(KEY_SEPARATOR).map(String::from).collect())
            .unwrap_or_default(),
        message_id: r.properties.get(PROP_MSG_ID).cloned().unwrap_or_default(),
        body_digest: Some(v2::Digest {
            r#type: DigestType::Md5 as i32,
            checksum: hex::encode_upper(Md5::digest(&r.body)),
        }),
        body_encoding: encoding as i32,
        message_type: ty as i32,
        born_timestamp: Some(ms_to_ts(r.born_timestamp)),
        born_host: r.born_host.clone(),
        store_timestamp: Some(ms_to_ts(r.store_timestamp)),
        store_host: r.store_host.clone(),
        delivery_timestamp: r.properties.get(crate::timer::PROP_DELIVER_MS).and_then(|d| d.parse().ok()).map(ms_to_ts),
        receipt_handle: delivery.map(|d| d.receipt_handle.clone()),
        queue_id: r.queue_id as i32,
        queue_offset: Some(r.queue_offset as i64),
        invisible_duration: delivery.map(|d| ms_to_duration(d.invisible_ms)),
        delivery_attempt: delivery.map(|d| d.attempt as i32),
        message_group: r.properties.get(PROP_MESSAGE_GROUP).cloned(),
        trace_context: r.properties.get(PROP_TRACE_CONTEXT).cloned(),
        orphaned_transaction_recovery_duration: None,
        dead_letter_queue: r.properties.get(crate::broker::PROP_DLQ_ORIGIN_TOPIC).map(|t| v2::DeadLetterQueue {
            topic: t.clone(),
            message_id: r.properties.get(PROP_MSG_ID).cloned().unwrap_or_default(),
        }),
        lite_topic: None,
        priority: None,
    };
    v2::Message {
        topic: Some(Resource { resource_namespace: namespace.to_string(), name: r.topic.clone() }),
        user_properties: user,
        system_properties: Some(sp),
        body: r.body.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> v2::Message {
        v2::Message {
            topic: Some(Resource { resource_namespace: String::new(), name: "t".into() }),
            user_properties: [("color".to_string(), "red".to_string())].into(),
            system_properties: Some(v2::SystemProperties {
                message_id: "01ABC".into(),
                tag: Some("TagA".into()),
                keys: vec!["k1".into(), "k2".into()],
                message_type: PbType::Normal as i32,
                ..Default::default()
            }),
            body: b"hello".to_vec(),
        }
    }

    fn code_of(m: v2::Message) -> i32 {
        to_record(&m, &Config::default(), "b:1", None).map(|_| Code::Ok as i32).unwrap_or_else(|s| s.code)
    }

    #[test]
    fn round_trip_keeps_what_the_client_sent() {
        let Outgoing { record: mut rec, ty, deliver_at_ms, .. } =
            to_record(&msg(), &Config::default(), "b:1", "1.2.3.4:5".parse().ok()).unwrap();
        assert_eq!((ty, deliver_at_ms), (MessageType::Normal, None));
        rec.queue_offset = 7;
        let d =
            Delivery { record: rec, receipt_handle: "h".into(), attempt: 1, invisible_ms: 30_000, visible_at_ms: 0 };
        let w = to_wire(&d, "ns");
        let sp = w.system_properties.unwrap();
        assert_eq!(sp.message_id, "01ABC");
        assert_eq!(sp.tag.as_deref(), Some("TagA"));
        assert_eq!(sp.keys, vec!["k1", "k2"]);
        assert_eq!(sp.body_digest.unwrap().checksum, "5D41402ABC4B2A76B9719D911017C592");
        assert_eq!(sp.delivery_attempt, Some(1));
        assert_eq!(sp.queue_offset, Some(7));
        assert_eq!(w.user_properties.len(), 1);
        assert_eq!(w.body, b"hello");
    }

    #[test]
    fn bad_fields_get_their_own_codes() {
        let with = |f: fn(&mut v2::Message)| {
            let mut m = msg();
            f(&mut m);
            code_of(m)
        };
        assert_eq!(with(|m| m.system_properties.as_mut().unwrap().message_id.clear()), Code::IllegalMessageId as i32);
        assert_eq!(with(|m| m.topic.as_mut().unwrap().name = "bad topic".into()), Code::IllegalTopic as i32);
        assert_eq!(
            with(|m| m.topic.as_mut().unwrap().name = "RMQ_SYS_TRANS_HALF_TOPIC".into()),
            Code::IllegalTopic as i32
        );
        assert_eq!(with(|m| m.body = vec![0; (4 << 20) + 1]), Code::MessageBodyTooLarge as i32);
        assert_eq!(
            with(|m| m.system_properties.as_mut().unwrap().tag = Some("a||b".into())),
            Code::IllegalMessageTag as i32
        );
        assert_eq!(
            with(|m| m.system_properties.as_mut().unwrap().keys = vec!["a b".into()]),
            Code::IllegalMessageKey as i32
        );
        assert_eq!(
            with(|m| {
                m.user_properties.insert("TAGS".into(), "x".into());
            }),
            Code::IllegalMessagePropertyKey as i32
        );
        assert_eq!(
            with(|m| m.system_properties.as_mut().unwrap().message_group = Some("g".into())),
            Code::MessagePropertyConflictWithType as i32
        );
        assert_eq!(
            with(|m| m.system_properties.as_mut().unwrap().body_digest =
                Some(v2::Digest { r#type: DigestType::Md5 as i32, checksum: "00".into() })),
            Code::MessageCorrupted as i32
        );
    }
}
