//! The broker's Remoting requests: dispatch by request code, the client and offset requests, and
//! the mapping of engine errors to response codes. Sends are in [`super::send`], pulls in
//! [`super::pull`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::clients::{ClientTable, HeartbeatData};
use super::codes::*;
use super::command::Command;
use super::conn::{BoxFuture, Connection, Processor};
use super::header::{Header, Refusal};
use crate::broker::{Broker, BrokerError, SendBack};
use crate::consume::groups::GroupError;
use crate::store::StoreError;
use crate::topics::TopicError;

/// A broker's Remoting front end: the engine, the clients known from heartbeats, and the
/// address this broker's offset message ids name.
pub struct RemotingBroker {
    /// The engine.
    pub broker: Arc<Broker>,
    /// Clients by group.
    pub clients: ClientTable,
    /// This broker's advertised Remoting `host:port`.
    pub store_host: String,
}

/// The response code and remark for an engine error (RocketMQ's codes for the same causes).
pub fn refusal(e: &BrokerError) -> Refusal {
    let code = match e {
        BrokerError::TopicNotFound(_) => TOPIC_NOT_EXIST,
        BrokerError::Topic(TopicError::Io { .. }) | BrokerError::Group(GroupError::Io { .. }) => SYSTEM_ERROR,
        BrokerError::Permission(..) => NO_PERMISSION,
        BrokerError::TypeNotAccepted { .. }
        | BrokerError::PropertiesTooLarge { .. }
        | BrokerError::IllegalDeliveryTime(_)
        | BrokerError::Store(StoreError::Encode(_) | StoreError::TooLarge { .. }) => MESSAGE_ILLEGAL,
        BrokerError::GroupNotFound(_) | BrokerError::Group(GroupError::NotFound(_)) => SUBSCRIPTION_GROUP_NOT_EXIST,
        BrokerError::IllegalOffset(_) => PULL_OFFSET_MOVED,
        // RocketMQ answers a full disk and a slave's refusal with SERVICE_NOT_AVAILABLE; clients
        // try another broker.
        BrokerError::DiskFull { .. }
        | BrokerError::Fenced
        | BrokerError::Store(StoreError::NoSpace(_) | StoreError::ReadOnly) => SERVICE_NOT_AVAILABLE,
        BrokerError::NotDurable(inner) => return refusal(inner),
        // Stored but not known durable: told as an error (the producer may retry and store it
        // twice, as with RocketMQ), not FLUSH_DISK_TIMEOUT, whose reply needs the send's header.
        _ => SYSTEM_ERROR,
    };
    (code, e.to_string())
}

fn reply(req: &Command, r: Result<Command, Refusal>) -> Command {
    r.unwrap_or_else(|(code, remark)| Command::response_to(req, code, remark))
}

/// The Remoting processor of a broker.
pub fn processor(rb: Arc<RemotingBroker>) -> Processor {
    let closing = rb.clone();
    Processor {
        handle: Arc::new(move |conn: Arc<Connection>, req: Command| -> BoxFuture<Option<Command>> {
            let rb = rb.clone();
            Box::pin(async move { Some(handle(&rb, &conn, &req).await) })
        }),
        closed: Arc::new(move |conn: &Connection| {
            let changed = closing.clients.remove_where(Some(conn.id));
            notify_changed(&closing, changed);
        }),
    }
}

/// Drops clients silent for longer than the expiry, every 10 s, until `stop`.
pub fn spawn_expiry(rb: Arc<RemotingBroker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(10)) => notify_changed(&rb, rb.clients.remove_where(None)),
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            }
        }
    });
}

/// Tells every member of each group that its membership changed (NOTIFY_CONSUMER_IDS_CHANGED),
/// so they rebalance now rather than at their next 20 s round.
fn notify_changed(rb: &RemotingBroker, groups: Vec<String>) {
    for g in groups {
        for conn in rb.clients.consumer_connections(&g) {
            let g = g.clone();
            tokio::spawn(
                async move { conn.notify(NOTIFY_CONSUMER_IDS_CHANGED, &[("consumerGroup", g)], Vec::new()).await },
            );
        }
    }
}

