//! How Ferrocket's own clients reach its processes: plaintext, or TLS trusting one CA bundle
//! (`tls_ca_file`, cert-manager's `ca.crt`), and every call signed by a [`Signer`]. Brokers,
//! slaves, the CLI and the operator dial the same way, so a cluster that requires TLS
//! (`tls_mode = "enforcing"`) keeps talking to itself.

use std::path::Path;

use anyhow::Context;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::signing::Signer;

/// Signs calls and, with a CA, dials over TLS. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Dialer {
    signer: Signer,
    tls: Option<ClientTlsConfig>,
}

impl Dialer {
    /// Plaintext connections, calls signed by `signer`.
    pub fn plain(signer: Signer) -> Dialer {
        Dialer { signer, tls: None }
    }

    /// TLS connections that trust the PEM certificates in `ca_pem` (the server's chain must end
    /// in one of them) and check the server's name: the dialled host, or `server_name` where the
    /// certificates name the cluster rather than each address. Calls signed by `signer`.
    pub fn tls(signer: Signer, ca_pem: &[u8], server_name: Option<&str>) -> Dialer {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
        if let Some(name) = server_name {
            tls = tls.domain_name(name);
        }
        Dialer { signer, tls: Some(tls) }
    }

    /// [`Dialer::tls`] with the CA bundle read from `ca_file`, or [`Dialer::plain`] without one.
    /// The file is read once: a rotated CA needs a restart (server certificates rotate freely).
    /// Errors: the file cannot be read or holds no PEM certificate, naming it.
    pub fn from_files(signer: Signer, ca_file: Option<&Path>, server_name: Option<&str>) -> anyhow::Result<Dialer> {
        let Some(file) = ca_file else { return Ok(Dialer::plain(signer)) };
        let pem = std::fs::read(file).with_context(|| format!("cannot read the TLS CA file {}", file.display()))?;
        anyhow::ensure!(
            String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----"),
            "no PEM certificate in the TLS CA file {}",
            file.display()
        );
        Ok(Dialer::tls(signer, &pem, server_name))
    }

    /// The endpoint of `addr` (`host:port`): `https://` with this TLS configuration, or
    /// `http://`. Errors: `addr` makes no URI, or the TLS configuration is refused by tonic.
    pub fn endpoint(&self, addr: impl std::fmt::Display) -> anyhow::Result<Endpoint> {
        match &self.tls {
            Some(tls) => Ok(Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.clone())?),
            None => Ok(Endpoint::from_shared(format!("http://{addr}"))?),
        }
    }

    /// What signs the calls.
    pub fn signer(&self) -> Signer {
        self.signer.clone()
    }

    /// True when connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_follows_the_tls_configuration() {
        let plain = Dialer::default().endpoint("127.0.0.1:8081").unwrap();
        assert_eq!(plain.uri().scheme_str(), Some("http"));
        let pem = b"-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";
        let tls = Dialer::tls(Signer::default(), pem, None).endpoint("127.0.0.1:8081").unwrap();
        assert_eq!(tls.uri().scheme_str(), Some("https"));
    }

    #[test]
    fn a_ca_file_that_is_missing_or_not_pem_is_named() {
        let dir = std::env::temp_dir().join(format!("ferrocket-dial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("ca.crt");
        std::fs::write(&garbage, "not a certificate").unwrap();
        for f in [garbage.clone(), dir.join("missing.crt")] {
            let e = format!("{:#}", Dialer::from_files(Signer::default(), Some(&f), None).unwrap_err());
            assert!(e.contains(&f.display().to_string()), "{e}");
        }
        assert!(!Dialer::from_files(Signer::default(), None, None).unwrap().is_tls());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
