//! Consumer progress for RocketMQ 5 "pop" consumption, per (consumer group, topic, queue):
//! every offset below `ack_offset` is done; offsets in `ack_offset..next_offset` are either acked
//! (`acked`) or handed out and invisible until their deadline (`inflight`); offsets from
//! `next_offset` on have never been handed out.
//!
//! Durability: each ack is appended to the CommitLog as a record of [`ACK_LOG_TOPIC`] (so it is as
//! durable as a message under the same flush policy, and replicates with the log). Every
//! checkpoint appends what changed since the last one to the progress log
//! ([`crate::consume::progress_log`]) with the CommitLog offset it covers; on start, the log is
//! read and the ack records after that offset are replayed. Each [`QueueState`] notes which of
//! its offsets changed, so a checkpoint writes those, not the whole state. In-flight deliveries
//! after the last checkpoint are not persisted: after a crash they are handed out again
//! (at-least-once), but an acknowledged message never is.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use parking_lot::{Mutex, MutexGuard};
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

/// What changed in one queue's progress since the last checkpoint.
#[derive(Debug, Clone, Default)]
struct Changed {
    /// Anything at all (the offsets, or an entry).
    any: bool,
    /// Everything: the next checkpoint writes the whole state (new, reset or clamped).
    whole: bool,
    /// Offsets whose entry (acked, in flight, neither) changed.
    offsets: BTreeSet<u64>,
}

impl Changed {
    /// The whole state changed (new, reset or clamped).
    const WHOLE: Changed = Changed { any: true, whole: true, offsets: BTreeSet::new() };
}

/// Progress of one consumer group on one queue. Every change goes through its methods, which
/// note it for the next checkpoint ([`QueueState::take_delta`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueState {
    ack_offset: u64,
    next_offset: u64,
    acked: BTreeSet<u64>,
    inflight: BTreeMap<u64, Inflight>,
    #[serde(skip)]
    changed: Changed,
}

impl QueueState {
    /// Starts at `offset` (a new group starts at the queue's oldest message); the next
    /// checkpoint writes it whole.
    pub fn starting_at(offset: u64) -> QueueState {
        QueueState {
            ack_offset: offset,
            next_offset: offset,
            acked: BTreeSet::new(),
            inflight: BTreeMap::new(),
            changed: Changed::WHOLE,
        }
    }

    /// Every offset below this is done.
    pub fn ack_offset(&self) -> u64 {
        self.ack_offset
    }

    /// First offset never handed out.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Whether `offset` is done.
    pub fn is_acked(&self, offset: u64) -> bool {
        offset < self.ack_offset || self.acked.contains(&offset)
    }

    /// Handed out (or, in FIFO groups, held) and not yet acked, by offset.
    pub fn inflight(&self) -> &BTreeMap<u64, Inflight> {
        &self.inflight
    }

    fn touch(&mut self, offset: u64) {
        self.changed.any = true;
        if !self.changed.whole {
            self.changed.offsets.insert(offset);
        }
    }

    /// Takes `next_offset` to hand out (or skip) and moves past it.
    pub fn take_next(&mut self) -> u64 {
        self.changed.any = true;
        self.next_offset += 1;
        self.next_offset - 1
    }

    /// Puts `offset` (not done: see [`QueueState::is_acked`]) in flight as `f`, or replaces its
    /// entry.
    pub fn set_inflight(&mut self, offset: u64, f: Inflight) {
        debug_assert!(!self.is_acked(offset), "offset {offset} is done");
        self.touch(offset);
        self.inflight.insert(offset, f);
    }

    /// The in-flight entry at `offset`, to change.
    pub fn inflight_mut(&mut self, offset: u64) -> Option<&mut Inflight> {
        if !self.inflight.contains_key(&offset) {
            return None;
        }
        self.touch(offset);
        self.inflight.get_mut(&offset)
    }

