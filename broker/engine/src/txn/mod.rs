//! Transactional messages (RocketMQ `TransactionalMessageService`): half messages, their commit or
//! rollback, and the check-back of orphaned ones. All state is in the CommitLog:
//!
//! - a half message is stored in [`HALF_TOPIC`] (queue 0), with its real topic and queue in
//!   [`PROP_REAL_TOPIC`] / [`PROP_REAL_QID`]; its offset in that queue names the transaction;
//! - COMMIT appends the real message (same id, properties and body, marked with [`PROP_TX_HALF`])
//!   and then an op record in [`OP_TOPIC`]; ROLLBACK appends only the op record;
//! - each check-back appends an op record with the check count, so the count survives restarts.
//!
//! The in-memory [`TxState`] is checkpointed by what changed into the transaction log
//! (`transactions/`, a [`crate::state_log`] of [`TxDelta`] lines) and rebuilt on start from it
//! plus the records after the checkpoint ([`TxState::apply`]). The mark on the committed real message closes the window where a crash
//! falls between it and its op record: replay sees the commit and does not ask again (RocketMQ
//! would check back and could commit a second copy).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::state_log::{DeltaLog, LogCheckpoint, LogLine, LINE_ENTRIES};
use crate::store::record::Record;

/// System topic of half messages (RocketMQ `RMQ_SYS_TRANS_HALF_TOPIC`).
pub const HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// System topic of op records (RocketMQ `RMQ_SYS_TRANS_OP_HALF_TOPIC`).
pub const OP_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
/// Half message property: the topic it will be committed to (RocketMQ `REAL_TOPIC`).
pub const PROP_REAL_TOPIC: &str = "REAL_TOPIC";
/// Half message property: the queue it will be committed to (RocketMQ `REAL_QID`).
pub const PROP_REAL_QID: &str = "REAL_QID";
/// Half message property: client id of the producer that sent it (where check-backs go first).
pub const PROP_TX_CLIENT: &str = "__TX_CLIENT_ID";
/// Half message property: its own transaction timeout, ms (`orphaned_transaction_recovery_duration`).
pub const PROP_TX_RECOVERY_MS: &str = "__TX_RECOVERY_MS";
/// Committed message property: the half message's queue offset in [`HALF_TOPIC`].
pub const PROP_TX_HALF: &str = "__TX_HALF";
/// Resolved transactions remembered for idempotent answers to a repeated EndTransaction.
const RESOLVED_KEEP: usize = 1_000_000;

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// The real message was written.
    Commit,
    /// The half message was dropped.
    Rollback,
}

/// Body of an op record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord {
    /// Queue offset of the half message in [`HALF_TOPIC`].
    pub half: u64,
    /// Set when the transaction ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Set when a check-back was sent: checks sent so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<u32>,
    /// Who ended it: `client`, `check` (the producer's checker) or `check-max` (the broker gave up).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A half message not yet committed or rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// CommitLog offset of the half message.
    pub physical_offset: u64,
    /// Its record size, bytes.
    pub size: u32,
    /// The topic it will be committed to.
    pub topic: String,
    /// The producer that sent it.
    pub client_id: String,
    /// When it was stored, ms since the epoch.
    pub store_ms: u64,
    /// Check-backs sent so far.
    pub checks: u32,
    /// When the next check-back is due, ms since the epoch.
    pub next_check_ms: u64,
}

/// Every open transaction, plus recently resolved ones. Every change goes through its methods,
/// which note it for the next checkpoint ([`TxState::take_changes`]).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct TxState {
    /// Open transactions by half queue offset.
    pending: BTreeMap<u64, Pending>,
    /// Resolved transactions by half queue offset (the newest [`RESOLVED_KEEP`]).
    resolved: BTreeMap<u64, Resolution>,
    /// Open transactions by (next check time, half queue offset), so a check scan touches only
    /// what is due. Derived from `pending`; rebuilt with [`TxState::reindex`] after loading.
    #[serde(skip)]
    due: BTreeSet<(u64, u64)>,
    /// Half queue offsets added or resolved since the last checkpoint.
    #[serde(skip)]
    changed: BTreeSet<u64>,
    /// Half queue offsets only checked back since the last checkpoint (written as their check
    /// count and next check time, not whole).
    #[serde(skip)]
    checked: BTreeSet<u64>,
    /// The next checkpoint writes the whole state (imported, or cut back on a slave).
    #[serde(skip)]
    whole: bool,
}

