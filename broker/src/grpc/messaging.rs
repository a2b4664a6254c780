//! `apache.rocketmq.v2.MessagingService`: the RocketMQ 5.x protocol the official clients speak.
//! Every handler validates its request, calls the engine, and reports failures in the response
//! `Status` (the gRPC status stays OK), as RocketMQ's proxy does.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Streaming};

use crate::broker::{Broker, Consumer};
use crate::consume::filter::{Filter, TagFilter};
use crate::consume::sql::SqlFilter;
use crate::proto::v2::{self, messaging_service_server::MessagingService, telemetry_command::Command, *};

use super::admin::topic_route;
use super::clients::{merged_settings, Clients, Session};
use super::convert::{self, check_group, check_topic, duration_to_ms, ms_to_ts, to_record, to_wire};
use super::routes;
use super::status::{from_broker, is_ok, ok, status};
use crate::proto::clients::Nameservers;
use crate::proto::namesrv::{BrokerInfo, GroupRoute};

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;
type GrpcResult<T> = Result<Response<T>, tonic::Status>;

/// Time kept back from the client's deadline when holding a long poll, ms (RocketMQ proxy
/// `longPollingReserveTimeInMillis`).
const LONG_POLL_RESERVE_MS: u64 = 200;

/// The service; cheap to clone.
#[derive(Clone)]
pub struct Messaging {
    broker: Arc<Broker>,
    clients: Arc<Clients>,
    /// Turns true when the server stops: long polls and Telemetry streams end.
    stopping: watch::Receiver<bool>,
    epochs: Arc<AtomicU64>,
    /// Where routes come from in a cluster; `None` in standalone mode.
    nameservers: Option<Arc<Nameservers>>,
    /// The `store_host` of the records sent here ([`convert::store_host`]).
    store_host: String,
}

impl Messaging {
    /// The service over `broker`; `stopping` turning true ends Telemetry streams (long polls end
    /// through [`Broker::end_long_polls`]).
    /// With `nameservers`, QueryRoute and QueryAssignment answer with every broker group serving
    /// the topic.
    pub fn new(
        broker: Arc<Broker>,
        clients: Arc<Clients>,
        stopping: watch::Receiver<bool>,
        nameservers: Option<Arc<Nameservers>>,
    ) -> Messaging {
        let store_host = convert::store_host(broker.config());
        Messaging { broker, clients, stopping, epochs: Arc::new(AtomicU64::new(0)), nameservers, store_host }
    }

    /// The broker groups serving `topic`: the nameservers' routes when this broker has
    /// nameservers and some group serves the topic; otherwise this broker's group alone
    /// (creating the topic if `auto_create_topic` allows; a slave names its `ha_master_addr` as
    /// the master, so clients that reach a slave write to its master). Unreachable nameservers are logged, and this broker
    /// answers for itself. Errors: the topic is unknown here too (or its name is illegal).
    async fn groups(&self, topic: &str) -> Result<Vec<GroupRoute>, v2::Status> {
        if let Some(ns) = &self.nameservers {
            match ns.route(topic).await {
                Ok(groups) if groups.iter().any(|g| g.brokers.iter().any(|b| b.broker_id == 0)) => return Ok(groups),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(topic, error = %e, "nameservers unreachable; answering with this broker's queues only")
                }
            }
        }
        let cfg = self.broker.topic_or_create(topic).map_err(|e| from_broker(&e))?;
        let me = self.broker.config();
        let mut brokers = vec![crate::remoting::namesrv::local_info(&self.broker)];
        if let Some(master) = self.broker.role().master() {
            let info = BrokerInfo {
                broker_id: 0,
                endpoint: master.to_string(),
                remoting_endpoint: String::new(),
                ..brokers[0].clone()
            };
            brokers.insert(0, info);
        }
        Ok(vec![GroupRoute { broker_name: me.broker_name.clone(), brokers, topic: Some(topic_route(&cfg)) }])
    }

    /// Authenticates a call and authorizes what it touches (everyone is admitted while
    /// authentication is off). A refusal is logged and counted, and comes back as the status to
    /// answer with (UNAUTHORIZED, or FORBIDDEN for a known user).
    fn admit<T: super::auth::Guarded>(&self, req: &Request<T>) -> Result<(), v2::Status> {
        super::auth::admit(self.broker.auth(), req).map_err(|r| {
            crate::auth::record_refusal(&self.broker.metrics().auth_refused, "grpc", req.remote_addr(), &r);
            super::auth::status(&r)
        })
    }
}

