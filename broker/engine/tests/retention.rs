//! Retention and disk safety on real files with small segments: age-based deletion, early
//! deletion under disk pressure, the records the broker must keep, refused sends, and recovery
//! after deletion.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocket_engine::broker::{Broker, BrokerError, Consumer, Outgoing};
use ferrocket_engine::config::{Config, FlushDiskType};
use ferrocket_engine::consume::filter::Filter;
use ferrocket_engine::store::record::Record;
use ferrocket_engine::store::retention::RetentionPass;
use ferrocket_engine::store::{now_ms, RecordClass, Store, StoreConfig, PROP_KEYS, PROP_MSG_ID};
use ferrocket_engine::topics::MessageType;

const SEGMENT: u64 = 64 * 1024;

fn store_cfg(dir: &Path) -> StoreConfig {
    StoreConfig {
        data_dir: dir.to_path_buf(),
        flush_disk_type: FlushDiskType::Async,
        flush_interval_ms: 50,
        commitlog_segment_bytes: SEGMENT,
        consume_queue_entries_per_file: 16,
        consume_queue_store: Default::default(),
        index_slots: 64,
        index_max_entries: 40,
    }
}

fn msg(topic: &str, i: u32) -> Record {
    let props: BTreeMap<String, String> =
        [(PROP_KEYS.to_string(), format!("key{i}")), (PROP_MSG_ID.to_string(), format!("ID{i:08}"))].into();
    Record { topic: topic.into(), queue_id: 0, properties: props, body: vec![b'x'; 2000], ..Default::default() }
}

fn wait_dispatched(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.dispatched() < store.commitlog_end() {
        assert!(Instant::now() < deadline, "dispatcher did not catch up");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("commitlog")).unwrap().count()
}

/// Message ids still readable through the ConsumeQueue of `topic` queue 0, in order.
fn readable(store: &Store, topic: &str) -> Vec<String> {
    let cq = store.consume_queue(topic, 0).unwrap();
    (cq.min_offset()..cq.max_offset())
        .map(|o| {
            store.read(&cq.get(o).expect("entry at or above the minimum")).unwrap().properties[PROP_MSG_ID].clone()
        })
        .collect()
}

#[test]
fn store_deletes_old_segments_with_their_queue_and_index_files_and_recovers_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_cfg(dir.path()), Default::default()).unwrap();
    for i in 0..200 {
        store.append(&mut msg("T", i), true, RecordClass::Message).unwrap();
    }
    wait_dispatched(&store);
    let segments = segment_files(dir.path());
    assert!(segments >= 6, "{segments} segments");
    let (cq_files, index_files) = (
        std::fs::read_dir(dir.path().join("consumequeue/T/0")).unwrap().count(),
        std::fs::read_dir(dir.path().join("index")).unwrap().count(),
    );
    let end = store.commitlog_end();
    let now = now_ms();

    // Not old enough, not forced: nothing goes.
    let pass = RetentionPass { keep_from: end, closed_before_ms: now - 3_600_000, force: false, max_segments: 100 };
    assert!(store.delete_old_segments(pass).unwrap().segments.is_empty());

    // Old enough, but only up to `keep_from`: a segment that ends above it stays.
    let keep_from = 2 * SEGMENT + 100;
    let d = store.delete_old_segments(RetentionPass { keep_from, closed_before_ms: now, ..pass }).unwrap();
    assert_eq!(d.segments.len(), 2);
    assert_eq!(d.min_offset, 2 * SEGMENT);
    assert!(!dir.path().join("commitlog").join(format!("{:020}", 0)).exists());

    // Everything old enough: all but the segment being written (and the spare after it) go, with
    // the queue and index files that only point into them.
    let d = store.delete_old_segments(RetentionPass { closed_before_ms: now, ..pass }).unwrap();
    assert_eq!(d.segments.len(), segments - 4);
    assert_eq!(segment_files(dir.path()), 2);
    assert!(d.consume_queue_files > 0 && d.index_files > 0, "{d:?}");
    assert!(std::fs::read_dir(dir.path().join("consumequeue/T/0")).unwrap().count() < cq_files);
    assert!(std::fs::read_dir(dir.path().join("index")).unwrap().count() < index_files);

    // What is left reads back whole, from the queue's corrected minimum on.
    let kept = readable(&store, "T");
    assert!(!kept.is_empty() && kept.len() < 200);
    let first = 200 - kept.len() as u32;
    assert_eq!(kept, (first..200).map(|i| format!("ID{i:08}")).collect::<Vec<_>>());
    let cq = store.consume_queue("T", 0).unwrap();
    assert_eq!(cq.min_offset(), first as u64);
    assert!(cq.get(first as u64 - 1).is_none());
    // The index finds kept messages and nothing of deleted ones.
    assert_eq!(store.query_index("T#key199", 4).len(), 1);
    assert!(store.query_index("T#key0", 4).is_empty());

    // Restart without a checkpoint: recovery starts at the first kept segment and the queue's
    // minimum is corrected again from the files.
    store.shutdown().unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let store = Store::open(store_cfg(dir.path()), Default::default()).unwrap();
    assert!(store.recovery_report().corrupt.is_empty() && store.recovery_report().truncated.is_none());
    assert_eq!(readable(&store, "T"), kept);
    store.append(&mut msg("T", 200), true, RecordClass::Message).unwrap();
    wait_dispatched(&store);
    assert_eq!(readable(&store, "T").last().unwrap(), "ID00000200");
    store.shutdown().unwrap();
}

