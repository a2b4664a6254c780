//! Recovery, corruption and group-commit tests on real files.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ferrocket_store::record::Record;
use ferrocket_store::{ConsumeQueueStore, FlushDiskType};
use ferrocket_store::{Listeners, RecordClass, Store, StoreConfig, PROP_KEYS, PROP_MSG_ID, PROP_TAGS};

fn cfg(dir: &Path, flush: FlushDiskType) -> StoreConfig {
    cfg_with(dir, flush, ConsumeQueueStore::Files)
}

fn cfg_with(dir: &Path, flush: FlushDiskType, consume_queue_store: ConsumeQueueStore) -> StoreConfig {
    StoreConfig {
        data_dir: dir.to_path_buf(),
        flush_disk_type: flush,
        flush_interval_ms: 50,
        commitlog_segment_bytes: 64 * 1024,
        consume_queue_entries_per_file: 100,
        consume_queue_store,
        index_slots: 64,
        index_max_entries: 1000,
    }
}

fn msg(topic: &str, i: u32) -> Record {
    let props: BTreeMap<String, String> = [
        (PROP_TAGS.to_string(), format!("tag{}", i % 2)),
        (PROP_KEYS.to_string(), format!("key{i}")),
        (PROP_MSG_ID.to_string(), format!("ID{i:08}")),
    ]
    .into();
    Record {
        topic: topic.into(),
        queue_id: i % 2,
        properties: props,
        body: vec![b'x'; 900 + (i as usize % 7)],
        ..Default::default()
    }
}

/// Waits (bounded) until the dispatcher has caught up with the CommitLog.
fn wait_dispatched(store: &Store) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.dispatched() < store.commitlog_end() {
        assert!(std::time::Instant::now() < deadline, "dispatcher did not catch up");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn bodies(store: &Store, topic: &str) -> Vec<String> {
    let mut out = Vec::new();
    for q in 0..2 {
        let Some(cq) = store.consume_queue(topic, q) else {
            continue;
        };
        for off in cq.min_offset()..cq.max_offset() {
            if let Some(e) = cq.get(off) {
                out.push(store.read(&e).unwrap().properties[PROP_MSG_ID].clone());
            }
        }
    }
    out.sort();
    out
}

fn write_n(store: &Store, n: u32) -> Vec<u64> {
    (0..n).map(|i| store.append(&mut msg("t", i), true, RecordClass::Message).unwrap().physical_offset).collect()
}

#[test]
fn reopen_after_clean_shutdown_keeps_everything_and_spans_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), FlushDiskType::Async), Default::default()).unwrap();
    write_n(&store, 200); // ~180 KiB: several 64 KiB segments
    store.shutdown().unwrap();
    drop(store);
    let store = Store::open(cfg(dir.path(), FlushDiskType::Async), Default::default()).unwrap();
    assert!(store.recovery_report().corrupt.is_empty());
    assert_eq!(bodies(&store, "t").len(), 200);
    assert_eq!(store.max_queue_offset("t", 0), 100);
    // New appends continue the queue offsets.
    let r = store.append(&mut msg("t", 0), true, RecordClass::Message).unwrap();
    assert_eq!(r.queue_offset, 100);
    assert_eq!(store.query_index("t#key7", 10).len(), 1);
    assert_eq!(store.query_index("#id#ID00000007", 10)[0].properties[PROP_TAGS], "tag1");
}

/// A crash without checkpoint: ConsumeQueues are rebuilt from the CommitLog.
#[test]
fn consume_queues_are_rebuilt_past_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), FlushDiskType::Async), Default::default()).unwrap();
    write_n(&store, 50);
    store.shutdown().unwrap();
    drop(store);
    // Lose the ConsumeQueues and the checkpoint entirely.
    std::fs::remove_dir_all(dir.path().join("consumequeue")).unwrap();
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let store = Store::open(cfg(dir.path(), FlushDiskType::Async), Default::default()).unwrap();
    assert_eq!(store.recovery_report().records, 50);
    assert_eq!(bodies(&store, "t").len(), 50);
}

