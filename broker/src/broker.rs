//! The broker engine's API: send, receive, ack, change invisible time, topics. It ties the store,
//! the topic registry and consumer progress together and knows nothing of gRPC.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use thiserror::Error;

use crate::config::Config;
use crate::consume::filter::TagFilter;
use crate::consume::handle::ReceiptHandle;
use crate::consume::state::{AckRecord, ConsumeState, Inflight, QueueKey, QueueState, ACK_LOG_TOPIC};
use crate::metrics::Metrics;
use crate::store::checkpoint::write_atomic;
use crate::store::consume_queue::CqEntry;
use crate::store::record::Record;
use crate::store::{now_ms, Store, StoreConfig, StoreError, PROP_MSG_ID, PROP_TAGS, SYS_FLAG_NO_DISPATCH};
use crate::topics::{self, MessageType, Permission, TopicConfig, TopicError, TopicManager};
use crate::txn::{self, CheckTiming, OpRecord, Resolution, TxState};

/// Most ConsumeQueue entries one receive call looks at per queue (bounds lock hold time when a
/// filter skips many messages).
const SCAN_LIMIT: usize = 4096;

/// Why an engine call was refused. The gRPC layer maps each to a RocketMQ status code.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// The topic does not exist (and auto-creation is off or not allowed for it).
    #[error("topic {0} does not exist")]
    TopicNotFound(String),
    /// The topic request itself is invalid (name, queue count) or could not be persisted.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The topic's permission forbids the operation (topic, missing right).
    #[error("topic {0} is not {1}")]
    Permission(String, &'static str),
    /// The message names a queue the topic does not have.
    #[error("queue {queue} does not exist in topic {topic} ({count} queues)")]
    QueueOutOfRange {
        /// The topic.
        topic: String,
        /// The queue id asked for.
        queue: u32,
        /// Queues the topic has.
        count: u32,
    },
    /// The topic does not accept this message type.
    #[error("topic {topic} does not accept {ty:?} messages (accepts {accepts:?})")]
    TypeNotAccepted {
        /// The topic.
        topic: String,
        /// The message's type.
        ty: MessageType,
        /// The types the topic accepts.
        accepts: Vec<MessageType>,
    },
    /// The transaction id or message id names no open transaction (why).
    #[error("invalid transaction: {0}")]
    InvalidTransaction(String),
    /// The transaction already ended the other way (a COMMIT after a ROLLBACK, or the reverse).
    #[error("{0}")]
    TransactionConflict(String),
    /// The receipt handle is malformed, stale, expired or already acknowledged (why).
    #[error("invalid receipt handle: {0}")]
    InvalidHandle(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a sent message was stored.
#[derive(Debug, Clone, Copy)]
pub struct SendOk {
    /// Queue the message was stored in.
    pub queue_id: u32,
    /// Its offset in that queue.
    pub queue_offset: u64,
    /// CommitLog offset to await with [`Broker::wait_durable`] before acknowledging.
    pub end: u64,
}

/// One message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The stored message.
    pub record: Record,
    /// Handle to ack it or change its invisible time with.
    pub receipt_handle: String,
    /// 1 for the first delivery.
    pub attempt: u32,
    /// How long it stays invisible, ms.
    pub invisible_ms: u64,
}

/// A check-back to send to a producer.
#[derive(Debug, Clone)]
pub struct Check {
    /// Transaction id to answer with.
    pub transaction_id: String,
    /// The producer that sent the half message (asked first).
    pub client_id: String,
    /// The topic the message would be committed to (any producer of it may answer).
    pub topic: String,
    /// The message as it would be committed.
    pub message: Record,
}

/// What became of a check-back handed to the delivery callback of [`Broker::run_checks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Sent to a producer.
    Sent,
    /// No producer of the topic is connected.
    NoProducer,
    /// Not sent now (rate limit); it stays due and is not counted.
    Deferred,
}

