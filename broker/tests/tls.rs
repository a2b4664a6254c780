//! TLS required (`tls_mode = "enforcing"`), on real processes: a nameserver, a master and its
//! slave, all with one CA's certificates. Plaintext is refused on every port and protocol; a
//! client trusting the CA sends over gRPC and Remoting; registration, replication and the CLI
//! reach the processes over TLS; a client that trusts another CA is refused.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ferrocket::remoting::codes::SEND_MESSAGE_V2;
use ferrocket::remoting::command::{Command, SerializeType};
use ferrocket::remoting::conn::read_frame;
use ferrocket_proto::dial::Dialer;
use ferrocket_proto::signing::Signer;
use ferrocket_proto::v2::messaging_service_client::MessagingServiceClient;
use ferrocket_proto::v2::*;
use tokio::io::AsyncWriteExt;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// A CA and a server certificate it issued for `localhost` and 127.0.0.1, as PEM files in
/// `dir`: (ca.crt, tls.crt, tls.key), cert-manager's names.
fn issue(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = leaf.signed_by(&key, &Issuer::new(ca, ca_key)).unwrap();
    let paths = (dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// The config lines of an enforcing process with these files.
fn enforcing((ca, cert, key): &(PathBuf, PathBuf, PathBuf)) -> String {
    format!(
        "tls_mode = \"enforcing\"\ntls_ca_file = {ca:?}\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}\n\
         auto_create_topic = true\n"
    )
}

/// A MessagingService client dialling `addr` over TLS, trusting `ca`.
async fn tls_client(addr: &str, ca: &Path) -> Result<Client, tonic::transport::Error> {
    let dialer = Dialer::tls(Signer::default(), &std::fs::read(ca).unwrap(), None);
    let ch = dialer.endpoint(addr).unwrap().connect_timeout(Duration::from_secs(5)).connect().await?;
    Ok(MessagingServiceClient::with_interceptor(ch, Signer::default()))
}

/// A SEND_MESSAGE_V2 of `hello` to `topic` over TLS to the Remoting port `addr`, trusting `ca`:
/// the response's code.
async fn remoting_send_over_tls(addr: &str, ca: &Path, topic: &str) -> i32 {
    let mut roots = RootCertStore::empty();
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let host = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(host, tcp).await.unwrap();
    let mut req = Command::request(SEND_MESSAGE_V2, 7, false, SerializeType::Json);
    req.put("a", "PG").put("b", topic).put("c", "TBW102").put("d", 4).put("e", 0).put("f", 0).put("g", 0).put("h", 0);
    req.body = b"hello".to_vec();
    tls.write_all(&req.encode()).await.unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut tls)).await.unwrap().unwrap().unwrap();
    Command::decode(&frame).unwrap().code
}

/// True when the peer at `addr` closes a plaintext connection that sent `bytes` without
/// answering (within 10 s).
fn closes_plaintext(addr: &str, bytes: &[u8]) -> bool {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_)) && buf == [0u8; 64]
}

#[tokio::test]
async fn with_tls_enforced_every_port_refuses_plaintext_and_the_cluster_talks_to_itself_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let files = issue(&dir.path().join("pki"));
    let ca = files.0.clone();
    let tls = enforcing(&files);
    let ns = start("namesrv", &dir.path().join("ns"), &tls);
    let registered = format!("{tls}namesrv_addrs = [\"{}\"]\n", ns.addr);
    let master = start("broker", &dir.path().join("m"), &registered);
    let slave = start(
        "broker",
        &dir.path().join("s"),
        &format!("{registered}broker_id = 1\nbroker_role = \"slave\"\nha_master_addr = \"{}\"\n", master.addr),
    );

    // Plaintext gRPC and Remoting are closed unread, on the broker's ports and the nameserver's.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let remoting_frame = Command::request(SEND_MESSAGE_V2, 1, false, SerializeType::Json).encode();
    assert!(closes_plaintext(&master.addr, preface), "plaintext gRPC on the broker's port");
    assert!(closes_plaintext(&master.remoting, &remoting_frame), "plaintext Remoting on the broker's port");
    assert!(closes_plaintext(&ns.addr, &remoting_frame), "plaintext Remoting on the nameserver's port");
    let plain = tonic::transport::Channel::from_shared(format!("http://{}", master.addr)).unwrap();
    let mut plain = MessagingServiceClient::new(plain.connect().await.unwrap());
    assert!(plain
        .send_message(SendMessageRequest { messages: vec![message("t", "P1", b"x".to_vec())] })
        .await
        .is_err());

    // A client trusting the CA sends over gRPC and Remoting.
    let mut c = tls_client(&master.addr, &ca).await.expect("TLS to the master");
    assert_eq!(send(&mut c, message("orders", "T1", b"over tls".to_vec())).await, Code::Ok);
    assert_eq!(remoting_send_over_tls(&master.remoting, &ca, "orders").await, 0, "Remoting SEND over TLS");

    // One trusting another CA is refused at the handshake.
    let other = issue(&dir.path().join("other"));
    assert!(tls_client(&master.addr, &other.0).await.is_err(), "a certificate of an unknown CA was trusted");

    // Registration (both brokers), replication and the CLI go over TLS: the CLI reads the cluster
    // status from the nameserver and asks each broker, and the slave has the master's messages.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::process::Command::new(binary())
            .args(["cluster", "status", "--json", "--namesrv", &ns.addr, "--tls-ca-file", ca.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let status: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let brokers = status["brokers"].as_array().cloned().unwrap_or_default();
        let offset = |id: i64| brokers.iter().find(|b| b["broker_id"] == id).and_then(|b| b["max_offset"].as_u64());
        if brokers.len() == 2 && offset(0).is_some() && offset(0) == offset(1) && offset(0) > Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no TLS registration or replication: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(slave);
}
