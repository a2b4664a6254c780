//! Failover in the engine, on real files and without processes: a slave promoted to master
//! continues every queue where the old master left it; the old master, deposed, cuts the tail
//! its slave never received back to the point where the two epoch histories agree, replicates
//! the new master's records, and ends with the same log and queues; consumer progress from the
//! cut tail does not mark the new master's messages as acknowledged.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ferrocket_engine::broker::{Broker, Consumer, Outgoing};
use ferrocket_engine::config::Config;
use ferrocket_engine::consume::filter::Filter;
use ferrocket_engine::ha::epochs::consistent_point;
use ferrocket_engine::store::record::Record;
use ferrocket_engine::store::{Store, PROP_MSG_ID};
use ferrocket_engine::topics::MessageType;

fn cfg(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        commitlog_segment_bytes: 64 * 1024,
        auto_create_topic: true,
        default_queue_count: 1,
        // Role from a controller: both start read-only; the test plays the controller.
        controller_addr: Some("127.0.0.1:1".into()),
        consumer_snapshot_interval_ms: 3_600_000,
        clean_interval_ms: 3_600_000,
        ..Config::default()
    }
}

fn send(b: &Broker, id: &str) -> u64 {
    let props: BTreeMap<String, String> = [(PROP_MSG_ID.to_string(), id.to_string())].into();
    let mut rec = Record { topic: "T".into(), queue_id: 0, properties: props, body: id.into(), ..Default::default() };
    block(b.send(&mut rec, MessageType::Normal)).unwrap().queue_offset
}

/// Copies `from`'s CommitLog bytes after `to`'s end into `to`, as the replication stream does.
fn replicate(from: &Broker, to: &Broker) {
    let mut pos = to.store().commitlog_end();
    while let Some(data) = from.store().read_raw(pos, 1 << 20) {
        pos = to.apply_replicated(pos, &data).unwrap();
    }
    to.adopt_epochs(from.epoch_history()).unwrap();
}

fn wait_dispatched(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.dispatched() < store.commitlog_end() {
        assert!(Instant::now() < deadline, "dispatcher did not catch up");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Message ids of queue T/0, in queue order.
fn queue(b: &Broker) -> Vec<String> {
    wait_dispatched(b.store());
    let cq = b.store().consume_queue("T", 0).unwrap();
    (cq.min_offset()..cq.max_offset())
        .map(|o| b.store().read(&cq.get(o).unwrap()).unwrap().properties[PROP_MSG_ID].clone())
        .collect()
}

fn lag(b: &Broker, group: &str) -> u64 {
    b.consumer_lags().into_iter().find(|(g, t, _)| g == group && t == "T").map_or(0, |(_, _, l)| l)
}

#[test]
fn a_deposed_master_cuts_its_unreplicated_tail_and_follows_the_new_master() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Broker::open(cfg(da.path())).unwrap();
    let b = Broker::open(cfg(db.path())).unwrap();
    assert!(a.is_slave() && b.is_slave(), "with a controller a broker starts read-only");

    // Epoch 1: a is master, b its slave, and b holds the first ten messages.
    a.promote(1, true).unwrap();
    for i in 0..10 {
        send(&a, &format!("e1-{i}"));
    }
    // Scheduled messages replicate with the log: b's timer log holds them too.
    let due = ferrocket_engine::store::now_ms() + 3_600_000;
    for i in 0..3 {
        schedule(&a, due + i * 15_000);
    }
    replicate(&a, &b);
    assert_eq!(b.scheduled_count(), 3);
    let shared = b.store().commitlog_end();

    // a stores five more and a consumer acknowledges all fifteen there; b never gets them.
    for i in 10..15 {
        send(&a, &format!("tail-{i}"));
    }
    schedule(&a, due + 5_000);
    schedule(&a, due + 60_000);
    assert_eq!(a.scheduled_count(), 5);
    wait_dispatched(a.store());
    let c = Consumer { group: "g", client_id: "c" };
    let got = a.receive(c, "T", &Filter::ALL, 32, 60_000).unwrap();
    let handles: Vec<&str> = got.iter().map(|d| d.receipt_handle.as_str()).collect();
    assert_eq!(handles.len(), 15);
    assert!(block(a.ack(c, "T", &handles)).iter().all(|r| r.is_ok()));
    assert!(a.store().commitlog_end() > shared);

    // a dies; b is elected in epoch 2 and continues queue T/0 at offset 10.
    b.promote(2, true).unwrap();
    assert!(!b.is_slave());
    assert_eq!(send(&b, "e2-0"), 10, "the new master continues the queue offsets");
    for i in 1..7 {
        send(&b, &format!("e2-{i}"));
    }

    // a returns and is told b is master: the histories agree up to where b's epoch began.
    a.demote(b.config().advertised(), 2);
    assert!(a.is_slave());
    let point =
        consistent_point(&a.epoch_history(), a.store().commitlog_end(), &b.epoch_history(), b.store().commitlog_end());
    assert_eq!(point, Some(shared));
    a.truncate_to(shared).unwrap();
    assert_eq!(a.store().commitlog_end(), shared);
    assert_eq!(a.scheduled_count(), 3, "the cut tail's scheduled messages are unscheduled");
    assert_eq!(queue(&a), (0..10).map(|i| format!("e1-{i}")).collect::<Vec<_>>());
    replicate(&b, &a);

    // Same log, same queue; the tail is gone from a.
    assert_eq!(a.store().commitlog_end(), b.store().commitlog_end());
    let expected: Vec<String> = (0..10).map(|i| format!("e1-{i}")).chain((0..7).map(|i| format!("e2-{i}"))).collect();
    assert_eq!(queue(&a), expected);
    assert_eq!(queue(&b), expected);
    assert_eq!(a.epoch_history(), b.epoch_history());
    // The acks of the cut tail acknowledged a's old offsets 10..15; b's new messages at those
    // offsets stay unacknowledged on a (its acks of 0..10 stay: those messages were consumed).
    assert_eq!(lag(&a, "g"), 7);

    // The cut survives a restart of a: it recovers to b's log, not to its old tail.
    a.shutdown().unwrap();
    drop(a);
    let a = Broker::open(cfg(da.path())).unwrap();
    assert_eq!(queue(&a), expected);
    assert_eq!((a.scheduled_count(), b.scheduled_count()), (3, 3));
    assert_eq!(lag(&a, "g"), 7);
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}

/// Schedules a DELAY message on T for `at` (ms since the epoch).
fn schedule(b: &Broker, at: u64) {
    let record = Record { topic: "T".into(), queue_id: 0, body: b"later".to_vec(), ..Default::default() };
    let mut batch = [Outgoing { record, ty: MessageType::Delay, deliver_at_ms: Some(at), check_type: true }];
    block(b.send_batch(&mut batch, "producer")).remove(0).unwrap();
}

/// Runs an engine call that awaits durability to completion, on a runtime of its own.
fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}
