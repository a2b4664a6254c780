//! Master/slave replication, the engine's side (RocketMQ `HAService`): what each slave has
//! confirmed, which slaves are in sync, and the wait a SYNC replication send makes. The byte
//! stream is the binary's (`grpc::ha`, `cluster::slave`); a broker's role is in [`role`].
//!
//! A slave is in sync while it holds the master's whole log, or lags by at most
//! `ha_max_lag_bytes` and held the whole log within the last `ha_max_lag_ms` (Kafka's
//! last-caught-up time, RocketMQ `haMaxTimeSlaveNotCatchup`). A SYNC send is acknowledged once
//! every slave of the in-sync set holds it and the set, master included, has at least
//! `min_in_sync_replicas` members (RocketMQ `allAckInSyncStateSet`, Kafka `acks=all`). With a
//! controller the set waited on is the one the controller confirmed, so a slave leaves it (and
//! stops being waited for) only once the controller knows it may not be elected.

pub mod epochs;
pub mod lease;
pub mod role;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

/// What the master knows of one slave.
#[derive(Debug, Clone, Copy)]
pub struct SlaveState {
    /// CommitLog end the slave last confirmed, bytes.
    pub offset: u64,
    /// When it last held every byte the master had (`None`: not since it connected).
    pub caught_up: Option<Instant>,
}

/// How far a slave may fall behind and stay in sync.
#[derive(Debug, Clone, Copy)]
pub struct LagBounds {
    /// `ha_max_lag_bytes`.
    pub bytes: u64,
    /// `ha_max_lag_ms`.
    pub time: Duration,
}

impl SlaveState {
    fn in_sync(&self, master_end: u64, bounds: LagBounds) -> bool {
        self.offset >= master_end
            || (master_end - self.offset <= bounds.bytes && self.caught_up.is_some_and(|t| t.elapsed() <= bounds.time))
    }
}

#[derive(Debug, Default)]
struct Inner {
    slaves: BTreeMap<String, SlaveState>,
    /// The in-sync slaves as the controller confirmed them; `None` without a controller (the
    /// set is then computed from the slaves' reports at each wait).
    confirmed: Option<BTreeSet<String>>,
    /// Set when this broker stopped being master: no send can be confirmed any more.
    fenced: bool,
}

impl Inner {
    fn live(&self, master_end: u64, bounds: LagBounds) -> BTreeSet<String> {
        self.slaves.iter().filter(|(_, s)| s.in_sync(master_end, bounds)).map(|(e, _)| e.clone()).collect()
    }

    fn waited_on(&self, master_end: u64, bounds: LagBounds) -> BTreeSet<String> {
        self.confirmed.clone().unwrap_or_else(|| self.live(master_end, bounds))
    }
}

/// The slaves of a master, by endpoint.
#[derive(Debug)]
pub struct Replicas {
    inner: Mutex<Inner>,
    bounds: LagBounds,
    /// Bumped on every change, so waiters re-check.
    changed: watch::Sender<u64>,
}

/// Why a SYNC send could not be confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct NotReplicated {
    /// Replicas (master included) of the in-sync set that hold the message.
    pub held: u32,
    /// Replicas that had to hold it: the in-sync set, and at least `min_in_sync_replicas`.
    pub needed: u32,
    /// `min_in_sync_replicas`.
    pub min: u32,
    /// The in-sync slaves waited on.
    pub in_sync: Vec<String>,
    /// How long the send waited, ms.
    pub waited_ms: u64,
    /// The broker lost its master role while the send waited.
    pub fenced: bool,
}

impl NotReplicated {
    fn describe(&self) -> String {
        if self.fenced {
            return "this broker is no longer the master (a new master was elected): the message may be lost".into();
        }
        format!(
            "stored on the master, but only {} of the {} replicas required hold it after {} ms (min_in_sync_replicas {}, in-sync set {:?})",
            self.held, self.needed, self.waited_ms, self.min, self.in_sync
        )
    }
}

impl Replicas {
    /// No slaves yet; `bounds` decides who is in sync.
    pub fn new(bounds: LagBounds) -> Replicas {
        Replicas { inner: Mutex::default(), bounds, changed: watch::channel(0).0 }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Records that slave `endpoint` holds every CommitLog byte below `offset`, when the
    /// master's log ended at `master_end`.
    pub fn report(&self, endpoint: &str, offset: u64, master_end: u64) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let caught_up =
            if offset >= master_end { Some(now) } else { inner.slaves.get(endpoint).and_then(|s| s.caught_up) };
        inner.slaves.insert(endpoint.to_string(), SlaveState { offset, caught_up });
        drop(inner);
        self.bump();
    }

    /// Forgets slave `endpoint` (its stream ended).
    pub fn disconnected(&self, endpoint: &str) {
        self.inner.lock().slaves.remove(endpoint);
        self.bump();
    }

    /// Forgets every slave and the fence; `confirmed` starts the confirmed set (a new master).
    pub fn reset(&self, confirmed: Option<BTreeSet<String>>) {
        *self.inner.lock() = Inner { slaves: BTreeMap::new(), confirmed, fenced: false };
        self.bump();
    }

    /// Fails every waiting and later SYNC send until the next [`Replicas::reset`] (the broker
    /// stopped being master: what it stores now is not what the group keeps).
    pub fn fence(&self) {
        self.inner.lock().fenced = true;
        self.bump();
    }

    /// Every connected slave, by endpoint.
    pub fn slaves(&self) -> BTreeMap<String, SlaveState> {
        self.inner.lock().slaves.clone()
    }

