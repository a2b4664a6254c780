//! The timer log on real files: scheduled messages are delivered when due and never before, in
//! due order, each once, across buckets, restarts, a crash at any point after a snapshot, and a
//! timer log that no longer matches the snapshot (rebuilt from the CommitLog).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use ferrocket_engine::broker::{Broker, Outgoing};
use ferrocket_engine::store::record::Record;
use ferrocket_engine::store::{now_ms, PROP_MSG_ID};
use ferrocket_engine::timer::log::BUCKET_MS;
use ferrocket_engine::topics::MessageType;

use common::{block, cfg, wait_dispatched};

/// Schedules message `id` on topic T for `at` (ms since the epoch); its recall handle.
fn schedule(b: &Broker, id: &str, at: u64) -> String {
    let props: BTreeMap<String, String> = [(PROP_MSG_ID.to_string(), id.to_string())].into();
    let record = Record { topic: "T".into(), queue_id: 0, properties: props, body: id.into(), ..Default::default() };
    let mut batch = [Outgoing { record, ty: MessageType::Delay, deliver_at_ms: Some(at), check_type: true }];
    block(b.send_batch(&mut batch, "producer")).remove(0).unwrap().recall_handle
}

/// Message ids delivered to queue T/0, in order.
fn delivered(b: &Broker) -> Vec<String> {
    wait_dispatched(b);
    let Some(cq) = b.store().consume_queue("T", 0) else { return Vec::new() };
    (cq.min_offset()..cq.max_offset())
        .map(|o| b.store().read(&cq.get(o).unwrap()).unwrap().properties[PROP_MSG_ID].clone())
        .collect()
}

/// Copies a data directory as a crash would leave it: what was written to files (the mapped
/// CommitLog included), not what sat in the process's buffers.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_name() != "lock" {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// 40 messages due one second apart from an hour ahead (five buckets: the timer thread never
/// reaches them, the test delivers with its own clock); every tenth recalled. Returns the base
/// time and the ids still scheduled, in due order.
fn schedule_forty(b: &Broker) -> (u64, Vec<String>) {
    let base = (now_ms() / BUCKET_MS + 360) * BUCKET_MS + 5_000;
    let mut kept = Vec::new();
    for i in 0..40u64 {
        // Scheduled out of due order: the timer log orders them.
        let i = (i * 7) % 40;
        let handle = schedule(b, &format!("m{i:02}"), base + i * 1000);
        if i % 10 == 3 {
            block(b.recall("T", &handle)).unwrap();
        }
    }
    for i in (0..40u64).filter(|i| i % 10 != 3) {
        kept.push(format!("m{i:02}"));
    }
    (base, kept)
}

/// A broker on a new data directory with [`schedule_forty`] done.
fn started() -> (tempfile::TempDir, std::sync::Arc<Broker>, u64, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(cfg(dir.path())).unwrap();
    let (base, kept) = schedule_forty(&b);
    (dir, b, base, kept)
}

#[test]
fn scheduled_messages_arrive_in_due_order_never_early_once_across_restarts() {
    let (dir, b, base, kept) = started();
    assert_eq!(b.scheduled_count(), 36);
    assert_eq!(b.deliver_due(base - 1), 0, "nothing is delivered before it is due");
    // Due by base + 15 s: m00..=m15 without the recalled m03 and m13, over two buckets.
    assert_eq!(b.deliver_due(base + 15_000), 14);
    assert_eq!(delivered(&b), kept[..14]);

    b.shutdown().unwrap();
    drop(b);
    let b = Broker::open(cfg(dir.path())).unwrap();
    assert_eq!(b.scheduled_count(), 22);
    assert_eq!(b.deliver_due(base + 15_000), 0, "a delivered message is not delivered again");
    assert_eq!(b.deliver_due(base + 60_000), 22);
    assert_eq!(delivered(&b), kept);
    assert_eq!(b.scheduled_count(), 0);
    // Delivered buckets are retired, and their files deleted once a snapshot no longer lists them.
    b.snapshot().unwrap();
    assert_eq!(std::fs::read_dir(dir.path().join("timerlog")).unwrap().count(), 0);
    b.shutdown().unwrap();
}

#[test]
fn a_crash_after_a_snapshot_neither_loses_nor_repeats_a_delivery() {
    let (dir, b, base, kept) = started();
    assert_eq!(b.deliver_due(base + 5_000), 5);
    b.snapshot().unwrap();
    // After the snapshot: more deliveries (whose timer log writes reach the files when the next
    // bucket is read), a recall, and a new message. Then the process dies.
    assert_eq!(b.deliver_due(base + 21_000), 15);
    let late = schedule(&b, "late", base + 45_000);
    let recalled = schedule(&b, "recalled", base + 46_000);
    block(b.recall("T", &recalled)).unwrap();
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), crashed.path());
    b.shutdown().unwrap();
    assert!(!late.is_empty());
    // The crash left units past what the snapshot recorded: the restart cuts them.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(crashed.path().join("config/state.json")).unwrap()).unwrap();
    let longer = state["timer_log"].as_object().unwrap().iter().any(|(start, b)| {
        let file = crashed.path().join(format!("timerlog/{:020}.log", start.parse::<u64>().unwrap()));
        std::fs::metadata(file).map_or(0, |m| m.len()) > b["len"].as_u64().unwrap()
    });
    assert!(longer, "no timer log file was written past the snapshot");

    let b = Broker::open(cfg(crashed.path())).unwrap();
    assert_eq!(b.scheduled_count(), 36 - 20 + 1);
    assert_eq!(b.deliver_due(base + 21_000), 0, "nothing delivered before the crash is delivered again");
    assert_eq!(b.deliver_due(base + 60_000), 17);
    let expected: Vec<String> = kept.into_iter().chain(["late".to_string()]).collect();
    assert_eq!(delivered(&b), expected);
    b.shutdown().unwrap();
}

#[test]
fn a_timer_log_that_does_not_match_the_snapshot_is_rebuilt_from_the_commitlog() {
    let (dir, b, base, kept) = started();
    assert_eq!(b.deliver_due(base + 2_000), 3);
    b.shutdown().unwrap();
    drop(b);
    let files: Vec<_> = std::fs::read_dir(dir.path().join("timerlog")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 5);
    std::fs::remove_file(&files[3]).unwrap();

    let b = Broker::open(cfg(dir.path())).unwrap();
    assert_eq!(b.scheduled_count(), 33);
    assert_eq!(b.deliver_due(base + 60_000), 33);
    assert_eq!(delivered(&b), kept);
    b.shutdown().unwrap();
}
