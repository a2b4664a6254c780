//! RocketMQ's own TCP protocol, Remoting (REMOTING.md): the second front end on the engine, for
//! the Java, Go and C++ clients that most RocketMQ applications run.
//!
//! - [`command`]: frames and their JSON / ROCKETMQ header serializations; [`codes`].
//! - [`conn`]: serving connections (one task per request, responses in any order).
//! - [`namesrv`]: the nameserver's routes, cluster info and topic list.
//! - [`broker`]: the broker's requests ([`send`], [`pull`], [`pop`], [`txn`], [`query`], clients,
//!   offsets and queue locks), over the engine; [`clients`]: consumer and producer groups from
//!   heartbeats; [`admin`]: mqadmin's broker requests.
//! - [`wire`]: messages as Remoting lays them out (pull bodies, offset message ids, batches).
//! - [`header`]: reading a request's custom header fields; [`auth`]: checking its signature.

pub mod admin;
pub mod auth;
pub mod broker;
pub mod clients;
pub mod codes;
pub mod command;
pub mod conn;
pub mod header;
pub mod namesrv;
pub mod pop;
pub mod pull;
pub mod query;
pub mod send;
pub mod txn;
pub mod wire;
