//! Routes as the RocketMQ 5.x protocol carries them: the queues of every broker group serving a
//! topic (QueryRoute) and one pop assignment per group (QueryAssignment), each pointing at the
//! group's master (broker id 0), the broker that takes writes.

use crate::proto::namesrv::GroupRoute;
use crate::proto::v2::{self, Address, AddressScheme, Assignment, Endpoints, MessageQueue, Resource};

/// `host:port` as wire endpoints (IPv4, IPv6 or a domain name).
pub fn endpoints_of(addr: &str) -> Endpoints {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "8081"));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let scheme = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => AddressScheme::IPv4,
        Ok(std::net::IpAddr::V6(_)) => AddressScheme::IPv6,
        Err(_) => AddressScheme::DomainName,
    };
    Endpoints {
        scheme: scheme as i32,
        addresses: vec![Address { host: host.to_string(), port: port.parse().unwrap_or(8081) }],
    }
}

/// The group's master as the wire names it; `None` if no master is registered (the group takes
/// no writes and, until replication serves reads from slaves, no reads either).
fn master(g: &GroupRoute) -> Option<v2::Broker> {
    let m = g.brokers.iter().find(|b| b.broker_id == 0)?;
    Some(v2::Broker { name: g.broker_name.clone(), id: 0, endpoints: Some(endpoints_of(&m.endpoint)) })
}

fn queue(topic: &Resource, g: &GroupRoute, broker: v2::Broker, id: i32) -> MessageQueue {
    let t = g.topic.clone().unwrap_or_default();
    MessageQueue {
        topic: Some(topic.clone()),
        id,
        permission: t.permission,
        broker: Some(broker),
        accept_message_types: t.message_types,
    }
}

/// Every queue of every group, group by group (RocketMQ proxy `QueryRouteActivity`).
pub fn message_queues(topic: &Resource, groups: &[GroupRoute]) -> Vec<MessageQueue> {
    let mut out = Vec::new();
    for g in groups {
        if let Some(b) = master(g) {
            let n = g.topic.as_ref().map_or(0, |t| t.queue_count) as i32;
            out.extend((0..n).map(|id| queue(topic, g, b.clone(), id)));
        }
    }
    out
}

/// One assignment per group: pop consumption is per broker, not per queue (RocketMQ proxy
/// `QueryAssignmentActivity` in pop mode, queue id -1).
pub fn assignments(topic: &Resource, groups: &[GroupRoute]) -> Vec<Assignment> {
    groups
        .iter()
        .filter_map(|g| master(g).map(|b| Assignment { message_queue: Some(queue(topic, g, b, -1)) }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::namesrv::{BrokerInfo, TopicRoute};

    fn group(name: &str, queues: u32, ids: &[u32]) -> GroupRoute {
        GroupRoute {
            broker_name: name.into(),
            brokers: ids
                .iter()
                .map(|id| BrokerInfo {
                    broker_name: name.into(),
                    broker_id: *id,
                    endpoint: format!("{name}.svc:{}", 8081 + id),
                    ..Default::default()
                })
                .collect(),
            topic: Some(TopicRoute {
                name: "t".into(),
                queue_count: queues,
                permission: v2::Permission::ReadWrite as i32,
                message_types: vec![1],
            }),
        }
    }

    #[test]
    fn queues_and_assignments_point_at_each_groups_master() {
        let topic = Resource { name: "t".into(), ..Default::default() };
        let groups = [group("a", 2, &[0, 1]), group("b", 3, &[0]), group("masterless", 4, &[1])];
        let qs = message_queues(&topic, &groups);
        assert_eq!(qs.len(), 5);
        let b = qs[4].broker.as_ref().unwrap();
        assert_eq!((b.name.as_str(), b.id, qs[4].id), ("b", 0, 2));
        let ep = b.endpoints.as_ref().unwrap();
        assert_eq!(
            (ep.scheme, ep.addresses[0].host.as_str(), ep.addresses[0].port),
            (AddressScheme::DomainName as i32, "b.svc", 8081)
        );
        let a = assignments(&topic, &groups);
        assert_eq!(
            a.iter()
                .map(|x| x.message_queue.as_ref().unwrap().broker.as_ref().unwrap().name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(endpoints_of("127.0.0.1:9").scheme, AddressScheme::IPv4 as i32);
    }
}