fn client_id<T>(req: &Request<T>) -> Option<String> {
    req.metadata().get("x-mq-client-id").and_then(|v| v.to_str().ok()).map(String::from).filter(|s| !s.is_empty())
}

/// Remaining time of the call from its `grpc-timeout` header (e.g. `19998m`), ms; saturating,
/// so a hostile header cannot wrap into a short deadline.
fn grpc_timeout_ms<T>(req: &Request<T>) -> Option<u64> {
    let v = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => n.saturating_mul(3_600_000),
        "M" => n.saturating_mul(60_000),
        "S" => n.saturating_mul(1000),
        "m" => n,
        "u" => n / 1000,
        "n" => n / 1_000_000,
        _ => return None,
    })
}

/// Ends a ReceiveMessage stream: the items, then the `delivery_timestamp` every reply closes with.
async fn finish(
    tx: &mpsc::Sender<Result<ReceiveMessageResponse, tonic::Status>>,
    items: Vec<receive_message_response::Content>,
) {
    let stamp = receive_message_response::Content::DeliveryTimestamp(ms_to_ts(crate::store::now_ms()));
    for content in items.into_iter().chain([stamp]) {
        if tx.send(Ok(ReceiveMessageResponse { content: Some(content) })).await.is_err() {
            return; // the client went away
        }
    }
}

/// Parses a subscription's filter expression (TAG by default). Errors: ILLEGAL_FILTER_EXPRESSION
/// for a bad TAG expression, BAD_REQUEST with the parse error for a bad SQL92 one.
fn parse_filter(f: Option<&FilterExpression>) -> Result<Filter, v2::Status> {
    match f {
        None => Ok(Filter::ALL),
        Some(f) if f.r#type == FilterType::Sql as i32 => {
            SqlFilter::parse(&f.expression).map(Filter::Sql).map_err(|e| status(Code::BadRequest, e))
        }
        Some(f) => {
            TagFilter::parse(&f.expression).map(Filter::Tag).map_err(|e| status(Code::IllegalFilterExpression, e))
        }
    }
}

/// Topic and queue id of a request's `message_queue`. Errors: ILLEGAL_TOPIC, BAD_REQUEST for a
/// negative queue id.
fn queue_of(q: Option<&MessageQueue>) -> Result<(String, u32), v2::Status> {
    let topic = check_topic(q.and_then(|q| q.topic.as_ref()))?;
    let id = q.map(|q| q.id).unwrap_or(-1);
    if id < 0 {
        return Err(status(Code::BadRequest, format!("message_queue.id must be a queue id, got {id}")));
    }
    Ok((topic, id as u32))
}

/// How long to hold a long poll, ms: the request's `long_polling_timeout` (`absent_ms` if it has
/// none), at most `max_ms` and `LONG_POLL_RESERVE_MS` short of the call's deadline. Errors:
/// ILLEGAL_POLLING_TIME for a negative or out-of-range duration.
fn poll_time(
    requested: Option<&prost_types::Duration>,
    absent_ms: u64,
    max_ms: u64,
    deadline_ms: Option<u64>,
) -> Result<u64, v2::Status> {
    let ms = match requested {
        None => absent_ms,
        Some(d) => duration_to_ms(d)
            .ok_or_else(|| status(Code::IllegalPollingTime, "long_polling_timeout is negative or out of range"))?,
    };
    Ok(deadline_ms.map_or(ms.min(max_ms), |d| ms.min(max_ms).min(d.saturating_sub(LONG_POLL_RESERVE_MS))))
}