fn broker_cfg(dir: &Path, reserved_hours: u64) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        commitlog_segment_bytes: SEGMENT,
        consume_queue_entries_per_file: 16,
        consume_queue_store: Default::default(),
        index_slots: 64,
        index_max_entries: 40,
        auto_create_topic: true,
        default_queue_count: 1,
        file_reserved_hours: reserved_hours,
        // Retention passes and snapshots are run by hand below.
        clean_interval_ms: 3_600_000,
        consumer_snapshot_interval_ms: 3_600_000,
        ..Config::default()
    }
}

fn send_n(b: &Broker, from: u32, n: u32) {
    for i in from..from + n {
        block(b.send(&mut msg("T", i), MessageType::Normal)).unwrap();
    }
    wait_dispatched(b.store());
}

fn receive_ids(b: &Broker, group: &str, n: usize) -> Vec<(String, String)> {
    let c = Consumer { group, client_id: "c1" };
    let got = b.receive(c, "T", &Filter::ALL, n, 60_000).unwrap();
    got.into_iter().map(|d| (d.record.properties[PROP_MSG_ID].clone(), d.receipt_handle)).collect()
}

#[test]
fn broker_keeps_what_it_needs_and_consumers_continue_from_the_oldest_kept_message() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(broker_cfg(dir.path(), 0)).unwrap();
    let never = || Ok(0.1);
    send_n(&b, 0, 20);
    // A group that consumed 5 messages, then fell behind.
    let got = receive_ids(&b, "slow", 5);
    let handles: Vec<&str> = got.iter().map(|(_, h)| h.as_str()).collect();
    assert!(block(b.ack(Consumer { group: "slow", client_id: "c1" }, "T", &handles)).iter().all(|r| r.is_ok()));
    // A message scheduled an hour ahead sits in the first segment.
    let recall = schedule(&b, msg("T", 999), now_ms() + 3_600_000).unwrap();
    send_n(&b, 20, 180);

    // No snapshot yet: a restart would replay acks and timer records from the start.
    let r = b.clean(now_ms(), never).unwrap();
    assert!(r.deleted.segments.is_empty(), "records after the last snapshot must stay: {:?}", r.deleted);

    // The scheduled message pins the first segment.
    b.snapshot().unwrap();
    let r = b.clean(now_ms(), never).unwrap();
    assert!(r.deleted.segments.is_empty(), "{:?}", r.deleted);
    assert!(b.retention_floor() < SEGMENT);

    // Recalled, it no longer needs its segment: all but the last go.
    block(b.recall("T", &recall)).unwrap();
    let r = b.clean(now_ms(), never).unwrap();
    assert!(r.deleted.segments.len() >= 5, "{:?}", r.deleted);
    assert!(!r.refusing_writes);
    let min = b.store().min_queue_offset("T", 0);
    assert!(min > 5, "the slow group's next message ({min}) was deleted");

    // The slow group continues from the oldest kept message, as does a new group.
    let expect: Vec<String> = (min as u32..min as u32 + 3).map(|i| format!("ID{i:08}")).collect();
    let ids = |v: Vec<(String, String)>| v.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(ids(receive_ids(&b, "slow", 3)), expect);
    assert_eq!(ids(receive_ids(&b, "fresh", 3)), expect);
    assert_eq!(b.group_progress("slow", "T")[0].1, min, "the slow group's ack offset moves to the oldest kept message");

    // After a restart the queue starts at the same place and nothing in flight is lost.
    b.shutdown().unwrap();
    drop(b);
    let b = Broker::open(broker_cfg(dir.path(), 0)).unwrap();
    assert_eq!(b.store().min_queue_offset("T", 0), min);
    assert_eq!(b.group_progress("fresh", "T")[0].1, min);
    assert_eq!(ids(receive_ids(&b, "other", 1)), expect[..1]);
    b.shutdown().unwrap();
}