    /// Marks `offset` done and advances `ack_offset` over every done offset.
    pub fn mark_acked(&mut self, offset: u64) {
        self.touch(offset);
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

    /// Applies what `ack` says of queue `q` (this state's queue): its offsets acked, then its
    /// position set.
    pub fn apply_ack(&mut self, q: u32, ack: &AckRecord) {
        for (_, off) in ack.offsets.iter().filter(|(aq, _)| *aq == q) {
            self.mark_acked(*off);
        }
        for (_, off) in ack.set.iter().filter(|(aq, _)| *aq == q) {
            self.reset_to(*off);
        }
    }

    /// Keeps the state inside the queue's stored range `min..max` (after recovery cut the log,
    /// or retention deleted old messages).
    pub fn clamp(&mut self, min: u64, max: u64) {
        if self.next_offset > max {
            self.next_offset = max;
            self.ack_offset = self.ack_offset.min(max);
            self.acked.retain(|o| *o < max);
            self.inflight.retain(|o, _| *o < max);
            self.changed = Changed::WHOLE;
        }
        if self.ack_offset < min {
            self.ack_offset = min;
            self.next_offset = self.next_offset.max(min);
            self.acked.retain(|o| *o >= min);
            self.inflight.retain(|o, _| *o >= min);
            self.changed = Changed::WHOLE;
        }
    }

    /// Messages not yet acked (lag), given the queue's max offset.
    pub fn backlog(&self, max: u64) -> u64 {
        max.saturating_sub(self.ack_offset).saturating_sub(self.acked.len() as u64)
    }

    /// What changed since the last call (everything if `whole`), as a delta for the progress
    /// log; `None` if nothing did. Clears the record of changes.
    fn take_delta(&mut self, key: &QueueKey, whole: bool) -> Option<QueueDelta> {
        let changed = std::mem::take(&mut self.changed);
        if !changed.any && !whole {
            return None;
        }
        let mut d = QueueDelta {
            key: key.clone(),
            ack_offset: self.ack_offset,
            next_offset: self.next_offset,
            whole: whole || changed.whole,
            done: Vec::new(),
            inflight: Vec::new(),
            open: Vec::new(),
        };
        let entry = |o: &u64, f: &Inflight| (*o, f.pop_id, f.attempt, f.visible_at_ms, f.group);
        if d.whole {
            d.done = self.acked.iter().copied().collect();
            d.inflight = self.inflight.iter().map(|(o, f)| entry(o, f)).collect();
            return Some(d);
        }
        for o in changed.offsets.into_iter().filter(|o| *o >= self.ack_offset) {
            match self.inflight.get(&o) {
                Some(f) => d.inflight.push(entry(&o, f)),
                None if self.acked.contains(&o) => d.done.push(o),
                None => d.open.push(o),
            }
        }
        Some(d)
    }

    /// Applies a delta [`QueueState::take_delta`] made (of this queue's earlier state, or of none
    /// if it is whole).
    fn apply_delta(&mut self, d: &QueueDelta) {
        if d.whole {
            *self = QueueState::starting_at(d.ack_offset);
        } else {
            for o in d.open.iter().chain(&d.done).chain(d.inflight.iter().map(|e| &e.0)) {
                self.acked.remove(o);
                self.inflight.remove(o);
            }
        }
        self.acked.extend(&d.done);
        for &(o, pop_id, attempt, visible_at_ms, group) in &d.inflight {
            self.inflight.insert(o, Inflight { pop_id, attempt, visible_at_ms, group });
        }
        self.ack_offset = d.ack_offset;
        self.next_offset = d.next_offset;
        self.acked = self.acked.split_off(&d.ack_offset);
        self.inflight = self.inflight.split_off(&d.ack_offset);
        self.changed = Changed::default();
    }
}

/// What changed in one queue's progress between two checkpoints: its offsets, and each offset
/// whose entry changed, by its new entry (a whole delta lists every entry instead). One line of
/// the progress log holds these for every changed queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDelta {
    /// (consumer group, topic, queue id).
    #[serde(rename = "k")]
    pub key: QueueKey,
    /// `ack_offset` after the change.
    #[serde(rename = "a")]
    pub ack_offset: u64,
    /// `next_offset` after the change.
    #[serde(rename = "n")]
    pub next_offset: u64,
    /// The delta replaces the queue's state instead of changing it.
    #[serde(rename = "w", default, skip_serializing_if = "std::ops::Not::not")]
    pub whole: bool,
    /// Offsets now acked (at or above `ack_offset`).
    #[serde(rename = "d", default, skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<u64>,
    /// Offsets now in flight: (offset, pop id, attempt, visible at ms, message group hash).
    #[serde(rename = "f", default, skip_serializing_if = "Vec::is_empty")]
    pub inflight: Vec<(u64, u64, u32, u64, u64)>,
    /// Offsets now neither (no longer in flight, not acked).
    #[serde(rename = "o", default, skip_serializing_if = "Vec::is_empty")]
    pub open: Vec<u64>,
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

/// What changed in all groups' progress between two checkpoints (one line of the progress log).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressDelta {
    /// Queues whose progress was removed (topic deleted), applied first.
    #[serde(rename = "r", default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<QueueKey>,
    /// Changed queues.
    #[serde(rename = "q", default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueDelta>,
}

