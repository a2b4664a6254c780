//! The CRDs: the checked-in files are what `crdgen` writes, and the schema's rules (bounds,
//! enums, patterns, CEL) accept the examples and refuse what the API server would refuse.

use ferrocket_operator::crd::{Backoff, BrokerSetSpec, ControllerSpec, StorageSpec, TopicSpec, UserSpec};
use serde_json::json;

#[test]
fn checked_in_crds_are_what_crdgen_writes() {
    let files = ferrocket_operator::crdgen::files().unwrap();
    assert_eq!(files.len(), 4);
    for dir in ferrocket_operator::crdgen::DIRS {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
        for (name, yaml) in &files {
            let checked_in = std::fs::read_to_string(root.join(name))
                .unwrap_or_else(|e| panic!("{dir}/{name}: {e}; run `cargo run --bin crdgen`"));
            assert!(checked_in == *yaml, "{dir}/{name} is stale; run `cargo run --bin crdgen`");
        }
    }
}

fn brokerset(extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!({"brokerGroups": 2, "slavesPerGroup": 1, "image": "ferrocket:1", "storage": {"size": "10Gi"}});
    v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    v
}

#[test]
fn cel_rules_refuse_owned_keys_impossible_quorums_and_changes_to_immutable_fields() {
    assert!(BrokerSetSpec::validate_cel(&brokerset(json!({})), None).is_ok());
    for key in ["broker_name", "auth_enabled", "tls_ca_file"] {
        let owned = brokerset(json!({"config": {key: "x"}}));
        let err = BrokerSetSpec::validate_cel(&owned, None).unwrap_err();
        assert!(format!("{err:?}").contains("keys the operator owns"), "{key}: {err:?}");
    }
    let quorum = brokerset(json!({"minInSyncReplicas": 3}));
    assert!(BrokerSetSpec::validate_cel(&quorum, None).is_err(), "3 replicas cannot be in sync in a group of 2");

    let old = json!({"size": "10Gi", "storageClassName": "fast"});
    assert!(StorageSpec::validate_cel(&json!({"size": "20Gi", "storageClassName": "fast"}), Some(&old)).is_ok());
    assert!(StorageSpec::validate_cel(&json!({"size": "10Gi", "storageClassName": "slow"}), Some(&old)).is_err());
    assert!(StorageSpec::validate_cel(&json!({"size": "10Gi"}), Some(&old)).is_err());

    let three = json!({"replicas": 3});
    assert!(ControllerSpec::validate_cel(&json!({"replicas": 5}), Some(&three)).is_ok());
    let err = ControllerSpec::validate_cel(&json!({"replicas": 1}), Some(&three)).unwrap_err();
    assert!(format!("{err:?}").contains("only grows"), "{err:?}");

    let topic = json!({"brokerSet": "demo", "topicName": "orders"});
    assert!(TopicSpec::validate_cel(&topic, None).is_ok());
    assert!(TopicSpec::validate_cel(&json!({"brokerSet": "demo", "topicName": "other"}), Some(&topic)).is_err());
    assert!(TopicSpec::validate_cel(&json!({"brokerSet": "other", "topicName": "orders"}), Some(&topic)).is_err());

    let user = json!({"brokerSet": "demo", "userName": "orders-app"});
    assert!(UserSpec::validate_cel(&user, None).is_ok());
    assert!(UserSpec::validate_cel(&json!({"brokerSet": "demo", "userName": "other"}), Some(&user)).is_err());
    assert!(UserSpec::validate_cel(&json!({"brokerSet": "demo"}), Some(&user)).is_err());

    assert!(Backoff::validate_cel(&json!({"customizedMs": [1000]}), None).is_ok());
    assert!(Backoff::validate_cel(&json!({}), None).is_err());
    assert!(Backoff::validate_cel(
        &json!({"customizedMs": [1], "exponential": {"initialMs": 1, "maxMs": 2, "multiplier": 2.0}}),
        None
    )
    .is_err());
}
