//! The master's write lease: how long it may go on taking writes without having heard from the
//! controller. The controller client renews it with every answered heartbeat, to the time that
//! heartbeat was sent plus `ha_fence_after_ms`; every write checks it when it is made, so a
//! master that was paused (SIGSTOP, a long GC-like stall of the host) refuses the writes waiting
//! for it on the first instruction after it resumes, before any watchdog could run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A deadline, or none (a broker without a controller is never fenced).
#[derive(Debug)]
pub struct Lease {
    base: Instant,
    /// Nanoseconds after `base` at which the lease runs out, plus one; 0: no lease is kept.
    until: AtomicU64,
}

impl Default for Lease {
    fn default() -> Self {
        Lease { base: Instant::now(), until: AtomicU64::new(0) }
    }
}

impl Lease {
    /// Writes are refused from `until` on; `None` stops keeping a lease (never expired).
    pub fn hold(&self, until: Option<Instant>) {
        let ns = until.map_or(0, |t| t.saturating_duration_since(self.base).as_nanos() as u64 + 1);
        self.until.store(ns, Ordering::Release);
    }

    /// True once a kept lease has run out (one atomic load, plus a clock read while one is kept).
    pub fn expired(&self) -> bool {
        match self.until.load(Ordering::Acquire) {
            0 => false,
            ns => self.base.elapsed().as_nanos() as u64 + 1 >= ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_lease_runs_out_at_its_deadline_and_none_never_does() {
        let lease = Lease::default();
        assert!(!lease.expired());
        lease.hold(Some(Instant::now() + Duration::from_secs(60)));
        assert!(!lease.expired());
        lease.hold(Some(Instant::now()));
        assert!(lease.expired());
        // A deadline before the lease was made is simply expired.
        lease.hold(Some(lease.base - Duration::from_millis(1)));
        assert!(lease.expired());
        lease.hold(None);
        assert!(!lease.expired());
    }
}
