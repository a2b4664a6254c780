//! The route table of a nameserver (RocketMQ `RouteInfoManager`): which brokers are alive, which
//! broker group (`broker_name`) each belongs to, and which topics each serves. Plain data: the
//! gRPC service and the expiry task drive it.

use std::collections::BTreeMap;

use crate::proto::namesrv::{BrokerInfo, BrokerRegistration, GroupRoute};

/// A registered broker: its last registration and when it was received.
#[derive(Debug, Clone)]
struct Entry {
    registration: BrokerRegistration,
    last_heartbeat_ms: u64,
}

/// Every broker registered with this nameserver, by (broker group, broker id).
#[derive(Debug, Default)]
pub struct RouteTable {
    brokers: BTreeMap<(String, u32), Entry>,
}

impl RouteTable {
    /// Records a registration received at `now_ms` (ms since the epoch), replacing the broker's
    /// previous one: its topic list is the whole set it serves. Returns true if the broker is new.
    pub fn register(&mut self, mut reg: BrokerRegistration, now_ms: u64) -> bool {
        let info = reg.broker.get_or_insert_with(BrokerInfo::default);
        info.last_heartbeat_ms = now_ms;
        let key = (info.broker_name.clone(), info.broker_id);
        self.brokers.insert(key, Entry { registration: reg, last_heartbeat_ms: now_ms }).is_none()
    }

    /// Removes a broker (it shut down cleanly). Returns true if it was registered.
    pub fn unregister(&mut self, broker_name: &str, broker_id: u32) -> bool {
        self.brokers.remove(&(broker_name.to_string(), broker_id)).is_some()
    }

    /// Drops every broker not heard from for more than `expiry_ms` before `now_ms` (RocketMQ
    /// `scanNotActiveBroker`, 120 s); returns the dropped brokers' (group, id).
    pub fn expire(&mut self, now_ms: u64, expiry_ms: u64) -> Vec<(String, u32)> {
        let dead: Vec<(String, u32)> = self
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

    /// The broker groups serving `topic`, by group name: each with its registered brokers (master
    /// first) and the topic's configuration as the group's master registered it (or, with no
    /// master registered, the broker with the lowest id). Empty if no group serves it.
    pub fn route(&self, topic: &str) -> Vec<GroupRoute> {
        let mut groups: BTreeMap<&str, GroupRoute> = BTreeMap::new();
        for ((name, _), e) in &self.brokers {
            let Some(t) = e.registration.topics.iter().find(|t| t.name == topic) else { continue };
            let g = groups.entry(name).or_insert_with(|| GroupRoute {
                broker_name: name.clone(),
                brokers: Vec::new(),
                topic: Some(t.clone()),
            });
            // Brokers iterate in id order, so the first topic config seen is the master's.
            g.brokers.push(e.registration.broker.clone().unwrap_or_default());
        }
        groups.into_values().collect()
    }

    /// Every registered broker with its topics, by group then id.
    pub fn brokers(&self) -> Vec<BrokerRegistration> {
        self.brokers.values().map(|e| e.registration.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::namesrv::TopicRoute;

    fn reg(name: &str, id: u32, endpoint: &str, topics: &[(&str, u32)]) -> BrokerRegistration {
        BrokerRegistration {
            broker: Some(BrokerInfo {
                broker_name: name.into(),
                broker_id: id,
                endpoint: endpoint.into(),
                last_heartbeat_ms: 0,
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
        assert_eq!(t.expire(125_000, 120_000), vec![("broker-b".to_string(), 0)]);
        assert_eq!(t.route("orders").len(), 1);
        assert_eq!(t.brokers()[0].broker.as_ref().unwrap().last_heartbeat_ms, 100_000);
        assert!(t.unregister("broker-a", 0));
        assert!(t.brokers().is_empty());
    }
}