/// What changed in the open transactions between two checkpoints (one line of the transaction
/// log), or the whole state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxDelta {
    /// The line replaces the state instead of changing it (the state was cut back or imported).
    #[serde(rename = "w", default, skip_serializing_if = "std::ops::Not::not")]
    pub whole: bool,
    /// Open transactions added, by half queue offset; applied first.
    #[serde(rename = "p", default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<(u64, Pending)>,
    /// Open transactions checked back: (half queue offset, checks sent, next check ms).
    #[serde(rename = "c", default, skip_serializing_if = "Vec::is_empty")]
    pub checked: Vec<(u64, u32, u64)>,
    /// Transactions resolved, by half queue offset.
    #[serde(rename = "r", default, skip_serializing_if = "Vec::is_empty")]
    pub resolved: Vec<(u64, Resolution)>,
}

impl LogLine for TxDelta {
    fn is_empty(&self) -> bool {
        !self.whole && self.pending.is_empty() && self.checked.is_empty() && self.resolved.is_empty()
    }

    /// Open transactions first, then checks, then resolutions, [`LINE_ENTRIES`] a line: the
    /// order they apply in; only the first line of a whole delta is whole (it may be its only,
    /// empty, line).
    fn split(self) -> Vec<TxDelta> {
        let mut lines = vec![TxDelta { whole: self.whole, ..TxDelta::default() }];
        let mut pending = self.pending.into_iter().peekable();
        while pending.peek().is_some() {
            lines.push(TxDelta { pending: pending.by_ref().take(LINE_ENTRIES).collect(), ..TxDelta::default() });
        }
        let mut checked = self.checked.into_iter().peekable();
        while checked.peek().is_some() {
            lines.push(TxDelta { checked: checked.by_ref().take(LINE_ENTRIES).collect(), ..TxDelta::default() });
        }
        let mut resolved = self.resolved.into_iter().peekable();
        while resolved.peek().is_some() {
            lines.push(TxDelta { resolved: resolved.by_ref().take(LINE_ENTRIES).collect(), ..TxDelta::default() });
        }
        // The first line carries only the flag: merged into the next, if there is one.
        if lines.len() > 1 {
            let first = lines.remove(0);
            lines[0].whole = first.whole;
        }
        lines
    }
}

/// The transaction log of one broker.
pub type TxLog = DeltaLog<TxDelta>;

/// Opens the transaction log in `dir` as `checkpoint` recorded it (see [`DeltaLog::open`]) and
/// returns it with the transactions it holds. Errors: as [`DeltaLog::open`].
pub fn open_log(dir: &Path, checkpoint: Option<LogCheckpoint>) -> io::Result<(TxLog, TxState)> {
    let mut state = TxState::default();
    let log = DeltaLog::open(dir, "transaction log", checkpoint, |d| state.apply_changes(&d))?;
    state.changed.clear();
    state.checked.clear();
    Ok((log, state))
}

/// Timing of check-backs, ms.
#[derive(Debug, Clone, Copy)]
pub struct CheckTiming {
    /// Age at which a half message is first checked (`transaction_timeout_ms`).
    pub timeout_ms: u64,
    /// Time between checks (`transaction_check_interval_ms`).
    pub interval_ms: u64,
}

/// The transaction id clients see for a half message at `half` in [`HALF_TOPIC`].
pub fn transaction_id(half: u64) -> String {
    format!("{half:016X}")
}

/// The half queue offset of a transaction id; `None` if it is not one of ours.
pub fn parse_transaction_id(id: &str) -> Option<u64> {
    (id.len() == 16).then(|| u64::from_str_radix(id, 16).ok()).flatten()
}

