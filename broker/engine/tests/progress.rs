//! Consumer progress on real files: the progress log carries acks and deliveries in flight across
//! restarts, a snapshot written before the progress log existed is imported, and a progress log
//! that no longer matches the snapshot is rebuilt from the ack records in the CommitLog.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use ferrocket_engine::broker::{Broker, Consumer, Outgoing};
use ferrocket_engine::config::Config;
use ferrocket_engine::consume::filter::Filter;
use ferrocket_engine::store::record::Record;
use ferrocket_engine::store::PROP_MSG_ID;
use ferrocket_engine::topics::MessageType;

use common::{block, wait_dispatched};

const G: Consumer<'static> = Consumer { group: "g", client_id: "c" };

/// [`common::cfg`] with invisible times of any length.
fn cfg(dir: &Path) -> Config {
    Config { min_invisible_ms: 0, ..common::cfg(dir) }
}

/// A broker on a new data directory with messages m0..m9 on topic T (queue offsets 0..=9).
fn started() -> (tempfile::TempDir, std::sync::Arc<Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(cfg(dir.path())).unwrap();
    for i in 0..10 {
        let props: BTreeMap<String, String> = [(PROP_MSG_ID.to_string(), format!("m{i}"))].into();
        let record = Record { topic: "T".into(), queue_id: 0, properties: props, ..Default::default() };
        let mut batch = [Outgoing { record, ty: MessageType::Normal, deliver_at_ms: None, check_type: true }];
        block(b.send_batch(&mut batch, "producer")).remove(0).unwrap();
    }
    wait_dispatched(&b);
    (dir, b)
}

/// Receives up to `n` messages (invisible for `invisible_ms`); (message ids, receipt handles).
fn receive(b: &Broker, n: usize, invisible_ms: u64) -> (Vec<String>, Vec<String>) {
    let got = b.receive(G, "T", &Filter::ALL, n, invisible_ms).unwrap();
    got.into_iter().map(|d| (d.record.properties[PROP_MSG_ID].clone(), d.receipt_handle)).unzip()
}

fn ack(b: &Broker, handles: &[String]) {
    let handles: Vec<&str> = handles.iter().map(String::as_str).collect();
    assert!(block(b.ack(G, "T", &handles)).iter().all(Result::is_ok));
}

fn reopen(dir: &Path, b: std::sync::Arc<Broker>) -> std::sync::Arc<Broker> {
    b.shutdown().unwrap();
    drop(b);
    Broker::open(cfg(dir)).unwrap()
}

#[test]
fn acks_and_deliveries_in_flight_survive_restarts_through_the_progress_log() {
    let (dir, b) = started();
    let (ids, handles) = receive(&b, 6, 3_600_000);
    assert_eq!(ids, ["m0", "m1", "m2", "m3", "m4", "m5"]);
    ack(&b, &[handles[0].clone(), handles[1].clone(), handles[3].clone()]);
    let b = reopen(dir.path(), b);
    assert_eq!(b.committed_offset("g", "T", 0), Some(2));
    // m2, m4 and m5 are still in flight for an hour; m3 is acked: the rest comes next.
    assert_eq!(receive(&b, 32, 3_600_000).0, ["m6", "m7", "m8", "m9"]);
    let b = reopen(dir.path(), b);
    assert_eq!(receive(&b, 32, 3_600_000).0, Vec::<String>::new());
    let files: Vec<_> = std::fs::read_dir(dir.path().join("progress")).unwrap().collect();
    assert_eq!(files.len(), 1, "one generation");
    b.shutdown().unwrap();
}

#[test]
fn a_snapshot_from_before_the_progress_log_is_imported() {
    let (dir, b) = started();
    let end = b.store().commitlog_end();
    b.shutdown().unwrap();
    drop(b);
    // As a broker before the progress log wrote it: every queue's progress inside state.json.
    let legacy = serde_json::json!({
        "commitlog_offset": end,
        "queues": [[["g", "T", 0], {"ack_offset": 3, "next_offset": 5, "acked": [4],
            "inflight": {"3": {"pop_id": 7, "attempt": 1, "visible_at_ms": 0, "group": 0}}}]],
    });
    std::fs::write(dir.path().join("config/state.json"), legacy.to_string()).unwrap();
    std::fs::remove_dir_all(dir.path().join("progress")).unwrap();
    let b = Broker::open(cfg(dir.path())).unwrap();
    assert_eq!(b.committed_offset("g", "T", 0), Some(3));
    // m3 was in flight and is visible again; m4 was acked.
    let (ids, handles) = receive(&b, 32, 3_600_000);
    assert_eq!(ids, ["m3", "m5", "m6", "m7", "m8", "m9"]);
    ack(&b, &handles);
    let b = reopen(dir.path(), b);
    assert_eq!(b.committed_offset("g", "T", 0), Some(10));
    let state = std::fs::read_to_string(dir.path().join("config/state.json")).unwrap();
    assert!(!state.contains("\"queues\""), "the progress now lives in the progress log: {state}");
    b.shutdown().unwrap();
}

#[test]
fn a_progress_log_that_does_not_match_the_snapshot_is_rebuilt_from_the_ack_records() {
    for damage in ["missing", "cut short", "corrupt"] {
        let (dir, b) = started();
        let (_, handles) = receive(&b, 4, 3_600_000);
        ack(&b, &handles);
        b.snapshot().unwrap();
        b.shutdown().unwrap();
        drop(b);
        let file = std::fs::read_dir(dir.path().join("progress")).unwrap().next().unwrap().unwrap().path();
        match damage {
            "missing" => std::fs::remove_file(&file).unwrap(),
            "cut short" => std::fs::File::options().write(true).open(&file).unwrap().set_len(3).unwrap(),
            _ => {
                let mut bytes = std::fs::read(&file).unwrap();
                bytes[0] = b'x';
                std::fs::write(&file, bytes).unwrap();
            }
        }
        let b = Broker::open(cfg(dir.path())).unwrap();
        assert_eq!(b.committed_offset("g", "T", 0), Some(4), "{damage}");
        b.shutdown().unwrap();
    }
}
