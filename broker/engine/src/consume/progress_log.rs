//! The progress log: consumer progress on disk, written by what changed ([`crate::state_log`]
//! over [`ProgressDelta`] lines: offsets acked, put in flight or given a new invisible time;
//! queues added, reset or removed) in `progress/`.

use std::io;
use std::path::Path;

use super::state::{ConsumeState, ProgressDelta, QueueDelta};
use crate::state_log::{DeltaLog, LogCheckpoint, LogLine, LINE_ENTRIES};

/// The progress log of one broker.
pub type ProgressLog = DeltaLog<ProgressDelta>;

/// Opens the progress log in `dir` as `checkpoint` recorded it (see [`DeltaLog::open`]) and
/// returns it with the progress it holds. Errors: as [`DeltaLog::open`].
pub fn open(dir: &Path, checkpoint: Option<LogCheckpoint>) -> io::Result<(ProgressLog, ConsumeState)> {
    let mut state = ConsumeState::default();
    let log = DeltaLog::open(dir, "progress log", checkpoint, |d| state.apply_changes(&d))?;
    Ok((log, state))
}

impl LogLine for ProgressDelta {
    fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.queues.is_empty()
    }

    /// A queue with more entries than a line holds is cut into pieces, the first as the delta had
    /// it (whole or not), the others adding their entries to it (not whole).
    fn split(self) -> Vec<ProgressDelta> {
        let mut lines = vec![ProgressDelta { removed: self.removed, queues: Vec::new() }];
        let mut budget = LINE_ENTRIES;
        for mut q in self.queues {
            loop {
                let n = q.done.len() + q.inflight.len() + q.open.len();
                if n <= budget {
                    budget -= n;
                    lines.last_mut().expect("one line at least").queues.push(q);
                    break;
                }
                if budget > 0 {
                    let inflight = budget.min(q.inflight.len());
                    let done = (budget - inflight).min(q.done.len());
                    let open = (budget - inflight - done).min(q.open.len());
                    let piece = QueueDelta {
                        key: q.key.clone(),
                        ack_offset: q.ack_offset,
                        next_offset: q.next_offset,
                        whole: q.whole,
                        done: q.done.drain(..done).collect(),
                        inflight: q.inflight.drain(..inflight).collect(),
                        open: q.open.drain(..open).collect(),
                    };
                    lines.last_mut().expect("one line at least").queues.push(piece);
                    q.whole = false; // the rest adds to the piece
                }
                lines.push(ProgressDelta::default());
                budget = LINE_ENTRIES;
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consume::state::{AckRecord, QueueState};

    fn ack(state: &mut ConsumeState, q: u32, offsets: &[u64]) {
        state.get_or_insert_with(("g".into(), "t".into(), q), || QueueState::starting_at(0));
        let offsets = offsets.iter().map(|o| (q, *o)).collect();
        state.apply(&AckRecord { group: "g".into(), topic: "t".into(), offsets, set: vec![] });
    }

    fn checkpoint(log: &mut ProgressLog, state: &mut ConsumeState) -> LogCheckpoint {
        let whole = log.needs_whole();
        log.write(state.take_changes(whole), whole).unwrap()
    }

    fn acked(state: &ConsumeState, q: u32) -> u64 {
        state.lock(&("g".into(), "t".into(), q)).map_or(0, |s| s.ack_offset())
    }

    #[test]
    fn reopening_at_a_checkpoint_gives_its_progress_and_drops_later_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = open(dir.path(), None).unwrap();
        ack(&mut state, 0, &[0, 1, 2]);
        let first = checkpoint(&mut log, &mut state);
        ack(&mut state, 1, &[0]);
        ack(&mut state, 0, &[3]);
        let second = checkpoint(&mut log, &mut state);
        assert_eq!(second.generation, first.generation, "a delta is appended");
        ack(&mut state, 0, &[4]);
        checkpoint(&mut log, &mut state); // written, but no snapshot lists it
        drop(log);
        let (_, at_second) = open(dir.path(), Some(second)).unwrap();
        assert_eq!((acked(&at_second, 0), acked(&at_second, 1)), (4, 1));
        let (_, at_first) = open(dir.path(), Some(first)).unwrap();
        assert_eq!((acked(&at_first, 0), acked(&at_first, 1)), (3, 0));
    }

    #[test]
    fn changes_that_outgrow_the_state_start_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = open(dir.path(), None).unwrap();
        let mut cp = checkpoint(&mut log, &mut state);
        let first = cp.generation;
        for o in 0..2_000 {
            ack(&mut state, 0, &[o]);
            cp = checkpoint(&mut log, &mut state);
            if cp.generation != first {
                break;
            }
        }
        assert_eq!(cp.generation, first + 1, "compacted after {} bytes", cp.len);
        let files = || std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files(), 2, "the old generation stays until a snapshot lists the new one");
        log.forget_retired();
        assert_eq!(files(), 1);
        let (_, reopened) = open(dir.path(), Some(cp)).unwrap();
        assert_eq!(acked(&reopened, 0), acked(&state, 0));
    }

    #[test]
    fn large_states_are_written_in_lines_of_bounded_entries_that_replay_to_the_same_state() {
        let mut live = ConsumeState::default();
        let inflight = crate::consume::state::Inflight { pop_id: 1, attempt: 1, visible_at_ms: 5, group: 0 };
        for q in 0..3u32 {
            let st = live.get_or_insert_with(("g".into(), "t".into(), q), || QueueState::starting_at(0));
            for _ in 0..(LINE_ENTRIES as u64 * 2 + 7) / (q as u64 + 1) {
                let o = st.take_next();
                st.set_inflight(o, inflight);
            }
            st.mark_acked(st.next_offset() - 1);
        }
        let whole = live.take_changes(true);
        let lines = whole.clone().split();
        assert!(lines.len() > 2, "{} lines", lines.len());
        let mut replayed = ConsumeState::default();
        for line in &lines {
            let n: usize = line.queues.iter().map(|q| q.done.len() + q.inflight.len() + q.open.len()).sum();
            assert!(n <= LINE_ENTRIES, "{n} entries in a line");
            replayed.apply_changes(line);
        }
        assert_eq!(replayed.take_changes(true), whole);
    }

    #[test]
    fn a_short_missing_or_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = open(dir.path(), None).unwrap();
        ack(&mut state, 0, &[0]);
        let cp = checkpoint(&mut log, &mut state);
        drop(log);
        let path = dir.path().join(format!("{:020}.log", cp.generation));
        let longer = LogCheckpoint { len: cp.len + 1, ..cp };
        let e = open(dir.path(), Some(longer)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] = b'x';
        std::fs::write(&path, bytes).unwrap();
        let e = open(dir.path(), Some(cp)).unwrap_err();
        assert!(e.to_string().contains("line at byte 0"), "{e}");
        let e = open(dir.path(), Some(LogCheckpoint { generation: 9, len: 5, base: 5 })).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
