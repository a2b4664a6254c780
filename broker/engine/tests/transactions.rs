//! Open transactions on real files: the transaction log carries them (and how the ended ones
//! ended) across restarts, a snapshot written before it existed is imported, a log that no
//! longer matches the snapshot is rebuilt from the half and op records in the CommitLog, and a
//! line written after the last snapshot (a crash between the two) is cut off and replayed from
//! the CommitLog instead.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ferrocket_engine::broker::{Broker, BrokerError, Outgoing};
use ferrocket_engine::store::record::Record;
use ferrocket_engine::store::PROP_MSG_ID;
use ferrocket_engine::topics::MessageType;
use ferrocket_engine::txn::Resolution;

use common::{block, cfg};

/// Sends half messages h0..h{n-1} to topic T; returns their transaction ids.
fn halves(b: &Broker, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let props: BTreeMap<String, String> = [(PROP_MSG_ID.to_string(), format!("h{i}"))].into();
            let record = Record { topic: "T".into(), properties: props, ..Default::default() };
            let mut batch = [Outgoing { record, ty: MessageType::Transaction, deliver_at_ms: None, check_type: false }];
            block(b.send_batch(&mut batch, "producer")).remove(0).unwrap().transaction_id
        })
        .collect()
}

fn end(b: &Broker, i: usize, id: &str, r: Resolution) -> Result<(), BrokerError> {
    block(b.end_transaction("T", &format!("h{i}"), id, Some(r), "client"))
}

/// Half queue offsets of the open transactions.
fn open(b: &Broker) -> Vec<u64> {
    b.open_transactions().into_iter().map(|(h, _)| h).collect()
}

fn reopen(dir: &Path, b: Arc<Broker>) -> Arc<Broker> {
    b.shutdown().unwrap();
    drop(b);
    Broker::open(cfg(dir)).unwrap()
}

/// 6 halves; 0 committed, 1 rolled back, the rest open; snapshotted.
fn started() -> (tempfile::TempDir, Arc<Broker>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(cfg(dir.path())).unwrap();
    let ids = halves(&b, 6);
    end(&b, 0, &ids[0], Resolution::Commit).unwrap();
    end(&b, 1, &ids[1], Resolution::Rollback).unwrap();
    b.snapshot().unwrap();
    (dir, b, ids)
}

#[test]
fn open_and_ended_transactions_survive_restarts_through_the_transaction_log() {
    let (dir, b, ids) = started();
    end(&b, 2, &ids[2], Resolution::Commit).unwrap(); // after the snapshot: replayed
    let b = reopen(dir.path(), b);
    assert_eq!(open(&b), [3, 4, 5]);
    // How they ended is remembered: a repeat is answered, a contradiction refused.
    end(&b, 0, &ids[0], Resolution::Commit).unwrap();
    assert!(matches!(end(&b, 1, &ids[1], Resolution::Commit), Err(BrokerError::TransactionConflict(_))));
    let state = std::fs::read_to_string(dir.path().join("config/state.json")).unwrap();
    assert!(!state.contains("\"transactions\""), "open transactions live in the transaction log: {state}");
    let b = reopen(dir.path(), b);
    assert_eq!(open(&b), [3, 4, 5]);
    b.shutdown().unwrap();
}

#[test]
fn a_snapshot_from_before_the_transaction_log_is_imported() {
    let (dir, b, _) = started();
    let end_offset = b.store().commitlog_end();
    let pending = b.open_transactions();
    b.shutdown().unwrap();
    drop(b);
    // As a broker before the transaction log wrote it: open and ended transactions in state.json.
    let legacy = serde_json::json!({
        "commitlog_offset": end_offset,
        "transactions": {"pending": pending.into_iter().collect::<BTreeMap<_, _>>(), "resolved": {"0": "commit", "1": "rollback"}},
    });
    std::fs::write(dir.path().join("config/state.json"), legacy.to_string()).unwrap();
    std::fs::remove_dir_all(dir.path().join("transactions")).unwrap();
    let b = Broker::open(cfg(dir.path())).unwrap();
    assert_eq!(open(&b), [2, 3, 4, 5]);
    let b = reopen(dir.path(), b);
    assert_eq!(open(&b), [2, 3, 4, 5], "written to the transaction log at the first snapshot");
    b.shutdown().unwrap();
}

#[test]
fn a_transaction_log_that_does_not_match_the_snapshot_is_rebuilt_from_the_commitlog() {
    for damage in ["missing", "cut short", "corrupt", "a line past the snapshot"] {
        let (dir, b, ids) = started();
        b.shutdown().unwrap();
        drop(b);
        let file = std::fs::read_dir(dir.path().join("transactions")).unwrap().next().unwrap().unwrap().path();
        match damage {
            "missing" => std::fs::remove_file(&file).unwrap(),
            "cut short" => std::fs::File::options().write(true).open(&file).unwrap().set_len(3).unwrap(),
            "corrupt" => {
                let mut bytes = std::fs::read(&file).unwrap();
                bytes[0] = b'x';
                std::fs::write(&file, bytes).unwrap();
            }
            // A crash after the log's line and before state.json: the line says h3 ended; it is
            // cut off (the CommitLog has no such op record), so h3 is still open.
            _ => {
                use std::io::Write;
                let mut f = std::fs::File::options().append(true).open(&file).unwrap();
                writeln!(f, r#"{{"r":[[3,"commit"]]}}"#).unwrap();
            }
        }
        let b = Broker::open(cfg(dir.path())).unwrap();
        assert_eq!(open(&b), [2, 3, 4, 5], "{damage}");
        assert!(
            matches!(end(&b, 1, &ids[1], Resolution::Commit), Err(BrokerError::TransactionConflict(_))),
            "{damage}"
        );
        b.shutdown().unwrap();
    }
}
