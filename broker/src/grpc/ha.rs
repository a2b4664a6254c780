//! The master's side of the replication byte stream over gRPC (`ferrocket.v1.Ha`): it sends each
//! slave the CommitLog bytes it lacks and records how far each got. The slave's side is
//! [`crate::cluster::slave`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::broker::Broker;
use crate::ha::epochs;
use crate::proto::namesrv::ha_server::Ha;
use crate::proto::namesrv::{CommitLogChunk, EpochEntry, SlaveReport};

/// Most bytes per chunk.
const CHUNK_BYTES: usize = 1 << 20;

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
        if self.broker.is_slave() {
            return Err(Status::failed_precondition(format!(
                "{} is not a master (slaves do not relay replication)",
                self.broker.config().advertised()
            )));
        }
        let store = self.broker.store().clone();
        let (min, end) = (store.commitlog_min_offset(), store.commitlog_end());
        let who = if first.endpoint.is_empty() {
            format!("{}/{}", first.broker_name, first.broker_id)
        } else {
            first.endpoint.clone()
        };
        let mine = self.broker.epoch_history();
        let from = if first.epochs.is_empty() || first.offset == 0 {
            if first.offset > end {
                return Err(Status::failed_precondition(format!(
                    "slave {who} has CommitLog bytes up to {}, past this master's end {end}",
                    first.offset
                )));
            }
            // A new slave (empty log) starts at the oldest byte kept.
            if first.offset == 0 {
                min
            } else {
                first.offset
            }
        } else {
            // The slave was written in some epoch: keep only what this master's log agrees with.
            epochs::consistent_point(&epochs_from_pb(&first.epochs), first.offset, &mine, end).ok_or_else(|| {
                Status::failed_precondition(format!(
                    "slave {who} shares no epoch with this master: give it an empty data directory"
                ))
            })?
        };
        if from < min {
            return Err(Status::failed_precondition(format!(
                "slave {who} ends at {from}, but retention deleted everything below {min}: give it an empty data directory"
            )));
        }
        self.broker.slave_reported(&who, from);
        tracing::info!(slave = %who, from, master_end = end, truncates = first.offset.saturating_sub(from), "slave connected");
        let (tx, rx) = mpsc::channel(4);
        let mut stopping = self.stopping.clone();
        let mut role = self.broker.subscribe_role();
        let epochs_pb = epochs_to_pb(&mine);
        let (broker, reporter) = (self.broker.clone(), self.broker.clone());
        tokio::spawn(async move {
            let mut pos = from;
            let mut appended = broker.subscribe_appended();
            // An empty first chunk tells the slave the master's end, even with nothing to send.
            let hello =
                CommitLogChunk { offset: pos, master_end: store.commitlog_end(), data: Vec::new(), epochs: epochs_pb };
            if tx.send(Ok(hello)).await.is_err() {
                return;
            }
            loop {
                if let Some(data) = store.read_raw(pos, CHUNK_BYTES) {
                    let chunk =
                        CommitLogChunk { offset: pos, master_end: store.commitlog_end(), data, epochs: Vec::new() };
                    pos += chunk.data.len() as u64;
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                    continue;
                }
                tokio::select! {
                    _ = appended.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = tx.closed() => return,
                    _ = stopping.wait_for(|s| *s) => return,
                    // A deposed master ends its streams: its slaves go to the new master.
                    _ = role.wait_for(|r| !r.is_master()) => return,
                }
            }
        });
        tokio::spawn(async move {
            while let Ok(Some(r)) = reports.message().await {
                reporter.slave_reported(&who, r.offset);
            }
            reporter.slave_disconnected(&who);
            tracing::warn!(slave = %who, "slave disconnected");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Wire form of a history.
pub fn epochs_to_pb(entries: &[epochs::Epoch]) -> Vec<EpochEntry> {
    entries.iter().map(|e| EpochEntry { epoch: e.epoch, start_offset: e.start }).collect()
}

/// A history from its wire form.
pub fn epochs_from_pb(entries: &[EpochEntry]) -> Vec<epochs::Epoch> {
    entries.iter().map(|e| epochs::Epoch { epoch: e.epoch, start: e.start_offset }).collect()
}
