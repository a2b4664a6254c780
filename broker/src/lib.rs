#![warn(missing_docs)]
//! The `ferrocket` binary's crate: the front ends and roles of a Ferrocket process on top of the
//! engine (DESIGN.md §1).
//!
//! - [`grpc`]: the RocketMQ 5.x `MessagingService`, the Admin service and the master's side of
//!   replication; handlers validate requests, call the engine and translate its results.
//! - [`namesrv`]: the nameserver role (route table); [`controller`]: the master election
//!   controller a nameserver may run, a Raft group.
//! - [`cluster`]: every loop that talks to another process (registration, controller client,
//!   slave session).
//! - [`server`]: running a broker process; [`port`] and [`tls`]: what a gRPC port accepts (TLS
//!   and plaintext side by side, Remoting on the nameserver's); [`bench`]: the load generator.
//!
//! Below it, by crate: `ferrocket-engine` (policy and durability), `ferrocket-store` (files),
//! `ferrocket-proto` (wire contracts and clients), `ferrocket-runtime` (probes, signals).

pub mod bench;
pub mod checkback;
pub mod cluster;
pub mod controller;
pub mod grpc;
pub mod namesrv;
pub mod port;
pub mod remoting;
pub mod server;
pub mod tls;

// The layers underneath, under the names the modules above use for them.
use ferrocket_engine::store;
use ferrocket_engine::{acl, auth, broker, config, consume, ha, limits, timer, topics, txn};
use ferrocket_proto as proto;
use ferrocket_runtime as http;
