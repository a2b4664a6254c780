//! The store on a real, small filesystem that another process fills: no write through a mapping
//! may fault (SIGBUS would kill this test process), new messages are refused once no spare
//! segment can be made, control records go on into the spare, and the store opens and shuts
//! down on a 100 % full disk. Needs a tmpfs mount (root); skips, saying why, where refused.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrocket_store::record::Record;
use ferrocket_store::{FlushDiskType, RecordClass, Store, StoreConfig, StoreError, PROP_KEYS, PROP_MSG_ID};

const SEGMENT: u64 = 1 << 20;

/// A tmpfs of `mib` MiB mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!("SKIP: cannot mount a tmpfs here: {}", String::from_utf8_lossy(&o.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("SKIP: cannot run mount: {e}");
                None
            }
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Fills the filesystem at `dir` to the last byte with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![1u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let small = [1u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    path
}

fn cfg(dir: &Path) -> StoreConfig {
    StoreConfig {
        data_dir: dir.join("data"),
        flush_disk_type: FlushDiskType::Sync,
        flush_interval_ms: 50,
        commitlog_segment_bytes: SEGMENT,
        consume_queue_entries_per_file: 100_000,
        consume_queue_store: Default::default(),
        index_slots: 1_000,
        index_max_entries: 100_000,
    }
}

fn msg(i: u32) -> Record {
    let props: BTreeMap<String, String> =
        [(PROP_KEYS.to_string(), format!("key{i}")), (PROP_MSG_ID.to_string(), format!("ID{i:08}"))].into();
    Record { topic: "T".into(), queue_id: 0, properties: props, body: vec![b'x'; 4000], ..Default::default() }
}

fn ack(i: u32) -> Record {
    Record {
        topic: "rmq_sys_ACK".into(),
        sys_flag: ferrocket_store::SYS_FLAG_NO_DISPATCH,
        body: format!("ack {i}").into_bytes(),
        ..Default::default()
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_disk_refuses_messages_keeps_control_records_and_restarts() {
    let Some(fs) = Tmpfs::mount(24) else { return };
    let store = Store::open(cfg(fs.path()), Default::default()).unwrap();
    let mut sent = 0u32;
    // Fill the disk behind the store's back once it has a few segments.
    while sent < 600 {
        store.append(&mut msg(sent), true, RecordClass::Message).unwrap();
        sent += 1;
    }
    let filler = fill(fs.path());
    let refused = loop {
        match store.append(&mut msg(sent), true, RecordClass::Message) {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 10_000, "messages never refused on a full disk");
    };
    assert!(matches!(refused, StoreError::NoSpace(_)), "{refused}");
    assert!(refused.to_string().contains("disk full"), "{refused}");
    // Control records fill the rest of the current segment and roll into the spare.
    let end_before = store.commitlog_end();
    let mut acks = 0;
    while store.commitlog_end() < end_before + SEGMENT / 2 {
        store.append(&mut ack(acks), false, RecordClass::Control).unwrap();
        acks += 1;
    }
    store.request_flush();
    wait_until("the acks are flushed", || store.flushed() >= store.commitlog_end());
    // Everything sent before the refusal is dispatched (ConsumeQueue blocks were reserved ahead,
    // or the dispatcher waits for space; it never skips).
    store.shutdown().unwrap();
    drop(store);

    // Restart on the 100 % full disk: recovery and the checkpoint need no new space.
    let store = Store::open(cfg(fs.path()), Default::default()).unwrap();
    assert!(store.recovery_report().corrupt.is_empty(), "{:?}", store.recovery_report());
    assert!(matches!(store.append(&mut msg(sent), true, RecordClass::Message), Err(StoreError::NoSpace(_))));
    std::fs::remove_file(&filler).unwrap();
    // Space again: within the retry interval of a failed spare, messages are accepted.
    let mut accepted = None;
    wait_until("messages are accepted after the filler is gone", || {
        accepted = store.append(&mut msg(sent), true, RecordClass::Message).ok();
        accepted.is_some()
    });
    sent += 1;
    wait_until("every message is dispatched", || store.dispatched() >= store.commitlog_end());
    let cq = store.consume_queue("T", 0).unwrap();
    assert_eq!(cq.max_offset(), sent as u64, "every stored message has its ConsumeQueue entry");
    for off in 0..sent as u64 {
        let rec = store.read(&cq.get(off).unwrap()).unwrap();
        assert_eq!(rec.properties[PROP_MSG_ID], format!("ID{off:08}"));
    }
    assert_eq!(store.query_index(&format!("T#key{}", sent - 1), 2).len(), 1);
    store.shutdown().unwrap();
}

#[test]
fn consume_queue_and_index_writes_wait_for_space_instead_of_faulting() {
    let Some(fs) = Tmpfs::mount(16) else { return };
    let store = Store::open(cfg(fs.path()), Default::default()).unwrap();
    store.append(&mut msg(0), true, RecordClass::Message).unwrap();
    wait_until("the first message is dispatched", || store.dispatched() >= store.commitlog_end());
    let filler = fill(fs.path());
    // A queue that never had an entry needs blocks for its first one: the disk has none.
    let mut sent = 1;
    for i in 0..50 {
        let mut r = msg(1000 + i);
        r.topic = format!("Fresh{i}");
        if store.append(&mut r, true, RecordClass::Control).is_ok() {
            sent += 1;
        }
    }
    assert!(sent > 1, "control records fit in the reserved segments");
    std::thread::sleep(Duration::from_millis(300));
    assert!(store.dispatched() < store.commitlog_end(), "dispatch waits for space, it does not skip");
    std::fs::remove_file(&filler).unwrap();
    wait_until("dispatch resumes once there is space", || store.dispatched() >= store.commitlog_end());
    for i in 0..(sent - 1) {
        assert_eq!(store.max_queue_offset(&format!("Fresh{i}"), 0), 1, "queue Fresh{i}");
    }
    store.shutdown().unwrap();
}