/// The LSM store: entries survive a clean restart; a lost store is rebuilt from the whole
/// CommitLog; without the checkpoint every entry is cut and re-dispatched, with no duplicate and
/// the queue offsets where they were; a torn tail is cut from it as from the CommitLog.
#[test]
fn the_lsm_store_reopens_rebuilds_and_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let lsm = || cfg_with(dir.path(), FlushDiskType::Async, ConsumeQueueStore::Lsm);
    let store = Store::open(lsm(), Default::default()).unwrap();
    let offs = write_n(&store, 200);
    let end = store.commitlog_end();
    store.shutdown().unwrap();
    drop(store);
    assert!(!dir.path().join("consumequeue").exists(), "no file queue is made");
    let store = Store::open(lsm(), Default::default()).unwrap();
    assert_eq!(store.recovery_report().records, 0, "nothing to re-dispatch after a clean stop");
    assert_eq!((bodies(&store, "t").len(), store.max_queue_offset("t", 0)), (200, 100));
    assert_eq!(store.query_index("t#key7", 10).len(), 1);
    store.shutdown().unwrap();
    drop(store);
    // The store lost, the checkpoint kept: everything is rebuilt, not just what is past it.
    std::fs::remove_dir_all(dir.path().join("consumequeue_lsm")).unwrap();
    let store = Store::open(lsm(), Default::default()).unwrap();
    assert_eq!((store.recovery_report().records, bodies(&store, "t").len()), (200, 200));
    assert_eq!(store.query_index("t#key7", 10).len(), 1, "re-indexed once");
    store.shutdown().unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let store = Store::open(lsm(), Default::default()).unwrap();
    assert_eq!(store.recovery_report().records, 200);
    assert_eq!((bodies(&store, "t").len(), store.max_queue_offset("t", 1)), (200, 100));
    store.shutdown().unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    // Tear the last record (its segment is the last one written).
    let last = store_segment(dir.path(), offs[199]);
    let mut bytes = std::fs::read(&last.0).unwrap();
    for b in &mut bytes[(offs[199] - last.1) as usize + 30..(end - last.1) as usize] {
        *b = 0;
    }
    std::fs::write(&last.0, &bytes).unwrap();
    let store = Store::open(lsm(), Default::default()).unwrap();
    assert_eq!(store.recovery_report().truncated.as_ref().map(|t| t.offset), Some(offs[199]));
    assert_eq!((bodies(&store, "t").len(), store.max_queue_offset("t", 1)), (199, 99));
    let r = store.append(&mut msg("t", 199), true, RecordClass::Message).unwrap();
    assert_eq!((r.physical_offset, r.queue_offset), (offs[199], 99));
    wait_dispatched(&store);
    assert_eq!(bodies(&store, "t").len(), 200);
}

/// The CommitLog segment file holding `offset`, and the offset it starts at.
fn store_segment(dir: &Path, offset: u64) -> (std::path::PathBuf, u64) {
    let start = offset / (64 * 1024) * (64 * 1024);
    (dir.join("commitlog").join(format!("{start:020}")), start)
}

#[test]
fn a_corrupt_checkpoint_means_a_full_rebuild_not_a_refusal_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), FlushDiskType::Async), Default::default()).unwrap();
    write_n(&store, 30);
    store.shutdown().unwrap();
    drop(store);
    std::fs::write(dir.path().join("checkpoint"), b"{ not json").unwrap();
    let store = Store::open(cfg(dir.path(), FlushDiskType::Async), Default::default()).unwrap();
    assert_eq!(store.recovery_report().from, 0);
    assert_eq!(store.recovery_report().records, 30);
    assert_eq!(bodies(&store, "t").len(), 30);
}

#[test]
fn torn_tail_is_cut_and_writing_resumes_there() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), FlushDiskType::Async), Default::default()).unwrap();
    let offs = write_n(&store, 10);
    let end = store.commitlog_end();
    store.shutdown().unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    // Tear the last record: keep only its first 30 bytes.
    let seg = dir.path().join("commitlog").join(format!("{:020}", 0));
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = offs[9] as usize;
    for b in &mut bytes[last + 30..end as usize] {
        *b = 0;
    }
    std::fs::write(&seg, &bytes).unwrap();
    let store = Store::open(cfg(dir.path(), FlushDiskType::Async), Default::default()).unwrap();
    let report = store.recovery_report().clone();
    let torn = report.truncated.expect("torn tail reported");
    assert_eq!(torn.offset, offs[9]);
    assert!(torn.file.ends_with("00000000000000000000"));
    assert!(report.corrupt.is_empty());
    assert_eq!(bodies(&store, "t").len(), 9);
    let r = store.append(&mut msg("t", 9), true, RecordClass::Message).unwrap();
    assert_eq!(r.physical_offset, offs[9], "the next record replaces the torn one");
    wait_dispatched(&store);
    assert_eq!(bodies(&store, "t").len(), 10);
}

