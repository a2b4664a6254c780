//! The layering of DESIGN.md §1, read off the real dependency graph: the operator never links the
//! store or the engine, the engine names no wire type, the store has no async runtime or network.

use std::process::Command;

/// The normal (non-dev, non-build) dependencies of `package`, one crate name per line.
fn dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()).map(String::from).collect()
}

fn assert_none_of(package: &str, forbidden: &[&str]) {
    let deps = dependencies(package);
    assert!(deps.len() > 1, "{package} has dependencies: {deps:?}");
    for f in forbidden {
        assert!(!deps.iter().any(|d| d == f), "{package} depends on {f}");
    }
}

#[test]
fn each_crate_depends_only_on_the_layers_below_it() {
    assert_none_of("ferrocket-operator", &["ferrocket-store", "ferrocket-engine", "ferrocket", "memmap2", "sqlparser"]);
    assert_none_of("ferrocket-engine", &["ferrocket-proto", "tonic", "prost", "ferrocket"]);
    assert_none_of("ferrocket-store", &["tokio", "tonic", "prost", "ferrocket-engine", "ferrocket-proto"]);
}
