//! The engine's promise: every call here that stores something a client is told is stored
//! returns only once the configured guarantees hold (RocketMQ `CommitLog.asyncPutMessage`, which
//! joins the flush and the replica futures), or with the error that says which did not.
//!
//! Two levels: a message (send, batch, half message, EndTransaction commit, DLQ forward) waits for
//! the fsync under SYNC_FLUSH and for the in-sync slaves under `replication = "sync"`; a control
//! record whose loss costs at most a redelivery (ack, offset update, rollback, recall) waits for
//! the fsync only. Under SYNC replication a master also keeps consumers from seeing what its
//! in-sync slaves do not hold yet (the dispatch limit, RocketMQ's confirm offset), so no consumer
//! is handed a message that a failover could take back.
//!
//! The long poll every front end uses is here too: [`Broker::long_poll`].

use std::time::Duration;

use super::{Broker, BrokerError, Consumer, Delivery, Pulled, SendBack, SendOk, SentBack};
use crate::config::Replication;
use crate::consume::filter::Filter;
use crate::store::record::Record;
use crate::store::{FlushDiskType, StoreError};
use crate::topics::MessageType;
use crate::txn::Resolution;

/// What a write must reach before the caller is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// The fsync under SYNC_FLUSH.
    Flush,
    /// The fsync, and the in-sync slaves under SYNC replication.
    Replicated,
}

/// One message of a SendMessage request, as the engine stores it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The record: topic, queue id, properties and body set.
    pub record: Record,
    /// The message type the client declared.
    pub ty: MessageType,
    /// Whether the topic must accept `ty` ([`BrokerError::TypeNotAccepted`] otherwise). RocketMQ's
    /// proxy checks it for gRPC sends; its broker does not for Remoting sends.
    pub check_type: bool,
    /// For a DELAY message: when to deliver it, ms since the Unix epoch.
    pub deliver_at_ms: Option<u64>,
}

/// Where one message of a batch went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Queue and offset.
    pub at: SendOk,
    /// For a TRANSACTION message: its transaction id (empty otherwise).
    pub transaction_id: String,
    /// For a scheduled DELAY message: its recall handle (empty otherwise).
    pub recall_handle: String,
}

/// The batch as runs of messages of one topic: (topic, indexes), one topic name per run.
fn topic_runs(batch: &[Outgoing]) -> Vec<(String, std::ops::Range<usize>)> {
    let mut runs: Vec<(String, std::ops::Range<usize>)> = Vec::new();
    for (i, m) in batch.iter().enumerate() {
        match runs.last_mut() {
            Some((t, run)) if *t == m.record.topic => run.end = i + 1,
            _ => runs.push((m.record.topic.clone(), i..i + 1)),
        }
    }
    runs
}

/// Turns every `Ok` of a request's results into the one durability error `e` that they share.
fn fail_stored<T>(results: &mut [Result<T, BrokerError>], e: BrokerError) {
    let e = std::sync::Arc::new(e);
    for r in results.iter_mut().filter(|r| r.is_ok()) {
        *r = Err(BrokerError::NotDurable(e.clone()));
    }
}

/// How often an idle long poll looks again for messages whose invisible time ran out, ms.
const REDELIVERY_TICK: Duration = Duration::from_millis(200);

impl Broker {
    /// Waits until CommitLog offset `end` holds at `level`. Errors:
    /// [`BrokerError::FlushTimeout`] after `sync_flush_timeout_ms`, [`BrokerError::NotReplicated`]
    /// after `ha_sync_timeout_ms` (or at once on a deposed master), [`StoreError::ShutDown`].
    async fn durable(&self, end: u64, level: Level) -> Result<(), BrokerError> {
        if self.store.flush_disk_type() == FlushDiskType::Sync {
            let mut flushed = self.flushed.subscribe();
            // The first writer to find no flush under way leads the group commit itself; the
            // others (and a leader whose flush failed) hand it to the flush thread and wait.
            if !matches!(self.store.try_flush_inline(), Some(f) if f >= end) {
                self.store.request_flush();
            }
            let timeout = Duration::from_millis(self.cfg.sync_flush_timeout_ms);
            let waited = tokio::time::timeout(timeout, flushed.wait_for(|f| *f >= end)).await.map(|r| r.is_ok());
            match waited {
                Ok(true) => {}
                Ok(false) => return Err(StoreError::ShutDown.into()),
                Err(_) => return Err(BrokerError::FlushTimeout { waited_ms: self.cfg.sync_flush_timeout_ms }),
            }
        }
        if level == Level::Replicated && self.cfg.replication == Replication::Sync {
            let timeout = Duration::from_millis(self.cfg.ha_sync_timeout_ms);
            let waited = self.replicas.wait(end, self.cfg.min_in_sync_replicas, timeout).await;
            // The wait may have outlived a slave's place in the in-sync set: what it no longer
            // holds back becomes visible (Kafka's high watermark after an ISR shrink).
            self.update_dispatch_limit();
            waited?;
        }
        Ok(())
    }

