//! EndTransaction over the real protocol: idempotent repeats, contradictions refused, unknown or
//! mismatched ids refused, half messages invisible until committed.

mod common;

use common::*;
use ferrocket_proto::v2::*;

fn half(topic: &str, id: &str) -> Message {
    let mut m = message(topic, id, format!("body of {id}").into_bytes());
    m.system_properties.as_mut().unwrap().message_type = MessageType::Transaction as i32;
    m
}

async fn send_half(c: &mut Client, topic: &str, id: &str) -> String {
    let r = c.send_message(SendMessageRequest { messages: vec![half(topic, id)] }).await.unwrap().into_inner();
    assert_eq!(code(&r.status), Code::Ok);
    assert!(!r.entries[0].transaction_id.is_empty());
    r.entries[0].transaction_id.clone()
}

async fn end(c: &mut Client, topic: &str, id: &str, tx: &str, r: TransactionResolution) -> Code {
    let req = EndTransactionRequest {
        topic: res(topic),
        message_id: id.into(),
        transaction_id: tx.into(),
        resolution: r as i32,
        source: TransactionSource::SourceClient as i32,
        trace_context: String::new(),
    };
    code(&c.end_transaction(req).await.unwrap().into_inner().status)
}

#[tokio::test]
async fn end_transaction_is_idempotent_refuses_contradictions_and_unknown_ids() {
    let dir = tempfile::tempdir().unwrap();
    // Long timeout: no check-back interferes.
    let metrics_addr = free_addr();
    let config = format!("transaction_timeout_ms = 600000\nmetrics_listen = \"{metrics_addr}\"\n");
    let broker = start("standalone", &dir.path().join("data"), &config);
    let mut c = client(&broker.addr).await;
    let t1 = send_half(&mut c, "tx", "ID-1").await;
    let t2 = send_half(&mut c, "tx", "ID-2").await;
    assert_ne!(t1, t2);

    // Half messages are invisible, and their system topic cannot be read directly.
    assert_eq!(receive(&mut c, "g", "tx", secs(30)).await.0, Code::MessageNotFound);
    assert_eq!(receive(&mut c, "g", "RMQ_SYS_TRANS_HALF_TOPIC", secs(30)).await.0, Code::IllegalTopic);

    use TransactionResolution::*;
    assert_eq!(end(&mut c, "tx", "ID-1", "00000000000000FF", Commit).await, Code::InvalidTransactionId, "unknown id");
    assert_eq!(end(&mut c, "tx", "ID-1", "garbage", Commit).await, Code::InvalidTransactionId, "malformed id");
    assert_eq!(end(&mut c, "tx", "ID-2", &t1, Commit).await, Code::InvalidTransactionId, "another message's id");
    assert_eq!(end(&mut c, "other", "ID-1", &t1, Commit).await, Code::InvalidTransactionId, "another topic");
    assert_eq!(end(&mut c, "tx", "ID-1", &t1, Unspecified).await, Code::Ok, "unknown leaves it open");

    assert_eq!(end(&mut c, "tx", "ID-1", &t1, Commit).await, Code::Ok);
    assert_eq!(end(&mut c, "tx", "ID-1", &t1, Commit).await, Code::Ok, "a repeated COMMIT is answered, not applied");
    assert_eq!(end(&mut c, "tx", "ID-1", &t1, Rollback).await, Code::PreconditionFailed, "ROLLBACK after COMMIT");
    assert_eq!(end(&mut c, "tx", "ID-2", &t2, Rollback).await, Code::Ok);
    assert_eq!(end(&mut c, "tx", "ID-2", &t2, Rollback).await, Code::Ok);
    assert_eq!(end(&mut c, "tx", "ID-2", &t2, Commit).await, Code::PreconditionFailed, "COMMIT after ROLLBACK");

    // Exactly one visible copy of the committed message, none of the rolled-back one.
    let got = receive_n(&mut c, "g", "tx", 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(receive(&mut c, "g", "tx", secs(30)).await.0, Code::MessageNotFound, "no second copy");
    let sp = got[0].system_properties.clone().unwrap();
    assert_eq!((sp.message_id.as_str(), got[0].body.as_slice()), ("ID-1", &b"body of ID-1"[..]));
    assert_eq!(sp.message_type, MessageType::Transaction as i32);
    assert!(got[0].user_properties.keys().all(|k| !k.starts_with("REAL_")), "{:?}", got[0].user_properties);

    // The counters are scraped by Prometheus.
    let metrics = http_get(&metrics_addr, "/metrics");
    for line in [
        "ferrocket_transactions_committed_total 1",
        "ferrocket_transactions_rolled_back_total 1",
        "ferrocket_transactions_open 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line:?} missing from:\n{metrics}");
    }
    // Everything the test saw was dispatched; at most the last control records may still wait.
    let lag = metrics.lines().find_map(|l| l.strip_prefix("ferrocket_dispatch_lag_bytes "));
    assert!(lag.and_then(|v| v.parse::<u64>().ok()).is_some_and(|v| v < 1 << 16), "dispatch lag {lag:?}");
}

