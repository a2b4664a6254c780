//! Consumption: receive (pop) with retries, FIFO order and dead letters; ack; invisible time;
//! pull and offsets; consumer lag.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::{MutexGuard, RwLockWriteGuard};

use super::{Broker, BrokerError, Delivery};
use crate::consume::filter::Filter;
use crate::consume::groups::{self, ConsumeType, GroupConfig, GroupError};
use crate::consume::handle::ReceiptHandle;
use crate::consume::state::{AckRecord, Inflight, QueueKey, QueueState, ACK_LOG_TOPIC};
use crate::store::consume_queue::{message_group_hash, CqEntry};
use crate::store::files::is_no_space;
use crate::store::record::Record;
use crate::store::{now_ms, RecordClass, StoreError, PROP_MESSAGE_GROUP, SYS_FLAG_NO_DISPATCH};
use crate::topics::{MessageType, Permission, TopicConfig, TopicError};

/// Most ConsumeQueue entries one receive call looks at per queue (bounds lock hold time when a
/// filter skips many messages).
const SCAN_LIMIT: usize = 4096;
/// FIFO groups: most messages per queue held back behind an earlier message of their group.
const FIFO_MAX_HELD: usize = 4096;
/// Property of a dead-lettered message: the topic it was consumed from.
pub const PROP_DLQ_ORIGIN_TOPIC: &str = "__DLQ_ORIGIN_TOPIC";
/// Property of a dead-lettered message: deliveries it had before it was dead-lettered.
pub const PROP_DLQ_ATTEMPTS: &str = "__DLQ_ATTEMPTS";

/// Property of a dead-lettered message whose largest properties had to be dropped: their names.
pub const PROP_DLQ_DROPPED: &str = "__DLQ_DROPPED_PROPERTIES";

/// Removes every property of `rec` larger than 1 KiB (name and value) and records their names in
/// [`PROP_DLQ_DROPPED`] (at most 1 KiB of them); returns that list.
fn drop_large_properties(rec: &mut Record) -> String {
    const KEEP: usize = 1024;
    let mut names = String::new();
    rec.properties.retain(|k, v| {
        let keep = k.len() + v.len() <= KEEP;
        if !keep && names.len() + k.len() < KEEP {
            names.push_str(if names.is_empty() { "" } else { "," });
            names.push_str(k);
        }
        keep
    });
    rec.properties.insert(PROP_DLQ_DROPPED.into(), names.clone());
    names
}

/// Logs a ConsumeQueue entry whose message cannot be read: at debug when retention deleted it
/// between the lookup and the read (it was going anyway), as an error when it is corrupt.
fn unreadable(topic: &str, q: u32, off: u64, e: &StoreError) {
    if matches!(e, StoreError::NotFound(_)) {
        tracing::debug!(topic, queue = q, offset = off, error = %e, "message deleted by retention while read; skipped");
    } else {
        tracing::error!(topic, queue = q, offset = off, error = %e, "message unreadable; skipped");
    }
}

/// Who a receive or ack is for: the consumer group and, for a broadcast group, the client.
#[derive(Debug, Clone, Copy)]
pub struct Consumer<'a> {
    /// Consumer group.
    pub group: &'a str,
    /// The client's id (`x-mq-client-id`); a broadcast group keeps progress per client id.
    pub client_id: &'a str,
}

/// A message found by [`Broker::pull`].
pub type Pulled = (Vec<Record>, u64);

fn group_hash(rec: &Record) -> u64 {
    rec.properties.get(PROP_MESSAGE_GROUP).map_or(0, |g| message_group_hash(g))
}

impl Broker {
    /// The group's configuration, created with the broker's defaults (and persisted) if it is
    /// unknown and `auto_create_group` is on (RocketMQ `autoCreateSubscriptionGroup`).
    /// Errors: [`BrokerError::GroupNotFound`], an illegal name, I/O.
    pub fn group_or_create(&self, name: &str) -> Result<GroupConfig, BrokerError> {
        if let Some(g) = self.groups.get(name) {
            return Ok(g);
        }
        if !self.cfg.auto_create_group {
            return Err(BrokerError::GroupNotFound(name.to_string()));
        }
        let g = self.cfg.default_group(name);
        match self.groups.upsert(g.clone()) {
            Ok(_) => tracing::info!(group = name, "consumer group auto-created"),
            Err(GroupError::Io { err, .. }) if is_no_space(&err) => {
                self.groups.registry().insert_unpersisted(g.clone());
                tracing::warn!(
                    group = name,
                    "consumer group auto-created in memory: the disk is full; written once there is space"
                );
            }
            Err(e) => return Err(e.into()),
        }
        Ok(g)
    }

    /// The name progress is kept under: the group, or `group@client` for a broadcast group.
    fn progress_name(g: &GroupConfig, c: Consumer) -> Result<String, BrokerError> {
        if !g.broadcast {
            return Ok(g.name.clone());
        }
        if c.client_id.is_empty() {
            return Err(BrokerError::ClientIdRequired);
        }
        Ok(format!("{}@{}", g.name, c.client_id))
    }

