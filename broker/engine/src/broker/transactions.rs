//! Transactions: half messages, commit and rollback, check-back of orphaned transactions.

use super::{Broker, BrokerError, SendOk};
use crate::config::Config;
use crate::store::record::Record;
use crate::store::{now_ms, RecordClass, PROP_MSG_ID};
use crate::topics::MessageType;
use crate::txn::{self, CheckTiming, OpRecord, Resolution, TxState};

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

impl Broker {
    /// Stores a TRANSACTION message as a half message (invisible to consumers) and returns where
    /// it went with its transaction id. `client_id` is the producer's (`x-mq-client-id`), asked
    /// first when the transaction is checked back. Returns the CommitLog end to make durable
    /// too; `check_type`: whether the topic must accept TRANSACTION messages. Errors: as
    /// [`Broker::send`].
    pub(crate) fn append_half(
        &self,
        rec: &mut Record,
        client_id: &str,
        check_type: bool,
    ) -> Result<(SendOk, u64, String), BrokerError> {
        self.check_send(rec, check_type.then_some(MessageType::Transaction))?;
        let (topic, queue_id) = (std::mem::replace(&mut rec.topic, txn::HALF_TOPIC.into()), rec.queue_id);
        rec.properties.insert(txn::PROP_REAL_TOPIC.into(), topic);
        rec.properties.insert(txn::PROP_REAL_QID.into(), queue_id.to_string());
        rec.properties.insert(txn::PROP_TX_CLIENT.into(), client_id.to_string());
        rec.queue_id = 0;
        let mut tx = self.tx.lock();
        let r = self.store.append(rec, true, RecordClass::Message)?;
        tx.add_half(rec, r.size, check_timing(&self.cfg));
        Ok((
            SendOk { queue_id, queue_offset: r.queue_offset, physical_offset: r.physical_offset },
            r.end,
            txn::transaction_id(r.queue_offset),
        ))
    }

    /// Ends a transaction: `Some(Commit)` writes the real message and an op record, `Some(Rollback)`
    /// only the op record, `None` (unknown) leaves it open for the next check-back. A repeated
    /// COMMIT or ROLLBACK is answered without writing anything. Returns the CommitLog end to
    /// make durable and whether a message (the commit's) was written, if anything was. `reason` (`client` or
    /// `check`) is kept in the op record. An empty `topic` is not checked (RocketMQ 4.x Remoting
    /// clients do not send it). Errors: [`BrokerError::InvalidTransaction`] for an
    /// unknown or mismatched transaction, [`BrokerError::TransactionConflict`] for an end that
    /// contradicts an earlier one, store errors.
    pub(crate) fn end_transaction_now(
        &self,
        topic: &str,
        message_id: &str,
        transaction_id: &str,
        resolution: Option<Resolution>,
        reason: &str,
    ) -> Result<Option<(u64, bool)>, BrokerError> {
        if self.is_fenced() {
            return Err(BrokerError::Fenced);
        }
        let half = txn::parse_transaction_id(transaction_id)
            .ok_or_else(|| BrokerError::InvalidTransaction(format!("malformed transaction id {transaction_id:?}")))?;
        let mut tx = self.tx.lock();
        if let Some(done) = tx.resolution(half) {
            return match resolution {
                Some(r) if r != done => Err(BrokerError::TransactionConflict(format!(
                    "transaction {transaction_id} already ended with {done:?}; {r:?} refused"
                ))),
                _ => Ok(None),
            };
        }
        let p = tx
            .pending()
            .get(&half)
            .cloned()
            .ok_or_else(|| BrokerError::InvalidTransaction(format!("no open transaction {transaction_id}")))?;
        let stored = self.store.read_record(p.physical_offset, p.size)?;
        if stored.properties.get(PROP_MSG_ID).map(String::as_str) != Some(message_id)
            || (!topic.is_empty() && p.topic != topic)
        {
            return Err(BrokerError::InvalidTransaction(format!(
                "transaction {transaction_id} does not belong to message {message_id} of topic {topic}"
            )));
        }
        let Some(r) = resolution else { return Ok(None) };
        Ok(Some((self.finish_transaction(&mut tx, half, &stored, r, reason)?, r == Resolution::Commit)))
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
            self.store.append(&mut txn::real_message(stored), true, RecordClass::Control)?;
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
        Ok(self.store.append(&mut rec, true, RecordClass::Control)?.end)
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
            let p = tx.pending()[&half].clone();
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
        self.tx.lock().pending().iter().map(|(h, p)| (*h, p.clone())).collect()
    }

    /// Number of open transactions.
    pub fn open_transaction_count(&self) -> usize {
        self.tx.lock().pending().len()
    }
}

pub(super) fn check_timing(cfg: &Config) -> CheckTiming {
    CheckTiming { timeout_ms: cfg.transaction_timeout_ms, interval_ms: cfg.transaction_check_interval_ms }
}