impl TxState {
    /// Rebuilds the due index from `pending` after deserialising a snapshot written before the
    /// transaction log; the next checkpoint writes it whole.
    pub fn imported(mut self) -> TxState {
        self.reindex();
        self.whole = true;
        self
    }

    /// Rebuilds the due index from `pending`.
    fn reindex(&mut self) {
        self.due = self.pending.iter().map(|(h, p)| (p.next_check_ms, *h)).collect();
    }

    /// Open transactions by half queue offset.
    pub fn pending(&self) -> &BTreeMap<u64, Pending> {
        &self.pending
    }

    /// How the transaction of `half` ended, if it is one of the newest [`RESOLVED_KEEP`] that did.
    pub fn resolution(&self, half: u64) -> Option<Resolution> {
        self.resolved.get(&half).copied()
    }

    /// Forgets what came from CommitLog records cut off a slave's log: open transactions whose
    /// half is at or past CommitLog offset `physical`, resolutions of halves at or past half
    /// queue offset `halves`. The next checkpoint writes the whole state.
    pub fn truncate(&mut self, physical: u64, halves: u64) {
        self.pending.retain(|_, p| p.physical_offset < physical);
        self.resolved.retain(|half, _| *half < halves);
        self.reindex();
        self.whole = true;
    }

    /// What changed since the last call (everything, if `whole` or the state was imported or
    /// cut back: then a delta that replaces the state), for the transaction log; clears the
    /// record of changes.
    pub fn take_changes(&mut self, whole: bool) -> TxDelta {
        let (changed, checked) = (std::mem::take(&mut self.changed), std::mem::take(&mut self.checked));
        if std::mem::take(&mut self.whole) || whole {
            return TxDelta {
                whole: true,
                pending: self.pending.iter().map(|(h, p)| (*h, p.clone())).collect(),
                checked: Vec::new(),
                resolved: self.resolved.iter().map(|(h, r)| (*h, *r)).collect(),
            };
        }
        let mut d = TxDelta::default();
        for h in &changed {
            if let Some(p) = self.pending.get(h) {
                d.pending.push((*h, p.clone()));
            } else if let Some(r) = self.resolved.get(h) {
                d.resolved.push((*h, *r));
            }
        }
        for h in checked.difference(&changed) {
            if let Some(p) = self.pending.get(h) {
                d.checked.push((*h, p.checks, p.next_check_ms));
            }
        }
        d
    }

    /// Applies one line of the transaction log (a generation's lines are replayed in order onto
    /// an empty state: its first write holds the whole state).
    fn apply_changes(&mut self, d: &TxDelta) {
        if d.whole {
            *self = TxState::default();
        }
        for (h, p) in &d.pending {
            if let Some(old) = self.pending.insert(*h, p.clone()) {
                self.due.remove(&(old.next_check_ms, *h));
            }
            self.due.insert((p.next_check_ms, *h));
        }
        for (h, checks, next_check_ms) in &d.checked {
            self.rescheduled(*h, *checks, *next_check_ms);
        }
        for (h, r) in &d.resolved {
            self.resolve(*h, *r);
        }
    }

    /// Half queue offsets whose check is due at `now`, earliest first, at most `max`.
    pub fn due(&self, now: u64, max: usize) -> Vec<u64> {
        self.due.iter().take_while(|(at, _)| *at <= now).take(max).map(|(_, h)| *h).collect()
    }

    /// Records that `checks` check-backs were sent for `half` and when the next one is due.
    pub fn rescheduled(&mut self, half: u64, checks: u32, next_check_ms: u64) {
        if let Some(p) = self.pending.get_mut(&half) {
            self.checked.insert(half);
            self.due.remove(&(p.next_check_ms, half));
            p.checks = p.checks.max(checks);
            p.next_check_ms = next_check_ms;
            self.due.insert((next_check_ms, half));
        }
    }