    fn readable_topic(&self, topic: &str) -> Result<TopicConfig, BrokerError> {
        let cfg = self.topics.get(topic).ok_or_else(|| BrokerError::TopicNotFound(topic.to_string()))?;
        if !cfg.permission.readable() {
            return Err(BrokerError::Permission(cfg.name, "readable"));
        }
        Ok(cfg)
    }

    /// What every receive checks first (the gRPC layer too, before it starts a long poll): this
    /// broker is not a slave, and the topic exists and is readable. Errors:
    /// [`StoreError::ReadOnly`] on a slave, [`BrokerError::TopicNotFound`],
    /// [`BrokerError::Permission`].
    pub fn check_receivable(&self, topic: &str) -> Result<TopicConfig, BrokerError> {
        if self.is_slave() {
            return Err(StoreError::ReadOnly.into());
        }
        self.readable_topic(topic)
    }

    /// Hands out up to `batch` messages of `topic` to a consumer: first messages whose invisible
    /// time has passed (attempt + 1; after the group's `max_delivery_attempts` they go to its DLQ
    /// instead), then messages never handed out. In a FIFO group a message is handed out only
    /// when every earlier message of its message group is acked or dead-lettered. Never blocks;
    /// long polling is the caller's loop. Errors: unknown or unreadable topic or group, store
    /// errors.
    pub fn receive(
        &self,
        c: Consumer,
        topic: &str,
        filter: &Filter,
        batch: usize,
        invisible_ms: u64,
    ) -> Result<Vec<Delivery>, BrokerError> {
        let cfg = self.check_receivable(topic)?;
        let g = self.group_or_create(c.group)?;
        let name = Self::progress_name(&g, c)?;
        let fifo = g.consume_type == ConsumeType::Fifo;
        let now = now_ms();
        let visible_at_ms = now + invisible_ms;
        let start = self.rotate.fetch_add(1, Ordering::Relaxed);
        let mut picked: Vec<(u32, u64, CqEntry, Inflight)> = Vec::new();
        let mut dead: Vec<(u32, u64, CqEntry, u32)> = Vec::new();
        for i in 0..cfg.queue_count as usize {
            if picked.len() >= batch {
                break;
            }
            let q = ((start + i) % cfg.queue_count as usize) as u32;
            let key = (name.clone(), topic.to_string(), q);
            let Some(cq) = self.store.consume_queue(topic, q) else {
                // An empty queue: a broadcast client still starts here, before its first message.
                self.with_queue(&key, || QueueState::starting_at(0), |_| ());
                continue;
            };
            let (min, max) = (cq.min_offset(), cq.max_offset());
            // A new broadcast client starts at the end, a new group at the oldest message.
            let new = || QueueState::starting_at(if g.broadcast { max } else { min });
            self.with_queue(&key, new, |st| {
                st.clamp(min, max);
                // Message groups with an earlier message still in flight (FIFO).
                let mut busy: HashSet<u64> = HashSet::new();
                let mut due = Vec::new();
                for (off, f) in st.inflight() {
                    if fifo && f.group != 0 && !busy.insert(f.group) {
                        continue;
                    }
                    if f.visible_at_ms <= now && due.len() + picked.len() < batch {
                        due.push(*off);
                    }
                }
                for off in due {
                    let f = st.inflight()[&off];
                    match cq.get(off) {
                        Some(e) if !filter.matches_hash(e.tag_hash) => st.mark_acked(off),
                        None => st.mark_acked(off), // a hole left by a corrupt record
                        Some(e) if f.attempt >= g.max_delivery_attempts => {
                            // Kept invisible while it is dead-lettered below.
                            st.set_inflight(off, Inflight { visible_at_ms, ..f });
                            dead.push((q, off, e, f.attempt));
                        }
                        Some(e) => {
                            let f = Inflight { pop_id: rand::random(), attempt: f.attempt + 1, visible_at_ms, ..f };
                            st.set_inflight(off, f);
                            picked.push((q, off, e, f));
                        }
                    }
                }
                let mut scanned = 0;
                while picked.len() < batch && st.next_offset() < max && scanned < SCAN_LIMIT {
                    if fifo && st.inflight().len() >= FIFO_MAX_HELD {
                        break;
                    }
                    let off = st.take_next();
                    scanned += 1;
                    if st.is_acked(off) {
                        continue;
                    }
                    let e = match cq.get(off) {
                        Some(e) if filter.matches_hash(e.tag_hash) => e,
                        // Filtered out for this group, or a hole left by a corrupt record.
                        _ => {
                            st.mark_acked(off);
                            continue;
                        }
                    };
                    let mut f = Inflight { pop_id: rand::random(), attempt: 1, visible_at_ms, group: 0 };
                    if fifo {
                        // 8 bytes of the ConsumeQueue's extension; the message itself only for
                        // entries dispatched before the extension existed.
                        f.group = cq
                            .message_group(off)
                            .unwrap_or_else(|| self.store.read(&e).map(|r| group_hash(&r)).unwrap_or(0));
                        if f.group != 0 && !busy.insert(f.group) {
                            st.set_inflight(off, Inflight { attempt: 0, visible_at_ms: 0, ..f });
                            continue;
                        }
                    }
                    st.set_inflight(off, f);
                    picked.push((q, off, e, f));
                }
            });
        }
        for (q, off, e, attempts) in dead {
            if let Err(err) = self.dead_letter(&g, &name, topic, q, off, &e, attempts) {
                tracing::error!(group = %g.name, topic, queue = q, offset = off, error = %err, "dead-lettering failed; retried later");
            }
        }
        let mut out = Vec::with_capacity(picked.len());
        let mut skip = Vec::new();
        for (q, off, e, f) in picked {
            match self.store.read(&e) {
                Ok(record) if filter.matches(&record.properties) => {
                    let handle = ReceiptHandle {
                        queue_id: q,
                        queue_offset: off,
                        pop_id: f.pop_id,
                        broker_name: self.cfg.broker_name.clone(),
                    };
                    out.push(Delivery {
                        record,
                        receipt_handle: handle.encode(),
                        attempt: f.attempt,
                        invisible_ms,
                        visible_at_ms: f.visible_at_ms,
                    });
                }
                Ok(_) => skip.push((q, off)), // tag hash collision, or the SQL filter said no
                Err(e) => {
                    unreadable(topic, q, off, &e);
                    skip.push((q, off));
                }
            }
        }
        for (q, off) in skip {
            if let Some(mut st) = self.consume.read().lock(&(name.clone(), topic.to_string(), q)) {
                st.mark_acked(off);
            }
        }
        self.metrics.traffic.delivered(out.iter().map(|d| (d.record.topic.as_str(), d.record.body.len())));
        Ok(out)
    }