fn one_status<T: Send + 'static>(item: T) -> Stream_<T> {
    Box::pin(tokio_stream::iter([Ok(item)]))
}

#[tonic::async_trait]
impl MessagingService for Messaging {
    async fn query_route(&self, req: Request<QueryRouteRequest>) -> GrpcResult<QueryRouteResponse> {
        if let Err(s) = self.admit(&req) {
            return Ok(Response::new(QueryRouteResponse { status: Some(s), ..Default::default() }));
        }
        let r = req.into_inner();
        let reply =
            |status, message_queues| Ok(Response::new(QueryRouteResponse { status: Some(status), message_queues }));
        let name = match check_topic(r.topic.as_ref()) {
            Ok(n) => n,
            Err(s) => return reply(s, vec![]),
        };
        match self.groups(&name).await {
            Ok(groups) => reply(ok(), routes::message_queues(&r.topic.unwrap_or_default(), &groups)),
            Err(s) => reply(s, vec![]),
        }
    }

    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> GrpcResult<HeartbeatResponse> {
        if let Err(s) = self.admit(&req) {
            return Ok(Response::new(HeartbeatResponse { status: Some(s) }));
        }
        Ok(Response::new(HeartbeatResponse { status: Some(ok()) }))
    }

    async fn send_message(&self, req: Request<SendMessageRequest>) -> GrpcResult<SendMessageResponse> {
        if let Err(s) = self.admit(&req) {
            return Ok(Response::new(SendMessageResponse { status: Some(s), ..Default::default() }));
        }
        let peer = req.remote_addr();
        let client = client_id(&req).unwrap_or_default();
        let r = req.into_inner();
        if r.messages.is_empty() {
            return Ok(Response::new(SendMessageResponse {
                status: Some(status(Code::BadRequest, "no messages")),
                entries: vec![],
            }));
        }
        let cfg = self.broker.config();
        // Refused messages keep their place in the reply; the rest go to the engine as one batch.
        let mut refused = Vec::with_capacity(r.messages.len());
        let mut batch = Vec::with_capacity(r.messages.len());
        for m in &r.messages {
            match to_record(m, cfg, &self.store_host, peer) {
                Ok(out) => {
                    refused.push(None);
                    batch.push(out);
                }
                Err(s) => refused.push(Some(s)),
            }
        }
        let mut sent = self.broker.send_batch(&mut batch, &client).await.into_iter();
        let entries: Vec<SendResultEntry> = r
            .messages
            .iter()
            .zip(refused)
            .map(|(m, refusal)| {
                let message_id = m.system_properties.as_ref().map(|s| s.message_id.clone()).unwrap_or_default();
                let result = match refusal {
                    Some(s) => Err(s),
                    None => sent.next().expect("one result per message sent").map_err(|e| from_broker(&e)),
                };
                match result {
                    Ok(s) => SendResultEntry {
                        status: Some(ok()),
                        message_id,
                        transaction_id: s.transaction_id,
                        offset: s.at.queue_offset as i64,
                        recall_handle: s.recall_handle,
                    },
                    Err(status) => SendResultEntry { status: Some(status), message_id, ..Default::default() },
                }
            })
            .collect();
        let first_bad = entries.iter().filter_map(|e| e.status.clone()).find(|s| !is_ok(s));
        Ok(Response::new(SendMessageResponse { status: Some(first_bad.unwrap_or_else(ok)), entries }))
    }

