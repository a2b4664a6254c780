//! Scheduled messages: DELAY messages with a `delivery_timestamp` (and delay levels) wait in the
//! CommitLog as records of [`TIMER_TOPIC`] and are written to their real topic when due
//! (RocketMQ 5 `TimerMessageStore`, topic `rmq_sys_wheel_timer`).
//!
//! Persistence follows the transaction design: everything is a CommitLog record. A scheduled
//! message is a timer record (real topic and queue, and the due time, in properties); delivering
//! it appends the real message carrying [`PROP_TIMER_SRC`] (the timer record's CommitLog offset);
//! a recall appends a [`TIMER_OP_TOPIC`] record. On start the pending set is the snapshot's plus
//! a replay of those records after it, so a restart neither loses nor repeats a delivery.
//!
//! In memory the pending set is one ordered map keyed by (due ms, CommitLog offset): about 40
//! bytes per scheduled message, and the next due messages are found without a scan.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::record::Record;
use crate::store::{PROP_MSG_ID, SYS_FLAG_NO_DISPATCH};
use crate::txn::{PROP_REAL_QID, PROP_REAL_TOPIC};

/// Topic of scheduled messages (never dispatched to a ConsumeQueue).
pub const TIMER_TOPIC: &str = "RMQ_SYS_WHEEL_TIMER";
/// Topic of recall records: a scheduled message cancelled before it was due.
pub const TIMER_OP_TOPIC: &str = "RMQ_SYS_TIMER_OP";
/// Property: due time of a scheduled message, ms since the epoch (RocketMQ `TIMER_DELIVER_MS`).
pub const PROP_DELIVER_MS: &str = "TIMER_DELIVER_MS";
/// Property of a delivered message: CommitLog offset of the timer record it came from.
pub const PROP_TIMER_SRC: &str = "__TIMER_SRC";

/// Identifies one scheduled message: (due ms, CommitLog offset of its timer record).
pub type TimerKey = (u64, u64);

/// Messages scheduled and not yet delivered or recalled.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "Vec<(u64, u64, u32)>", into = "Vec<(u64, u64, u32)>")]
pub struct TimerState {
    /// Record size (bytes) by key, in due order.
    pending: BTreeMap<TimerKey, u32>,
}

impl From<Vec<(u64, u64, u32)>> for TimerState {
    fn from(v: Vec<(u64, u64, u32)>) -> Self {
        TimerState { pending: v.into_iter().map(|(due, phys, size)| ((due, phys), size)).collect() }
    }
}

impl From<TimerState> for Vec<(u64, u64, u32)> {
    fn from(s: TimerState) -> Self {
        s.pending.into_iter().map(|((due, phys), size)| (due, phys, size)).collect()
    }
}

impl TimerState {
    /// Records a scheduled message.
    pub fn add(&mut self, key: TimerKey, size: u32) {
        self.pending.insert(key, size);
    }

    /// Forgets a scheduled message (delivered or recalled); returns its size if it was pending.
    pub fn remove(&mut self, key: TimerKey) -> Option<u32> {
        self.pending.remove(&key)
    }

    /// Whether the message is still scheduled.
    pub fn contains(&self, key: TimerKey) -> bool {
        self.pending.contains_key(&key)
    }

    /// Up to `max` messages due at `now_ms` or before, earliest first: (key, record size).
    pub fn due(&self, now_ms: u64, max: usize) -> Vec<(TimerKey, u32)> {
        self.pending.range(..(now_ms + 1, 0)).take(max).map(|(k, s)| (*k, *s)).collect()
    }

    /// Number of scheduled messages.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True if nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Forgets the scheduled messages stored at CommitLog offset `physical` or later (a slave's
    /// log was cut back there).
    pub fn retain_below(&mut self, physical: u64) {
        self.pending.retain(|(_, phys), _| *phys < physical);
    }

    /// Lowest CommitLog offset a scheduled message is stored at (retention keeps it).
    pub fn min_physical_offset(&self) -> Option<u64> {
        self.pending.keys().map(|k| k.1).min()
    }