    /// Dead-letters every in-flight message whose invisible time ran out after its group's last
    /// delivery attempt, whether or not anyone still receives from its topic (RocketMQ's
    /// `PopReviveService` role). Returns how many were moved.
    pub fn revive(&self, now: u64) -> usize {
        let mut dead = Vec::new();
        self.consume.read().for_each(|(progress, topic, q), st| {
            let base = progress.split('@').next().unwrap_or(progress);
            let max = self.groups.get(base).map(|g| g.max_delivery_attempts).unwrap_or(self.cfg.max_delivery_attempts);
            let expired: Vec<(u64, Inflight)> = st
                .inflight()
                .iter()
                .filter(|(_, f)| f.attempt >= max && f.visible_at_ms <= now)
                .map(|(o, f)| (*o, *f))
                .collect();
            for (off, f) in expired {
                // Not handed out while it is moved.
                st.set_inflight(off, Inflight { visible_at_ms: now + 60_000, ..f });
                dead.push((base.to_string(), progress.clone(), topic.clone(), *q, off, f.attempt));
            }
        });
        let mut moved = 0;
        for (group, progress, topic, q, off, attempts) in dead {
            let g = self.groups.get(&group).unwrap_or_else(|| self.cfg.default_group(&group));
            let Some(e) = self.store.consume_queue(&topic, q).and_then(|cq| cq.get(off)) else { continue };
            match self.dead_letter(&g, &progress, &topic, q, off, &e, attempts) {
                Ok(_) => moved += 1,
                Err(err) => {
                    tracing::error!(group, topic, queue = q, offset = off, error = %err, "dead-lettering failed")
                }
            }
        }
        moved
    }

    /// Copies a message to the group's DLQ (`%DLQ%<group>`, created on first use with one queue,
    /// readable and writable) keeping its id, body and properties, then acks it for the group.
    #[allow(clippy::too_many_arguments)]
    fn dead_letter(
        &self,
        g: &GroupConfig,
        progress: &str,
        topic: &str,
        q: u32,
        off: u64,
        e: &CqEntry,
        attempts: u32,
    ) -> Result<u64, BrokerError> {
        let dlq = g.dlq_topic();
        self.group_topic_or_create(&dlq)?;
        let mut rec = self.store.read(e)?;
        rec.topic = dlq;
        rec.queue_id = 0;
        rec.properties.entry(PROP_DLQ_ORIGIN_TOPIC.into()).or_insert_with(|| topic.to_string());
        rec.properties.insert(PROP_DLQ_ATTEMPTS.into(), attempts.to_string());
        match self.store.append(&mut rec, true, RecordClass::Control) {
            Err(StoreError::Encode(why)) => {
                // Stored before today's limits: never stuck, the copy goes without what overflows.
                let dropped = drop_large_properties(&mut rec);
                tracing::warn!(group = %g.name, topic, queue = q, offset = off, error = %why, dropped = %dropped,
                    "DLQ copy too large to encode; dead-lettered without its largest properties");
                self.store.append(&mut rec, true, RecordClass::Control)?;
            }
            r => {
                r?;
            }
        }
        let end = self.persist_ack(progress, topic, vec![(q, off)], vec![])?;
        tracing::info!(group = %g.name, topic, queue = q, offset = off, attempts, "message dead-lettered");
        self.metrics.consume.dead_lettered.inc();
        self.wake_consumers();
        Ok(end)
    }

