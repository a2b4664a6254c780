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

/// `ferrocket bench` with its flags; its JSON report. Panics if it fails.
fn bench(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(binary())
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("run ferrocket bench");
    assert!(out.status.success(), "bench {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

#[test]
fn remoting_sends_single_and_batched_are_stored_and_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start("standalone", &dir.path().join("data"), "");
    // 4 senders of 1 message per call, then of batches of 4 (SEND_BATCH_MESSAGE): 200 each.
    for batch in ["1", "4"] {
        let sent = bench(&[
            "--protocol",
            "remoting",
            "--server",
            &broker.remoting,
            "--mode",
            "produce",
            "--concurrency",
            "4",
            "--batch",
            batch,
            "--messages",
            "200",
            "--duration",
            "30s",
        ]);
        let p = &sent["produce"];
        assert_eq!((p["messages"].as_u64(), p["errors"].as_u64()), (Some(200), Some(0)), "batch {batch}: {sent}");
    }
    // Everything the Remoting senders were acknowledged for comes back over gRPC.
    let got = bench(&["--server", &broker.addr, "--mode", "consume", "--messages", "400", "--duration", "30s"]);
    assert_eq!(got["consume"]["messages"].as_u64(), Some(400), "{got}");
    // The Remoting load has senders only, and says so.
    let out = std::process::Command::new(binary())
        .args(["bench", "--protocol", "remoting", "--server", &broker.remoting, "--mode", "consume"])
        .output()
        .expect("run ferrocket bench");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--mode produce only"), "{err}");
}
