//! What the engine's tests on real files share: a broker's config and waiting for its dispatcher.
#![allow(dead_code)] // each test binary uses some of these

use std::path::Path;
use std::time::{Duration, Instant};

use ferrocket_engine::broker::Broker;
use ferrocket_engine::config::Config;

/// A broker on `dir` that creates topics of one queue and snapshots only when the test says so.
pub fn cfg(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        auto_create_topic: true,
        default_queue_count: 1,
        consumer_snapshot_interval_ms: 3_600_000,
        clean_interval_ms: 3_600_000,
        ..Config::default()
    }
}

/// Runs `f` to completion on a runtime of its own.
pub fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

/// Waits (10 s at most) until every stored record is in its ConsumeQueue.
pub fn wait_dispatched(b: &Broker) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.store().dispatched() < b.store().commitlog_end() {
        assert!(Instant::now() < deadline, "dispatcher did not catch up");
        std::thread::sleep(Duration::from_millis(2));
    }
}
