#![warn(missing_docs)]
//! Ferrocket's protocol-neutral engine (DESIGN.md §1): topics ([`topics`]), consumer groups and
//! progress, retry and DLQ, FIFO and filters ([`consume`]), transactions and check-back decisions
//! ([`txn`]), scheduled messages ([`timer`]), replication state ([`ha`]) and retention, tied
//! together by [`broker::Broker`] on top of the store; users ([`auth`]) and their access rules
//! ([`acl`]), which the front ends check requests against.
//!
//! Durability is its promise: every call that stores what a client is told is stored returns
//! only once the configured flush and replication guarantees hold, or with the error that says
//! which did not. It names no generated wire type: the front ends of the `ferrocket` binary
//! (gRPC and Remoting) translate requests into these calls and results into statuses.

pub mod acl;
pub mod auth;
pub mod broker;
pub mod config;
pub mod consume;
pub mod ha;
pub mod limits;
pub mod metrics;
pub mod registry;
pub mod state_log;
pub mod timer;
pub mod topics;
pub mod txn;

/// The storage engine underneath, re-exported so `crate::store` paths read as the layering is.
pub use ferrocket_store as store;
