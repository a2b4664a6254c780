//! The controller role (RocketMQ 5's controller, run by nameservers with `enable_controller`):
//! per broker group the epoch, the master and the in-sync set, decided by one Raft group of 1,
//! 3 or 5 members (openraft) so that no single process is needed for a failover and no two
//! masters are ever elected for one epoch.
//!
//! - [`state`]: the replicated table and the decisions that change it (plain data);
//! - [`elector`]: the leader's view of broker liveness and the elections it decides;
//! - [`log_store`], [`machine`]: openraft's log and state machine on disk;
//! - [`network`]: Raft traffic between members over gRPC;
//! - [`service`]: a member, its election scan and the gRPC service brokers call.
//!
//! The broker's side is [`crate::cluster::controller_client`].

pub mod elector;
pub mod log_store;
pub mod machine;
pub mod network;
pub mod service;
pub mod state;

openraft::declare_raft_types!(
    /// openraft's types for the controller group: decisions in, their answers out, members
    /// addressed by `host:port`.
    pub TypeConfig:
        D = state::Decision,
        R = state::Answer,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// A controller member's Raft node.
pub type Raft = openraft::Raft<TypeConfig>;
