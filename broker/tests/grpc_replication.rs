//! A slave over the real protocol: it refuses sends and receives with FORBIDDEN (its master takes
//! them), and it routes clients to its master.

mod common;

use common::*;
use ferrocket_proto::v2::*;

#[tokio::test]
async fn a_slave_refuses_writes_and_routes_to_its_master() {
    let dir = tempfile::tempdir().unwrap();
    let master = start("standalone", &dir.path().join("m"), "");
    let slave = start(
        "broker",
        &dir.path().join("s"),
        &format!("broker_id = 1\nbroker_role = \"slave\"\nha_master_addr = \"{}\"\n", master.addr),
    );
    let mut m = client(&master.addr).await;
    assert_eq!(send(&mut m, message("t", "ID1", b"x".to_vec())).await, Code::Ok);

    let mut s = client(&slave.addr).await;
    assert_eq!(send(&mut s, message("t", "ID2", b"y".to_vec())).await, Code::Forbidden);
    let (status, _) = receive(&mut s, "g", "t", secs(30)).await;
    assert_eq!(status, Code::Forbidden);
    // The slave copies the master's topics every 2 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let r = loop {
        let r = route(&mut s, "t").await;
        if code(&r.status) == Code::Ok {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "the slave never learned topic t: {:?}", r.status);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let brokers: Vec<_> = r.message_queues.iter().map(|q| q.broker.clone().unwrap()).collect();
    assert!(!brokers.is_empty());
    let master_port: i32 = master.addr.rsplit(':').next().unwrap().parse().unwrap();
    assert!(brokers.iter().all(|b| b.id == 0 && b.endpoints.as_ref().unwrap().addresses[0].port == master_port));
}

/// Signals a process (SIGSTOP, SIGCONT) with the system's `kill`; for SIGSTOP, also waits (at
/// most 5 s) until every thread is stopped: kill(2) returns before threads running on another
/// core have stopped, and they may still replicate a little meanwhile.
fn signal(p: &Proc, sig: &str) {
    let pid = p.child.id();
    let ok = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} failed");
    if sig != "-STOP" {
        return;
    }
    let stopped = || {
        std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().all(|t| {
            let stat = std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap_or_default();
            stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !stopped() {
        assert!(std::time::Instant::now() < deadline, "process {pid} did not stop within 5 s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Under `replication = "sync"` a batch of 16 is acknowledged, and visible to consumers, only once
/// the in-sync slave holds it: with the slave stopped, neither happens; after SIGCONT the batch
/// is acknowledged and every message is delivered once.
#[tokio::test]
async fn a_sync_batch_is_acknowledged_and_visible_only_once_the_slave_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let master = start(
        "standalone",
        &dir.path().join("m"),
        "replication = \"sync\"\nha_sync_timeout_ms = 30000\nha_max_lag_ms = 60000\n",
    );
    let slave = start(
        "broker",
        &dir.path().join("s"),
        &format!("broker_id = 1\nbroker_role = \"slave\"\nha_master_addr = \"{}\"\n", master.addr),
    );
    let mut m = client(&master.addr).await;
    // The first acknowledged send proves the slave is connected and in sync.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while send(&mut m, message("batch", "ID-0", b"first".to_vec())).await != Code::Ok {
        assert!(std::time::Instant::now() < deadline, "no SYNC send was acknowledged with the slave up");
    }
    let first = receive_n(&mut m, "g", "batch", 1).await;
    assert_eq!(first.len(), 1);
    for msg in &first {
        let h = msg.system_properties.as_ref().unwrap().receipt_handle.clone().unwrap();
        assert_eq!(ack(&mut m, "g", "batch", &h).await, Code::Ok);
    }

    signal(&slave, "-STOP");
    let messages: Vec<Message> = (1..=16).map(|i| message("batch", &format!("ID-{i}"), vec![b'x'; 64])).collect();
    let mut sender = m.clone();
    let sent = tokio::spawn(async move { sender.send_message(SendMessageRequest { messages }).await });
    let (status, early) = receive(&mut m, "g", "batch", secs(30)).await;
    assert_eq!((status, early.len()), (Code::MessageNotFound, 0), "nothing is visible while the slave is stopped");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await; // a window for a false acknowledgement
    assert!(!sent.is_finished(), "the batch was answered while the slave was stopped");
    signal(&slave, "-CONT");

    let reply = tokio::time::timeout(std::time::Duration::from_secs(20), sent).await.unwrap().unwrap().unwrap();
    let reply = reply.into_inner();
    assert_eq!(code(&reply.status), Code::Ok);
    assert!(reply.entries.iter().all(|e| code(&e.status) == Code::Ok));
    let got = receive_n(&mut m, "g", "batch", 16).await;
    let mut ids: Vec<String> = got.iter().map(|m| m.system_properties.as_ref().unwrap().message_id.clone()).collect();
    ids.sort();
    let mut want: Vec<String> = (1..=16).map(|i| format!("ID-{i}")).collect();
    want.sort();
    assert_eq!(ids, want, "each message of the batch delivered once");
}