/// Contents of `config/state.json`: consumer progress and open transactions, both as of one
/// CommitLog offset; the ack, half and op records after it are replayed on start.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct StateFile {
    commitlog_offset: u64,
    #[serde(default)]
    queues: Vec<(QueueKey, QueueState)>,
    #[serde(default)]
    transactions: TxState,
}

/// The engine of one broker.
pub struct Broker {
    cfg: Config,
    store: Arc<Store>,
    topics: TopicManager,
    consume: Mutex<ConsumeState>,
    /// Open transactions. Half and op records are appended while holding this lock, so a
    /// snapshot taken under it splits them cleanly at one CommitLog offset.
    tx: Mutex<TxState>,
    metrics: Metrics,
    rotate: AtomicUsize,
    stopping: AtomicBool,
    snapshotter: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Broker {
    /// Opens the store (recovering it), the topic registry and consumer progress (snapshot plus
    /// replayed ack records), and starts the snapshot thread. Errors: anything that makes the data
    /// directory unusable, naming the file.
    pub fn open(cfg: Config) -> anyhow::Result<Arc<Broker>> {
        let store = Store::open(StoreConfig::from(&cfg))?;
        let config_dir = cfg.data_dir.join("config");
        std::fs::create_dir_all(&config_dir)?;
        let topics = TopicManager::load(&config_dir.join("topics.json"))?;
        let state_path = config_dir.join("state.json");
        let snapshot: StateFile = match std::fs::read(&state_path) {
            // Every ack, half and op record is also in the CommitLog: an unreadable snapshot means
            // replaying all of them.
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::error!(file = %state_path.display(), error = %e, "unreadable state snapshot; replaying the whole CommitLog");
                StateFile::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
            Err(e) => return Err(e.into()),
        };
        let from = snapshot.commitlog_offset;
        let mut state = ConsumeState::from_entries(snapshot.queues);
        let mut tx = snapshot.transactions;
        tx.reindex();
        let timing = check_timing(&cfg);
        let mut replayed = 0u64;
        store.scan(from, |rec, size| {
            if rec.topic == ACK_LOG_TOPIC {
                match serde_json::from_slice::<AckRecord>(&rec.body) {
                    Ok(ack) => {
                        state.apply(&ack);
                        replayed += 1;
                    }
                    Err(e) => {
                        tracing::error!(offset = rec.physical_offset, error = %e, "unreadable ack record skipped")
                    }
                }
            } else {
                tx.apply(rec, size, timing);
            }
        })?;
        for ((_, topic, q), st) in state.queues.iter_mut() {
            st.clamp(store.min_queue_offset(topic, *q), store.max_queue_offset(topic, *q));
        }
        tracing::info!(
            queues = state.queues.len(),
            replayed_acks = replayed,
            open_transactions = tx.pending.len(),
            "state loaded"
        );
        let broker = Arc::new(Broker {
            cfg,
            store,
            topics,
            consume: Mutex::new(state),
            tx: Mutex::new(tx),
            metrics: Metrics::default(),
            rotate: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            snapshotter: Mutex::new(None),
        });
        let b = broker.clone();
        let handle = std::thread::Builder::new().name("consumer-snapshot".into()).spawn(move || b.snapshot_loop())?;
        *broker.snapshotter.lock() = Some(handle);
        Ok(broker)
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The storage engine.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The topic registry.
    pub fn topics(&self) -> &TopicManager {
        &self.topics
    }

    /// The topic, created with the defaults if it is unknown and `auto_create_topic` is on.
    /// Errors: [`BrokerError::TopicNotFound`], or an illegal/reserved name.
    pub fn topic_or_create(&self, name: &str) -> Result<TopicConfig, BrokerError> {
        if let Some(t) = self.topics.get(name) {
            return Ok(t);
        }
        topics::validate_name(name)?;
        if !self.cfg.auto_create_topic || topics::is_system(name) {
            return Err(BrokerError::TopicNotFound(name.to_string()));
        }
        let cfg = TopicConfig {
            name: name.to_string(),
            queue_count: self.cfg.default_queue_count,
            permission: Permission::ReadWrite,
            message_types: vec![MessageType::Normal, MessageType::Fifo, MessageType::Delay, MessageType::Transaction],
        };
        if self.topics.upsert(cfg.clone())? {
            tracing::info!(topic = name, queues = cfg.queue_count, "topic auto-created");
        }
        Ok(self.topics.get(name).unwrap_or(cfg))
    }

    /// Stores a message (`rec` with topic, queue id, properties and body set) of type `ty`.
    /// Errors: unknown topic, topic not writable, queue out of range, type not accepted, store errors.
    pub fn send(&self, rec: &mut Record, ty: MessageType) -> Result<SendOk, BrokerError> {
        self.check_send(rec, ty)?;
        let r = self.store.append(rec, true)?;
        Ok(SendOk { queue_id: rec.queue_id, queue_offset: r.queue_offset, end: r.end })
    }

    /// The checks every send makes: topic exists (or is auto-created), writable, queue in range,
    /// message type accepted.
    fn check_send(&self, rec: &Record, ty: MessageType) -> Result<(), BrokerError> {
        let topic = self.topic_or_create(&rec.topic)?;
        if !topic.permission.writable() {
            return Err(BrokerError::Permission(topic.name, "writable"));
        }
        if rec.queue_id >= topic.queue_count {
            return Err(BrokerError::QueueOutOfRange {
                topic: topic.name,
                queue: rec.queue_id,
                count: topic.queue_count,
            });
        }
        if !topic.message_types.contains(&ty) {
            return Err(BrokerError::TypeNotAccepted { topic: topic.name, ty, accepts: topic.message_types });
        }
        Ok(())
    }

    /// Stores a TRANSACTION message as a half message (invisible to consumers) and returns where
    /// it went with its transaction id. `client_id` is the producer's (`x-mq-client-id`), asked
    /// first when the transaction is checked back. Errors: as [`Broker::send`].
    pub fn send_half(&self, rec: &mut Record, client_id: &str) -> Result<(SendOk, String), BrokerError> {
        self.check_send(rec, MessageType::Transaction)?;
        let (topic, queue_id) = (std::mem::replace(&mut rec.topic, txn::HALF_TOPIC.into()), rec.queue_id);
        rec.properties.insert(txn::PROP_REAL_TOPIC.into(), topic);
        rec.properties.insert(txn::PROP_REAL_QID.into(), queue_id.to_string());
        rec.properties.insert(txn::PROP_TX_CLIENT.into(), client_id.to_string());
        rec.queue_id = 0;
        let mut tx = self.tx.lock();
        let r = self.store.append(rec, true)?;
        tx.add_half(rec, r.size, check_timing(&self.cfg));
        Ok((SendOk { queue_id, queue_offset: r.queue_offset, end: r.end }, txn::transaction_id(r.queue_offset)))
    }

    /// Ends a transaction: `Some(Commit)` writes the real message and an op record, `Some(Rollback)`
    /// only the op record, `None` (unknown) leaves it open for the next check-back. A repeated
    /// COMMIT or ROLLBACK is answered without writing anything. Returns the CommitLog offset to
    /// await with [`Broker::wait_durable`], if anything was written. `reason` (`client` or
    /// `check`) is kept in the op record. Errors: [`BrokerError::InvalidTransaction`] for an
    /// unknown or mismatched transaction, [`BrokerError::TransactionConflict`] for an end that
    /// contradicts an earlier one, store errors.
    pub fn end_transaction(
        &self,
        topic: &str,
        message_id: &str,
        transaction_id: &str,
        resolution: Option<Resolution>,
        reason: &str,
    ) -> Result<Option<u64>, BrokerError> {
        let half = txn::parse_transaction_id(transaction_id)
            .ok_or_else(|| BrokerError::InvalidTransaction(format!("malformed transaction id {transaction_id:?}")))?;
        let mut tx = self.tx.lock();
        if let Some(done) = tx.resolved.get(&half).copied() {
            return match resolution {
                Some(r) if r != done => Err(BrokerError::TransactionConflict(format!(
                    "transaction {transaction_id} already ended with {done:?}; {r:?} refused"
                ))),
                _ => Ok(None),
            };
        }
        let p = tx
            .pending
            .get(&half)
            .cloned()
            .ok_or_else(|| BrokerError::InvalidTransaction(format!("no open transaction {transaction_id}")))?;
        let stored = self.store.read_record(p.physical_offset, p.size)?;
        if stored.properties.get(PROP_MSG_ID).map(String::as_str) != Some(message_id) || p.topic != topic {
            return Err(BrokerError::InvalidTransaction(format!(
                "transaction {transaction_id} does not belong to message {message_id} of topic {topic}"
            )));
        }
        let Some(r) = resolution else { return Ok(None) };
        Ok(Some(self.finish_transaction(&mut tx, half, &stored, r, reason)?))
    }

    /// Writes the outcome of an open transaction (the real message for a commit, then the op
    /// record) and records it. The caller holds the transaction lock.
    fn finish_transaction(
        &self,
        tx: &mut TxState,
        half: u64,
        stored: &Record,
        r: Resolution,
        reason: &str,
    ) -> Result<u64, BrokerError> {
        if r == Resolution::Commit {
            self.store.append(&mut txn::real_message(stored), true)?;
        }
        let end = self.append_op(&OpRecord { half, resolution: Some(r), checks: None, reason: reason.into() })?;
        tx.resolve(half, r);
        let counter = if r == Resolution::Commit { &self.metrics.tx.commits } else { &self.metrics.tx.rollbacks };
        counter.inc();
        Ok(end)
    }

    fn append_op(&self, op: &OpRecord) -> Result<u64, BrokerError> {
        let mut rec = Record {
            topic: txn::OP_TOPIC.into(),
            born_timestamp: now_ms(),
            body: serde_json::to_vec(op).expect("plain data serialises"),
            ..Default::default()
        };
        Ok(self.store.append(&mut rec, true)?.end)
    }

    /// Runs the check-backs due at `now` (ms since the epoch), at most `max`: each goes to
    /// `deliver`. A check that was sent, or that found no live producer (as in RocketMQ, so an
    /// abandoned transaction still ends), is counted in the CommitLog and asked again after
    /// `transaction_check_interval_ms`; a deferred one (rate limit) stays due and is not counted.
    /// A transaction already checked `transaction_check_max` times is rolled back instead, logged
    /// and counted. Returns the number of checks sent.
    pub fn run_checks(&self, now: u64, max: usize, mut deliver: impl FnMut(&Check) -> CheckOutcome) -> usize {
        let mut tx = self.tx.lock();
        let due = tx.due(now, max);
        let mut sent = 0;
        for half in due {
            let p = tx.pending[&half].clone();
            let stored = match self.store.read_record(p.physical_offset, p.size) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(transaction = %txn::transaction_id(half), error = %e, "half message unreadable; not checked");
                    tx.rescheduled(half, p.checks, now + self.cfg.transaction_check_interval_ms);
                    continue;
                }
            };
            if p.checks >= self.cfg.transaction_check_max {
                match self.finish_transaction(&mut tx, half, &stored, Resolution::Rollback, "check-max") {
                    Ok(_) => {
                        self.metrics.tx.check_max_rollbacks.inc();
                        tracing::warn!(transaction = %txn::transaction_id(half), topic = %p.topic, checks = p.checks,
                            "transaction rolled back: no answer after transaction_check_max check-backs");
                    }
                    Err(e) => tracing::error!(error = %e, "rollback after check-max failed"),
                }
                continue;
            }
            let check = Check {
                transaction_id: txn::transaction_id(half),
                client_id: p.client_id.clone(),
                topic: p.topic.clone(),
                message: txn::real_message(&stored),
            };
            let outcome = deliver(&check);
            if outcome == CheckOutcome::Deferred {
                continue;
            }
            let checks = p.checks + 1;
            if let Err(e) =
                self.append_op(&OpRecord { half, resolution: None, checks: Some(checks), reason: String::new() })
            {
                tracing::error!(error = %e, "recording a check-back failed");
                continue;
            }
            tx.rescheduled(half, checks, now + self.cfg.transaction_check_interval_ms);
            if p.checks > 0 {
                self.metrics.tx.check_timeouts.inc();
            }
            if outcome == CheckOutcome::Sent {
                self.metrics.tx.checks_sent.inc();
                sent += 1;
            }
        }
        sent
    }

