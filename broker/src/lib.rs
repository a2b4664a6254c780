#![warn(missing_docs)]
//! Ferrocket broker: a RocketMQ-compatible message broker.
//!
//! Layers (DESIGN.md §1): [`store`] keeps records on disk; [`topics`] and [`consume`] hold topic
//! config and consumer progress; [`broker`] ties them into the engine's API; [`grpc`] speaks the
//! RocketMQ 5.x protocol and our Admin service on top of it; [`server`] runs a process.

pub mod bench;
pub mod broker;
pub mod config;
pub mod consume;
pub mod grpc;
pub mod ha;
pub mod http;
pub mod metrics;
pub mod namesrv;
pub mod registry;
pub mod server;
pub mod store;
pub mod timer;
pub mod topics;
pub mod txn;

/// Generated protobuf and gRPC code, nested as the proto packages are so cross-package
/// references resolve; use the [`proto::v2`] and [`proto::admin`] aliases.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    pub mod apache {
        pub mod rocketmq {
            pub mod v2 {
                tonic::include_proto!("apache.rocketmq.v2");
            }
        }
    }
    pub mod ferrocket {
        pub mod v1 {
            tonic::include_proto!("ferrocket.v1");
        }
    }
    /// The RocketMQ 5.x wire contract (`apache.rocketmq.v2`).
    pub use apache::rocketmq::v2;
    /// Ferrocket's own Admin service (`ferrocket.v1`).
    pub use ferrocket::v1 as admin;
    /// Ferrocket's nameserver service (`ferrocket.v1`, the same package as Admin).
    pub use ferrocket::v1 as namesrv;
}
