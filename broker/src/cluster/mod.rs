//! Every loop of a broker that talks to another process: registration with the nameservers
//! ([`registration`]), the controller client that keeps the broker's role ([`controller_client`]) and a
//! slave's replication session ([`slave`]).

pub mod controller_client;
pub mod registration;
pub mod slave;

use crate::broker::Broker;
use crate::proto::signing::Signer;

/// What signs this broker's calls to other Ferrocket processes: the cluster's own credentials
/// (`auth_access_key`), or nothing when they are not set.
pub fn signer(broker: &Broker) -> Signer {
    Signer::from(broker.auth().own_credentials())
}
