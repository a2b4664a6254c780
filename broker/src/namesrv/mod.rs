//! The nameserver role: the route table brokers register with ([`routes`], [`service`]); the
//! broker's side of it is [`crate::cluster::registration`]. Several nameservers share no state; every broker
//! registers with all of them, so any one answers (RocketMQ's design). Nameservers may also
//! run the master election [`crate::controller`].

pub mod routes;
pub mod service;