#[test]
fn corrupt_middle_record_is_reported_and_skipped_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), FlushDiskType::Async), Default::default()).unwrap();
    let offs = write_n(&store, 10);
    store.shutdown().unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    std::fs::remove_dir_all(dir.path().join("consumequeue")).unwrap();
    let seg = dir.path().join("commitlog").join(format!("{:020}", 0));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[offs[4] as usize + 200] ^= 0xFF; // a flipped bit in record 4's body
    std::fs::write(&seg, &bytes).unwrap();
    let store = Store::open(cfg(dir.path(), FlushDiskType::Async), Default::default()).unwrap();
    let report = store.recovery_report().clone();
    assert!(report.truncated.is_none(), "nothing after the damage may be cut");
    assert_eq!(report.corrupt.len(), 1);
    let c = &report.corrupt[0];
    assert_eq!((c.offset, c.file_offset), (offs[4], offs[4]));
    assert_eq!(c.len, offs[5] - offs[4]);
    assert!(c.file.ends_with("00000000000000000000") && c.reason.contains("CRC"), "{c:?}");
    let ids = bodies(&store, "t");
    assert_eq!(ids.len(), 9);
    assert!(!ids.contains(&"ID00000004".to_string()));
    assert!(ids.contains(&"ID00000009".to_string()), "records after the damage stay readable");
}

/// The offset [`Listeners::flushed`] last published, and listeners that keep it and check that it
/// never goes back (whichever thread flushed).
type Flushed = Arc<(std::sync::Mutex<u64>, std::sync::Condvar)>;

fn flush_watch() -> (Flushed, Listeners) {
    let flushed: Flushed = Arc::default();
    let f = flushed.clone();
    let listeners = Listeners {
        flushed: Some(Box::new(move |o| {
            let mut g = f.0.lock().unwrap();
            assert!(o >= *g, "the flushed offset went back from {} to {o}", *g);
            *g = o;
            f.1.notify_all();
        })),
        ..Default::default()
    };
    (flushed, listeners)
}

/// Waits (10 s at most) until a published flush covers CommitLog offset `end`, as a SYNC_FLUSH
/// sender does before it is acknowledged.
fn await_flush(flushed: &Flushed, end: u64) {
    let (lock, cv) = &**flushed;
    let guard = lock.lock().unwrap();
    let (guard, timeout) = cv.wait_timeout_while(guard, std::time::Duration::from_secs(10), |f| *f < end).unwrap();
    assert!(!timeout.timed_out() && *guard >= end, "no flush covered {end} within 10 s");
}

/// SYNC_FLUSH: many concurrent writers share fsyncs (group commit), each waits for its own,
/// as the engine does: ask for a flush, then wait for [`Listeners::flushed`] to pass its end.
#[test]
fn group_commit_acknowledges_every_writer_after_an_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (flushed, listeners) = flush_watch();
    let store = Store::open(cfg(dir.path(), FlushDiskType::Sync), listeners).unwrap();
    let writers: Vec<_> = (0..8u32)
        .map(|t| {
            let (store, flushed) = (store.clone(), flushed.clone());
            std::thread::spawn(move || {
                let mut ends = Vec::new();
                for i in 0..25 {
                    let r = store.append(&mut msg("g", t * 100 + i), true, RecordClass::Message).unwrap();
                    store.request_flush();
                    await_flush(&flushed, r.end);
                    ends.push(r.end);
                }
                ends
            })
        })
        .collect();
    let ends: Vec<u64> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert_eq!(ends.len(), 200);
    let max = *ends.iter().max().unwrap();
    assert_eq!(max, store.commitlog_end());
    // Writers that arrive during an fsync share the next one.
    let fsyncs = store.commitlog_fsyncs();
    assert!(fsyncs > 0 && fsyncs < 100, "{fsyncs} fsyncs for 200 acknowledged writes");
    store.shutdown().unwrap();
}

/// SYNC_FLUSH with writers leading the group commit as the engine does: the first to find no
/// flush under way flushes on its own thread ([`Store::try_flush_inline`]), the others hand the
/// flush to the flush thread and wait. Every write is acknowledged only after a flush that covers
/// it, whichever thread ran it, and a leader's flush also covers what others appended before it.
#[test]
fn writers_leading_the_group_commit_are_each_covered_by_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let (flushed, listeners) = flush_watch();
    let store = Store::open(cfg(dir.path(), FlushDiskType::Sync), listeners).unwrap();
    let led = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let writers: Vec<_> = (0..8u32)
        .map(|t| {
            let (store, flushed, led) = (store.clone(), flushed.clone(), led.clone());
            std::thread::spawn(move || {
                for i in 0..25 {
                    let r = store.append(&mut msg("g", t * 100 + i), true, RecordClass::Message).unwrap();
                    match store.try_flush_inline() {
                        Some(f) => {
                            assert!(f >= r.end, "an inline flush returned {f}, before its writer's end {}", r.end);
                            led.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        None => store.request_flush(),
                    }
                    await_flush(&flushed, r.end);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    assert!(led.load(std::sync::atomic::Ordering::Relaxed) > 0, "no writer led a flush");
    assert!(store.commitlog_fsyncs() <= 200, "more flushes than writes");
    assert_eq!(store.flushed(), store.commitlog_end());
    store.shutdown().unwrap();
}
