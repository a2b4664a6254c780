//! Consumer progress for RocketMQ 5 "pop" consumption, per (consumer group, topic, queue):
//! every offset below `ack_offset` is done; offsets in `ack_offset..next_offset` are either acked
//! (`acked`) or handed out and invisible until their deadline (`inflight`); offsets from
//! `next_offset` on have never been handed out.
//!
//! Durability: each ack is appended to the CommitLog as a record of [`ACK_LOG_TOPIC`] (so it is as
//! durable as a message under the same flush policy, and replicates with the log), and the whole
//! state is snapshotted to `config/state.json` with the CommitLog offset it covers. On
//! start, the snapshot is loaded and the ack records after its offset are replayed. In-flight
//! deliveries after the last snapshot are not persisted: after a crash they are handed out again
//! (at-least-once), but an acknowledged message never is.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// Internal topic of ack records (never dispatched to a ConsumeQueue).
pub const ACK_LOG_TOPIC: &str = "RMQ_SYS_ACK_LOG";

/// Identifies one queue's progress: (consumer group, topic, queue id).
pub type QueueKey = (String, String, u32);

/// One message handed out and not yet acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inflight {
    /// Random id of this delivery; part of the receipt handle.
    pub pop_id: u64,
    /// 1 for the first delivery.
    pub attempt: u32,
    /// When the message becomes visible again, ms since the Unix epoch.
    pub visible_at_ms: u64,
    /// FIFO consumer groups: hash of the message group (0 for none). An entry with attempt 0 is
    /// held back behind an earlier message of its group and has not been delivered yet.
    #[serde(default)]
    pub group: u64,
}

/// Progress of one consumer group on one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    /// Every offset below this is done.
    pub ack_offset: u64,
    /// First offset never handed out.
    pub next_offset: u64,
    /// Done offsets at or above `ack_offset` (acked out of order).
    pub acked: BTreeSet<u64>,
    /// Handed out and not yet acked, by offset.
    pub inflight: BTreeMap<u64, Inflight>,
}

impl QueueState {
    /// Starts at `offset` (a new group starts at the queue's oldest message).
    pub fn starting_at(offset: u64) -> QueueState {
        QueueState { ack_offset: offset, next_offset: offset, ..Default::default() }
    }

    /// Marks `offset` done and advances `ack_offset` over every done offset.
    pub fn mark_acked(&mut self, offset: u64) {
        self.inflight.remove(&offset);
        if offset >= self.ack_offset {
            self.acked.insert(offset);
        }
        while self.acked.remove(&self.ack_offset) {
            self.ack_offset += 1;
        }
        self.next_offset = self.next_offset.max(self.ack_offset);
    }

    /// Moves the group to `offset` (UpdateOffset, or a reset): everything below it is done and
    /// nothing is in flight.
    pub fn reset_to(&mut self, offset: u64) {
        *self = QueueState::starting_at(offset);
    }

    /// Keeps the state inside the queue's stored range `min..max` (after recovery cut the log,
    /// or retention deleted old messages).
    pub fn clamp(&mut self, min: u64, max: u64) {
        if self.next_offset > max {
            self.next_offset = max;
            self.ack_offset = self.ack_offset.min(max);
            self.acked.retain(|o| *o < max);
            self.inflight.retain(|o, _| *o < max);
        }
        if self.ack_offset < min {
            self.ack_offset = min;
            self.next_offset = self.next_offset.max(min);
            self.acked.retain(|o| *o >= min);
            self.inflight.retain(|o, _| *o >= min);
        }
    }

    /// Messages not yet acked (lag), given the queue's max offset.
    pub fn backlog(&self, max: u64) -> u64 {
        max.saturating_sub(self.ack_offset).saturating_sub(self.acked.len() as u64)
    }
}

/// Body of one ack record: the offsets one AckMessage call acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRecord {
    /// Consumer group.
    #[serde(rename = "g")]
    pub group: String,
    /// Topic.
    #[serde(rename = "t")]
    pub topic: String,
    /// (queue id, queue offset) pairs.
    #[serde(rename = "o")]
    pub offsets: Vec<(u32, u64)>,
    /// (queue id, offset) pairs the group's position was set to (UpdateOffset).
    #[serde(rename = "s", default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(u32, u64)>,
}

/// All groups' progress.
#[derive(Debug, Default)]
pub struct ConsumeState {
    /// Progress by (group, topic, queue).
    pub queues: HashMap<QueueKey, QueueState>,
}

impl ConsumeState {
    /// Applies a replayed ack record.
    pub fn apply(&mut self, ack: &AckRecord) {
        for (q, off) in &ack.offsets {
            self.queues
                .entry((ack.group.clone(), ack.topic.clone(), *q))
                .or_insert_with(|| QueueState::starting_at(0))
                .mark_acked(*off);
        }
        for (q, off) in &ack.set {
            self.queues
                .entry((ack.group.clone(), ack.topic.clone(), *q))
                .or_insert_with(|| QueueState::starting_at(0))
                .reset_to(*off);
        }
    }

    /// Every queue's progress, sorted (for the snapshot file).
    pub fn entries(&self) -> Vec<(QueueKey, QueueState)> {
        let mut queues: Vec<_> = self.queues.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        queues.sort_by(|a, b| a.0.cmp(&b.0));
        queues
    }

    /// State restored from snapshot entries (ack records after it are replayed with [`ConsumeState::apply`]).
    pub fn from_entries(entries: Vec<(QueueKey, QueueState)>) -> ConsumeState {
        ConsumeState { queues: entries.into_iter().collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_acks_advance_only_over_done_offsets() {
        let mut s = QueueState::starting_at(10);
        s.next_offset = 15;
        for o in 10..15 {
            s.inflight.insert(o, Inflight { pop_id: o, attempt: 1, visible_at_ms: 0, group: 0 });
        }
        s.mark_acked(12);
        s.mark_acked(11);
        assert_eq!(s.ack_offset, 10);
        s.mark_acked(10);
        assert_eq!(s.ack_offset, 13);
        assert_eq!(s.inflight.keys().copied().collect::<Vec<_>>(), vec![13, 14]);
        assert_eq!(s.backlog(15), 2);
        // A replayed ack past next_offset (handed out after the snapshot) is remembered.
        s.mark_acked(20);
        assert!(s.acked.contains(&20));
    }

    #[test]
    fn clamp_keeps_state_inside_the_stored_range() {
        let mut s = QueueState::starting_at(0);
        s.next_offset = 10;
        s.mark_acked(0);
        s.inflight.insert(8, Inflight { pop_id: 1, attempt: 1, visible_at_ms: 0, group: 0 });
        s.clamp(0, 5);
        assert_eq!((s.ack_offset, s.next_offset), (1, 5));
        assert!(s.inflight.is_empty());
        s.clamp(3, 5);
        assert_eq!((s.ack_offset, s.next_offset), (3, 5));
    }
}