    /// Replays one CommitLog record of `size` bytes (recovery after the snapshot).
    pub fn apply(&mut self, rec: &Record, size: u32) {
        if rec.topic == TIMER_TOPIC {
            if let Some(due) = rec.properties.get(PROP_DELIVER_MS).and_then(|d| d.parse().ok()) {
                self.add((due, rec.physical_offset), size);
            }
        } else if rec.topic == TIMER_OP_TOPIC {
            if let Some(key) = parse_recall_handle(std::str::from_utf8(&rec.body).unwrap_or("")) {
                self.remove(key);
            }
        } else if let Some(src) = rec.properties.get(PROP_TIMER_SRC).and_then(|s| s.parse().ok()) {
            if let Some(due) = rec.properties.get(PROP_DELIVER_MS).and_then(|d| d.parse().ok()) {
                self.remove((due, src));
            }
        }
    }
}

/// Turns a message into its timer record: stored under [`TIMER_TOPIC`], queue 0, with the real
/// topic, queue and due time in properties.
pub fn to_timer_record(rec: &mut Record, due_ms: u64) {
    let topic = std::mem::replace(&mut rec.topic, TIMER_TOPIC.into());
    rec.properties.insert(PROP_REAL_TOPIC.into(), topic);
    rec.properties.insert(PROP_REAL_QID.into(), rec.queue_id.to_string());
    rec.properties.insert(PROP_DELIVER_MS.into(), due_ms.to_string());
    rec.queue_id = 0;
    rec.sys_flag |= SYS_FLAG_NO_DISPATCH;
}

/// The message a timer record delivers: real topic and queue back, [`PROP_TIMER_SRC`] added.
pub fn real_message(timer: &Record) -> Record {
    let mut rec = timer.clone();
    rec.topic = rec.properties.remove(PROP_REAL_TOPIC).unwrap_or_default();
    rec.queue_id = rec.properties.remove(PROP_REAL_QID).and_then(|q| q.parse().ok()).unwrap_or(0);
    rec.properties.insert(PROP_TIMER_SRC.into(), timer.physical_offset.to_string());
    rec.sys_flag &= !SYS_FLAG_NO_DISPATCH;
    rec
}

/// The record a recall appends.
pub fn recall_record(key: TimerKey, now_ms: u64) -> Record {
    Record {
        topic: TIMER_OP_TOPIC.into(),
        sys_flag: SYS_FLAG_NO_DISPATCH,
        born_timestamp: now_ms,
        body: recall_handle(key).into_bytes(),
        ..Default::default()
    }
}

/// The recall handle of a scheduled message: `t1.<due ms>.<CommitLog offset>` (RocketMQ returns
/// one in `SendResultEntry.recall_handle` for DELAY messages).
pub fn recall_handle(key: TimerKey) -> String {
    format!("t1.{}.{}", key.0, key.1)
}

/// Parses a recall handle. Errors: anything not made by [`recall_handle`] (`None`).
pub fn parse_recall_handle(s: &str) -> Option<TimerKey> {
    let mut it = s.split('.');
    if it.next()? != "t1" {
        return None;
    }
    let key = (it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    it.next().is_none().then_some(key)
}

/// The message id of a stored record.
pub fn message_id(rec: &Record) -> String {
    rec.properties.get(PROP_MSG_ID).cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_order_replay_and_recall() {
        let mut s = TimerState::default();
        let mut timer = Record { topic: "T".into(), queue_id: 3, ..Default::default() };
        to_timer_record(&mut timer, 5_000);
        timer.physical_offset = 100;
        s.apply(&timer, 80);
        s.add((1_000, 200), 90);
        assert_eq!(s.due(999, 10), vec![]);
        assert_eq!(s.due(5_000, 10), vec![((1_000, 200), 90), ((5_000, 100), 80)]);
        assert_eq!(s.due(5_000, 1).len(), 1);
        let real = real_message(&timer);
        assert_eq!((real.topic.as_str(), real.queue_id), ("T", 3));
        s.apply(&real, 80);
        assert!(!s.contains((5_000, 100)));
        s.apply(&recall_record((1_000, 200), 0), 10);
        assert!(s.is_empty());
        assert_eq!(parse_recall_handle(&recall_handle((1, 2))), Some((1, 2)));
        assert_eq!(parse_recall_handle("t1.1.2.3"), None);
        let v: Vec<(u64, u64, u32)> = TimerState::from(vec![(1, 2, 3)]).into();
        assert_eq!(v, vec![(1, 2, 3)]);
    }
}
