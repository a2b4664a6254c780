//! Every loop of a broker that talks to another process: registration with the nameservers
//! ([`registration`]), the controller client that keeps the broker's role ([`controller_client`]) and a
//! slave's replication session ([`slave`]).

pub mod controller_client;
pub mod registration;
pub mod slave;

use crate::broker::Broker;
use crate::proto::dial::Dialer;
use crate::proto::signing::Signer;

/// How this broker dials other Ferrocket processes: over TLS trusting `tls_ca_file` (checking
/// `tls_server_name` if set) or plaintext, every call signed with the cluster's own credentials
/// (`auth_access_key`) when they are set. Errors: the CA file cannot be read, naming it.
pub fn dialer(broker: &Broker) -> anyhow::Result<Dialer> {
    let cfg = broker.config();
    let signer = Signer::from(broker.auth().own_credentials());
    Dialer::from_files(signer, cfg.tls_ca_file.as_deref(), cfg.tls_server_name.as_deref())
}