    /// Records a newly stored half message `rec` (topic [`HALF_TOPIC`], queue offset set).
    pub fn add_half(&mut self, rec: &Record, size: u32, t: CheckTiming) {
        // Ended, or already open (replayed twice): nothing to add.
        if self.resolved.contains_key(&rec.queue_offset) || self.pending.contains_key(&rec.queue_offset) {
            return;
        }
        let timeout = rec.properties.get(PROP_TX_RECOVERY_MS).and_then(|v| v.parse().ok()).unwrap_or(t.timeout_ms);
        self.changed.insert(rec.queue_offset);
        self.due.insert((rec.store_timestamp + timeout, rec.queue_offset));
        self.pending.insert(
            rec.queue_offset,
            Pending {
                physical_offset: rec.physical_offset,
                size,
                topic: rec.properties.get(PROP_REAL_TOPIC).cloned().unwrap_or_default(),
                client_id: rec.properties.get(PROP_TX_CLIENT).cloned().unwrap_or_default(),
                store_ms: rec.store_timestamp,
                checks: 0,
                next_check_ms: rec.store_timestamp + timeout,
            },
        );
    }

    /// Marks the half at `half` resolved.
    pub fn resolve(&mut self, half: u64, r: Resolution) {
        if let Some(p) = self.pending.remove(&half) {
            self.due.remove(&(p.next_check_ms, half));
        }
        self.resolved.insert(half, r);
        self.changed.insert(half);
        while self.resolved.len() > RESOLVED_KEEP {
            self.resolved.pop_first();
        }
    }

    /// Replays one CommitLog record of `size` bytes (half, op, or committed real message).
    pub fn apply(&mut self, rec: &Record, size: u32, t: CheckTiming) {
        if rec.topic == HALF_TOPIC {
            self.add_half(rec, size, t);
        } else if rec.topic == OP_TOPIC {
            let Ok(op) = serde_json::from_slice::<OpRecord>(&rec.body) else {
                tracing::error!(offset = rec.physical_offset, "unreadable transaction op record skipped");
                return;
            };
            if let Some(r) = op.resolution {
                self.resolve(op.half, r);
            } else if let Some(n) = op.checks {
                self.rescheduled(op.half, n, rec.store_timestamp + t.interval_ms);
            }
        } else if let Some(half) = rec.properties.get(PROP_TX_HALF).and_then(|h| h.parse().ok()) {
            // The committed message itself: the commit happened even if its op record did not.
            self.resolve(half, Resolution::Commit);
        }
    }
}