    /// Stores one message of type `ty` durably (see the module doc). Errors: unknown topic,
    /// topic not writable, queue out of range, type not accepted, disk full, store errors, and
    /// those of the durability wait.
    pub async fn send(&self, rec: &mut Record, ty: MessageType) -> Result<SendOk, BrokerError> {
        let (ok, end) = self.append_message(rec, Some(ty))?;
        self.durable(end, Level::Replicated).await?;
        Ok(ok)
    }

    /// Stores a SendMessage request's messages: each as its type says (a half message for
    /// TRANSACTION, a scheduled message for DELAY with a delivery time, else a plain one), then
    /// waits once for the whole batch to be durable. One result per message; a message that was
    /// stored but not made durable gets the durability error (it may still be delivered: a
    /// client retry can store it twice, as in RocketMQ).
    pub async fn send_batch(&self, batch: &mut [Outgoing], producer: &str) -> Vec<Result<Sent, BrokerError>> {
        // The topics as sent: appending renames a half or scheduled message's topic.
        let topics = topic_runs(batch);
        let mut last = 0;
        let mut results: Vec<Result<Sent, BrokerError>> = batch
            .iter_mut()
            .map(|m| {
                let check = m.check_type;
                let (at, end, transaction_id, recall_handle) = match (m.ty, m.deliver_at_ms) {
                    (MessageType::Transaction, _) => {
                        let (at, end, id) = self.append_half(&mut m.record, producer, check)?;
                        (at, end, id, String::new())
                    }
                    (MessageType::Delay, Some(due)) => {
                        let (at, end, handle) = self.append_scheduled(&mut m.record, due, check)?;
                        (at, end, String::new(), handle)
                    }
                    (ty, _) => {
                        let (at, end) = self.append_message(&mut m.record, check.then_some(ty))?;
                        (at, end, String::new(), String::new())
                    }
                };
                last = last.max(end);
                Ok(Sent { at, transaction_id, recall_handle })
            })
            .collect();
        if last > 0 {
            if let Err(e) = self.durable(last, Level::Replicated).await {
                fail_stored(&mut results, e);
            }
        }
        let stored = |i: &usize| results[*i].is_ok();
        self.metrics.traffic.sent(
            topics
                .iter()
                .flat_map(|(t, run)| run.clone().filter(stored).map(|i| (t.as_str(), batch[i].record.body.len()))),
        );
        results
    }

    /// Ends a transaction (see [`Broker::end_transaction_now`]): a commit returns once the real
    /// message is durable as a send is; a rollback once its op record is flushed. Errors: as
    /// [`Broker::end_transaction_now`], and those of the durability wait.
    pub async fn end_transaction(
        &self,
        topic: &str,
        message_id: &str,
        transaction_id: &str,
        resolution: Option<Resolution>,
        reason: &str,
    ) -> Result<(), BrokerError> {
        match self.end_transaction_now(topic, message_id, transaction_id, resolution, reason)? {
            None => Ok(()),
            Some((end, true)) => self.durable(end, Level::Replicated).await,
            Some((end, false)) => self.durable(end, Level::Flush).await,
        }
    }

    /// Acknowledges deliveries by receipt handle; one result per handle, each `Ok` only once the
    /// ack record is flushed.
    pub async fn ack(&self, c: Consumer<'_>, topic: &str, handles: &[&str]) -> Vec<Result<(), BrokerError>> {
        let (mut results, end) = self.ack_now(c, topic, handles);
        if let Some(end) = end {
            if let Err(e) = self.durable(end, Level::Flush).await {
                fail_stored(&mut results, e);
            }
        }
        results
    }

    /// Sends an in-flight delivery to the group's DLQ now; returns once the DLQ copy is durable
    /// as a send is. Errors: as [`Broker::forward_to_dlq_now`], and the durability wait's.
    pub async fn forward_to_dlq(&self, c: Consumer<'_>, topic: &str, handle: &str) -> Result<(), BrokerError> {
        let end = self.forward_to_dlq_now(c, topic, handle)?;
        self.durable(end, Level::Replicated).await
    }

    /// Sets a group's position on a queue (see [`Broker::update_offset_now`]); returns once it is
    /// flushed.
    pub async fn update_offset(&self, group: &str, topic: &str, q: u32, offset: u64) -> Result<(), BrokerError> {
        let end = self.update_offset_now(group, topic, q, offset)?;
        self.durable(end, Level::Flush).await
    }