    /// A group's retry or DLQ topic (`%RETRY%<group>`, `%DLQ%<group>`), created on first use with
    /// one queue, readable and writable, accepting every type (RocketMQ creates both with one
    /// queue). On a full disk it is kept in memory and written once there is space. Errors: an
    /// illegal name, I/O other than a full disk.
    pub(crate) fn group_topic_or_create(&self, name: &str) -> Result<TopicConfig, BrokerError> {
        if let Some(t) = self.topics.get(name) {
            return Ok(t);
        }
        let cfg = TopicConfig {
            name: name.to_string(),
            queue_count: 1,
            permission: Permission::ReadWrite,
            message_types: MessageType::ALL.to_vec(),
        };
        match self.topics.upsert_any(cfg.clone()) {
            Ok(_) => tracing::info!(topic = name, "group topic created"),
            Err(TopicError::Io { err, .. }) if is_no_space(&err) => {
                tracing::warn!(
                    topic = name,
                    "group topic created in memory: the disk is full; written once there is space"
                );
                self.topics.registry().insert_unpersisted(cfg.clone());
            }
            Err(e) => return Err(e.into()),
        }
        Ok(cfg)
    }

    /// Runs `f` on the progress of `key` (made with `new` if there is none) while holding the
    /// consume read lock and that queue's mutex. Call it holding no consume lock: parking_lot's
    /// read lock is not reentrant once a checkpoint waits for the write lock.
    fn with_queue<R>(
        &self,
        key: &QueueKey,
        new: impl FnOnce() -> QueueState,
        f: impl FnOnce(&mut QueueState) -> R,
    ) -> R {
        let state = self.consume.read();
        if let Some(mut st) = state.lock(key) {
            return f(&mut st);
        }
        drop(state);
        let mut state = self.consume.write();
        state.get_or_insert_with(key.clone(), new);
        // Downgraded, not dropped: a topic deletion cannot remove the queue in between.
        let state = RwLockWriteGuard::downgrade(state);
        let mut st = state.lock(key).expect("inserted under the write lock");
        f(&mut st)
    }

    /// Appends an ack record for one queue of `group` (its offsets acked, or its position set)
    /// and applies it, under that queue's lock (see [`Broker::append_ack`]). Returns the record's
    /// CommitLog end. Errors: store errors; nothing is applied then.
    fn persist_ack(
        &self,
        group: &str,
        topic: &str,
        offsets: Vec<(u32, u64)>,
        set: Vec<(u32, u64)>,
    ) -> Result<u64, BrokerError> {
        let ack = AckRecord { group: group.to_string(), topic: topic.to_string(), offsets, set };
        let q = ack.offsets.iter().chain(&ack.set).map(|(q, _)| *q).next().expect("one queue");
        debug_assert!(ack.offsets.iter().chain(&ack.set).all(|(aq, _)| *aq == q), "one queue per call");
        self.with_queue(
            &(ack.group.clone(), ack.topic.clone(), q),
            || QueueState::starting_at(0),
            |st| {
                let end = self.append_ack(&ack)?;
                st.apply_ack(q, &ack);
                Ok(end)
            },
        )
    }

    /// Appends an ack record; the caller holds the consume read lock and the mutex of every queue
    /// it names, and applies it to them once it is appended (an ack the log does not hold is
    /// never reported as done, and a checkpoint sees the record and its effect or neither).
    /// Returns its CommitLog end. Errors: store errors.
    fn append_ack(&self, ack: &AckRecord) -> Result<u64, BrokerError> {
        let mut rec = Record {
            topic: ACK_LOG_TOPIC.to_string(),
            sys_flag: SYS_FLAG_NO_DISPATCH,
            born_timestamp: now_ms(),
            body: serde_json::to_vec(ack).expect("plain data serialises"),
            ..Default::default()
        };
        Ok(self.store.append(&mut rec, false, RecordClass::Control)?.end)
    }