/// The real message a half message commits to: topic and queue restored, transaction
/// properties removed, marked with [`PROP_TX_HALF`].
pub fn real_message(half: &Record) -> Record {
    let mut rec = half.clone();
    rec.topic = half.properties.get(PROP_REAL_TOPIC).cloned().unwrap_or_default();
    rec.queue_id = half.properties.get(PROP_REAL_QID).and_then(|q| q.parse().ok()).unwrap_or(0);
    for p in [PROP_REAL_TOPIC, PROP_REAL_QID, PROP_TX_CLIENT, PROP_TX_RECOVERY_MS] {
        rec.properties.remove(p);
    }
    rec.properties.insert(PROP_TX_HALF.into(), half.queue_offset.to_string());
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: CheckTiming = CheckTiming { timeout_ms: 6_000, interval_ms: 30_000 };

    fn half(q: u64) -> Record {
        Record {
            topic: HALF_TOPIC.into(),
            queue_offset: q,
            physical_offset: q * 100,
            store_timestamp: 1_000,
            properties: [
                (PROP_REAL_TOPIC.to_string(), "orders".to_string()),
                (PROP_REAL_QID.to_string(), "3".to_string()),
            ]
            .into(),
            ..Default::default()
        }
    }

    fn op(o: OpRecord, at: u64) -> Record {
        Record {
            topic: OP_TOPIC.into(),
            store_timestamp: at,
            body: serde_json::to_vec(&o).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn replay_rebuilds_pending_checks_and_resolutions() {
        let mut s = TxState::default();
        for q in 0..4 {
            s.apply(&half(q), 100, T);
        }
        assert_eq!(s.pending[&0].next_check_ms, 7_000);
        s.apply(
            &op(
                OpRecord { half: 0, resolution: Some(Resolution::Commit), checks: None, reason: "client".into() },
                2_000,
            ),
            1,
            T,
        );
        s.apply(&op(OpRecord { half: 1, resolution: None, checks: Some(2), reason: String::new() }, 9_000), 1, T);
        s.apply(&real_message(&half(2)), 1, T); // committed, op record lost in a crash
        assert_eq!(s.pending.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!((s.pending[&1].checks, s.pending[&1].next_check_ms), (2, 39_000));
        assert_eq!(s.resolved.get(&2), Some(&Resolution::Commit));
        assert_eq!(s.due(u64::MAX, 10), vec![3, 1], "earliest check first");
        assert_eq!(s.due(7_000, 10), vec![3]);
        // A half replayed after its resolution stays resolved.
        s.apply(&half(0), 100, T);
        assert!(!s.pending.contains_key(&0));
    }

    #[test]
    fn real_message_restores_topic_and_queue() {
        let r = real_message(&half(7));
        assert_eq!((r.topic.as_str(), r.queue_id), ("orders", 3));
        assert!(!r.properties.contains_key(PROP_REAL_TOPIC));
        assert_eq!(r.properties[PROP_TX_HALF], "7");
        assert_eq!(parse_transaction_id(&transaction_id(7)), Some(7));
        assert_eq!(parse_transaction_id("7"), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Half(u64),
        Check(u64),
        End(u64, bool),
        Truncate(u64),
        Checkpoint,
    }

    fn change() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..30u64).prop_map(Op::Half),
            2 => (0..30u64).prop_map(Op::Check),
            3 => (0..30u64, any::<bool>()).prop_map(|(h, c)| Op::End(h, c)),
            1 => (0..30u64).prop_map(Op::Truncate),
            3 => Just(Op::Checkpoint),
        ]
    }

    proptest::proptest! {
        /// Replaying the transaction log's lines, in order, gives the open and ended transactions
        /// as of the last checkpoint, whatever happened between them.
        #[test]
        fn deltas_replayed_in_order_rebuild_the_transactions(ops in proptest::collection::vec(change(), 1..150)) {
            let (mut live, mut lines) = (TxState::default(), Vec::new());
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Half(q) => live.add_half(&half(q), 100, T),
                    Op::Check(q) => live.rescheduled(q, 1 + i as u32, 50_000 + i as u64),
                    Op::End(q, commit) => {
                        live.resolve(q, if commit { Resolution::Commit } else { Resolution::Rollback })
                    }
                    Op::Truncate(q) => live.truncate(q * 100, q),
                    Op::Checkpoint => {
                        lines.extend(live.take_changes(false).split());
                        let mut rebuilt = TxState::default();
                        for l in &lines {
                            rebuilt.apply_changes(l);
                        }
                        proptest::prop_assert_eq!(&rebuilt.pending, &live.pending);
                        proptest::prop_assert_eq!(&rebuilt.resolved, &live.resolved);
                        proptest::prop_assert_eq!(&rebuilt.due, &live.due);
                    }
                }
            }
        }
    }

    #[test]
    fn a_checkpoint_writes_only_what_changed_in_lines_of_bounded_entries() {
        let mut s = TxState::default();
        for q in 0..(LINE_ENTRIES as u64 + 10) {
            s.add_half(&half(q), 100, T);
        }
        let whole = s.take_changes(false);
        assert_eq!(whole.pending.len(), LINE_ENTRIES + 10);
        assert_eq!(whole.split().len(), 2);
        assert!(s.take_changes(false).is_empty(), "nothing changed since");
        s.resolve(3, Resolution::Commit);
        s.rescheduled(4, 1, 99_000);
        let d = s.take_changes(false);
        // A check-back is written as its count and next check time, not the whole transaction.
        assert!(d.pending.is_empty());
        assert_eq!(
            (d.checked.as_slice(), d.resolved.as_slice()),
            (&[(4, 1, 99_000)][..], &[(3, Resolution::Commit)][..])
        );
    }
}
