//! Scheduled delivery: DELAY messages and delay levels, the timer thread, and recall.

use std::time::Duration;

use super::{Broker, BrokerError, SendOk};
use crate::store::record::Record;
use crate::store::{now_ms, RecordClass};
use crate::timer::{self, TimerKey};
use crate::topics::MessageType;

/// Most due messages the timer thread delivers per pass (bounds lock hold time).
const DELIVER_BATCH: usize = 2048;
/// How often the timer thread looks for due messages, ms: lateness is at most this plus the
/// time to write the due messages.
const TICK_MS: u64 = 10;
/// How often in-flight messages past their last attempt are looked for, ms.
const REVIVE_MS: u64 = 500;

impl Broker {
    /// Schedules a DELAY message for `deliver_at_ms` (ms since the epoch). A time already past is
    /// delivered now. Returns where it went (the real queue, offset 0 until delivered) and its
    /// recall handle (empty if delivered at once). Errors: as [`Broker::send`], and
    /// [`BrokerError::IllegalDeliveryTime`] beyond `timer_max_delay_ms` from now (RocketMQ
    /// `timerMaxDelaySec`).
    pub(crate) fn append_scheduled(
        &self,
        rec: &mut Record,
        deliver_at_ms: u64,
        check_type: bool,
    ) -> Result<(SendOk, u64, String), BrokerError> {
        let now = now_ms();
        if deliver_at_ms > now + self.cfg.timer_max_delay_ms {
            return Err(BrokerError::IllegalDeliveryTime(format!(
                "delivery time is {} ms ahead; at most timer_max_delay_ms = {} ms",
                deliver_at_ms - now,
                self.cfg.timer_max_delay_ms
            )));
        }
        let accepts = check_type.then_some(MessageType::Delay);
        self.check_send(rec, accepts)?;
        if deliver_at_ms <= now {
            rec.properties.insert(timer::PROP_DELIVER_MS.into(), deliver_at_ms.to_string());
            return self.append_message(rec, accepts).map(|(s, end)| (s, end, String::new()));
        }
        let queue_id = rec.queue_id;
        timer::to_timer_record(rec, deliver_at_ms);
        let mut t = self.timer.lock();
        let r = self.store.append(rec, false, RecordClass::Message)?;
        let key = (deliver_at_ms, r.physical_offset);
        t.add(key, r.size);
        Ok((SendOk { queue_id, queue_offset: 0, physical_offset: r.physical_offset }, r.end, timer::recall_handle(key)))
    }

    /// Cancels a scheduled message of `topic` by its recall handle; returns its message id.
    /// Errors: [`BrokerError::InvalidRecallHandle`] for a malformed handle, a message of another
    /// topic, or one already delivered or recalled. Also returns the CommitLog end to make durable.
    pub(crate) fn recall_now(&self, topic: &str, handle: &str) -> Result<(String, u64), BrokerError> {
        let key: TimerKey = timer::parse_recall_handle(handle)
            .ok_or_else(|| BrokerError::InvalidRecallHandle(format!("malformed recall handle {handle:?}")))?;
        let mut t = self.timer.lock();
        let size = t.remove(key).ok_or_else(|| {
            BrokerError::InvalidRecallHandle("no such scheduled message: already delivered or recalled".into())
        })?;
        let stored = match self.store.read_record(key.1, size) {
            Ok(r) if r.properties.get(crate::txn::PROP_REAL_TOPIC).map(String::as_str) == Some(topic) => r,
            other => {
                t.add(key, size);
                return match other {
                    Err(e) => Err(e.into()),
                    Ok(_) => Err(BrokerError::InvalidRecallHandle(format!("the message is not of topic {topic}"))),
                };
            }
        };
        match self.store.append(&mut timer::recall_record(key, now_ms()), false, RecordClass::Control) {
            Ok(r) => Ok((timer::message_id(&stored), r.end)),
            Err(e) => {
                t.add(key, size);
                Err(e.into())
            }
        }
    }

    /// Number of scheduled messages not yet delivered.
    pub fn scheduled_count(&self) -> usize {
        self.timer.lock().len()
    }

    /// Delivers every message due by `now`: writes the real message to its topic, which also
    /// marks the timer record done. Returns how many were delivered.
    pub fn deliver_due(&self, now: u64) -> usize {
        let mut t = self.timer.lock();
        let due = t.due(now, DELIVER_BATCH);
        let mut n = 0;
        for (key, size) in due {
            let real = match self.store.read_record(key.1, size) {
                Ok(stored) => timer::real_message(&stored),
                Err(e) => {
                    tracing::error!(offset = key.1, error = %e, "scheduled message unreadable; dropped");
                    t.remove(key);
                    continue;
                }
            };
            let mut real = real;
            if self.topics.get(&real.topic).is_none() {
                tracing::error!(topic = %real.topic, "scheduled message's topic was deleted; dropped");
                t.remove(key);
                continue;
            }
            match self.store.append(&mut real, true, RecordClass::Control) {
                Ok(_) => {
                    t.remove(key);
                    n += 1;
                    self.metrics.timer.delivered.inc();
                    let late = now.saturating_sub(key.0);
                    self.metrics.timer.lateness_ms.observe(late as f64);
                }
                Err(e) => {
                    tracing::error!(error = %e, "delivering a scheduled message failed; retried");
                    break;
                }
            }
        }
        n
    }

    /// The timer thread: delivers due scheduled messages every [`TICK_MS`], and dead-letters
    /// exhausted deliveries every [`REVIVE_MS`].
    pub(super) fn timer_loop(&self) {
        let mut last_revive = 0;
        while !self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            if self.is_slave() {
                std::thread::sleep(Duration::from_millis(TICK_MS));
                continue;
            }
            let now = now_ms();
            if now >= last_revive + REVIVE_MS {
                last_revive = now;
                self.revive(now);
            }
            if self.deliver_due(now) < DELIVER_BATCH {
                std::thread::sleep(Duration::from_millis(TICK_MS));
            }
        }
    }
}
