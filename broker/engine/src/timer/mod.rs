//! Scheduled messages: DELAY messages with a `delivery_timestamp` (and delay levels) wait in the
//! CommitLog as records of [`TIMER_TOPIC`] and are written to their real topic when due
//! (RocketMQ 5 `TimerMessageStore`, topic `rmq_sys_wheel_timer`).
//!
//! Persistence follows the transaction design: everything is a CommitLog record. A scheduled
//! message is a timer record (real topic and queue, and the due time, in properties); delivering
//! it appends the real message carrying [`PROP_TIMER_SRC`] (the timer record's CommitLog offset);
//! a recall appends a [`TIMER_OP_TOPIC`] record. The pending set is an index of those records
//! kept on disk ([`log::TimerLog`]); on start it is the snapshot's plus a replay of the records
//! after it, so a restart neither loses nor repeats a delivery.

pub mod log;

pub use log::TimerLog;

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
    fn timer_records_round_trip_and_handles_parse() {
        let mut timer = Record { topic: "T".into(), queue_id: 3, ..Default::default() };
        to_timer_record(&mut timer, 5_000);
        timer.physical_offset = 100;
        assert_eq!((timer.topic.as_str(), timer.queue_id), (TIMER_TOPIC, 0));
        let real = real_message(&timer);
        assert_eq!((real.topic.as_str(), real.queue_id), ("T", 3));
        assert_eq!(real.properties.get(PROP_TIMER_SRC).map(String::as_str), Some("100"));
        assert_eq!(parse_recall_handle(&recall_handle((1, 2))), Some((1, 2)));
        assert_eq!(parse_recall_handle("t1.1.2.3"), None);
        assert_eq!(parse_recall_handle("t2.1.2"), None);
    }
}
