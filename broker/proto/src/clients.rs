//! Typed clients of Ferrocket's own services, for brokers, the CLI and the operator alike: the
//! nameservers (routes, registration, cluster info, the controller's groups) and the cluster
//! status that joins them with what every broker reports over Admin. `namesrv_addrs` entries are
//! `host:port`; a DNS name stands for all its addresses and is looked up again each round, so a
//! nameserver can be added behind the name without restarting brokers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tonic::transport::Channel;

use crate::admin::admin_client::AdminClient;
use crate::admin::{BrokerStatus, ClusterStatusResponse, ReplicaStatus, ReplicaStatusRequest};
use crate::dial::Dialer;
use crate::namesrv::namesrv_client::NamesrvClient;
use crate::namesrv::*;
use crate::signing::SignedChannel;

/// Longest one call to a nameserver may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The nameservers of a broker (or of the CLI): resolves their addresses and keeps one lazily
/// connected channel to each. Every call goes as its [`Dialer`] dials and signs (and so do the
/// calls [`cluster_status`] makes to the brokers).
pub struct Nameservers {
    addrs: Vec<String>,
    channels: Mutex<HashMap<SocketAddr, Channel>>,
    dialer: Dialer,
}

impl Nameservers {
    /// Nameservers at `addrs` (`host:port` each), called as `dialer` dials and signs. Nothing is
    /// dialled until used.
    pub fn new(addrs: Vec<String>, dialer: Dialer) -> Arc<Nameservers> {
        Arc::new(Nameservers { addrs, channels: Mutex::new(HashMap::new()), dialer })
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

    /// A Namesrv client on the channel to `addr`. Errors: an address that makes no URI.
    pub fn client(&self, addr: SocketAddr) -> anyhow::Result<NamesrvClient<SignedChannel>> {
        Ok(NamesrvClient::with_interceptor(self.channel(addr)?, self.dialer.signer()))
    }

    fn channel(&self, addr: SocketAddr) -> anyhow::Result<Channel> {
        let mut channels = self.channels.lock();
        let ch = match channels.get(&addr) {
            Some(c) => c.clone(),
            None => {
                let c = self.dialer.endpoint(addr)?.connect_timeout(CALL_TIMEOUT).timeout(CALL_TIMEOUT).connect_lazy();
                channels.insert(addr, c.clone());
                c
            }
        };
        Ok(ch)
    }

    /// Asks the nameservers in turn, `call` getting the signed channel to each, until one
    /// answers. Errors: none answered (the message says why each failed).
    async fn ask<T, Fut>(&self, call: impl Fn(SignedChannel) -> Fut) -> anyhow::Result<T>
    where
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut errors = Vec::new();
        for addr in self.resolve().await {
            let ch = tonic::service::interceptor::InterceptedService::new(self.channel(addr)?, self.dialer.signer());
            match call(ch).await {
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
    pub fn from_list(list: &str, dialer: Dialer) -> Arc<Nameservers> {
        Nameservers::new(list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(), dialer)
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
            .filter_map(|members| current(members, |b| b).into_iter().next())
            .filter(|b| b.broker_id == 0)
            .map(|b| (b.broker_name, b.endpoint))
            .collect())
    }

    /// The controller's broker groups and its leader, from the first nameserver that answers:
    /// the controller group's leader (members that are not answer UNAVAILABLE, nameservers
    /// without a controller UNIMPLEMENTED). Errors: see [`Self::ask`].
    pub async fn controller(&self) -> anyhow::Result<ListControllerGroupsResponse> {
        use crate::namesrv::controller_client::ControllerClient;
        self.ask(|ch| async move {
            ControllerClient::new(ch).list_groups(ListControllerGroupsRequest {}).await.map(|r| r.into_inner())
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
    pub async fn register_all(&self, reg: &BrokerRegistration) -> (usize, Vec<(SocketAddr, String)>) {
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

    /// Tells every nameserver that this broker leaves (`req`), each given at most 1 s.
    pub async fn unregister_all(&self, req: &UnregisterBrokerRequest) {
        for addr in self.resolve().await {
            if let Ok(mut c) = self.client(addr) {
                let _ = tokio::time::timeout(Duration::from_secs(1), c.unregister_broker(req.clone())).await;
            }
        }
    }
}

/// Longest a broker is given to report its state.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Asks one broker for its [`ReplicaStatus`], as `dialer` dials and signs. Errors: it did not
/// answer within 3 s.
async fn ask(endpoint: &str, dialer: Dialer) -> anyhow::Result<ReplicaStatus> {
    let ch = dialer.endpoint(endpoint)?.connect_timeout(ASK_TIMEOUT).timeout(ASK_TIMEOUT);
    let mut c = AdminClient::with_interceptor(ch.connect().await?, dialer.signer());
    Ok(c.replica_status(ReplicaStatusRequest {}).await?.into_inner())
}

/// Every broker the nameservers know (stale registrations included), each with the state it
/// reports (or why it did not), and the controller's groups if a nameserver runs it. Errors:
/// no nameserver answered.
pub async fn cluster_status(ns: &Nameservers) -> anyhow::Result<ClusterStatusResponse> {
    let registrations = ns.cluster_info().await?;
    // Asked concurrently, so one dead broker costs one timeout, not one each.
    let asks: Vec<_> = registrations
        .into_iter()
        .map(|r| {
            let dialer = ns.dialer.clone();
            tokio::spawn(async move {
                let broker = r.broker.unwrap_or_default();
                let (replica, error) = match ask(&broker.endpoint, dialer).await {
                    Ok(s) => (Some(s), String::new()),
                    Err(e) => (None, e.to_string()),
                };
                BrokerStatus { topics: r.topics, broker: Some(broker), replica, error }
            })
        })
        .collect();
    let mut brokers = Vec::new();
    for a in asks {
        brokers.push(a.await?);
    }
    // The groups go in `controller`; the leader's entry keeps only who answered.
    let (controller, controller_leader) = match ns.controller().await {
        Ok(mut l) => (std::mem::take(&mut l.groups), Some(l)),
        Err(_) => (Vec::new(), None),
    };
    Ok(ClusterStatusResponse { brokers, controller, controller_leader })
}

/// One broker group's members as routes show them: the master (id 0 with the highest epoch)
/// first, then the slaves by id; other brokers claiming id 0 are stale masters and left out.
pub fn current<T>(mut members: Vec<T>, info: impl Fn(&T) -> &BrokerInfo) -> Vec<T> {
    let master_epoch = members.iter().map(&info).filter(|b| b.broker_id == 0).map(|b| b.epoch).max();
    members.retain(|m| info(m).broker_id != 0 || Some(info(m).epoch) == master_epoch);
    members.sort_by_key(|m| (info(m).broker_id, info(m).endpoint.clone()));
    if master_epoch.is_some() {
        // Equal epochs (no controller): keep one master, the first by endpoint.
        let masters = members.iter().take_while(|m| info(m).broker_id == 0).count();
        members.drain(1..masters);
    }
    members
}
