//! The replication byte stream over gRPC (`ferrocket.v1.Ha`): the master's service, which sends
//! each slave the CommitLog bytes it lacks, and the slave's loop, which writes them, reports how
//! far it got, and keeps its topic and group configuration in step with the master's.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::broker::Broker;
use crate::namesrv::registration::Nameservers;
use crate::proto::admin::admin_client::AdminClient;
use crate::proto::admin::{ListGroupsRequest, ListTopicsRequest};
use crate::proto::namesrv::ha_client::HaClient;
use crate::proto::namesrv::ha_server::Ha;
use crate::proto::namesrv::{CommitLogChunk, SlaveReport};

/// Most bytes per chunk.
const CHUNK_BYTES: usize = 1 << 20;
/// How often a slave copies the master's topic and group configuration.
const CONFIG_SYNC: Duration = Duration::from_secs(2);

type ChunkStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<CommitLogChunk, Status>> + Send>>;

/// The master's side: one replication stream per connected slave.
pub struct HaService {
    broker: Arc<Broker>,
    stopping: watch::Receiver<bool>,
}

impl HaService {
    /// The service over `broker`; streams end when `stopping` turns true.
    pub fn new(broker: Arc<Broker>, stopping: watch::Receiver<bool>) -> HaService {
        HaService { broker, stopping }
    }
}

#[tonic::async_trait]
impl Ha for HaService {
    type ReplicateStream = ChunkStream;

    async fn replicate(&self, req: Request<Streaming<SlaveReport>>) -> Result<Response<ChunkStream>, Status> {
        let mut reports = req.into_inner();
        let first = reports
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("a replication stream starts with a report"))?;
        let store = self.broker.store().clone();
        let (min, end) = (store.commitlog_min_offset(), store.commitlog_end());
        if first.offset > end {
            return Err(Status::failed_precondition(format!(
                "slave {}/{} has CommitLog bytes up to {}, past this master's end {end}",
                first.broker_name, first.broker_id, first.offset
            )));
        }
        // A new slave (empty log) starts at the oldest byte kept; a slave behind that cannot catch up.
        let from = if first.offset == 0 { min } else { first.offset };
        if from < min {
            return Err(Status::failed_precondition(format!(
                "slave {}/{} ends at {from}, but retention deleted everything below {min}: give it an empty data directory",
                first.broker_name, first.broker_id
            )));
        }
        let id = first.broker_id;
        let replicas = self.broker.replicas().clone();
        replicas.report(id, first.offset);
        tracing::info!(slave = id, from, master_end = end, "slave connected");
        let (tx, rx) = mpsc::channel(4);
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            let mut pos = from;
            let mut dispatched = store.subscribe_dispatched();
            // An empty first chunk tells the slave the master's end, even with nothing to send.
            let hello = CommitLogChunk { offset: pos, master_end: store.commitlog_end(), data: Vec::new() };
            if tx.send(Ok(hello)).await.is_err() {
                return;
            }
            loop {
                if let Some(data) = store.read_raw(pos, CHUNK_BYTES) {
                    let chunk = CommitLogChunk { offset: pos, master_end: store.commitlog_end(), data };
                    pos += chunk.data.len() as u64;
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                    continue;
                }
                tokio::select! {
                    _ = dispatched.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = tx.closed() => return,
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        });
        tokio::spawn(async move {
            while let Ok(Some(r)) = reports.message().await {
                replicas.report(id, r.offset);
            }
            replicas.disconnected(id);
            tracing::warn!(slave = id, "slave disconnected");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The master's endpoint: `ha_master_addr`, or the group's broker id 0 as the nameservers have it.
async fn master_endpoint(broker: &Broker, nameservers: Option<&Nameservers>) -> anyhow::Result<String> {
    let cfg = broker.config();
    if let Some(a) = &cfg.ha_master_addr {
        return Ok(a.clone());
    }
    let ns = nameservers.ok_or_else(|| anyhow::anyhow!("a slave needs ha_master_addr or namesrv_addrs"))?;
    ns.masters()
        .await?
        .into_iter()
        .find(|(group, _)| *group == cfg.broker_name)
        .map(|(_, endpoint)| endpoint)
        .ok_or_else(|| anyhow::anyhow!("no master of broker group {} is registered", cfg.broker_name))
}

/// One replication session: connect, stream, write, report, until an error or the stop.
async fn session(
    broker: &Arc<Broker>,
    master: &str,
    stopping: &mut watch::Receiver<bool>,
    failing: &mut bool,
) -> anyhow::Result<()> {
    let ch =
        Channel::from_shared(format!("http://{master}"))?.connect_timeout(Duration::from_secs(3)).connect().await?;
    let (report_tx, report_rx) = mpsc::channel(16);
    let cfg = broker.config();
    let report = |offset| SlaveReport { broker_name: cfg.broker_name.clone(), broker_id: cfg.broker_id, offset };
    report_tx.send(report(broker.store().commitlog_end())).await?;
    let mut chunks = HaClient::new(ch.clone()).replicate(ReceiverStream::new(report_rx)).await?.into_inner();
    tracing::info!(master, from = broker.store().commitlog_end(), "replicating from master");
    *failing = false;
    let mut admin = AdminClient::new(ch);
    let mut last_sync = tokio::time::Instant::now() - CONFIG_SYNC;
    loop {
        if last_sync.elapsed() >= CONFIG_SYNC {
            sync_config(broker, &mut admin).await?;
            last_sync = tokio::time::Instant::now();
        }
        let next = tokio::select! {
            c = chunks.message() => c?,
            _ = tokio::time::sleep(CONFIG_SYNC) => continue,
            _ = stopping.wait_for(|s| *s) => return Ok(()),
        };
        let Some(c) = next else { anyhow::bail!("the master ended the stream") };
        let master_end = c.master_end;
        let end = if c.data.is_empty() {
            broker.store().commitlog_end()
        } else {
            let b = broker.clone();
            let end = tokio::task::spawn_blocking(move || b.apply_replicated(c.offset, &c.data)).await??;
            report_tx.send(report(end)).await?;
            end
        };
        broker.set_replication_lag(Some(master_end.saturating_sub(end)));
    }
}

/// Copies the master's topics and consumer groups (the slave must be able to take over).
async fn sync_config(broker: &Broker, admin: &mut AdminClient<Channel>) -> anyhow::Result<()> {
    for t in admin.list_topics(ListTopicsRequest {}).await?.into_inner().topics {
        let t = super::admin::from_pb(&t).map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        broker.topics().upsert_any(t)?;
    }
    for g in admin.list_groups(ListGroupsRequest {}).await?.into_inner().groups {
        broker.groups().upsert(super::admin::group_from_pb(&g, broker.config()))?;
    }
    Ok(())
}

/// Runs a slave's replication until `stopping` turns true, reconnecting a second after any
/// failure (logged once per outage).
pub fn spawn_slave(broker: Arc<Broker>, nameservers: Option<Arc<Nameservers>>, mut stopping: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut failing = false;
        while !*stopping.borrow() {
            let result = match master_endpoint(&broker, nameservers.as_deref()).await {
                Ok(m) => session(&broker, &m, &mut stopping, &mut failing).await,
                Err(e) => Err(e),
            };
            broker.set_replication_lag(None);
            match result {
                Ok(()) => return,
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "replication from the master failed; retrying every second");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    });
}