#[test]
fn disk_pressure_deletes_early_and_above_the_refuse_ratio_sends_fail_while_reads_and_acks_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let b: Arc<Broker> = Broker::open(broker_cfg(dir.path(), 72)).unwrap();
    send_n(&b, 0, 200);
    b.snapshot().unwrap();
    let segments = segment_files(dir.path());

    // Young segments below the threshold stay.
    assert!(b.clean(now_ms(), || Ok(0.5)).unwrap().deleted.segments.is_empty());

    // Above disk_max_used_ratio the oldest go early, one at a time, until the disk is below it.
    let mut usage = [0.8, 0.8, 0.5].into_iter();
    let r = b.clean(now_ms(), || Ok(usage.next().unwrap_or(0.5))).unwrap();
    assert_eq!(r.deleted.segments.len(), 2, "{:?}", r.deleted);
    assert_eq!(segment_files(dir.path()), segments - 2);
    assert!(!r.refusing_writes);

    // Above disk_refuse_write_ratio: deleting stops at what the broker needs, sends are refused...
    let r = b.clean(now_ms(), || Ok(0.95)).unwrap();
    assert!(r.refusing_writes);
    assert_eq!(segment_files(dir.path()), 2, "everything but the segment being written and its spare");
    let err = block(b.send(&mut msg("T", 500), MessageType::Normal)).unwrap_err();
    assert!(matches!(err, BrokerError::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("95.0% used"), "{err}");
    assert!(matches!(schedule(&b, msg("T", 501), now_ms() + 60_000), Err(BrokerError::DiskFull { .. })));

    // ...while receives and acks go on.
    let got = receive_ids(&b, "g", 4);
    assert_eq!(got.len(), 4);
    let handles: Vec<&str> = got.iter().map(|(_, h)| h.as_str()).collect();
    assert!(block(b.ack(Consumer { group: "g", client_id: "c1" }, "T", &handles)).iter().all(|r| r.is_ok()));

    // Once the disk is below the ratio again, sends are accepted.
    assert!(!b.clean(now_ms(), || Ok(0.5)).unwrap().refusing_writes);
    block(b.send(&mut msg("T", 502), MessageType::Normal)).unwrap();
    assert!(b.metrics().encode().contains("ferrocket_commitlog_segments_deleted_total"));
    b.shutdown().unwrap();
}

#[test]
fn deleting_under_live_traffic_loses_no_kept_message_and_serves_no_deleted_one() {
    let dir = tempfile::tempdir().unwrap();
    let b: Arc<Broker> = Broker::open(broker_cfg(dir.path(), 72)).unwrap();
    const N: u32 = 3000;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The cleaner deletes as early as it may (disk "80 % used"), snapshotting so it may go far.
    let cleaner = {
        let (b, done) = (b.clone(), done.clone());
        std::thread::spawn(move || {
            let mut deleted = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                b.snapshot().unwrap();
                deleted += b.clean(now_ms(), || Ok(0.8)).unwrap().deleted.segments.len();
            }
            deleted
        })
    };
    // The consumer takes 8 messages for every 20 sent, so deletion overtakes it.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let c = Consumer { group: "live", client_id: "c1" };
    let mut sent = 0;
    loop {
        if sent < N {
            send_n(&b, sent, 20);
            sent += 20;
        }
        let batch = b.receive(c, "T", &Filter::ALL, 8, 60_000).unwrap();
        for d in &batch {
            assert_eq!(d.record.body.len(), 2000, "a delivered message must be whole");
            got.push(d.record.properties[PROP_MSG_ID][2..].parse::<u32>().unwrap());
        }
        let handles: Vec<&str> = batch.iter().map(|d| d.receipt_handle.as_str()).collect();
        assert!(block(b.ack(c, "T", &handles)).iter().all(|r| r.is_ok()));
        if sent >= N && batch.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "consumer did not drain the topic");
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    assert!(cleaner.join().unwrap() > 10, "the cleaner should have deleted while traffic ran");
    let min = b.store().min_queue_offset("T", 0) as u32;
    let mut seen = std::collections::HashSet::new();
    assert!(got.iter().all(|i| seen.insert(*i)), "a message was delivered twice");
    // Message i sits at queue offset i: whatever was not received must have been deleted.
    let missing: Vec<u32> = (0..N).filter(|i| !seen.contains(i)).collect();
    assert!(
        missing.iter().all(|i| *i < min),
        "kept messages never delivered: {:?}",
        &missing[missing.len().saturating_sub(5)..]
    );
    assert!(got.len() < N as usize, "some messages should have been deleted before they were consumed");
    b.shutdown().unwrap();
}

/// Runs an engine call that awaits durability to completion, on a runtime of its own.
fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

/// Schedules a DELAY message for `at` (ms since the epoch) as SendMessage does; its recall handle.
fn schedule(b: &Broker, record: Record, at: u64) -> Result<String, BrokerError> {
    let mut batch = [Outgoing { record, ty: MessageType::Delay, deliver_at_ms: Some(at), check_type: true }];
    block(b.send_batch(&mut batch, "producer")).remove(0).map(|s| s.recall_handle)
}