async fn handle(rb: &RemotingBroker, conn: &Arc<Connection>, req: &Command) -> Command {
    if let Err(refused) = admit(rb, conn, req) {
        return refused;
    }
    let r = match req.code {
        SEND_MESSAGE | SEND_MESSAGE_V2 | SEND_BATCH_MESSAGE => super::send::send(rb, conn, req).await,
        PULL_MESSAGE | LITE_PULL_MESSAGE => super::pull::pull(rb, req).await,
        QUERY_ASSIGNMENT => super::pop::query_assignment(rb, req),
        POP_MESSAGE => super::pop::pop(rb, req).await,
        ACK_MESSAGE => super::pop::ack(rb, req).await,
        BATCH_ACK_MESSAGE => super::pop::batch_ack(rb, req).await,
        CHANGE_MESSAGE_INVISIBLETIME => super::pop::change_invisible(rb, req),
        HEART_BEAT => heartbeat(rb, conn, req),
        UNREGISTER_CLIENT => unregister(rb, req),
        GET_CONSUMER_LIST_BY_GROUP => consumer_list(rb, req),
        QUERY_CONSUMER_OFFSET => query_offset(rb, req),
        UPDATE_CONSUMER_OFFSET => update_offset(rb, req).await,
        GET_MAX_OFFSET | GET_MIN_OFFSET | SEARCH_OFFSET_BY_TIMESTAMP => queue_offset(rb, req),
        CONSUMER_SEND_MSG_BACK => send_back(rb, req).await,
        END_TRANSACTION => super::txn::end_transaction(rb, req).await,
        LOCK_BATCH_MQ | UNLOCK_BATCH_MQ => lock_batch(rb, req),
        VIEW_MESSAGE_BY_ID | QUERY_MESSAGE => super::query::query(rb, req),
        UPDATE_AND_CREATE_TOPIC => super::admin::create_topic(rb, req),
        GET_CONSUME_STATS => super::admin::consume_stats(rb, req),
        GET_TOPIC_CONFIG => super::admin::topic_config(rb, req),
        code => Err((REQUEST_CODE_NOT_SUPPORTED, format!("request code {code} is not supported by this broker"))),
    };
    reply(req, r)
}

/// Authenticates and authorizes `req` (everyone is admitted while authentication is off); creating
/// topics takes a super user. A refusal is logged, counted and answered NO_PERMISSION.
fn admit(rb: &RemotingBroker, conn: &Connection, req: &Command) -> Result<(), Command> {
    let checked = super::auth::admit(rb.broker.auth(), req, conn.peer.ip()).and_then(|who| match req.code {
        UPDATE_AND_CREATE_TOPIC => crate::auth::require_super(who),
        _ => Ok(()),
    });
    checked.map_err(|r| {
        crate::auth::record_refusal(&rb.broker.metrics().auth_refused, "remoting", Some(conn.peer), &r);
        Command::response_to(req, NO_PERMISSION, r.to_string())
    })
}

fn heartbeat(rb: &RemotingBroker, conn: &Arc<Connection>, req: &Command) -> Result<Command, Refusal> {
    let hb: HeartbeatData = serde_json::from_slice(&req.body).map_err(|e| {
        tracing::warn!(peer = %conn.peer, language = %req.language, error = %e, "heartbeat refused: body is not HeartbeatData JSON");
        (SYSTEM_ERROR, format!("heartbeat body is not HeartbeatData JSON: {e}"))
    })?;
    for c in &hb.consumer_data_set {
        // A clustering push consumer subscribes to its retry topic: it must be routable.
        let made = if c.message_model.eq_ignore_ascii_case("BROADCASTING") || c.message_model == "0" {
            rb.broker.group_or_create(&c.group_name).map(|_| ())
        } else {
            rb.broker.retry_topic_or_create(&c.group_name).map(|_| ())
        };
        if let Err(e) = made {
            tracing::warn!(group = %c.group_name, client = %hb.client_id, error = %e, "heartbeat: consumer group not usable");
        }
    }
    let changed = rb.clients.heartbeat(conn, &hb);
    notify_changed(rb, changed);
    Ok(Command::response_to(req, SUCCESS, None))
}

fn unregister(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let h = Header::of(req);
    let left = rb.clients.unregister(h.text("clientID")?, h.get("producerGroup"), h.get("consumerGroup"));
    notify_changed(rb, left);
    Ok(Command::response_to(req, SUCCESS, None))
}

fn consumer_list(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let group = Header::of(req).text("consumerGroup")?;
    let ids = rb.clients.consumer_ids(group);
    if ids.is_empty() {
        return Err((SYSTEM_ERROR, format!("no consumer for this group, {group}")));
    }
    let mut r = Command::response_to(req, SUCCESS, None);
    r.body = json!({ "consumerIdList": ids }).to_string().into_bytes();
    Ok(r)
}

