//! TLS on the gRPC ports, as RocketMQ's proxy serves it: the certificate is the configured one
//! (`tls_cert_file` / `tls_key_file`, cert-manager's `tls.crt` / `tls.key`) or, when none is
//! configured, a self-signed one made on first start and kept in `<data_dir>/tls/`. The official
//! 5.x clients enable TLS by default and trust any server certificate, so a self-signed one lets
//! them connect unchanged. The files are read again when their modification times change, so a
//! rotated certificate serves the next handshake without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, TlsMode};

/// The first byte of a TLS connection: the content type of a handshake record (RFC 8446 §5.1).
pub const TLS_HANDSHAKE: u8 = 0x16;

/// How often a handshake may look at the certificate files' modification times.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The self-signed certificate's files under `<data_dir>/tls/`.
const SELF_SIGNED_CERT: &str = "self-signed.crt";
const SELF_SIGNED_KEY: &str = "self-signed.key";

/// The acceptor for TLS connections on a gRPC port (HTTP/2 by ALPN), or None with
/// `tls_mode = "disabled"`. Without a configured certificate, one that cannot be kept under
/// `<data_dir>/tls/` (a read-only working directory) is made for this run only, with a WARN.
/// Errors: a configured certificate or key file that cannot be read or parsed, or a key that does
/// not match its certificate, each naming the file.
pub fn acceptor(cfg: &Config) -> anyhow::Result<Option<TlsAcceptor>> {
    if cfg.tls_mode == TlsMode::Disabled {
        return Ok(None);
    }
    let files = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        _ => {
            let dir = cfg.data_dir.join("tls");
            self_signed(&dir)
                .map_err(|e| {
                    let e = format!("{e:#}");
                    tracing::warn!(dir = %dir.display(), error = %e, "using a self-signed certificate made for this run")
                })
                .ok()
        }
    };
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth();
    let mut config = match files {
        Some((cert, key)) => builder.with_cert_resolver(Arc::new(Reloading::open(cert, key, provider)?)),
        None => {
            let made = generate()?;
            let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
            builder.with_single_cert(vec![made.cert.der().clone()], key).context("the self-signed certificate")?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// A self-signed certificate for `localhost` and 127.0.0.1 with a new ECDSA P-256 key.
fn generate() -> anyhow::Result<rcgen::CertifiedKey<rcgen::KeyPair>> {
    rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .context("cannot generate a self-signed certificate")
}

/// The paths of the self-signed certificate and key in `dir`, made (key mode 0600) if they are
/// not there yet. Errors: `dir` or a file in it cannot be written.
fn self_signed(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join(SELF_SIGNED_CERT), dir.join(SELF_SIGNED_KEY));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let made = generate()?;
    // The key first, the certificate last: a start interrupted in between makes both again.
    write_new(&key, made.signing_key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert, made.cert.pem().as_bytes(), 0o644)?;
    tracing::info!(cert = %cert.display(), "no tls_cert_file configured: serving a self-signed certificate");
    Ok((cert, key))
}

/// Writes `bytes` to `path` through a temporary file renamed over it, with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// The certificate chain and key in two PEM files. Errors name the file.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no PEM certificate in {}", cert.display());
    let der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read the TLS private key {}", key.display()))?;
    CertifiedKey::from_der(chain, der, provider)
        .with_context(|| format!("{} is not a usable key for {}", key.display(), cert.display()))
}

/// Both files' modification times (None where a file cannot be read).
fn stamps(cert: &Path, key: &Path) -> [Option<SystemTime>; 2] {
    [cert, key].map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

/// Serves the certificate in two files, loading them again when either file changes.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: [Option<SystemTime>; 2],
    checked: Instant,
}

impl Reloading {
    fn open(cert: PathBuf, key: PathBuf, provider: Arc<CryptoProvider>) -> anyhow::Result<Self> {
        let stamps = stamps(&cert, &key);
        let loaded = Arc::new(load(&cert, &key, &provider)?);
        let state = Mutex::new(Loaded { key: loaded, stamps, checked: Instant::now() });
        Ok(Self { cert, key, provider, state })
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.checked.elapsed() >= RELOAD_CHECK {
            s.checked = Instant::now();
            let now = stamps(&self.cert, &self.key);
            if now != s.stamps {
                // A rotation may replace the two files one at a time: a pair that does not load
                // keeps the previous certificate, and is tried again at the next check.
                match load(&self.cert, &self.key, &self.provider) {
                    Ok(k) => {
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                        s.key = Arc::new(k);
                        s.stamps = now;
                    }
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "keeping the previous TLS certificate"),
                }
            }
        }
        Some(s.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> Config {
        Config { data_dir: dir.to_path_buf(), ..Config::default() }
    }

    #[test]
    fn a_self_signed_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        assert!(acceptor(&cfg(dir.path())).unwrap().is_some());
        let cert = dir.path().join("tls").join(SELF_SIGNED_CERT);
        let first = std::fs::read(&cert).unwrap();
        assert!(acceptor(&cfg(dir.path())).unwrap().is_some());
        assert_eq!(std::fs::read(&cert).unwrap(), first, "the second start reuses the certificate");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls").join(SELF_SIGNED_KEY)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_data_dir_that_cannot_be_written_still_serves_tls() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        assert!(acceptor(&cfg(&file)).unwrap().is_some());
    }

    #[test]
    fn disabled_makes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config { tls_mode: TlsMode::Disabled, ..cfg(dir.path()) };
        assert!(acceptor(&c).unwrap().is_none());
        assert!(!dir.path().join("tls").exists());
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(&dir.path().join("a")).unwrap();
        let (_, other_key) = self_signed(&dir.path().join("b")).unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        for (c, k, named) in [
            (garbage.clone(), key.clone(), &garbage),
            (cert.clone(), garbage.clone(), &garbage),
            (cert.clone(), other_key.clone(), &other_key),
            (dir.path().join("missing.crt"), key.clone(), &dir.path().join("missing.crt")),
        ] {
            let c = Config { tls_cert_file: Some(c), tls_key_file: Some(k), ..cfg(dir.path()) };
            let e = format!("{:#}", acceptor(&c).err().expect("refused"));
            assert!(e.contains(&named.display().to_string()), "{e}");
        }
    }
}
