//! The LSM ConsumeQueue store (`consume_queue_store = "lsm"`) in a real broker: kill -9 while
//! messages are sent to many topics, then every acknowledged message is received exactly once
//! and new sends continue the queue offsets; a data directory keeps the store it was made with.

mod common;
use common::*;
use ferrocket_proto::v2::Code;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const TOPICS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lsm_store_keeps_every_acknowledged_message_across_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Checkpoints (and so the store's journal fsync) every 100 ms, so kills land around them.
    let config = "consume_queue_store = \"lsm\"\nconsumer_snapshot_interval_ms = 100\n";
    let mut broker = start("standalone", &data, config);
    let mut sent: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for round in 0..5u64 {
        let mut c = client(&broker.addr).await;
        // Fault injection, not synchronisation: each round runs for a different time, so the
        // kill lands at a different point of the dispatcher's passes and the checkpoints.
        let until = Instant::now() + Duration::from_millis(150 + 120 * round);
        let mut i = 0;
        while Instant::now() < until {
            let topic = format!("lsm{}", i % TOPICS);
            let id = format!("r{round}-{i}");
            assert_eq!(send(&mut c, message(&topic, &id, vec![b'x'; 512])).await, Code::Ok);
            sent.entry(topic).or_default().insert(id);
            i += 1;
        }
        drop(broker); // SIGKILL
        broker = start("standalone", &data, config);
    }
    assert!(!data.join("consumequeue").read_dir().is_ok_and(|mut d| d.next().is_some()), "no file queue");
    let mut c = client(&broker.addr).await;
    // One more after the last restart lands behind what was there (queue offsets continue).
    assert_eq!(send(&mut c, message("lsm0", "after", vec![b'y'; 10])).await, Code::Ok);
    sent.get_mut("lsm0").unwrap().insert("after".into());
    for (topic, ids) in &sent {
        let got = receive_and_ack_ids(&mut c, "g", topic, ids.len()).await;
        let unique: BTreeSet<_> = got.iter().cloned().collect();
        assert_eq!(&unique, ids, "{topic}: what was received is what was acknowledged");
        assert_eq!(got.len(), ids.len(), "{topic}: a message delivered twice");
    }
    drop(broker);
    // The same data directory with the file store is refused, naming the store it holds.
    let mut other = std::process::Command::new(binary())
        .args(["standalone", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()])
        .env("FERROCKET_REMOTING_LISTEN", free_addr())
        .env("FERROCKET_REMOTING_NAMESRV_LISTEN", free_addr())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = other.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the file store started on an LSM data directory");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(other.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success() && stderr.contains("consumequeue_lsm"), "{status}: {stderr}");
}