    async fn query_assignment(&self, req: Request<QueryAssignmentRequest>) -> GrpcResult<QueryAssignmentResponse> {
        if let Err(s) = self.admit(&req) {
            return Ok(Response::new(QueryAssignmentResponse { status: Some(s), ..Default::default() }));
        }
        let r = req.into_inner();
        let reply =
            |status, assignments| Ok(Response::new(QueryAssignmentResponse { status: Some(status), assignments }));
        if let Err(s) = check_group(r.group.as_ref()) {
            return reply(s, vec![]);
        }
        let name = match check_topic(r.topic.as_ref()) {
            Ok(n) => n,
            Err(s) => return reply(s, vec![]),
        };
        match self.groups(&name).await {
            Ok(groups) => reply(ok(), routes::assignments(&r.topic.unwrap_or_default(), &groups)),
            Err(s) => reply(s, vec![]),
        }
    }

    type ReceiveMessageStream = Stream_<ReceiveMessageResponse>;

    async fn receive_message(&self, req: Request<ReceiveMessageRequest>) -> GrpcResult<Self::ReceiveMessageStream> {
        if let Err(s) = self.admit(&req) {
            return Ok(Response::new(one_status(ReceiveMessageResponse {
                content: Some(receive_message_response::Content::Status(s)),
            })));
        }
        let deadline_ms = grpc_timeout_ms(&req);
        let client = client_id(&req).unwrap_or_default();
        let r = req.into_inner();
        let fail = |s: v2::Status| -> GrpcResult<Self::ReceiveMessageStream> {
            Ok(Response::new(one_status(ReceiveMessageResponse {
                content: Some(receive_message_response::Content::Status(s)),
            })))
        };
        let cfg = self.broker.config().clone();
        let group = match check_group(r.group.as_ref()) {
            Ok(g) => g,
            Err(s) => return fail(s),
        };
        let topic_res = r.message_queue.as_ref().and_then(|q| q.topic.clone());
        let topic = match check_topic(topic_res.as_ref()) {
            Ok(t) => t,
            Err(s) => return fail(s),
        };
        let filter = match parse_filter(r.filter_expression.as_ref()) {
            Ok(f) => f,
            Err(s) => return fail(s),
        };
        if r.batch_size <= 0 {
            return fail(status(Code::BadRequest, format!("batch_size must be positive, got {}", r.batch_size)));
        }
        let invisible_ms = match r.invisible_duration.as_ref() {
            None => cfg.default_invisible_ms,
            Some(d) => match duration_to_ms(d) {
                Some(ms) if (cfg.min_invisible_ms..=cfg.max_invisible_ms).contains(&ms) => ms,
                _ => {
                    return fail(status(
                        Code::IllegalInvisibleTime,
                        format!(
                            "invisible duration must be within {} ms..={} ms",
                            cfg.min_invisible_ms, cfg.max_invisible_ms
                        ),
                    ))
                }
            },
        };
        let poll_ms = match poll_time(
            r.long_polling_timeout.as_ref(),
            cfg.long_polling_max_ms,
            cfg.long_polling_max_ms,
            deadline_ms,
        ) {
            Ok(ms) => ms,
            Err(s) => return fail(s),
        };
        if crate::topics::is_system(&topic) {
            return fail(status(Code::IllegalTopic, format!("topic {topic} is reserved for the broker")));
        }
        if let Err(e) = self.broker.check_receivable(&topic) {
            return fail(from_broker(&e));
        }
        let namespace = topic_res.map(|t| t.resource_namespace).unwrap_or_default();
        let batch = r.batch_size.min(1024) as usize;
        let broker = self.broker.clone();
        let (tx, rx) = mpsc::channel(batch + 2);
        tokio::spawn(async move {
            use receive_message_response::Content;
            let consumer = Consumer { group: &group, client_id: &client };
            let poll = Duration::from_millis(poll_ms);
            let items = match broker.receive_long(consumer, &topic, &filter, batch, invisible_ms, poll).await {
                Err(e) => vec![Content::Status(from_broker(&e))],
                Ok(got) if got.is_empty() => vec![Content::Status(status(Code::MessageNotFound, "no new message"))],
                Ok(got) => std::iter::once(Content::Status(ok()))
                    .chain(got.iter().map(|d| Content::Message(to_wire(d, &namespace))))
                    .collect(),
            };
            finish(&tx, items).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn ack_message(&self, req: Request<AckMessageRequest>) -> GrpcResult<AckMessageResponse> {
        if let Err(s) = self.admit(&req) {
            return Ok(Response::new(AckMessageResponse { status: Some(s), ..Default::default() }));
        }
        let client = client_id(&req).unwrap_or_default();
        let r = req.into_inner();
        let reply = |s, entries| Ok(Response::new(AckMessageResponse { status: Some(s), entries }));
        let group = match check_group(r.group.as_ref()) {
            Ok(g) => g,
            Err(s) => return reply(s, vec![]),
        };
        let topic = match check_topic(r.topic.as_ref()) {
            Ok(t) => t,
            Err(s) => return reply(s, vec![]),
        };
        if r.entries.is_empty() {
            return reply(status(Code::BadRequest, "no entries to acknowledge"), vec![]);
        }
        let handles: Vec<&str> = r.entries.iter().map(|e| e.receipt_handle.as_str()).collect();
        let results = self.broker.ack(Consumer { group: &group, client_id: &client }, &topic, &handles).await;
        let entries: Vec<AckMessageResultEntry> = r
            .entries
            .iter()
            .zip(results)
            .map(|(e, res)| AckMessageResultEntry {
                message_id: e.message_id.clone(),
                receipt_handle: e.receipt_handle.clone(),
                status: Some(match res {
                    Ok(()) => ok(),
                    Err(err) => from_broker(&err),
                }),
            })
            .collect();
        let first_bad = entries.iter().filter_map(|e| e.status.clone()).find(|s| !is_ok(s));
        reply(first_bad.unwrap_or_else(ok), entries)
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        req: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> GrpcResult<ForwardMessageToDeadLetterQueueResponse> {
        if let Err(s) = self.admit(&req) {
            return Ok(Response::new(ForwardMessageToDeadLetterQueueResponse { status: Some(s) }));
        }
        let client = client_id(&req).unwrap_or_default();
        let r = req.into_inner();
        let reply = |s| Ok(Response::new(ForwardMessageToDeadLetterQueueResponse { status: Some(s) }));
        let (group, topic) = match (check_group(r.group.as_ref()), check_topic(r.topic.as_ref())) {
            (Ok(g), Ok(t)) => (g, t),
            (Err(s), _) | (_, Err(s)) => return reply(s),
        };
        let consumer = Consumer { group: &group, client_id: &client };
        match self.broker.forward_to_dlq(consumer, &topic, &r.receipt_handle).await {
            Ok(()) => reply(ok()),
            Err(e) => reply(from_broker(&e)),
        }
    }

    type PullMessageStream = Stream_<PullMessageResponse>;

    async fn pull_message(&self, req: Request<PullMessageRequest>) -> GrpcResult<Self::PullMessageStream> {
        if let Err(s) = self.admit(&req) {
            return Ok(Response::new(one_status(PullMessageResponse {
                content: Some(pull_message_response::Content::Status(s)),
            })));
        }
        use pull_message_response::Content;
        let deadline_ms = grpc_timeout_ms(&req);
        let r = req.into_inner();
        let fail = |s: v2::Status| -> GrpcResult<Self::PullMessageStream> {
            Ok(Response::new(one_status(PullMessageResponse { content: Some(Content::Status(s)) })))
        };
        if let Err(s) = check_group(r.group.as_ref()) {
            return fail(s);
        }
        let (topic, q) = match queue_of(r.message_queue.as_ref()) {
            Ok(x) => x,
            Err(s) => return fail(s),
        };
        let filter = match parse_filter(r.filter_expression.as_ref()) {
            Ok(f) => f,
            Err(s) => return fail(s),
        };
        if r.batch_size <= 0 || r.offset < 0 {
            return fail(status(Code::BadRequest, "batch_size must be positive and offset not negative"));
        }
        let cfg = self.broker.config();
        // A pull without a long-polling timeout answers at once.
        let poll_ms = match poll_time(r.long_polling_timeout.as_ref(), 0, cfg.long_polling_max_ms, deadline_ms) {
            Ok(ms) => ms,
            Err(s) => return fail(s),
        };
        let namespace = r.message_queue.as_ref().and_then(|m| m.topic.as_ref()).map(|t| t.resource_namespace.clone());
        let namespace = namespace.unwrap_or_default();
        let batch = r.batch_size.min(1024) as usize;
        let poll = Duration::from_millis(poll_ms);
        let (msgs, next) = match self.broker.pull_long(&topic, q, r.offset as u64, batch, &filter, poll).await {
            Ok(x) => x,
            Err(e) => return fail(from_broker(&e)),
        };
        let head = if msgs.is_empty() { status(Code::MessageNotFound, "no new message") } else { ok() };
        let items: Vec<Result<PullMessageResponse, tonic::Status>> = std::iter::once(Content::Status(head))
            .chain(msgs.iter().map(|m| Content::Message(super::convert::record_to_wire(m, None, &namespace))))
            .chain([Content::NextOffset(next as i64)])
            .map(|c| Ok(PullMessageResponse { content: Some(c) }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn update_offset(&self, req: Request<UpdateOffsetRequest>) -> GrpcResult<UpdateOffsetResponse> {
        if let Err(s) = self.admit(&req) {
            return Ok(Response::new(UpdateOffsetResponse { status: Some(s) }));
        }
        let r = req.into_inner();
        let reply = |s| Ok(Response::new(UpdateOffsetResponse { status: Some(s) }));
        let (group, (topic, q)) = match (check_group(r.group.as_ref()), queue_of(r.message_queue.as_ref())) {
            (Ok(g), Ok(x)) => (g, x),
            (Err(s), _) | (_, Err(s)) => return reply(s),
        };
        if r.offset < 0 {
            return reply(status(Code::IllegalOffset, format!("offset {} is negative", r.offset)));
        }
        match self.broker.update_offset(&group, &topic, q, r.offset as u64).await {
            Ok(()) => reply(ok()),
            Err(e) => reply(from_broker(&e)),
        }
    }

    async fn get_offset(&self, req: Request<GetOffsetRequest>) -> GrpcResult<GetOffsetResponse> {
        if let Err(s) = self.admit(&req) {
            return Ok(Response::new(GetOffsetResponse { status: Some(s), ..Default::default() }));
        }
        let r = req.into_inner();
        let reply = |s, offset| Ok(Response::new(GetOffsetResponse { status: Some(s), offset }));
        let (group, (topic, q)) = match (check_group(r.group.as_ref()), queue_of(r.message_queue.as_ref())) {
            (Ok(g), Ok(x)) => (g, x),
            (Err(s), _) | (_, Err(s)) => return reply(s, 0),
        };
        match self.broker.committed_offset(&group, &topic, q) {
            Some(o) => reply(ok(), o as i64),
            None => reply(status(Code::OffsetNotFound, format!("group {group} has no offset on {topic} queue {q}")), 0),
        }
    }

    async fn query_offset(&self, req: Request<QueryOffsetRequest>) -> GrpcResult<QueryOffsetResponse> {
        if let Err(s) = self.admit(&req) {
            return Ok(Response::new(QueryOffsetResponse { status: Some(s), ..Default::default() }));
        }
        let r = req.into_inner();
        let reply = |s, offset| Ok(Response::new(QueryOffsetResponse { status: Some(s), offset }));
        let (topic, q) = match queue_of(r.message_queue.as_ref()) {
            Ok(x) => x,
            Err(s) => return reply(s, 0),
        };
        if self.broker.topics().get(&topic).is_none() {
            return reply(from_broker(&crate::broker::BrokerError::TopicNotFound(topic)), 0);
        }
        let store = self.broker.store();
        let offset = match QueryOffsetPolicy::try_from(r.query_offset_policy) {
            Ok(QueryOffsetPolicy::Beginning) => store.min_queue_offset(&topic, q),
            Ok(QueryOffsetPolicy::End) => store.max_queue_offset(&topic, q),
            Ok(QueryOffsetPolicy::Timestamp) => match r.timestamp.as_ref() {
                Some(t) => match super::convert::ts_to_ms(t) {
                    Some(ms) => self.broker.offset_for_time(&topic, q, ms),
                    None => return reply(status(Code::BadRequest, "timestamp before the epoch or out of range"), 0),
                },
                None => return reply(status(Code::BadRequest, "policy TIMESTAMP needs a timestamp"), 0),
            },
            Err(_) => return reply(status(Code::BadRequest, "unknown query_offset_policy"), 0),
        };
        reply(ok(), offset as i64)
    }

    async fn end_transaction(&self, req: Request<EndTransactionRequest>) -> GrpcResult<EndTransactionResponse> {
        if let Err(s) = self.admit(&req) {
            return Ok(Response::new(EndTransactionResponse { status: Some(s) }));
        }
        let r = req.into_inner();
        let reply = |s| Ok(Response::new(EndTransactionResponse { status: Some(s) }));
        let topic = match check_topic(r.topic.as_ref()) {
            Ok(t) => t,
            Err(s) => return reply(s),
        };
        if r.message_id.is_empty() {
            return reply(status(Code::IllegalMessageId, "message_id is required"));
        }
        let resolution = match TransactionResolution::try_from(r.resolution) {
            Ok(TransactionResolution::Commit) => Some(crate::txn::Resolution::Commit),
            Ok(TransactionResolution::Rollback) => Some(crate::txn::Resolution::Rollback),
            Ok(TransactionResolution::Unspecified) => None,
            Err(_) => return reply(status(Code::BadRequest, format!("unknown resolution {}", r.resolution))),
        };
        let reason = if r.source == TransactionSource::SourceServerCheck as i32 { "check" } else { "client" };
        match self.broker.end_transaction(&topic, &r.message_id, &r.transaction_id, resolution, reason).await {
            Ok(()) => reply(ok()),
            Err(e) => reply(from_broker(&e)),
        }
    }

    type TelemetryStream = Stream_<TelemetryCommand>;

    async fn telemetry(&self, req: Request<Streaming<TelemetryCommand>>) -> GrpcResult<Self::TelemetryStream> {
        if let Err(s) = self.admit(&req) {
            return Ok(Response::new(one_status(TelemetryCommand { status: Some(s), command: None })));
        }
        let id = client_id(&req);
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let Some(id) = id else {
            let s = status(Code::ClientIdRequired, "the x-mq-client-id header is required");
            return Ok(Response::new(one_status(TelemetryCommand { status: Some(s), command: None })));
        };
        let clients = self.clients.clone();
        let cfg = self.broker.config().clone();
        let broker = self.broker.clone();
        let epoch = self.epochs.fetch_add(1, Ordering::Relaxed);
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            loop {
                let cmd = tokio::select! {
                    c = inbound.next() => c,
                    _ = stopping.changed() => None,
                };
                let Some(Ok(cmd)) = cmd else { break };
                if let Some(Command::Settings(settings)) = cmd.command {
                    let group = match &settings.pub_sub {
                        Some(settings::PubSub::Subscription(s)) => s.group.as_ref().map(|g| g.name.clone()),
                        _ => None,
                    };
                    let group = group.and_then(|g| broker.group_or_create(&g).ok());
                    let merged = merged_settings(&settings, &cfg, group.as_ref());
                    let topics = match &merged.pub_sub {
                        Some(settings::PubSub::Publishing(p)) => p.topics.iter().map(|t| t.name.clone()).collect(),
                        _ => Vec::new(),
                    };
                    let client_type = merged
                        .client_type
                        .and_then(|t| ClientType::try_from(t).ok())
                        .unwrap_or(ClientType::Unspecified);
                    clients.register(&id, Session { client_type, topics, tx: tx.clone(), epoch });
                    let reply = TelemetryCommand { status: Some(ok()), command: Some(Command::Settings(merged)) };
                    if tx.send(Ok(reply)).await.is_err() {
                        break;
                    }
                }
                // Thread stack traces and message verification results are not used.
            }
            clients.remove(&id, Some(epoch));
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn notify_client_termination(
        &self,
        req: Request<NotifyClientTerminationRequest>,
    ) -> GrpcResult<NotifyClientTerminationResponse> {
        if let Err(s) = self.admit(&req) {
            return Ok(Response::new(NotifyClientTerminationResponse { status: Some(s) }));
        }
        if let Some(id) = client_id(&req) {
            self.clients.remove(&id, None);
        }
        Ok(Response::new(NotifyClientTerminationResponse { status: Some(ok()) }))
    }

    async fn change_invisible_duration(
        &self,
        req: Request<ChangeInvisibleDurationRequest>,
    ) -> GrpcResult<ChangeInvisibleDurationResponse> {
        if let Err(s) = self.admit(&req) {
            return Ok(Response::new(ChangeInvisibleDurationResponse { status: Some(s), ..Default::default() }));
        }
        let client = client_id(&req).unwrap_or_default();
        let r = req.into_inner();
        let reply = |s, handle: String| {
            Ok(Response::new(ChangeInvisibleDurationResponse { status: Some(s), receipt_handle: handle }))
        };
        let cfg = self.broker.config();
        let group = match check_group(r.group.as_ref()) {
            Ok(g) => g,
            Err(s) => return reply(s, String::new()),
        };
        let topic = match check_topic(r.topic.as_ref()) {
            Ok(t) => t,
            Err(s) => return reply(s, String::new()),
        };
        // A nack may ask for 0 (redeliver now); otherwise the receive bounds apply.
        let ms = match r.invisible_duration.as_ref().and_then(duration_to_ms) {
            Some(ms) if ms <= cfg.max_invisible_ms => ms,
            _ => {
                let msg = format!("invisible duration must be within 0..={} ms", cfg.max_invisible_ms);
                return reply(status(Code::IllegalInvisibleTime, msg), String::new());
            }
        };
        match self.broker.change_invisible(
            Consumer { group: &group, client_id: &client },
            &topic,
            &r.receipt_handle,
            ms,
        ) {
            Ok(h) => reply(ok(), h),
            Err(e) => reply(from_broker(&e), String::new()),
        }
    }

    async fn recall_message(&self, req: Request<RecallMessageRequest>) -> GrpcResult<RecallMessageResponse> {
        if let Err(s) = self.admit(&req) {
            return Ok(Response::new(RecallMessageResponse { status: Some(s), ..Default::default() }));
        }
        let r = req.into_inner();
        let reply = |s, message_id| Ok(Response::new(RecallMessageResponse { status: Some(s), message_id }));
        let topic = match check_topic(r.topic.as_ref()) {
            Ok(t) => t,
            Err(s) => return reply(s, String::new()),
        };
        match self.broker.recall(&topic, &r.recall_handle).await {
            Ok(id) => reply(ok(), id),
            Err(e) => reply(from_broker(&e), String::new()),
        }
    }

    async fn sync_lite_subscription(
        &self,
        _req: Request<SyncLiteSubscriptionRequest>,
    ) -> GrpcResult<SyncLiteSubscriptionResponse> {
        Ok(Response::new(SyncLiteSubscriptionResponse {
            status: Some(status(Code::NotImplemented, "lite topics are not supported")),
        }))
    }
}
