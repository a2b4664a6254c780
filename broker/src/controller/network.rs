//! Raft traffic between the controller group's members over gRPC (`ferrocket.v1.ControllerRaft`
//! on the nameserver's port): the client side for openraft's `RaftNetwork` and the service that
//! hands what arrives to the local Raft node. Requests and answers travel as openraft's JSON
//! (`serde` feature); calls are dialled and signed like every other call inside the cluster.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::{Raft, TypeConfig};
use crate::proto::dial::Dialer;
use crate::proto::namesrv::controller_raft_client::ControllerRaftClient;
use crate::proto::namesrv::controller_raft_server;
use crate::proto::namesrv::RaftMessage;
use crate::proto::signing::SignedChannel;

type NodeId = u64;
type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

/// Makes a [`Peer`] for each member openraft replicates to.
pub struct Network {
    /// How members dial each other.
    pub dialer: Dialer,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        let client = self
            .dialer
            .endpoint(&node.addr)
            .map(|e| ControllerRaftClient::with_interceptor(e.connect_lazy(), self.dialer.signer()));
        Peer { target, addr: node.addr.clone(), client: client.map_err(|e| format!("{e:#}")) }
    }
}

/// One other member, over a lazily connected channel.
pub struct Peer {
    target: NodeId,
    addr: String,
    /// Why the address could not be dialled at all, instead of a client.
    client: Result<ControllerRaftClient<SignedChannel>, String>,
}

/// Which RPC a call is.
#[derive(Clone, Copy)]
enum Kind {
    Append,
    Vote,
    Snapshot,
}

impl Peer {
    async fn call<Req: Serialize, Resp: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &mut self,
        kind: Kind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcError<E>> {
        let client = self.client.as_mut().map_err(|e| RPCError::Unreachable(Unreachable::new(&io_err(e.clone()))))?;
        let json = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut req = Request::new(RaftMessage { json });
        req.set_timeout(option.hard_ttl());
        let answer = match kind {
            Kind::Append => client.append_entries(req).await,
            Kind::Vote => client.vote(req).await,
            Kind::Snapshot => client.install_snapshot(req).await,
        };
        let answer = answer.map_err(|s| {
            let e = io_err(format!("{}: {}", self.addr, s.message()));
            match s.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            }
        })?;
        let decoded: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&answer.into_inner().json).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn io_err(message: String) -> std::io::Error {
    std::io::Error::other(message)
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        self.call(Kind::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        self.call(Kind::Snapshot, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, RpcError> {
        self.call(Kind::Vote, &rpc, &option).await
    }
}

/// The `ControllerRaft` service: hands each request to the local Raft node.
pub struct RaftService {
    /// The local member.
    pub raft: Raft,
}

fn decode<T: DeserializeOwned>(req: Request<RaftMessage>) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().json)
        .map_err(|e| Status::invalid_argument(format!("malformed Raft message: {e}")))
}

fn encode<T: Serialize>(answer: &T) -> Result<Response<RaftMessage>, Status> {
    let json = serde_json::to_vec(answer).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { json }))
}

#[tonic::async_trait]
impl controller_raft_server::ControllerRaft for RaftService {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        encode(&self.raft.append_entries(decode(req)?).await)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        encode(&self.raft.vote(decode(req)?).await)
    }

    async fn install_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        encode(&self.raft.install_snapshot(decode(req)?).await)
    }
}