/// The group's committed offset; with none, 0 while the queue still holds its first message (so
/// a new group starts at the beginning of a queue never trimmed, as RocketMQ's
/// `ConsumerManageProcessor.queryConsumerOffset` answers), else QUERY_NOT_FOUND (the client
/// applies its ConsumeFromWhere).
fn query_offset(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let h = Header::of(req);
    let (group, topic, q) = (h.text("consumerGroup")?, h.text("topic")?, h.num::<u32>("queueId")?);
    let store = rb.broker.store();
    let offset = match rb.broker.committed_offset(group, topic, q) {
        Some(o) => o,
        None if h.get("setZeroIfNotFound") != Some("false")
            && store.min_queue_offset(topic, q) == 0
            && store.max_queue_offset(topic, q) > 0 =>
        {
            0
        }
        None => {
            return Err((QUERY_NOT_FOUND, "Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first".into()))
        }
    };
    let mut r = Command::response_to(req, SUCCESS, None);
    r.put("offset", offset);
    Ok(r)
}

async fn update_offset(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let h = Header::of(req);
    let (group, topic, q) = (h.text("consumerGroup")?, h.text("topic")?, h.num::<u32>("queueId")?);
    let offset: u64 = h.num("commitOffset")?;
    rb.broker.update_offset(group, topic, q, offset).await.map_err(|e| refusal(&e))?;
    Ok(Command::response_to(req, SUCCESS, None))
}

fn queue_offset(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let h = Header::of(req);
    let (topic, q) = (h.text("topic")?, h.num::<u32>("queueId")?);
    let store = rb.broker.store();
    let offset = match req.code {
        GET_MAX_OFFSET => store.max_queue_offset(topic, q),
        GET_MIN_OFFSET => store.min_queue_offset(topic, q),
        _ => rb.broker.offset_for_time(topic, q, h.num("timestamp")?),
    };
    let mut r = Command::response_to(req, SUCCESS, None);
    r.put("offset", offset);
    Ok(r)
}

async fn send_back(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let h = Header::of(req);
    let back = SendBack {
        group: h.text("group")?.to_string(),
        commitlog_offset: h.num("offset")?,
        delay_level: h.opt_num("delayLevel")?.unwrap_or(0),
        max_reconsume_times: h.opt_num("maxReconsumeTimes")?,
        origin_msg_id: h.get("originMsgId").map(String::from),
    };
    rb.broker.send_back(&back).await.map_err(|e| refusal(&e))?;
    Ok(Command::response_to(req, SUCCESS, None))
}

/// A queue as Remoting bodies name it (`MessageQueue`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageQueue {
    topic: String,
    broker_name: String,
    queue_id: u32,
}

/// LockBatchRequestBody / UnlockBatchRequestBody.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LockBatch {
    consumer_group: String,
    client_id: String,
    #[serde(default)]
    mq_set: Vec<MessageQueue>,
}

/// LOCK_BATCH_MQ / UNLOCK_BATCH_MQ of orderly consumers: locks (for the lease) or releases this
/// broker's queues among `mqSet`; a lock answers `lockOKMQSet`, the queues the client now holds.
fn lock_batch(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let b: LockBatch = serde_json::from_slice(&req.body).map_err(|e| (SYSTEM_ERROR, format!("lock body: {e}")))?;
    let me = &rb.broker.config().broker_name;
    let mine: Vec<(String, u32)> =
        b.mq_set.iter().filter(|m| &m.broker_name == me).map(|m| (m.topic.clone(), m.queue_id)).collect();
    let locks = rb.broker.queue_locks();
    let mut r = Command::response_to(req, SUCCESS, None);
    if req.code == UNLOCK_BATCH_MQ {
        locks.unlock(&b.consumer_group, &b.client_id, &mine);
        return Ok(r);
    }
    let held = locks.lock(&b.consumer_group, &b.client_id, &mine, crate::store::now_ms());
    let ok: Vec<MessageQueue> =
        held.into_iter().map(|(topic, queue_id)| MessageQueue { topic, broker_name: me.clone(), queue_id }).collect();
    r.body = json!({ "lockOKMQSet": ok }).to_string().into_bytes();
    Ok(r)
}