/// Open transactions are written by what changed (the transaction log): kill -9 at different
/// points of its 100 ms checkpoints, and of its compaction into a new generation, while half
/// messages are sent and ended. Afterwards every transaction whose end was answered Ok is still
/// ended that way (a repeat is answered Ok, the opposite refused), every other one is still open
/// (rolling it back now succeeds), and exactly the committed messages are delivered, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_survive_kill9_in_the_middle_of_transaction_log_checkpoints() {
    use TransactionResolution::*;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // No check-back interferes; checkpoints every 100 ms.
    let config = "consumer_snapshot_interval_ms = 100\ntransaction_timeout_ms = 600000\n";
    let mut broker = start("standalone", &data, config);
    // Message id -> transaction id, and the ended ones with how they ended.
    let mut open = std::collections::BTreeMap::new();
    let mut ended = std::collections::BTreeMap::new();
    for round in 0..6u64 {
        let mut c = client(&broker.addr).await;
        // Fault injection, not synchronisation: each round runs for a different time, so the
        // kill lands at a different point of the 100 ms checkpoints.
        let until = std::time::Instant::now() + std::time::Duration::from_millis(200 + 150 * round);
        let mut i = 0;
        while std::time::Instant::now() < until {
            let id = format!("r{round}-{i}");
            open.insert(id.clone(), send_half(&mut c, "txk", &id).await);
            if i % 2 == 1 {
                // End the oldest open one: commit or roll back, in turn.
                let (id, tx) = open.pop_first().unwrap();
                let r = if i % 4 == 1 { Commit } else { Rollback };
                assert_eq!(end(&mut c, "txk", &id, &tx, r).await, Code::Ok);
                ended.insert(id, (tx, r));
            }
            i += 1;
        }
        drop(broker); // SIGKILL
        broker = start("standalone", &data, config);
    }
    let mut c = client(&broker.addr).await;
    for (id, (tx, r)) in &ended {
        let opposite = if *r == Commit { Rollback } else { Commit };
        assert_eq!(end(&mut c, "txk", id, tx, *r).await, Code::Ok, "{id}: a repeat of its end");
        assert_eq!(end(&mut c, "txk", id, tx, opposite).await, Code::PreconditionFailed, "{id} ended {r:?}");
    }
    for (id, tx) in &open {
        assert_eq!(end(&mut c, "txk", id, tx, Rollback).await, Code::Ok, "{id} should still be open");
    }
    let committed: std::collections::BTreeSet<_> =
        ended.iter().filter(|(_, (_, r))| *r == Commit).map(|(id, _)| id.clone()).collect();
    let ids = receive_and_ack_ids(&mut c, "g", "txk", committed.len()).await;
    assert_eq!(ids.iter().cloned().collect::<std::collections::BTreeSet<_>>(), committed);
    assert_eq!(ids.len(), committed.len(), "a committed message delivered twice");
    assert_eq!(receive(&mut c, "g", "txk", secs(30)).await.0, Code::MessageNotFound, "nothing more");
    let generations: Vec<_> =
        std::fs::read_dir(data.join("transactions")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(generations.iter().all(|g| g != "00000000000000000001.log"), "never compacted: {generations:?}");
}
