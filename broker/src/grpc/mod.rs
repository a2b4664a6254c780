//! The gRPC front end: RocketMQ's MessagingService for clients and our Admin service. It
//! translates wire messages into engine calls and nothing more (DESIGN.md §1).

pub mod admin;
pub mod auth;
pub mod clients;
pub mod cluster;
pub mod convert;
pub mod ha;
pub mod messaging;
pub mod routes;
pub mod status;
