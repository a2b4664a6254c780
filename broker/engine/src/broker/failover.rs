//! Role changes of the engine: a slave promoted to master, a master deposed to slave, and a
//! slave's log cut back to the point it shares with its master (the epoch history says where).

use std::collections::BTreeSet;

use super::{Broker, BrokerError};
use crate::ha::epochs::Epoch;
use crate::ha::role::{Role, RoleKind};
use crate::store::StoreError;
use crate::txn::HALF_TOPIC;

impl Broker {
    /// The broker's role now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// A receiver that sees every role change.
    pub fn subscribe_role(&self) -> tokio::sync::watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// True while the broker is a slave (read-only; it replicates its master).
    pub fn is_slave(&self) -> bool {
        !self.role.borrow().is_master()
    }

    /// The id this broker has in routes: 0 as master (RocketMQ `MASTER_ID`), otherwise its
    /// configured `broker_id` (at least 1, so a deposed master does not claim 0).
    pub fn route_id(&self) -> u32 {
        if self.is_slave() {
            self.cfg.broker_id.max(1)
        } else {
            0
        }
    }

    /// Sets the write lease: from `until` on, this broker (as master) refuses sends, half
    /// messages and commits with [`BrokerError::Fenced`], storing nothing; `None` keeps no lease.
    /// The controller client renews it to the time an answered heartbeat was sent plus
    /// `ha_fence_after_ms`, shorter than the controller's `controller_heartbeat_timeout_ms`, so a
    /// master cut off from the controller stops before a successor can be elected (the fencing
    /// of RocketMQ 5's controller mode, done by the master itself).
    pub fn hold_lease(&self, until: Option<std::time::Instant>) {
        self.lease.hold(until);
    }

    /// True while this broker's write lease has run out ([`Broker::hold_lease`]). Checked by
    /// every write when it is made.
    pub fn is_fenced(&self) -> bool {
        self.lease.expired()
    }

    /// The epoch history, oldest first.
    pub fn epoch_history(&self) -> Vec<Epoch> {
        self.epochs.lock().entries().to_vec()
    }

    /// On a slave: takes its master's epoch history. Errors: I/O.
    pub fn adopt_epochs(&self, entries: Vec<Epoch>) -> std::io::Result<()> {
        self.epochs.lock().adopt(entries)
    }

    /// Becomes the master of `epoch` (blocking): lets the store dispatch every replicated record
    /// and rebuild its queue offsets, records where the epoch starts in the history, and accepts
    /// writes; timer deliveries and transaction check-backs resume (their state was replicated).
    /// `with_controller`: the in-sync set is then the one the controller confirms, starting
    /// empty. Errors: the store could not catch up, or the history could not be written (the
    /// broker stays a slave).
    pub fn promote(&self, epoch: u64, with_controller: bool) -> Result<(), BrokerError> {
        if !self.is_slave() && self.role().epoch == epoch {
            return Ok(());
        }
        self.store.promote()?;
        if let Err(e) = self.epochs.lock().begin(epoch, self.store.commitlog_end()) {
            self.store.set_replica(true);
            return Err(StoreError::Io(e).into());
        }
        self.replicas.reset(with_controller.then(BTreeSet::new));
        self.set_replication_lag(None);
        self.role.send_replace(Role { kind: RoleKind::Master, epoch });
        self.update_dispatch_limit();
        self.wakeups.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Stops being master (or follows a new one): read-only at once, SYNC sends still waiting
    /// fail, and replication from `master` (epoch `epoch`) starts, truncating first if needed.
    pub fn demote(&self, master: String, epoch: u64) {
        self.store.set_replica(true);
        self.replicas.fence();
        self.role.send_replace(Role { kind: RoleKind::Slave { master: Some(master) }, epoch });
        self.update_dispatch_limit();
    }

    /// On a slave: cuts the log back to `offset` (see [`crate::store::Store::truncate`]) and
    /// forgets the consumer progress, open transactions and scheduled messages that came from
    /// the cut records, then snapshots the state at `offset` so a restart replays from there.
    /// Errors: as the store's truncate, I/O writing the snapshot.
    pub fn truncate_to(&self, offset: u64) -> Result<(), BrokerError> {
        {
            let (mut state, mut tx, mut timers) = (self.consume.write(), self.tx.lock(), self.timer.lock());
            self.store.truncate(offset)?;
            super::clamp_to_store(&mut state, &self.store);
            let halves = self.store.max_queue_offset(HALF_TOPIC, 0);
            tx.truncate(offset, halves);
            timers.retain_below(offset).map_err(StoreError::Io)?;
            self.snapshot_offset.store(offset, std::sync::atomic::Ordering::Release);
        }
        self.snapshot().map_err(StoreError::Io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::record::Record;
    use std::time::{Duration, Instant};

    #[test]
    fn a_master_whose_lease_ran_out_stores_nothing_until_it_is_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            data_dir: dir.path().into(),
            auto_create_topic: true,
            default_queue_count: 1,
            ..Config::default()
        };
        let b = Broker::open(cfg).unwrap();
        let send = |b: &Broker| b.append_message(&mut Record { topic: "T".into(), ..Default::default() }, None);
        send(&b).unwrap();
        let end = b.store().commitlog_end();
        b.hold_lease(Some(Instant::now()));
        assert!(matches!(send(&b), Err(BrokerError::Fenced)));
        let half = b.end_transaction_now("T", "id", "malformed", None, "");
        assert!(matches!(half, Err(BrokerError::Fenced)), "{half:?}");
        assert_eq!(b.store().commitlog_end(), end, "a refused send stores nothing");
        b.hold_lease(Some(Instant::now() + Duration::from_secs(60)));
        send(&b).unwrap();
        b.hold_lease(None);
        send(&b).unwrap();
    }
}