    /// Open transactions (half queue offset and state), oldest first.
    pub fn open_transactions(&self) -> Vec<(u64, txn::Pending)> {
        self.tx.lock().pending.iter().map(|(h, p)| (*h, p.clone())).collect()
    }

    /// Number of open transactions.
    pub fn open_transaction_count(&self) -> usize {
        self.tx.lock().pending.len()
    }

    /// The broker's metrics (transaction counters among them).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Waits until CommitLog offset `end` is durable per the flush policy (see [`Store::wait_durable`]).
    pub async fn wait_durable(&self, end: u64) -> Result<(), BrokerError> {
        Ok(self.store.wait_durable(end).await?)
    }

    /// Hands out up to `batch` messages of `topic` to consumer group `group`: first messages whose
    /// invisible time has passed (attempt + 1), then messages never handed out. Never blocks;
    /// long polling is the caller's loop. Errors: unknown or unreadable topic, store errors.
    pub fn receive(
        &self,
        group: &str,
        topic: &str,
        filter: &TagFilter,
        batch: usize,
        invisible_ms: u64,
    ) -> Result<Vec<Delivery>, BrokerError> {
        let cfg = self.topics.get(topic).ok_or_else(|| BrokerError::TopicNotFound(topic.to_string()))?;
        if !cfg.permission.readable() {
            return Err(BrokerError::Permission(cfg.name, "readable"));
        }
        let now = now_ms();
        let visible_at_ms = now + invisible_ms;
        let start = self.rotate.fetch_add(1, Ordering::Relaxed);
        let mut picked: Vec<(u32, u64, CqEntry, Inflight)> = Vec::new();
        {
            let mut state = self.consume.lock();
            for i in 0..cfg.queue_count as usize {
                if picked.len() >= batch {
                    break;
                }
                let q = ((start + i) % cfg.queue_count as usize) as u32;
                let Some(cq) = self.store.consume_queue(topic, q) else {
                    continue;
                };
                let st = state
                    .queues
                    .entry((group.to_string(), topic.to_string(), q))
                    .or_insert_with(|| QueueState::starting_at(cq.min_offset()));
                st.clamp(cq.min_offset(), cq.max_offset());
                // Redeliver what became visible again.
                let due: Vec<u64> = st
                    .inflight
                    .iter()
                    .filter(|(_, f)| f.visible_at_ms <= now)
                    .map(|(o, _)| *o)
                    .take(batch - picked.len())
                    .collect();
                for off in due {
                    match cq.get(off) {
                        Some(e) if filter.matches_hash(e.tag_hash) => {
                            let f = st.inflight.get_mut(&off).expect("listed above");
                            *f = Inflight { pop_id: rand::random(), attempt: f.attempt + 1, visible_at_ms };
                            picked.push((q, off, e, *f));
                        }
                        _ => st.mark_acked(off),
                    }
                }
                let mut scanned = 0;
                while picked.len() < batch && st.next_offset < cq.max_offset() && scanned < SCAN_LIMIT {
                    let off = st.next_offset;
                    st.next_offset += 1;
                    scanned += 1;
                    if st.acked.contains(&off) {
                        continue;
                    }
                    match cq.get(off) {
                        Some(e) if filter.matches_hash(e.tag_hash) => {
                            let f = Inflight { pop_id: rand::random(), attempt: 1, visible_at_ms };
                            st.inflight.insert(off, f);
                            picked.push((q, off, e, f));
                        }
                        // Filtered out for this group, or a hole left by a corrupt record.
                        _ => st.mark_acked(off),
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(picked.len());
        let mut skip = Vec::new();
        for (q, off, e, f) in picked {
            match self.store.read(&e) {
                Ok(record) if filter.matches(record.properties.get(PROP_TAGS).map(String::as_str)) => {
                    let handle = ReceiptHandle {
                        queue_id: q,
                        queue_offset: off,
                        pop_id: f.pop_id,
                        broker_name: self.cfg.broker_name.clone(),
                    };
                    out.push(Delivery { record, receipt_handle: handle.encode(), attempt: f.attempt, invisible_ms });
                }
                Ok(_) => skip.push((q, off)), // tag hash collision
                Err(e) => {
                    tracing::error!(topic, queue = q, offset = off, error = %e, "message unreadable; skipped");
                    skip.push((q, off));
                }
            }
        }
        if !skip.is_empty() {
            let mut state = self.consume.lock();
            for (q, off) in skip {
                if let Some(st) = state.queues.get_mut(&(group.to_string(), topic.to_string(), q)) {
                    st.mark_acked(off);
                }
            }
        }
        Ok(out)
    }

    /// Checks a receipt handle against the in-flight delivery it names.
    fn check_handle<'a>(
        state: &'a mut ConsumeState,
        group: &str,
        topic: &str,
        handle: &str,
        now: u64,
    ) -> Result<(ReceiptHandle, &'a mut Inflight), BrokerError> {
        let h = ReceiptHandle::decode(handle).ok_or_else(|| BrokerError::InvalidHandle("malformed".into()))?;
        let st = state.queues.get_mut(&(group.to_string(), topic.to_string(), h.queue_id)).ok_or_else(|| {
            BrokerError::InvalidHandle(format!(
                "group {group} has received nothing from topic {topic} queue {}",
                h.queue_id
            ))
        })?;
        let f = st
            .inflight
            .get_mut(&h.queue_offset)
            .ok_or_else(|| BrokerError::InvalidHandle("message already acknowledged, or never delivered".into()))?;
        if f.pop_id != h.pop_id {
            return Err(BrokerError::InvalidHandle(
                "stale: the message was delivered again or its invisible time changed".into(),
            ));
        }
        if f.visible_at_ms <= now {
            return Err(BrokerError::InvalidHandle("expired: the invisible time has passed".into()));
        }
        Ok((h, f))
    }

    /// Acknowledges deliveries by receipt handle. Returns one result per handle and, if any
    /// succeeded, the CommitLog offset of the ack record to await with [`Broker::wait_durable`].
    pub fn ack(&self, group: &str, topic: &str, handles: &[&str]) -> (Vec<Result<(), BrokerError>>, Option<u64>) {
        let now = now_ms();
        let mut state = self.consume.lock();
        let mut results = Vec::with_capacity(handles.len());
        let mut offsets = Vec::new();
        for h in handles {
            match Self::check_handle(&mut state, group, topic, h, now) {
                Ok((h, _)) if offsets.contains(&(h.queue_id, h.queue_offset)) => {
                    results.push(Err(BrokerError::InvalidHandle("acknowledged twice in one request".into())))
                }
                Ok((h, _)) => {
                    offsets.push((h.queue_id, h.queue_offset));
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if offsets.is_empty() {
            return (results, None);
        }
        let ack = AckRecord { group: group.to_string(), topic: topic.to_string(), offsets };
        let mut rec = Record {
            topic: ACK_LOG_TOPIC.to_string(),
            sys_flag: SYS_FLAG_NO_DISPATCH,
            born_timestamp: now,
            body: serde_json::to_vec(&ack).expect("plain data serialises"),
            ..Default::default()
        };
        // Persist first, then apply: an ack the log does not hold is never reported as done.
        match self.store.append(&mut rec, false) {
            Ok(r) => {
                state.apply(&ack);
                (results, Some(r.end))
            }
            Err(e) => {
                let msg = e.to_string();
                let results = results
                    .into_iter()
                    .map(|r| {
                        r.and_then(|_| Err(BrokerError::Store(StoreError::Io(std::io::Error::other(msg.clone())))))
                    })
                    .collect();
                (results, None)
            }
        }
    }

    /// Gives an in-flight delivery a new invisible time of `invisible_ms` from now and returns its
    /// new receipt handle (the old one becomes stale). Errors: [`BrokerError::InvalidHandle`].
    pub fn change_invisible(
        &self,
        group: &str,
        topic: &str,
        handle: &str,
        invisible_ms: u64,
    ) -> Result<String, BrokerError> {
        let now = now_ms();
        let mut state = self.consume.lock();
        let (mut h, f) = Self::check_handle(&mut state, group, topic, handle, now)?;
        f.pop_id = rand::random();
        f.visible_at_ms = now + invisible_ms;
        h.pop_id = f.pop_id;
        Ok(h.encode())
    }

    /// Per-queue progress of a group on a topic: (queue id, ack offset, max offset, backlog).
    pub fn group_progress(&self, group: &str, topic: &str) -> Vec<(u32, u64, u64, u64)> {
        let state = self.consume.lock();
        let Some(cfg) = self.topics.get(topic) else {
            return Vec::new();
        };
        (0..cfg.queue_count)
            .map(|q| {
                let max = self.store.max_queue_offset(topic, q);
                let st = state.queues.get(&(group.to_string(), topic.to_string(), q));
                let ack = st.map(|s| s.ack_offset).unwrap_or_else(|| self.store.min_queue_offset(topic, q));
                (q, ack, max, st.map(|s| s.backlog(max)).unwrap_or(max - ack))
            })
            .collect()
    }

    /// Writes the state snapshot (consumer progress and open transactions), after flushing the
    /// CommitLog it refers to.
    /// Errors: I/O.
    pub fn snapshot(&self) -> std::io::Result<()> {
        let snap = {
            let consume = self.consume.lock();
            let tx = self.tx.lock();
            // Ack, half and op records are appended under these locks, so every one below this
            // offset is reflected in the copies.
            StateFile {
                commitlog_offset: self.store.commitlog_end(),
                queues: consume.entries(),
                transactions: tx.clone(),
            }
        };
        self.store.flush_all()?;
        write_atomic(&self.cfg.data_dir.join("config").join("state.json"), &snap)
    }

    fn snapshot_loop(&self) {
        let interval = Duration::from_millis(self.cfg.consumer_snapshot_interval_ms.max(100));
        let tick = Duration::from_millis(100);
        let mut waited = Duration::ZERO;
        while !self.stopping.load(Ordering::Acquire) {
            std::thread::sleep(tick);
            waited += tick;
            if waited >= interval {
                waited = Duration::ZERO;
                if let Err(e) = self.snapshot() {
                    tracing::error!(error = %e, "consumer progress snapshot failed");
                }
            }
        }
    }

    /// Stops the engine: final snapshot, store flush and checkpoint. Idempotent. Errors: I/O.
    pub fn shutdown(&self) -> std::io::Result<()> {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(h) = self.snapshotter.lock().take() {
            let _ = h.join();
        }
        self.store.shutdown()?;
        self.snapshot()
    }
}

fn check_timing(cfg: &Config) -> CheckTiming {
    CheckTiming { timeout_ms: cfg.transaction_timeout_ms, interval_ms: cfg.transaction_check_interval_ms }
}
