//! A closed-set config value outside its set stops start-up with a message naming the key, the
//! value and the allowed values, from a file, the environment and flags alike (DESIGN.md §8).

mod common;

use std::process::{Command, Stdio};

/// Runs `ferrocket broker` with `file` as its config and `env`; returns (exit code, stderr).
fn start_with(file: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("broker.toml");
    std::fs::write(&cfg, file).unwrap();
    let mut cmd = Command::new(common::binary());
    cmd.args(["broker", "--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// (config file, environment, key, value, allowed values).
type Case =
    (&'static str, &'static [(&'static str, &'static str)], &'static str, &'static str, &'static [&'static str]);

#[test]
fn unknown_values_of_closed_sets_stop_start_up_naming_key_and_allowed_values() {
    let cases: [Case; 4] = [
        ("replication = \"SYNC\"\n", &[], "replication", "SYNC", &["async", "sync"]),
        ("broker_role = \"primary\"\n", &[], "broker_role", "primary", &["master", "slave"]),
        ("", &[("FERROCKET_FLUSH_DISK_TYPE", "fast")], "flush_disk_type", "fast", &["async", "sync"]),
        ("", &[("FERROCKET_REPLICATION", "semi")], "replication", "semi", &["async", "sync"]),
    ];
    for (file, env, key, value, allowed) in cases {
        let (code, stderr) = start_with(file, env);
        assert!(code.is_some_and(|c| c != 0), "{key} = {value:?} started (exit {code:?}): {stderr}");
        // From the environment the key is named as the variable's (`FLUSH_DISK_TYPE` of `FERROCKET_`).
        let named = stderr.contains(key) || stderr.contains(&key.to_uppercase());
        assert!(named && stderr.contains(value), "{key} = {value:?}: {stderr}");
        for a in allowed {
            assert!(stderr.contains(&format!("`{a}`")), "{key}: allowed value {a} not named: {stderr}");
        }
    }
}
