//! Starts real `ferrocket` processes for integration tests and talks to them over gRPC.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ferrocket_proto::signing::{SignedChannel, Signer};
use ferrocket_proto::v2::messaging_service_client::MessagingServiceClient;
use ferrocket_proto::v2::*;
use tonic::transport::Channel;

/// A broker process; killed on drop, and its log printed if the test is failing.
pub struct Proc {
    pub child: Child,
    /// Its stderr (the log), `<data dir>.log`.
    pub log: PathBuf,
    /// gRPC address.
    pub addr: String,
    /// Remoting address of the broker.
    pub remoting: String,
    /// Remoting address of the standalone nameserver.
    pub namesrv: String,
}

/// A port free on 127.0.0.1 now (bound and released).
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of {} ---", self.log.display());
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
    }
}

/// The `ferrocket` binary: Cargo's for this crate's tests; for another crate's (the operator's,
/// which include this file), the one beside the test executable's `deps/` directory.
pub fn binary() -> std::path::PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_ferrocket") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe.parent().and_then(Path::parent).expect("target/<profile>/deps").join("ferrocket");
    assert!(bin.exists(), "{} is missing: build it first (cargo build --bin ferrocket)", bin.display());
    bin
}

/// Starts `ferrocket <mode>` on a free port with `config` (TOML lines) and waits (at most 30 s)
/// for its `ready` line.
/// Its Remoting ports are free ones too.
pub fn start(mode: &str, data_dir: &Path, config: &str) -> Proc {
    let (cfg, log) = (data_dir.with_extension("toml"), data_dir.with_extension("log"));
    let (remoting, namesrv) = (free_addr(), free_addr());
    std::fs::write(
        &cfg,
        format!("remoting_listen = \"{remoting}\"\nremoting_namesrv_listen = \"{namesrv}\"\n{config}"),
    )
    .unwrap();
    let mut child = Command::new(binary())
        .args([
            mode,
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("create the broker log"))
        .spawn()
        .expect("spawn ferrocket");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).expect("broker ready within 30 s");
    let addr =
        line.strip_prefix("ready ").unwrap_or_else(|| panic!("unexpected first line {line:?}")).trim().to_string();
    Proc { child, log, addr, remoting, namesrv }
}

/// A MessagingService client of `addr` whose calls carry no credentials.
pub async fn client(addr: &str) -> Client {
    signed_client(addr, Signer::default()).await
}

/// A MessagingService client of `addr` whose calls `signer` signs.
pub async fn signed_client(addr: &str, signer: Signer) -> Client {
    let ch = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.expect("connect");
    MessagingServiceClient::with_interceptor(ch, signer)
}

pub use ferrocket_proto::requests::resource as res;

/// The generated MessagingService client over a channel that signs calls (or not).
pub type Client = MessagingServiceClient<SignedChannel>;

pub fn message(topic: &str, id: &str, body: Vec<u8>) -> Message {
    Message {
        topic: res(topic),
        user_properties: Default::default(),
        system_properties: Some(SystemProperties {
            message_id: id.into(),
            tag: Some("T".into()),
            message_type: MessageType::Normal as i32,
            ..Default::default()
        }),
        body,
    }
}

pub fn code(s: &Option<Status>) -> Code {
    Code::try_from(s.as_ref().expect("status").code).expect("known code")
}

/// Sends one message; returns the response status code.
pub async fn send(c: &mut Client, m: Message) -> Code {
    code(&c.send_message(SendMessageRequest { messages: vec![m] }).await.unwrap().into_inner().status)
}

/// One ReceiveMessage call: (first status code, messages).
pub async fn receive(
    c: &mut Client,
    group: &str,
    topic: &str,
    invisible: prost_types::Duration,
) -> (Code, Vec<Message>) {
    let invisible_ms = (invisible.seconds as u64) * 1000;
    let req = ferrocket_proto::requests::receive(group, topic, 32, invisible_ms, 1000);
    let mut stream = c.receive_message(req).await.unwrap().into_inner();
    let (mut status, mut msgs) = (None, Vec::new());
    while let Some(item) = stream.message().await.unwrap() {
        match item.content {
            Some(receive_message_response::Content::Status(s)) if status.is_none() => status = Some(s),
            Some(receive_message_response::Content::Message(m)) => msgs.push(m),
            _ => {}
        }
    }
    (code(&status), msgs)
}

/// Receives and acks `group`'s messages of `topic` until `n` have arrived; returns their message
/// ids in the order received. Panics if an ack is refused, or after 60 s, naming how many came.
pub async fn receive_and_ack_ids(c: &mut Client, group: &str, topic: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ids.len() < n {
        assert!(std::time::Instant::now() < deadline, "{topic}: {} of {n} received", ids.len());
        for m in receive(c, group, topic, secs(60)).await.1 {
            let sp = m.system_properties.unwrap();
            assert_eq!(ack(c, group, topic, sp.receipt_handle.as_deref().unwrap()).await, Code::Ok);
            ids.push(sp.message_id);
        }
    }
    ids
}

/// Receives until `n` messages arrived or 10 calls (each a 1 s long poll at most) returned.
pub async fn receive_n(c: &mut Client, group: &str, topic: &str, n: usize) -> Vec<Message> {
    let mut all = Vec::new();
    for _ in 0..10 {
        let (status, msgs) = receive(c, group, topic, secs(30)).await;
        assert!(matches!(status, Code::Ok | Code::MessageNotFound), "{status:?}");
        all.extend(msgs);
        if all.len() >= n {
            break;
        }
    }
    all
}

pub async fn ack(c: &mut Client, group: &str, topic: &str, handle: &str) -> Code {
    let entries = vec![AckMessageEntry { message_id: "x".into(), receipt_handle: handle.into(), lite_topic: None }];
    code(
        &c.ack_message(AckMessageRequest { group: res(group), topic: res(topic), entries })
            .await
            .unwrap()
            .into_inner()
            .status,
    )
}

/// QueryRoute for `topic`.
pub async fn route(c: &mut Client, topic: &str) -> QueryRouteResponse {
    c.query_route(QueryRouteRequest { topic: res(topic), endpoints: None }).await.unwrap().into_inner()
}

pub fn secs(s: i64) -> prost_types::Duration {
    prost_types::Duration { seconds: s, nanos: 0 }
}

/// The body of a plain HTTP/1.1 GET that must answer 200 (a probe, `/metrics`).
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}
