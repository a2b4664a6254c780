//! A broker's registration with its nameservers: itself and its topics, on start, within a
//! second of a topic change, and every `heartbeat_interval_ms` (RocketMQ `registerBrokerAll`);
//! it unregisters on shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::broker::Broker;
use crate::grpc::admin::topic_route;
use crate::proto::clients::Nameservers;
use crate::proto::namesrv::*;

/// This broker's registration: who it is and every topic it serves.
fn registration(broker: &Broker) -> BrokerRegistration {
    let cfg = broker.config();
    let mut topics: Vec<TopicRoute> = broker.topics().list().iter().map(topic_route).collect();
    if cfg.auto_create_topic {
        // Remoting producers fall back to this route for a topic that has none yet.
        topics.push(TopicRoute {
            name: crate::remoting::namesrv::AUTO_CREATE_TOPIC.into(),
            queue_count: cfg.default_queue_count,
            permission: crate::proto::v2::Permission::ReadWrite as i32,
            message_types: vec![],
        });
    }
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    BrokerRegistration { broker: Some(crate::remoting::namesrv::local_info(broker)), topics }
}

/// Registers `broker` with its nameservers until `stopping` turns true, then unregisters it.
/// Checks for topic changes every second; registers when they changed or
/// `heartbeat_interval_ms` has passed. A nameserver that cannot be reached is logged once per
/// outage and retried the next round. `registered` tells after each round whether at least one
/// nameserver took the registration (the broker's readiness).
pub fn spawn(
    broker: Arc<Broker>,
    nameservers: Arc<Nameservers>,
    registered: Arc<AtomicBool>,
    mut stopping: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let heartbeat = Duration::from_millis(broker.config().heartbeat_interval_ms);
        let mut last: Option<(BrokerRegistration, Instant)> = None;
        let mut down: Vec<SocketAddr> = Vec::new();
        loop {
            let reg = registration(&broker);
            let due = last.as_ref().is_none_or(|(prev, at)| *prev != reg || at.elapsed() >= heartbeat);
            if due {
                let (accepted, failed) = nameservers.register_all(&reg).await;
                registered.store(accepted > 0, Ordering::Release);
                for (addr, e) in &failed {
                    if !down.contains(addr) {
                        tracing::warn!(namesrv = %addr, error = %e, "cannot register with nameserver; retrying");
                    }
                }
                for addr in &down {
                    if !failed.iter().any(|(a, _)| a == addr) {
                        tracing::info!(namesrv = %addr, "registered with nameserver again");
                    }
                }
                down = failed.into_iter().map(|(a, _)| a).collect();
                last = Some((reg, Instant::now()));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stopping.wait_for(|s| *s) => break,
            }
        }
        let cfg = broker.config();
        let req = UnregisterBrokerRequest {
            broker_name: cfg.broker_name.clone(),
            broker_id: broker.route_id(),
            endpoint: cfg.advertised(),
        };
        nameservers.unregister_all(&req).await;
    });
}
