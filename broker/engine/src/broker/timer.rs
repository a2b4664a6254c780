//! Scheduled delivery: DELAY messages and delay levels, the timer thread, and recall.

use std::time::Duration;

use super::{Broker, BrokerError, SendOk};
use crate::store::record::Record;
use crate::store::{now_ms, RecordClass, StoreError};
use crate::timer::{self, TimerKey, TimerLog};
use crate::topics::MessageType;

/// Most due messages the timer thread delivers per pass (bounds lock hold time).
const DELIVER_BATCH: usize = 2048;
/// How often the timer thread looks for due messages, ms: lateness is at most this plus the
/// time to write the due messages.
const TICK_MS: u64 = 10;
/// How often in-flight messages past their last attempt are looked for, ms.
const REVIVE_MS: u64 = 500;

/// Marks `key` done in the timer log; false (logged) if the write failed.
fn cancelled(t: &mut TimerLog, key: TimerKey) -> bool {
    t.cancel(key).map_err(|e| tracing::error!(error = %e, "writing the timer log failed")).is_ok()
}

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
        // Stored but not indexed: a restart replays the record into the index and delivers it.
        t.add(key, r.size).map_err(StoreError::Io)?;
        Ok((SendOk { queue_id, queue_offset: 0, physical_offset: r.physical_offset }, r.end, timer::recall_handle(key)))
    }

    /// Cancels a scheduled message of `topic` by its recall handle; returns its message id.
    /// Errors: [`BrokerError::InvalidRecallHandle`] for a malformed handle, a message of another
    /// topic, or one already delivered or recalled. Also returns the CommitLog end to make durable.
    pub(crate) fn recall_now(&self, topic: &str, handle: &str) -> Result<(String, u64), BrokerError> {
        let key: TimerKey = timer::parse_recall_handle(handle)
            .ok_or_else(|| BrokerError::InvalidRecallHandle(format!("malformed recall handle {handle:?}")))?;
        let mut t = self.timer.lock();
        let size = t.pending(key).map_err(StoreError::Io)?.ok_or_else(|| {
            BrokerError::InvalidRecallHandle("no such scheduled message: already delivered or recalled".into())
        })?;
        let stored = self.store.read_record(key.1, size)?;
        if stored.properties.get(crate::txn::PROP_REAL_TOPIC).map(String::as_str) != Some(topic) {
            return Err(BrokerError::InvalidRecallHandle(format!("the message is not of topic {topic}")));
        }
        let r = self.store.append(&mut timer::recall_record(key, now_ms()), false, RecordClass::Control)?;
        // Recorded but not indexed: a restart replays the recall record into the index.
        t.cancel(key).map_err(StoreError::Io)?;
        Ok((timer::message_id(&stored), r.end))
    }

    /// Number of scheduled messages not yet delivered.
    pub fn scheduled_count(&self) -> usize {
        self.timer.lock().len() as usize
    }

    /// Delivers every message due by `now`: writes the real message to its topic, which also
    /// marks the timer record done. Returns how many were delivered.
    pub fn deliver_due(&self, now: u64) -> usize {
        let mut t = self.timer.lock();
        let mut n = 0;
        // One bucket at a time: the next is loaded once the current one is delivered.
        for _ in 0..DELIVER_BATCH {
            let due = match t.due(now, DELIVER_BATCH - n) {
                Ok(due) if !due.is_empty() => due,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "reading the timer log failed; retried");
                    break;
                }
            };
            if !self.deliver(&mut t, now, due, &mut n) || n >= DELIVER_BATCH {
                break;
            }
        }
        n
    }

    /// Delivers `due` (from [`TimerLog::due`]), counting deliveries in `n`; false if a write
    /// failed (the rest wait for the next pass).
    fn deliver(&self, t: &mut TimerLog, now: u64, due: Vec<(TimerKey, u32)>, n: &mut usize) -> bool {
        for (key, size) in due {
            let mut real = match self.store.read_record(key.1, size) {
                Ok(stored) => timer::real_message(&stored),
                Err(e) => {
                    tracing::error!(offset = key.1, error = %e, "scheduled message unreadable; dropped");
                    if !cancelled(t, key) {
                        return false;
                    }
                    continue;
                }
            };
            if self.topics.get(&real.topic).is_none() {
                tracing::error!(topic = %real.topic, "scheduled message's topic was deleted; dropped");
                if !cancelled(t, key) {
                    return false;
                }
                continue;
            }
            if let Err(e) = self.store.append(&mut real, true, RecordClass::Control) {
                tracing::error!(error = %e, "delivering a scheduled message failed; retried");
                return false;
            }
            // The delivered record marks it done in the CommitLog: a restart replays it into
            // the timer log if the write below fails.
            if !cancelled(t, key) {
                return false;
            }
            *n += 1;
            self.metrics.timer.delivered.inc();
            self.metrics.timer.lateness_ms.observe(now.saturating_sub(key.0) as f64);
        }
        true
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