    /// Cancels a scheduled message (see [`Broker::recall_now`]); returns its message id once the
    /// recall record is flushed.
    pub async fn recall(&self, topic: &str, handle: &str) -> Result<String, BrokerError> {
        let (id, end) = self.recall_now(topic, handle)?;
        self.durable(end, Level::Flush).await?;
        Ok(id)
    }

    /// The long poll of every front end: calls `attempt` until it returns something non-empty or
    /// `poll` has passed, waiting in between until a new message is dispatched, a message may
    /// have become available otherwise (FIFO acks, nacks, offset resets: the wakeups), 200 ms
    /// pass (invisible times may have run out), or long polls end ([`Broker::end_long_polls`]).
    /// Returns the last attempt's result.
    pub async fn long_poll<T>(
        &self,
        poll: Duration,
        mut attempt: impl FnMut() -> Result<Vec<T>, BrokerError>,
    ) -> Result<Vec<T>, BrokerError> {
        let deadline = tokio::time::Instant::now() + poll;
        let mut dispatched = self.dispatched.subscribe();
        let mut wakeups = self.wakeups.subscribe();
        let mut ending = self.polls_ending.subscribe();
        loop {
            let got = attempt()?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline || *ending.borrow() {
                return Ok(got);
            }
            let tick = deadline.min(now + REDELIVERY_TICK);
            tokio::select! {
                _ = dispatched.changed() => {}
                _ = wakeups.changed() => {}
                _ = ending.changed() => {}
                _ = tokio::time::sleep_until(tick) => {}
            }
        }
    }

    /// [`Broker::receive`] held as a long poll of at most `poll`.
    pub async fn receive_long(
        &self,
        c: Consumer<'_>,
        topic: &str,
        filter: &Filter,
        batch: usize,
        invisible_ms: u64,
        poll: Duration,
    ) -> Result<Vec<Delivery>, BrokerError> {
        self.long_poll(poll, || self.receive(c, topic, filter, batch, invisible_ms)).await
    }

    /// Sends a consumed message back for another attempt (see [`SendBack`]): returns once the
    /// copy is durable as a send is. Errors: unknown group (auto-creation off), no message at the
    /// offset, the errors of a send, and those of the durability wait.
    pub async fn send_back(&self, req: &SendBack) -> Result<SentBack, BrokerError> {
        let (to, end) = self.send_back_now(req)?;
        self.durable(end, Level::Replicated).await?;
        Ok(to)
    }

    /// [`Broker::pull`] held as a long poll of at most `poll` while it finds no message.
    pub async fn pull_long(
        &self,
        topic: &str,
        q: u32,
        offset: u64,
        batch: usize,
        filter: &Filter,
        poll: Duration,
    ) -> Result<Pulled, BrokerError> {
        let mut next = offset;
        let msgs = self
            .long_poll(poll, || {
                let (msgs, n) = self.pull(topic, q, offset, batch, filter)?;
                next = n;
                Ok(msgs)
            })
            .await?;
        Ok((msgs, next))
    }

    /// Ends every long poll now and every later one at once (the server is stopping).
    pub fn end_long_polls(&self) {
        self.polls_ending.send_replace(true);
    }

    /// Recomputes what consumers may see under SYNC replication: on a master, up to where every
    /// in-sync slave holds the log; otherwise everything. Called whenever a slave reports, joins
    /// or leaves, the in-sync set changes, or the role changes.
    pub(crate) fn update_dispatch_limit(&self) {
        let limit = if self.cfg.replication == Replication::Sync && self.role().is_master() {
            self.replicas.confirmed_offset(self.store.commitlog_end())
        } else {
            u64::MAX
        };
        self.store.set_dispatch_limit(limit);
    }

    /// Records that slave `endpoint` holds every CommitLog byte below `offset` (its report on the
    /// replication stream).
    pub fn slave_reported(&self, endpoint: &str, offset: u64) {
        self.replicas.report(endpoint, offset, self.store.commitlog_end());
        self.update_dispatch_limit();
    }

    /// Forgets slave `endpoint` (its replication stream ended).
    pub fn slave_disconnected(&self, endpoint: &str) {
        self.replicas.disconnected(endpoint);
        self.update_dispatch_limit();
    }

    /// Sets the in-sync slaves the controller confirmed (endpoints, this master excluded).
    pub fn confirm_sync_set(&self, set: std::collections::BTreeSet<String>) {
        self.replicas.set_confirmed(set);
        self.update_dispatch_limit();
    }
}