    /// Wakes long polls: a FIFO ack, a nack to 0, a dead letter or an offset reset may have made a
    /// message available.
    fn wake_consumers(&self) {
        self.wakeups.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes when a message may have become available other than by a new message (see
    /// `wake_consumers`): long polls wait on it besides the dispatcher.
    pub fn subscribe_wakeups(&self) -> tokio::sync::watch::Receiver<u64> {
        self.wakeups.subscribe()
    }

    /// Decodes a receipt handle. Errors: [`BrokerError::InvalidHandle`].
    fn decode_handle(handle: &str) -> Result<ReceiptHandle, BrokerError> {
        ReceiptHandle::decode(handle).ok_or_else(|| BrokerError::InvalidHandle("malformed".into()))
    }

    /// Checks a receipt handle against the in-flight delivery it names; `st` is the progress of
    /// its queue (locked), if the group has any there.
    fn check_handle<'a>(
        st: Option<&'a mut QueueState>,
        progress: &str,
        topic: &str,
        h: &ReceiptHandle,
        now: u64,
    ) -> Result<&'a mut Inflight, BrokerError> {
        let st = st.ok_or_else(|| {
            BrokerError::InvalidHandle(format!(
                "group {progress} has received nothing from topic {topic} queue {}",
                h.queue_id
            ))
        })?;
        let f = st
            .inflight_mut(h.queue_offset)
            .ok_or_else(|| BrokerError::InvalidHandle("message already acknowledged, or never delivered".into()))?;
        if f.pop_id != h.pop_id || f.attempt == 0 {
            return Err(BrokerError::InvalidHandle(
                "stale: the message was delivered again or its invisible time changed".into(),
            ));
        }
        if f.visible_at_ms <= now {
            return Err(BrokerError::InvalidHandle("expired: the invisible time has passed".into()));
        }
        Ok(f)
    }

    /// The receipt handle of the delivery in flight at `queue`/`offset` of `topic` whose
    /// invisible time ends at `visible_at_ms` (ms since the epoch). A Remoting batch ack names
    /// deliveries so (by pop time plus invisible time, not by handle); a delivery handed out
    /// again or given a new invisible time since has another end and is not named. `None`
    /// when no such delivery is in flight.
    pub fn handle_at(&self, c: Consumer, topic: &str, queue: u32, offset: u64, visible_at_ms: u64) -> Option<String> {
        let (_, progress) = self.progress_of(c).ok()?;
        let state = self.consume.read();
        let st = state.lock(&(progress, topic.to_string(), queue))?;
        let f = st.inflight().get(&offset)?;
        (f.visible_at_ms == visible_at_ms && f.attempt > 0).then(|| {
            ReceiptHandle {
                queue_id: queue,
                queue_offset: offset,
                pop_id: f.pop_id,
                broker_name: self.cfg.broker_name.clone(),
            }
            .encode()
        })
    }

    /// The consumer's group config (the defaults if unknown) and its progress name.
    fn progress_of(&self, c: Consumer) -> Result<(GroupConfig, String), BrokerError> {
        let g = self.groups.get(c.group).unwrap_or_else(|| self.cfg.default_group(c.group));
        let name = Self::progress_name(&g, c)?;
        Ok((g, name))
    }