    /// Endpoints of the connected slaves in sync with a master whose log ends at `master_end`.
    pub fn in_sync(&self, master_end: u64) -> BTreeSet<String> {
        self.inner.lock().live(master_end, self.bounds)
    }

    /// The in-sync slaves SYNC sends wait on: the controller's confirmed set, or without a
    /// controller [`Replicas::in_sync`] at `master_end`.
    pub fn waited_on(&self, master_end: u64) -> BTreeSet<String> {
        self.inner.lock().waited_on(master_end, self.bounds)
    }

    /// The in-sync slaves the controller confirmed (`None` without a controller).
    pub fn confirmed(&self) -> Option<BTreeSet<String>> {
        self.inner.lock().confirmed.clone()
    }

    /// Sets the in-sync slaves the controller confirmed; waiting sends re-check against them.
    pub fn set_confirmed(&self, set: BTreeSet<String>) {
        self.inner.lock().confirmed = Some(set);
        self.bump();
    }

    /// What every in-sync slave waited on holds, given a master log ending at `master_end`:
    /// the lowest of their offsets (0 for one not connected), or `u64::MAX` with none (nothing to
    /// hold back). Consumers see no further than this under SYNC replication.
    pub fn confirmed_offset(&self, master_end: u64) -> u64 {
        let inner = self.inner.lock();
        let members = inner.waited_on(master_end, self.bounds);
        members.iter().map(|m| inner.slaves.get(m).map_or(0, |s| s.offset)).min().unwrap_or(u64::MAX)
    }

    /// (in-sync slaves waited on, how many of them hold `end`, fenced).
    fn holding(&self, end: u64) -> (BTreeSet<String>, u32, bool) {
        let inner = self.inner.lock();
        let members = inner.waited_on(end, self.bounds);
        let held = members.iter().filter(|m| inner.slaves.get(*m).is_some_and(|s| s.offset >= end)).count() as u32;
        (members, held, inner.fenced)
    }

    /// Waits until every in-sync slave holds CommitLog offset `end` and the in-sync set, master
    /// included, has at least `min` members, at most `timeout`. Errors: [`NotReplicated`].
    pub async fn wait(&self, end: u64, min: u32, timeout: Duration) -> Result<(), NotReplicated> {
        let started = Instant::now();
        let mut rx = self.changed.subscribe();
        let enough = |_: &u64| {
            let (members, held, fenced) = self.holding(end);
            fenced || (held == members.len() as u32 && 1 + held >= min)
        };
        let waited = tokio::time::timeout(timeout, rx.wait_for(enough)).await;
        let (members, held, fenced) = self.holding(end);
        match waited {
            Ok(Ok(_)) if !fenced => Ok(()),
            _ => Err(NotReplicated {
                held: 1 + held,
                needed: (1 + members.len() as u32).max(min),
                min,
                in_sync: members.into_iter().collect(),
                waited_ms: started.elapsed().as_millis() as u64,
                fenced,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: LagBounds = LagBounds { bytes: 64, time: Duration::from_secs(5) };

    #[tokio::test]
    async fn a_sync_send_waits_for_every_in_sync_slave_and_times_out_clearly() {
        let r = Replicas::new(BOUNDS);
        assert!(r.wait(100, 1, Duration::from_millis(10)).await.is_ok(), "the master alone is enough for 1");
        let err = r.wait(100, 2, Duration::from_millis(50)).await.unwrap_err();
        assert_eq!((err.held, err.needed), (1, 2));
        assert!(err.to_string().contains("only 1 of the 2 replicas required"), "{err}");
        // A new slave far behind is not in sync, so a min-1 send does not wait for it ...
        r.report("s:1", 0, 1_000);
        assert!(r.in_sync(1_000).is_empty());
        assert!(r.wait(1_000, 1, Duration::from_millis(10)).await.is_ok());
        // ... but once caught up it is, and sends wait for it.
        r.report("s:1", 1_000, 1_000);
        assert_eq!(r.in_sync(1_010), BTreeSet::from(["s:1".to_string()]));
        let waiter = r.wait(1_010, 1, Duration::from_secs(5));
        let reporter = async {
            tokio::task::yield_now().await;
            r.report("s:1", 1_010, 1_010);
        };
        let (done, _) = tokio::join!(waiter, reporter);
        assert!(done.is_ok());
        assert!(r.in_sync(2_000).is_empty(), "lagging 990 bytes is out of sync");
        r.disconnected("s:1");
        assert!(r.slaves().is_empty());
    }

    #[tokio::test]
    async fn with_a_controller_the_confirmed_set_is_waited_on_even_after_a_slave_disconnects() {
        let r = Replicas::new(BOUNDS);
        r.report("s:1", 500, 500);
        r.set_confirmed(BTreeSet::from(["s:1".to_string()]));
        r.disconnected("s:1");
        // Until the controller confirms the shrink, a send waits for the lost slave.
        let err = r.wait(600, 1, Duration::from_millis(50)).await.unwrap_err();
        assert_eq!(err.in_sync, ["s:1"]);
        let waiter = r.wait(600, 1, Duration::from_secs(5));
        let shrink = async {
            tokio::task::yield_now().await;
            r.set_confirmed(BTreeSet::new());
        };
        let (done, _) = tokio::join!(waiter, shrink);
        assert!(done.is_ok(), "the shrunk set releases the waiting send");

        // A deposed master confirms nothing, even with no slave to wait for.
        r.fence();
        let err = r.wait(700, 1, Duration::from_secs(5)).await.unwrap_err();
        assert!(err.fenced && err.to_string().contains("no longer the master"), "{err}");
        r.reset(None);
        assert!(r.wait(700, 1, Duration::from_millis(10)).await.is_ok());
    }
}