/// All groups' progress, with a lock per queue: the broker keeps it behind a read-write lock,
/// so a receive or ack locks only its own queue (under the read lock), and what changes the set
/// of queues or must see them all at one instant (a new queue, a checkpoint, replay) takes the
/// write lock.
#[derive(Debug, Default)]
pub struct ConsumeState {
    queues: HashMap<QueueKey, Mutex<QueueState>>,
    /// Keys removed since the last checkpoint.
    removed: HashSet<QueueKey>,
}

impl ConsumeState {
    /// Applies a replayed ack record.
    pub fn apply(&mut self, ack: &AckRecord) {
        let mut queues: Vec<u32> = ack.offsets.iter().chain(&ack.set).map(|(q, _)| *q).collect();
        queues.sort_unstable();
        queues.dedup();
        for q in queues {
            self.get_or_insert_with((ack.group.clone(), ack.topic.clone(), q), || QueueState::starting_at(0))
                .apply_ack(q, ack);
        }
    }

    /// The progress of `key`, locked, if any. Blocks while another caller holds that queue.
    pub fn lock(&self, key: &QueueKey) -> Option<MutexGuard<'_, QueueState>> {
        self.queues.get(key).map(|m| m.lock())
    }

    /// The progress of `key`, made with `new` if there is none.
    pub fn get_or_insert_with(&mut self, key: QueueKey, new: impl FnOnce() -> QueueState) -> &mut QueueState {
        self.queues.entry(key).or_insert_with(|| Mutex::new(new())).get_mut()
    }

    /// Every queue with progress.
    pub fn keys(&self) -> impl Iterator<Item = &QueueKey> {
        self.queues.keys()
    }

    /// Calls `f` with every queue's progress, locking one queue at a time.
    pub fn for_each(&self, mut f: impl FnMut(&QueueKey, &mut QueueState)) {
        for (k, m) in &self.queues {
            f(k, &mut m.lock());
        }
    }

    /// Every queue's progress, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&QueueKey, &mut QueueState)> {
        self.queues.iter_mut().map(|(k, m)| (k, m.get_mut()))
    }

    /// Queues with progress.
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// True if no queue has progress.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Removes the progress of every queue `remove` says so of (a deleted topic).
    pub fn remove_where(&mut self, mut remove: impl FnMut(&QueueKey) -> bool) {
        let removed = &mut self.removed;
        self.queues.retain(|k, _| {
            let gone = remove(k);
            if gone {
                removed.insert(k.clone());
            }
            !gone
        });
    }

    /// What changed since the last call (everything, if `whole`), for the progress log; clears
    /// the record of changes. Looks at every queue (a flag each) but copies only what changed.
    pub fn take_changes(&mut self, whole: bool) -> ProgressDelta {
        let mut removed: Vec<QueueKey> = self.removed.drain().collect();
        removed.sort();
        let mut queues: Vec<QueueDelta> =
            self.queues.iter_mut().filter_map(|(k, st)| st.get_mut().take_delta(k, whole)).collect();
        queues.sort_by(|a, b| a.key.cmp(&b.key));
        ProgressDelta { removed: if whole { Vec::new() } else { removed }, queues }
    }

    /// Applies one line of the progress log (a generation's lines are replayed in order onto an
    /// empty state: its first write holds the whole state).
    pub fn apply_changes(&mut self, d: &ProgressDelta) {
        for k in &d.removed {
            self.queues.remove(k);
        }
        for q in &d.queues {
            self.get_or_insert_with(q.key.clone(), || QueueState::starting_at(0)).apply_delta(q);
        }
    }

    /// State restored from a snapshot's full list (snapshots written before the progress log);
    /// the first checkpoint writes it whole.
    pub fn from_entries(entries: Vec<(QueueKey, QueueState)>) -> ConsumeState {
        ConsumeState { queues: entries.into_iter().map(|(k, s)| (k, Mutex::new(s))).collect(), removed: HashSet::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f(pop_id: u64) -> Inflight {
        Inflight { pop_id, attempt: 1, visible_at_ms: 0, group: 0 }
    }

    /// The parts of a state that are persisted.
    fn persisted(s: &QueueState) -> (u64, u64, BTreeSet<u64>, BTreeMap<u64, Inflight>) {
        (s.ack_offset, s.next_offset, s.acked.clone(), s.inflight.clone())
    }

    #[test]
    fn out_of_order_acks_advance_only_over_done_offsets() {
        let mut s = QueueState::starting_at(10);
        for o in 10..15 {
            assert_eq!(s.take_next(), o);
            s.set_inflight(o, f(o));
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
        s.set_inflight(8, f(1));
        s.clamp(0, 5);
        assert_eq!((s.ack_offset, s.next_offset), (1, 5));
        assert!(s.inflight.is_empty());
        s.clamp(3, 5);
        assert_eq!((s.ack_offset, s.next_offset), (3, 5));
    }

    #[test]
    fn a_checkpoint_writes_only_the_offsets_that_changed() {
        let key: QueueKey = ("g".into(), "t".into(), 0);
        let mut s = QueueState::starting_at(0);
        for o in 0..1000 {
            s.take_next();
            s.set_inflight(o, f(o));
        }
        assert!(s.take_delta(&key, false).unwrap().whole);
        assert_eq!(s.take_delta(&key, false), None, "nothing changed since");
        s.mark_acked(500);
        s.inflight_mut(7).unwrap().visible_at_ms = 99;
        let d = s.take_delta(&key, false).unwrap();
        assert_eq!((d.done, d.inflight.len(), d.whole), (vec![500], 1, false));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Next,
        Inflight(u64),
        Ack(u64),
        Change(u64),
        Reset(u64),
        Clamp(u64, u64),
        Checkpoint,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Next),
            4 => (0..40u64).prop_map(Op::Inflight),
            4 => (0..40u64).prop_map(Op::Ack),
            2 => (0..40u64).prop_map(Op::Change),
            1 => (0..40u64).prop_map(Op::Reset),
            1 => (0..40u64, 0..40u64).prop_map(|(a, b)| Op::Clamp(a.min(b), a.max(b))),
            3 => Just(Op::Checkpoint),
        ]
    }

    proptest! {
        /// Replaying the deltas of every checkpoint, in order, gives the state as of the last one,
        /// whatever the operations between them.
        #[test]
        fn deltas_replayed_in_order_rebuild_the_state(ops in proptest::collection::vec(op(), 1..200)) {
            let key: QueueKey = ("g".into(), "t".into(), 3);
            let (mut live, mut rebuilt) = (QueueState::starting_at(5), QueueState::starting_at(0));
            for op in ops {
                match op {
                    Op::Next => { live.take_next(); }
                    // As the broker does: only an offset not yet done goes in flight.
                    Op::Inflight(o) => if !live.is_acked(o) { live.set_inflight(o, f(o * 7)) },
                    Op::Ack(o) => live.mark_acked(o),
                    Op::Change(o) => if let Some(e) = live.inflight_mut(o) { e.visible_at_ms += 1 },
                    Op::Reset(o) => live.reset_to(o),
                    Op::Clamp(min, max) => live.clamp(min, max),
                    Op::Checkpoint => {
                        if let Some(d) = live.take_delta(&key, false) {
                            rebuilt.apply_delta(&d);
                        }
                        prop_assert_eq!(persisted(&rebuilt), persisted(&live));
                    }
                }
            }
        }
    }

    #[test]
    fn removed_queues_and_whole_lines_replay() {
        let mut live = ConsumeState::default();
        for q in 0..3 {
            live.get_or_insert_with(("g".into(), "t".into(), q), || QueueState::starting_at(q as u64)).take_next();
        }
        let mut rebuilt = ConsumeState::default();
        rebuilt.apply_changes(&live.take_changes(false));
        live.remove_where(|k| k.2 == 1);
        let line = live.take_changes(false);
        assert_eq!((line.removed.len(), line.queues.len()), (1, 0));
        rebuilt.apply_changes(&line);
        let mut restarted = ConsumeState::default();
        restarted.apply_changes(&live.take_changes(true));
        for s in [&rebuilt, &restarted] {
            let mut keys: Vec<_> = s.queues.keys().map(|k| k.2).collect();
            keys.sort();
            assert_eq!(keys, vec![0, 2]);
            assert_eq!(s.lock(&("g".into(), "t".into(), 2)).unwrap().next_offset, 3);
        }
    }
}
