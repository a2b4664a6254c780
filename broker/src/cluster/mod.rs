//! Every loop of a broker that talks to another process: registration with the nameservers
//! ([`registration`]), the controller client that keeps the broker's role ([`controller_client`]) and a
//! slave's replication session ([`slave`]).

pub mod controller_client;
pub mod registration;
pub mod slave;
