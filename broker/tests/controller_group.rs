//! The controller's Raft group in one process over real gRPC on 127.0.0.1: the log is compacted
//! by snapshots, and a member that missed what was compacted catches up through InstallSnapshot.

use std::path::Path;
use std::time::{Duration, Instant};

use ferrocket::controller::service::{start, LEADER_HEADER};
use ferrocket_engine::config::Config;
use ferrocket_proto::dial::Dialer;
use ferrocket_proto::namesrv::controller_client::ControllerClient;
use ferrocket_proto::namesrv::{AlterSyncStateSetRequest, ControllerHeartbeat};
use tokio::net::TcpListener;
use tonic::transport::Channel;

fn config(dir: &Path, id: u64, peers: &[String]) -> Config {
    Config {
        data_dir: dir.join(format!("m{id}")),
        enable_controller: true,
        controller_peers: peers.to_vec(),
        controller_id: id,
        ..Config::default()
    }
}

/// Starts member `id` and serves it on `listener`.
async fn serve(cfg: Config, listener: TcpListener) {
    let s = start(&cfg, Dialer::default()).await.expect("member starts");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(s.controller)
            .add_service(s.raft)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
}

/// A client of the leader, found by following the members' redirects (bounded).
async fn leader(addrs: &[String]) -> ControllerClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut at = addrs[0].clone();
    loop {
        let mut c = ControllerClient::new(Channel::from_shared(format!("http://{at}")).unwrap().connect_lazy());
        let hb = ControllerHeartbeat {
            broker_name: "g".into(),
            endpoint: "m:1".into(),
            preferred_master: true,
            ..Default::default()
        };
        match c.heartbeat(hb).await {
            Ok(_) => return c,
            Err(e) => {
                assert!(Instant::now() < deadline, "no controller leader: {e}");
                let hint = e.metadata().get(LEADER_HEADER).and_then(|v| v.to_str().ok()).map(String::from);
                at = hint
                    .unwrap_or_else(|| addrs[(addrs.iter().position(|a| *a == at).unwrap() + 1) % addrs.len()].clone());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The log index of the first record in a member's `raft-log` (u32 length, u32 CRC, JSON).
fn first_index(member: &Path) -> Option<u64> {
    let bytes = std::fs::read(member.join("controller/raft-log")).ok()?;
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let entry: serde_json::Value = serde_json::from_slice(bytes.get(8..8 + len)?).ok()?;
    entry["log_id"]["index"].as_u64()
}

/// Polls `ok` until it holds (bounded: 60 s).
async fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_compacted_and_a_lagging_member_catches_up_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
    let peers: Vec<String> = addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
    let third = listeners.pop().unwrap();
    // Members 1 and 2 are a majority; member 3 is down.
    for (i, l) in listeners.into_iter().enumerate() {
        serve(config(dir.path(), i as u64 + 1, &peers), l).await;
    }
    let mut c = leader(&addrs[..2]).await;
    // 1,200 committed in-sync set changes: past the 1,000 entries after which a snapshot is taken.
    for i in 0..1_200 {
        let set = if i % 2 == 0 { vec!["m:1".to_string(), "s:1".into()] } else { vec!["m:1".to_string()] };
        let req =
            AlterSyncStateSetRequest { broker_name: "g".into(), master: "m:1".into(), epoch: 1, sync_state_set: set };
        c.alter_sync_state_set(req).await.expect("the leader commits it");
    }
    for m in ["m1", "m2"] {
        let member = dir.path().join(m);
        wait("the log before the snapshot to be purged", || first_index(&member).is_some_and(|i| i > 500)).await;
        assert!(member.join("controller/snapshot.json").exists());
    }
    // Member 3 starts with nothing: what it missed is no longer in any log, so it gets a snapshot.
    serve(config(dir.path(), 3, &peers), third).await;
    let snapshot = dir.path().join("m3/controller/snapshot.json");
    wait("member 3 to install a snapshot", || snapshot.exists()).await;
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&snapshot).unwrap()).unwrap();
    assert_eq!(stored["state"]["groups"]["g"]["epoch"], 1, "{stored}");
    assert_eq!(stored["state"]["groups"]["g"]["master"], "m:1", "{stored}");
}
