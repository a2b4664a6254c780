#![warn(missing_docs)]
//! Ferrocket's wire contracts and the typed clients of its own services.
//!
//! The generated code is nested as the proto packages are, so cross-package references resolve;
//! use the [`v2`], [`admin`] and [`namesrv`] aliases. Neither the store nor the engine depends on
//! this crate: the front ends and the cluster loops of the `ferrocket` binary translate.

/// Generated protobuf and gRPC code, by proto package.
#[allow(clippy::all, missing_docs)]
pub mod apache {
    /// `apache.rocketmq`.
    pub mod rocketmq {
        /// `apache.rocketmq.v2`.
        pub mod v2 {
            tonic::include_proto!("apache.rocketmq.v2");
        }
    }
}

/// Generated protobuf and gRPC code of `ferrocket.v1`.
#[allow(clippy::all, missing_docs)]
pub mod ferrocket {
    /// `ferrocket.v1`.
    pub mod v1 {
        tonic::include_proto!("ferrocket.v1");
    }
}

pub mod clients;
pub mod dial;
pub mod requests;
pub mod signing;

/// The RocketMQ 5.x wire contract (`apache.rocketmq.v2`, from apache/rocketmq-apis).
pub use apache::rocketmq::v2;
/// Ferrocket's own Admin service (`ferrocket.v1`).
pub use ferrocket::v1 as admin;
/// Ferrocket's nameserver, replication and controller services (`ferrocket.v1`, the same
/// package as Admin).
pub use ferrocket::v1 as namesrv;
