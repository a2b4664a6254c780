//! Every loop of a broker that talks to another process: registration with the nameservers
//! ([`registration`]), the controller client that keeps the broker's role ([`controller_client`]) and a
//! slave's replication session ([`slave`]).

pub mod controller_client;
pub mod registration;
pub mod slave;

use crate::auth::Auth;
use crate::config::Config;
use crate::proto::dial::Dialer;
use crate::proto::signing::Signer;

/// How a broker or nameserver configured by `cfg` dials other Ferrocket processes: over TLS
/// trusting `tls_ca_file` (checking `tls_server_name` if set) or plaintext, every call signed
/// with the cluster's own credentials (`auth_access_key`, from `auth`) when they are set. Errors:
/// the CA file cannot be read, naming it.
pub fn dialer(cfg: &Config, auth: &Auth) -> anyhow::Result<Dialer> {
    let signer = Signer::from(auth.own_credentials());
    Dialer::from_files(signer, cfg.tls_ca_file.as_deref(), cfg.tls_server_name.as_deref())
}
