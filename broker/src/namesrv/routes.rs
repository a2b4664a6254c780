//! The route table of a nameserver (RocketMQ `RouteInfoManager`): which brokers are alive, which
//! broker group (`broker_name`) each belongs to, and which topics each serves. Plain data: the
//! gRPC service and the expiry task drive it.

use std::collections::BTreeMap;

use crate::proto::clients::current;
use crate::proto::namesrv::{BrokerInfo, BrokerRegistration, GroupRoute, TopicRoute};

/// A registered broker: its last registration and when it was received.
#[derive(Debug, Clone)]
struct Entry {
    registration: BrokerRegistration,
    last_heartbeat_ms: u64,
}

/// Every broker registered with this nameserver, by (broker group, endpoint): with failover a
/// broker's id (0 = master) changes, its endpoint does not.
#[derive(Debug, Default)]
pub struct RouteTable {
    brokers: BTreeMap<(String, String), Entry>,
}

impl RouteTable {
    /// Records a registration received at `now_ms` (ms since the epoch), replacing the broker's
    /// previous one: its topic list is the whole set it serves. Returns true if the broker is new.
    pub fn register(&mut self, mut reg: BrokerRegistration, now_ms: u64) -> bool {
        let info = reg.broker.get_or_insert_with(BrokerInfo::default);
        info.last_heartbeat_ms = now_ms;
        let key = (info.broker_name.clone(), info.endpoint.clone());
        self.brokers.insert(key, Entry { registration: reg, last_heartbeat_ms: now_ms }).is_none()
    }

    /// Removes a broker (it shut down cleanly). Returns true if it was registered.
    pub fn unregister(&mut self, broker_name: &str, endpoint: &str) -> bool {
        self.brokers.remove(&(broker_name.to_string(), endpoint.to_string())).is_some()
    }

    /// Drops every broker not heard from for more than `expiry_ms` before `now_ms` (RocketMQ
    /// `scanNotActiveBroker`, 120 s); returns the dropped brokers' (group, endpoint).
    pub fn expire(&mut self, now_ms: u64, expiry_ms: u64) -> Vec<(String, String)> {
        let dead: Vec<(String, String)> = self
            .brokers
            .iter()
            .filter(|(_, e)| now_ms.saturating_sub(e.last_heartbeat_ms) > expiry_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &dead {
            self.brokers.remove(k);
        }
        dead
    }

    /// The broker groups serving `topic`, by group name: each with its live brokers, master
    /// first, then slaves by id, and the topic's configuration as the group's master registered
    /// it (or, with no master registered, the broker with the lowest id). Of several brokers of
    /// a group claiming id 0 (an old master not yet expired after a failover), the one with the
    /// highest epoch is the master and the others are left out. Empty if no group serves it.
    pub fn route(&self, topic: &str) -> Vec<GroupRoute> {
        let mut groups: BTreeMap<&str, Vec<(&BrokerInfo, &TopicRoute)>> = BTreeMap::new();
        for ((name, _), e) in &self.brokers {
            let (Some(info), Some(t)) =
                (e.registration.broker.as_ref(), e.registration.topics.iter().find(|t| t.name == topic))
            else {
                continue;
            };
            groups.entry(name).or_default().push((info, t));
        }
        groups
            .into_iter()
            .map(|(name, members)| {
                let members = current(members, |(b, _)| b);
                GroupRoute {
                    broker_name: name.to_string(),
                    topic: members.first().map(|(_, t)| (*t).clone()),
                    brokers: members.into_iter().map(|(b, _)| b.clone()).collect(),
                }
            })
            .collect()
    }

    /// Every registered broker with its topics, by group then endpoint (stale masters included:
    /// this is the registry, not a route).
    pub fn brokers(&self) -> Vec<BrokerRegistration> {
        self.brokers.values().map(|e| e.registration.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str, id: u32, endpoint: &str, topics: &[(&str, u32)]) -> BrokerRegistration {
        BrokerRegistration {
            broker: Some(BrokerInfo {
                broker_name: name.into(),
                broker_id: id,
                endpoint: endpoint.into(),
                last_heartbeat_ms: 0,
                epoch: 0,
                ..Default::default()
            }),
            topics: topics
                .iter()
                .map(|(t, q)| TopicRoute { name: t.to_string(), queue_count: *q, ..Default::default() })
                .collect(),
        }
    }

    #[test]
    fn routes_list_the_groups_serving_a_topic_and_expire_silent_brokers() {
        let mut t = RouteTable::default();
        assert!(t.register(reg("broker-a", 0, "a:1", &[("orders", 4), ("only-a", 2)]), 1_000));
        assert!(t.register(reg("broker-b", 0, "b:1", &[("orders", 8)]), 1_000));
        let r = t.route("orders");
        assert_eq!(
            r.iter().map(|g| (g.broker_name.as_str(), g.topic.as_ref().unwrap().queue_count)).collect::<Vec<_>>(),
            [("broker-a", 4), ("broker-b", 8)]
        );
        assert_eq!(r[0].brokers[0].endpoint, "a:1");
        assert_eq!(t.route("only-a").len(), 1);
        assert!(t.route("nothing").is_empty());

        // A new registration replaces the topic set; a refresh keeps a broker alive.
        assert!(!t.register(reg("broker-a", 0, "a:1", &[("orders", 4)]), 100_000));
        assert!(t.route("only-a").is_empty());
        assert_eq!(t.expire(125_000, 120_000), vec![("broker-b".to_string(), "b:1".to_string())]);
        assert_eq!(t.route("orders").len(), 1);
        assert_eq!(t.brokers()[0].broker.as_ref().unwrap().last_heartbeat_ms, 100_000);
        assert!(t.unregister("broker-a", "a:1"));
        assert!(t.brokers().is_empty());
    }

    #[test]
    fn after_a_failover_the_master_of_the_highest_epoch_is_routed() {
        let mut t = RouteTable::default();
        let with_epoch = |mut r: BrokerRegistration, epoch| {
            r.broker.as_mut().unwrap().epoch = epoch;
            r
        };
        t.register(with_epoch(reg("g", 0, "old:1", &[("orders", 4)]), 1), 1_000);
        t.register(with_epoch(reg("g", 1, "s:1", &[("orders", 4)]), 1), 1_000);
        assert_eq!(
            t.route("orders")[0].brokers.iter().map(|b| b.endpoint.as_str()).collect::<Vec<_>>(),
            ["old:1", "s:1"]
        );
        // The slave is elected in epoch 2; the old master's registration has not expired yet.
        t.register(with_epoch(reg("g", 0, "s:1", &[("orders", 4)]), 2), 2_000);
        let r = t.route("orders");
        assert_eq!(r[0].brokers.iter().map(|b| b.endpoint.as_str()).collect::<Vec<_>>(), ["s:1"]);
        // The old master comes back as a slave.
        t.register(with_epoch(reg("g", 1, "old:1", &[("orders", 4)]), 2), 3_000);
        let r = t.route("orders");
        assert_eq!(
            r[0].brokers.iter().map(|b| (b.endpoint.as_str(), b.broker_id)).collect::<Vec<_>>(),
            [("s:1", 0), ("old:1", 1)]
        );
    }
}
