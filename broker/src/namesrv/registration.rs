//! A broker's side of the nameservers: it registers itself and its topics with every nameserver
//! (on start, within a second of a topic change, and every `heartbeat_interval_ms`; RocketMQ
//! `registerBrokerAll`), unregisters on shutdown, and asks them for routes. `namesrv_addrs`
//! entries are `host:port`; a DNS name stands for all its addresses and is looked up again each
//! round, so a nameserver can be added behind the name without restarting brokers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::broker::Broker;
use crate::proto::namesrv::namesrv_client::NamesrvClient;
use crate::proto::namesrv::*;
use crate::topics::TopicConfig;

/// Longest one call to a nameserver may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The nameservers of a broker (or of the CLI): resolves their addresses and keeps one lazily
/// connected channel to each.
pub struct Nameservers {
    addrs: Vec<String>,
    channels: Mutex<HashMap<SocketAddr, Channel>>,
}

impl Nameservers {
    /// Nameservers at `addrs` (`host:port` each). Nothing is dialled until used.
    pub fn new(addrs: Vec<String>) -> Arc<Nameservers> {
        Arc::new(Nameservers { addrs, channels: Mutex::new(HashMap::new()) })
    }

    /// Every address the configured entries resolve to now (all A/AAAA records of a name),
    /// without duplicates. Entries that do not resolve are logged and skipped.
    pub async fn resolve(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for a in &self.addrs {
            match tokio::net::lookup_host(a.as_str()).await {
                Ok(found) => out.extend(found),
                Err(e) => tracing::warn!(namesrv = %a, error = %e, "cannot resolve nameserver address"),
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn client(&self, addr: SocketAddr) -> anyhow::Result<NamesrvClient<Channel>> {
        Ok(NamesrvClient::new(self.channel(addr)?))
    }

    fn channel(&self, addr: SocketAddr) -> anyhow::Result<Channel> {
        let mut channels = self.channels.lock();
        let ch = match channels.get(&addr) {
            Some(c) => c.clone(),
            None => {
                let c = Channel::from_shared(format!("http://{addr}"))?
                    .connect_timeout(CALL_TIMEOUT)
                    .timeout(CALL_TIMEOUT)
                    .connect_lazy();
                channels.insert(addr, c.clone());
                c
            }
        };
        Ok(ch)
    }

    /// Asks the nameservers in turn, `call` getting the channel to each, until one answers.
    /// Errors: none answered (the message says why each failed).
    async fn ask<T, Fut>(&self, call: impl Fn(Channel) -> Fut) -> anyhow::Result<T>
    where
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut errors = Vec::new();
        for addr in self.resolve().await {
            match call(self.channel(addr)?).await {
                Ok(v) => return Ok(v),
                Err(e) => errors.push(format!("{addr}: {}", e.message())),
            }
        }
        if errors.is_empty() {
            errors.push(format!("no address resolved from {:?}", self.addrs));
        }
        anyhow::bail!("no nameserver answered ({})", errors.join("; "))
    }

    /// The broker groups serving `topic`, from the first nameserver that answers (they hold the
    /// same routes once brokers have registered with all of them). Errors: see [`Self::ask`].
    pub async fn route(&self, topic: &str) -> anyhow::Result<Vec<GroupRoute>> {
        let req = NamesrvRouteRequest { topic: topic.to_string() };
        self.ask(|ch| {
            let req = req.clone();
            async move { NamesrvClient::new(ch).query_route(req).await.map(|r| r.into_inner().groups) }
        })
        .await
    }

    /// Nameservers from a comma-separated `host:port` list (the CLI's `--namesrv`).
    pub fn from_list(list: &str) -> Arc<Nameservers> {
        Nameservers::new(list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
    }

    /// The master (broker id 0, of the highest epoch) of every registered broker group:
    /// (group, endpoint), by group. Errors: see [`Self::ask`].
    pub async fn masters(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut groups: std::collections::BTreeMap<String, Vec<BrokerInfo>> = Default::default();
        for b in self.cluster_info().await?.into_iter().filter_map(|r| r.broker) {
            groups.entry(b.broker_name.clone()).or_default().push(b);
        }
        Ok(groups
            .into_values()
            .filter_map(|members| super::routes::current(members, |b| b).into_iter().next())
            .filter(|b| b.broker_id == 0)
            .map(|b| (b.broker_name, b.endpoint))
            .collect())
    }

    /// The controller's broker groups, from the first nameserver that runs it (the others
    /// answer UNIMPLEMENTED). Errors: see [`Self::ask`].
    pub async fn controller_groups(&self) -> anyhow::Result<Vec<ControllerGroup>> {
        use crate::proto::namesrv::controller_client::ControllerClient;
        self.ask(|ch| async move {
            ControllerClient::new(ch).list_groups(ListControllerGroupsRequest {}).await.map(|r| r.into_inner().groups)
        })
        .await
    }

    /// Every broker registered, from the first nameserver that answers. Errors: see [`Self::ask`].
    pub async fn cluster_info(&self) -> anyhow::Result<Vec<BrokerRegistration>> {
        self.ask(|ch| async move {
            NamesrvClient::new(ch).cluster_info(ClusterInfoRequest {}).await.map(|r| r.into_inner().brokers)
        })
        .await
    }

    /// Sends `reg` to every nameserver; returns how many took it and the addresses that refused
    /// or did not answer.
    async fn register_all(&self, reg: &BrokerRegistration) -> (usize, Vec<(SocketAddr, String)>) {
        let (mut accepted, mut failed) = (0, Vec::new());
        for addr in self.resolve().await {
            let req = RegisterBrokerRequest { registration: Some(reg.clone()) };
            let sent = match self.client(addr) {
                Ok(mut c) => c.register_broker(req).await.map(|_| ()).map_err(|e| e.message().to_string()),
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(()) => accepted += 1,
                Err(e) => failed.push((addr, e)),
            }
        }
        (accepted, failed)
    }
}

/// A topic as the nameserver carries it (the Admin service's wire form, renamed).
pub fn topic_route(t: &TopicConfig) -> TopicRoute {
    let pb = crate::grpc::admin::to_pb(t);
    TopicRoute {
        name: pb.name,
        queue_count: pb.queue_count,
        permission: pb.permission,
        message_types: pb.accept_message_types,
    }
}

/// This broker's registration: who it is and every topic it serves.
fn registration(broker: &Broker) -> BrokerRegistration {
    let cfg = broker.config();
    let mut topics: Vec<TopicRoute> = broker.topics().list().iter().map(topic_route).collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let role = broker.role();
    BrokerRegistration {
        broker: Some(BrokerInfo {
            broker_name: cfg.broker_name.clone(),
            broker_id: broker.route_id(),
            endpoint: cfg.advertised(),
            last_heartbeat_ms: 0,
            epoch: role.epoch,
        }),
        topics,
    }
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
        for addr in nameservers.resolve().await {
            if let Ok(mut c) = nameservers.client(addr) {
                let _ = tokio::time::timeout(Duration::from_secs(1), c.unregister_broker(req.clone())).await;
            }
        }
    });
}