    /// Acknowledges deliveries by receipt handle. Returns one result per handle and, if any
    /// succeeded, the CommitLog end of the ack record to make durable.
    pub(crate) fn ack_now(
        &self,
        c: Consumer,
        topic: &str,
        handles: &[&str],
    ) -> (Vec<Result<(), BrokerError>>, Option<u64>) {
        let (g, progress) = match self.progress_of(c) {
            Ok(p) => p,
            Err(_) => return (handles.iter().map(|_| Err(BrokerError::ClientIdRequired)).collect(), None),
        };
        let now = now_ms();
        let decoded: Vec<_> = handles.iter().map(|h| Self::decode_handle(h)).collect();
        let mut queues: Vec<u32> = decoded.iter().flatten().map(|h| h.queue_id).collect();
        queues.sort_unstable();
        queues.dedup();
        let state = self.consume.read();
        // Locked in queue order, so two acks over the same queues never wait on each other.
        let mut locked: Vec<(u32, MutexGuard<QueueState>)> = queues
            .into_iter()
            .filter_map(|q| state.lock(&(progress.clone(), topic.to_string(), q)).map(|st| (q, st)))
            .collect();
        let mut results = Vec::with_capacity(handles.len());
        let mut offsets = Vec::new();
        for h in decoded {
            let checked = h.and_then(|h| {
                let st = locked.iter_mut().find(|(q, _)| *q == h.queue_id).map(|(_, st)| &mut **st);
                Self::check_handle(st, &progress, topic, &h, now).map(|_| (h.queue_id, h.queue_offset))
            });
            match checked {
                Ok(at) if offsets.contains(&at) => {
                    results.push(Err(BrokerError::InvalidHandle("acknowledged twice in one request".into())))
                }
                Ok(at) => {
                    offsets.push(at);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if offsets.is_empty() {
            return (results, None);
        }
        let ack = AckRecord { group: progress, topic: topic.to_string(), offsets, set: Vec::new() };
        match self.append_ack(&ack) {
            Ok(end) => {
                for (q, st) in &mut locked {
                    st.apply_ack(*q, &ack);
                }
                drop(locked);
                drop(state);
                // Only in a FIFO group can an ack release a message (the next of its group).
                if g.consume_type == ConsumeType::Fifo {
                    self.wake_consumers();
                }
                (results, Some(end))
            }
            Err(e) => {
                // One failed ack record fails every handle it carried.
                let e = Arc::new(e);
                (results.into_iter().map(|r| r.and_then(|_| Err(BrokerError::NotDurable(e.clone())))).collect(), None)
            }
        }
    }

    /// Gives an in-flight delivery a new invisible time of `invisible_ms` from now and returns its
    /// new receipt handle (the old one becomes stale). A nack is this with the retry backoff.
    /// Errors: [`BrokerError::InvalidHandle`].
    pub fn change_invisible(
        &self,
        c: Consumer,
        topic: &str,
        handle: &str,
        invisible_ms: u64,
    ) -> Result<String, BrokerError> {
        let (_, progress) = self.progress_of(c)?;
        let now = now_ms();
        let mut h = Self::decode_handle(handle)?;
        {
            let state = self.consume.read();
            let mut st = state.lock(&(progress.clone(), topic.to_string(), h.queue_id));
            let f = Self::check_handle(st.as_deref_mut(), &progress, topic, &h, now)?;
            f.pop_id = rand::random();
            f.visible_at_ms = now + invisible_ms;
            h.pop_id = f.pop_id;
        }
        if invisible_ms == 0 {
            self.wake_consumers();
        }
        Ok(h.encode())
    }

    /// Sends an in-flight delivery to the group's DLQ now (ForwardMessageToDeadLetterQueue, what
    /// FIFO push consumers do after their local retries). Returns the CommitLog end to make durable.
    /// Errors: [`BrokerError::InvalidHandle`], store errors.
    pub(crate) fn forward_to_dlq_now(&self, c: Consumer, topic: &str, handle: &str) -> Result<u64, BrokerError> {
        let g = self.group_or_create(c.group)?;
        let progress = Self::progress_name(&g, c)?;
        let h = Self::decode_handle(handle)?;
        let attempts = {
            let state = self.consume.read();
            let mut st = state.lock(&(progress.clone(), topic.to_string(), h.queue_id));
            let f = Self::check_handle(st.as_deref_mut(), &progress, topic, &h, now_ms())?;
            // Stale for everyone else while it is copied.
            f.pop_id = rand::random();
            f.attempt
        };
        let e = self
            .store
            .consume_queue(topic, h.queue_id)
            .and_then(|cq| cq.get(h.queue_offset))
            .ok_or_else(|| BrokerError::InvalidHandle("the message is no longer stored".into()))?;
        self.dead_letter(&g, &progress, topic, h.queue_id, h.queue_offset, &e, attempts)
    }

    /// Reads up to `batch` messages of one queue from `offset` on for a pull consumer, without
    /// changing any progress. Returns the messages that pass `filter` and the offset to pull from
    /// next. An offset below the oldest stored message starts there. Errors: unknown or unreadable
    /// topic, [`BrokerError::IllegalOffset`] for an offset past the queue's end or a queue the
    /// topic lacks.
    pub fn pull(&self, topic: &str, q: u32, offset: u64, batch: usize, filter: &Filter) -> Result<Pulled, BrokerError> {
        let max = self.check_queue_offset(self.readable_topic(topic)?, q, offset)?;
        let min = self.store.min_queue_offset(topic, q);
        let Some(cq) = self.store.consume_queue(topic, q) else { return Ok((Vec::new(), offset)) };
        let mut next = offset.max(min);
        let mut out = Vec::new();
        let mut scanned = 0;
        while out.len() < batch && next < max && scanned < SCAN_LIMIT {
            let off = next;
            next += 1;
            scanned += 1;
            let Some(e) = cq.get(off).filter(|e| filter.matches_hash(e.tag_hash)) else { continue };
            match self.store.read(&e) {
                Ok(r) if filter.matches(&r.properties) => out.push(r),
                Ok(_) => {}
                Err(e) => unreadable(topic, q, off, &e),
            }
        }
        self.metrics.traffic.delivered(out.iter().map(|r| (r.topic.as_str(), r.body.len())));
        Ok((out, next))
    }

    /// Checks that the topic has queue `q` and that `offset` is not past its end; returns the
    /// queue's max offset. Errors: [`BrokerError::QueueOutOfRange`], [`BrokerError::IllegalOffset`].
    fn check_queue_offset(&self, cfg: TopicConfig, q: u32, offset: u64) -> Result<u64, BrokerError> {
        if q >= cfg.queue_count {
            return Err(BrokerError::QueueOutOfRange { topic: cfg.name, queue: q, count: cfg.queue_count });
        }
        let max = self.store.max_queue_offset(&cfg.name, q);
        if offset > max {
            return Err(BrokerError::IllegalOffset(format!(
                "offset {offset} is past the end ({max}) of {} queue {q}",
                cfg.name
            )));
        }
        Ok(max)
    }

    /// The group's committed offset on a queue (every message below it is done), if the group
    /// has progress there.
    pub fn committed_offset(&self, group: &str, topic: &str, q: u32) -> Option<u64> {
        self.consume.read().lock(&(group.to_string(), topic.to_string(), q)).map(|s| s.ack_offset())
    }

    /// Sets the group's position on a queue (UpdateOffset; also a reset for pop consumers): every
    /// message below `offset` counts as done, nothing is in flight. Persisted like an ack; returns
    /// the CommitLog end to make durable. Errors: unknown topic or queue,
    /// [`BrokerError::IllegalOffset`] past the queue's end, store errors.
    pub(crate) fn update_offset_now(&self, group: &str, topic: &str, q: u32, offset: u64) -> Result<u64, BrokerError> {
        let cfg = self.topics.get(topic).ok_or_else(|| BrokerError::TopicNotFound(topic.to_string()))?;
        self.check_queue_offset(cfg, q, offset)?;
        let end = self.persist_ack(group, topic, vec![], vec![(q, offset)])?;
        self.wake_consumers();
        Ok(end)
    }

    /// The first queue offset whose message was stored at or after `ts_ms` (the queue's end if
    /// none), by binary search over store timestamps (RocketMQ `getOffsetInQueueByTime`).
    pub fn offset_for_time(&self, topic: &str, q: u32, ts_ms: u64) -> u64 {
        let Some(cq) = self.store.consume_queue(topic, q) else { return 0 };
        let (mut lo, mut hi) = (cq.min_offset(), cq.max_offset());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let stored = cq.get(mid).and_then(|e| self.store.read(&e).ok()).map(|r| r.store_timestamp).unwrap_or(0);
            if stored < ts_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Messages not yet acked, summed over queues, for every (progress name, topic) with
    /// progress: the name is the group, or `group@clientid` for a broadcast group's client.
    pub fn consumer_lags(&self) -> Vec<(String, String, u64)> {
        // Every queue of the topic counts, also those the group has not received from yet.
        let pairs: std::collections::BTreeSet<(String, String)> =
            self.consume.read().keys().map(|(g, t, _)| (g.clone(), t.clone())).collect();
        pairs
            .into_iter()
            .map(|(g, t)| {
                let lag = self.group_progress(&g, &t).iter().map(|p| p.3).sum();
                (g, t, lag)
            })
            .collect()
    }

    /// Per-queue progress of a group on a topic: (queue id, ack offset, max offset, backlog).
    pub fn group_progress(&self, group: &str, topic: &str) -> Vec<(u32, u64, u64, u64)> {
        let Some(cfg) = self.topics.get(topic) else {
            return Vec::new();
        };
        let state = self.consume.read();
        (0..cfg.queue_count)
            .map(|q| {
                let max = self.store.max_queue_offset(topic, q);
                let st = state.lock(&(group.to_string(), topic.to_string(), q));
                let ack = st.as_ref().map(|s| s.ack_offset()).unwrap_or_else(|| self.store.min_queue_offset(topic, q));
                (q, ack, max, st.map(|s| s.backlog(max)).unwrap_or(max - ack))
            })
            .collect()
    }

    /// (client id, topic) of every progress key of `group`: the client id is empty for the group's
    /// own progress, and set for a broadcast client's (`group@client`).
    fn progress_keys(&self, group: &str) -> Vec<(String, String)> {
        let prefix = format!("{group}@");
        self.consume
            .read()
            .keys()
            .filter_map(|(g, t, _)| {
                let client = if g == group { Some("") } else { g.strip_prefix(&prefix) };
                client.map(|c| (c.to_string(), t.clone()))
            })
            .collect()
    }

    /// Topics a group (or, for broadcast groups, any of its clients) has progress on, sorted.
    pub fn group_topics(&self, group: &str) -> Vec<String> {
        let mut topics: Vec<String> = self.progress_keys(group).into_iter().map(|(_, t)| t).collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// Client ids with progress of their own in broadcast group `group`, sorted.
    pub fn broadcast_clients(&self, group: &str) -> Vec<String> {
        let mut ids: Vec<String> =
            self.progress_keys(group).into_iter().map(|(c, _)| c).filter(|c| !c.is_empty()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Delivery state of the message at (topic, queue, offset) for every group with progress on
    /// that queue: (group, state) with state `acked`, `in-flight (attempt N)`, `held` or `pending`.
    pub fn delivery_states(&self, topic: &str, q: u32, off: u64) -> Vec<(String, String)> {
        let state = self.consume.read();
        let mut out: Vec<(String, String)> = state
            .keys()
            .filter(|(_, t, qq)| t == topic && *qq == q)
            .map(|key| {
                let st = state.lock(key).expect("a key of this state");
                let s = if st.is_acked(off) {
                    "acked".to_string()
                } else if let Some(f) = st.inflight().get(&off) {
                    if f.attempt == 0 {
                        "held (FIFO)".to_string()
                    } else {
                        format!("in-flight (attempt {})", f.attempt)
                    }
                } else {
                    "pending".to_string()
                };
                (key.0.clone(), s)
            })
            .collect();
        out.sort();
        out
    }

    /// The consumer group registry.
    pub fn groups(&self) -> &groups::GroupManager {
        &self.groups
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::broker::Outgoing;
    use crate::config::Config;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    /// A broker on `dir` that auto-creates topics of one queue and runs no periodic snapshot or
    /// retention pass during a test.
    fn open(dir: &std::path::Path) -> Arc<Broker> {
        Broker::open(Config {
            data_dir: dir.to_path_buf(),
            auto_create_topic: true,
            default_queue_count: 1,
            consumer_snapshot_interval_ms: 3_600_000,
            clean_interval_ms: 3_600_000,
            ..Config::default()
        })
        .unwrap()
    }

    /// One group's receive and ack lock only that group's queue: with another group's queue
    /// held (as an ack appending its record holds it), they still complete.
    #[test]
    fn a_receive_or_ack_never_waits_on_another_groups_queue() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path());
        for _ in 0..3 {
            let record = Record { topic: "T".into(), ..Default::default() };
            let mut batch = [Outgoing { record, ty: MessageType::Normal, deliver_at_ms: None, check_type: true }];
            block(b.send_batch(&mut batch, "producer")).remove(0).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.store().max_queue_offset("T", 0) < 3 {
            assert!(Instant::now() < deadline, "dispatcher did not catch up");
            std::thread::sleep(Duration::from_millis(2));
        }
        let (ga, gb) = (Consumer { group: "a", client_id: "c" }, Consumer { group: "b", client_id: "c" });
        // Both groups' queue states exist (a new one is made under the write lock).
        assert_eq!(b.receive(ga, "T", &Filter::ALL, 1, 60_000).unwrap().len(), 1);
        let first = b.receive(gb, "T", &Filter::ALL, 1, 60_000).unwrap().remove(0).receipt_handle;

        std::thread::scope(|s| {
            let (locked_tx, locked_rx) = std::sync::mpsc::channel();
            let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
            let b = &b;
            s.spawn(move || {
                let state = b.consume.read();
                let _held = state.lock(&("a".into(), "T".into(), 0)).unwrap();
                locked_tx.send(()).unwrap();
                let _ = release_rx.recv();
            });
            locked_rx.recv().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let first = first.as_str();
            s.spawn(move || {
                let acked = block(b.ack(gb, "T", &[first]));
                let got = b.receive(gb, "T", &Filter::ALL, 5, 60_000).map(|d| d.len());
                tx.send((acked, got)).unwrap();
            });
            let done = rx.recv_timeout(Duration::from_secs(10));
            // Released either way, so a thread that did wait finishes and the scope ends.
            release_tx.send(()).unwrap();
            let (acked, got) = done.expect("group b waited on group a's queue");
            assert!(acked[0].is_ok(), "{acked:?}");
            assert_eq!(got.unwrap(), 2);
        });
        assert_eq!(b.committed_offset("b", "T", 0), Some(1));
    }

    /// Sends and deliveries are counted in the engine, so every front end's are, and under the
    /// topic sent to, also for a half or a scheduled message (stored under a system topic).
    #[test]
    fn traffic_is_counted_by_the_topic_sent_to() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path());
        let out = |topic: &str, body: &[u8], ty, deliver_at_ms| Outgoing {
            record: Record { topic: topic.into(), body: body.to_vec(), ..Default::default() },
            ty,
            deliver_at_ms,
            check_type: false,
        };
        let mut batch = [
            out("T", b"abc", MessageType::Normal, None),
            out("T", b"abcd", MessageType::Transaction, None),
            out("T", b"ab", MessageType::Delay, Some(now_ms() + 3_600_000)),
            out("U", b"a", MessageType::Normal, None),
            out("T", b"abcde", MessageType::Normal, None),
        ];
        assert!(block(b.send_batch(&mut batch, "producer")).iter().all(Result::is_ok));
        let counted = |lines: [&str; 3]| {
            let text = b.metrics().encode();
            for line in lines {
                assert!(text.contains(line), "{line} not in\n{text}");
            }
        };
        counted([
            "ferrocket_messages_in_total{topic=\"T\"} 4",
            "ferrocket_bytes_in_total{topic=\"T\"} 14",
            "ferrocket_messages_in_total{topic=\"U\"} 1",
        ]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.store().max_queue_offset("T", 0) < 2 || b.store().max_queue_offset("U", 0) < 1 {
            assert!(Instant::now() < deadline, "dispatcher did not catch up");
            std::thread::sleep(Duration::from_millis(2));
        }
        let got = b.receive(Consumer { group: "g", client_id: "c" }, "T", &Filter::ALL, 10, 60_000).unwrap();
        assert_eq!(got.len(), 2, "the plain messages; the half and the scheduled one are not due");
        assert_eq!(b.pull("U", 0, 0, 10, &Filter::ALL).unwrap().0.len(), 1);
        counted([
            "ferrocket_messages_out_total{topic=\"T\"} 2",
            "ferrocket_bytes_out_total{topic=\"T\"} 8",
            "ferrocket_messages_out_total{topic=\"U\"} 1",
        ]);
    }
}
