//! Master/slave replication, the engine's side (RocketMQ `HAService`): what each slave has
//! confirmed, which slaves are in sync, and the wait a SYNC replication send makes. The byte
//! stream itself is in [`crate::grpc::ha`].
//!
//! A slave is in sync while it lags the master by at most `ha_max_lag_bytes` and has reported
//! within `ha_max_lag_ms`. A SYNC send is acknowledged once `min_in_sync_replicas` replicas,
//! the master included, hold it; a slave that holds it is in sync by definition.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

/// What the master knows of one slave.
#[derive(Debug, Clone, Copy)]
pub struct SlaveState {
    /// CommitLog end the slave last confirmed, bytes.
    pub offset: u64,
    /// When it last reported.
    pub reported: Instant,
}

/// The slaves of a master, by broker id.
#[derive(Debug)]
pub struct Replicas {
    slaves: Mutex<BTreeMap<u32, SlaveState>>,
    /// Bumped on every report, so waiters re-check.
    changed: watch::Sender<u64>,
}

impl Default for Replicas {
    fn default() -> Self {
        Replicas { slaves: Mutex::new(BTreeMap::new()), changed: watch::channel(0).0 }
    }
}

/// Why a SYNC send could not be confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored on the master, but only {held} of the {needed} replicas required (min_in_sync_replicas) hold it after {waited_ms} ms")]
pub struct NotReplicated {
    /// Replicas (master included) that hold the message.
    pub held: u32,
    /// `min_in_sync_replicas`.
    pub needed: u32,
    /// How long the send waited, ms.
    pub waited_ms: u64,
}

impl Replicas {
    /// Records that slave `id` holds every CommitLog byte below `offset`.
    pub fn report(&self, id: u32, offset: u64) {
        self.slaves.lock().insert(id, SlaveState { offset, reported: Instant::now() });
        self.changed.send_modify(|n| *n += 1);
    }

    /// Forgets slave `id` (its stream ended).
    pub fn disconnected(&self, id: u32) {
        self.slaves.lock().remove(&id);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Every connected slave, by id.
    pub fn slaves(&self) -> BTreeMap<u32, SlaveState> {
        self.slaves.lock().clone()
    }

    /// Ids of the slaves in sync with a master whose CommitLog ends at `master_end`.
    pub fn in_sync(&self, master_end: u64, max_lag_bytes: u64, max_lag: Duration) -> Vec<u32> {
        self.slaves
            .lock()
            .iter()
            .filter(|(_, s)| master_end.saturating_sub(s.offset) <= max_lag_bytes && s.reported.elapsed() <= max_lag)
            .map(|(id, _)| *id)
            .collect()
    }

    fn holding(&self, end: u64) -> u32 {
        1 + self.slaves.lock().values().filter(|s| s.offset >= end).count() as u32
    }

    /// Waits until `needed` replicas (the master, which holds it, and slaves that confirmed
    /// it) hold CommitLog offset `end`, at most `timeout`. Errors: [`NotReplicated`].
    pub async fn wait(&self, end: u64, needed: u32, timeout: Duration) -> Result<(), NotReplicated> {
        let started = Instant::now();
        let mut rx = self.changed.subscribe();
        let done = tokio::time::timeout(timeout, rx.wait_for(|_| self.holding(end) >= needed)).await;
        match done {
            Ok(Ok(_)) => Ok(()),
            _ => {
                Err(NotReplicated { held: self.holding(end), needed, waited_ms: started.elapsed().as_millis() as u64 })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sync_send_waits_for_enough_replicas_and_times_out_clearly() {
        let r = Replicas::default();
        assert!(r.wait(100, 1, Duration::from_millis(10)).await.is_ok(), "the master alone is enough for 1");
        let err = r.wait(100, 2, Duration::from_millis(50)).await.unwrap_err();
        assert_eq!((err.held, err.needed), (1, 2));
        assert!(err.to_string().contains("only 1 of the 2 replicas"), "{err}");
        r.report(1, 50);
        let waiter = r.wait(100, 2, Duration::from_secs(5));
        let reporter = async {
            tokio::task::yield_now().await;
            r.report(1, 120);
        };
        let (done, _) = tokio::join!(waiter, reporter);
        assert!(done.is_ok());
        assert_eq!(r.in_sync(130, 64, Duration::from_secs(1)), vec![1]);
        assert!(r.in_sync(1_000, 64, Duration::from_secs(1)).is_empty(), "lagging 880 bytes is out of sync");
        r.disconnected(1);
        assert!(r.slaves().is_empty());
    }
}
