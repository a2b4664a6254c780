//! `ferrocket bench` against the real binary: a paced run of senders and receivers (with the client
//! id and the receivers' Telemetry settings every official client sends) delivers what it sent
//! and reports end-to-end latency.

mod common;

use common::*;

#[test]
fn a_paced_run_reports_end_to_end_latency_for_what_it_received() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start("standalone", &dir.path().join("data"), "");
    let out = std::process::Command::new(binary())
        .args(["bench", "--server", &broker.addr, "--mode", "both", "--concurrency", "4", "--rate", "400"])
        .args(["--duration", "3s", "--json"])
        .output()
        .expect("run ferrocket bench");
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let (sent, got) = (&report["produce"], &report["consume"]);
    assert_eq!((sent["errors"].as_u64(), got["errors"].as_u64()), (Some(0), Some(0)), "{report}");
    // 400/s for 3 s from 4 paced senders: about 1,200, never far above the pace.
    let n = sent["messages"].as_u64().unwrap();
    assert!((600..=1_300).contains(&n), "sent {n} at 400/s for 3 s: {report}");
    assert!(got["messages"].as_u64().unwrap() > 0, "nothing received: {report}");
    let e2e = got["e2e_ms"].as_array().expect("end-to-end latency with --rate");
    assert!(e2e.iter().all(|v| v.as_f64().is_some_and(|v| v >= 0.0)), "{report}");
}
