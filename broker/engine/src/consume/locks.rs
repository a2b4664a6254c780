//! Queue locks of orderly consumers (RocketMQ `RebalanceLockManager`): a queue of a group is held
//! by one client at a time for a lease, renewed by the client every 20 s, so two members never
//! consume one queue in parallel while a rebalance moves it. Kept in memory, as RocketMQ does: a
//! restarted broker hands locks out again as clients renew them.

use std::collections::HashMap;

use parking_lot::Mutex;

/// How long a lock lasts without renewal, ms (RocketMQ `rebalanceLockMaxLiveTime`, 60 s).
pub const LOCK_LEASE_MS: u64 = 60_000;

/// (group, topic, queue id).
type QueueKey = (String, String, u32);

/// Every group's queue locks: holder client id and expiry (ms since the epoch).
#[derive(Default)]
pub struct QueueLocks {
    table: Mutex<HashMap<QueueKey, (String, u64)>>,
}

impl QueueLocks {
    /// Locks (or renews) each queue of `queues` (topic, queue id) for `client` at `now` (ms since
    /// the epoch), unless another client holds it unexpired. Returns the queues `client` holds.
    pub fn lock(&self, group: &str, client: &str, queues: &[(String, u32)], now: u64) -> Vec<(String, u32)> {
        let mut t = self.table.lock();
        queues
            .iter()
            .filter(|(topic, q)| {
                let e = t.entry((group.to_string(), topic.clone(), *q)).or_insert_with(|| (client.to_string(), 0));
                if e.0 == client || e.1 <= now {
                    *e = (client.to_string(), now + LOCK_LEASE_MS);
                    true
                } else {
                    false
                }
            })
            .cloned()
            .collect()
    }

    /// Releases the queues `client` holds among `queues`.
    pub fn unlock(&self, group: &str, client: &str, queues: &[(String, u32)]) {
        let mut t = self.table.lock();
        for (topic, q) in queues {
            let key = (group.to_string(), topic.clone(), *q);
            if t.get(&key).is_some_and(|(holder, _)| holder == client) {
                t.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_holds_a_queue_until_it_unlocks_or_the_lease_ends() {
        let l = QueueLocks::default();
        let qs = vec![("t".to_string(), 0), ("t".to_string(), 1)];
        assert_eq!(l.lock("g", "a", &qs, 1_000), qs);
        assert!(l.lock("g", "b", &qs, 2_000).is_empty(), "held by a");
        assert_eq!(l.lock("other", "b", &qs, 2_000), qs, "groups lock apart");
        l.unlock("g", "a", &qs[..1]);
        assert_eq!(l.lock("g", "b", &qs, 3_000), qs[..1].to_vec());
        assert_eq!(l.lock("g", "b", &qs, 1_000 + LOCK_LEASE_MS), qs, "a's lease on queue 1 ran out");
    }
}
