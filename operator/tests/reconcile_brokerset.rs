//! The BrokerSet reconciler against kube's client over a `tower-test` mock: the exact requests it
//! makes (server-side applies with one forced field manager, the status patch, Events) for a new
//! BrokerSet, a paused one, a refused scale-down and an invalid spec.

mod support;

use std::sync::Arc;

use ferrocket_operator::crd::BrokerSet;
use ferrocket_operator::reconcile::brokerset;
use http::Method;
use serde_json::{json, Value};
use support::{condition, echo, events, list, Seen};

/// No broker answers here (port 1 refuses at once): roles stay unknown.
const NO_BROKERS: &str = "127.0.0.1:1";

/// Runs the BrokerSet reconciler on `bs` against the fake API server; panics if it fails.
async fn run(bs: BrokerSet, answer: impl Fn(&Method, &str, &Value) -> Value + Send + 'static) -> Vec<Seen> {
    let (result, seen) = support::against(NO_BROKERS, answer, |ctx| brokerset::reconcile(Arc::new(bs), ctx)).await;
    result.unwrap_or_else(|e| panic!("reconcile failed: {e}; requests: {seen:#?}"));
    seen
}

fn example() -> BrokerSet {
    support::example("brokerset.yaml")
}

fn sts(name: &str, ready: i32) -> Value {
    json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"selector": {}, "template": {}, "serviceName": name},
           "status": {"replicas": 2, "readyReplicas": ready}})
}

/// A StatefulSet of `ready` pods whose pods run revision `current` while `update` is wanted.
fn sts_rolling(name: &str, replicas: i32, ready: i32, current: &str, update: &str) -> Value {
    let mut s = sts(name, ready);
    s["metadata"]["generation"] = json!(2);
    s["status"] = json!({"replicas": replicas, "readyReplicas": ready, "observedGeneration": 2,
        "currentRevision": current, "updateRevision": update, "updatedReplicas": 0});
    s
}

/// Pod `<group>-<ordinal>` at `revision`.
fn pod(group: &str, ordinal: i32, revision: &str, ready: bool) -> Value {
    json!({"metadata": {"name": format!("{group}-{ordinal}"), "namespace": "default",
            "labels": {"ferrocket.io/broker-group": group, "controller-revision-hash": revision}},
           "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

/// Controller pod `demo-controller-<ordinal>` at `revision`.
fn controller_pod(ordinal: i32, revision: &str, ready: bool) -> Value {
    let mut p = pod("demo-controller", ordinal, revision, ready);
    p["metadata"]["labels"] =
        json!({"app.kubernetes.io/component": "controller", "controller-revision-hash": revision});
    p
}

/// The controller's StatefulSet of `replicas` pods, started in parallel as this operator makes it.
fn controller_sts(replicas: i32, ready: i32, current: &str, update: &str) -> Value {
    let mut s = sts_rolling("demo-controller", replicas, ready, current, update);
    s["spec"]["replicas"] = json!(replicas);
    s["spec"]["podManagementPolicy"] = json!("Parallel");
    if current == update {
        s["status"]["updatedReplicas"] = json!(replicas);
    }
    s
}

fn deleted_pods(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|(m, p, _)| m == Method::DELETE && p.contains("/pods/"))
        .map(|(_, p, _)| p.rsplit_once("/pods/").unwrap().1.split('?').next().unwrap().to_string())
        .collect()
}

/// The fake API server's answers: lists of StatefulSets from `sets`, the BrokerSet with the
/// patched status for a status patch, everything else echoed.
fn answers(sets: Vec<Value>) -> impl Fn(&Method, &str, &Value) -> Value {
    answers_with_pods(sets, Vec::new())
}

/// [`answers`], and lists of Pods from `pods`.
fn answers_with_pods(sets: Vec<Value>, pods: Vec<Value>) -> impl Fn(&Method, &str, &Value) -> Value {
    answers_on(33, sets, pods)
}

/// [`answers_with_pods`] from a Kubernetes 1.`minor` API server (`policy/v1` from 1.21).
fn answers_on(minor: u32, sets: Vec<Value>, pods: Vec<Value>) -> impl Fn(&Method, &str, &Value) -> Value {
    move |method, path, body| {
        if path == "/version" {
            json!({"major": "1", "minor": minor.to_string(), "gitVersion": format!("v1.{minor}.0"), "gitCommit": "",
                   "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "gc", "platform": "linux/amd64"})
        } else if path == "/apis/policy/v1" {
            if minor < 21 {
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
            } else {
                json!({"kind": "APIResourceList", "groupVersion": "policy/v1", "resources": [
                    {"name": "poddisruptionbudgets", "singularName": "", "namespaced": true, "kind": "PodDisruptionBudget", "verbs": ["get"]}]})
            }
        } else if method == Method::GET && path.contains("/secrets/") {
            support::cluster_secret()
        } else if method == Method::GET && path.contains("/statefulsets/") {
            // One StatefulSet by name (the controller's).
            let name = path.rsplit_once("/statefulsets/").unwrap().1.split('?').next().unwrap();
            sets.iter().find(|s| s["metadata"]["name"] == name).cloned().unwrap_or_else(support::not_found)
        } else if method == Method::GET && path.contains("/statefulsets") {
            // The broker groups' (listed by label).
            let group = |s: &&Value| !s["metadata"]["name"].as_str().unwrap().ends_with("-controller");
            list("StatefulSet", sets.iter().filter(group).cloned().collect())
        } else if method == Method::GET && path.contains("/pods") {
            // The selector names one broker group, or the controller: those pods.
            let selected = |p: &&Value| match p["metadata"]["labels"]["ferrocket.io/broker-group"].as_str() {
                Some(group) => path.contains(&format!("broker-group%3D{group}")),
                None => path.contains("component%3Dcontroller") && !path.contains("broker-group"),
            };
            list("Pod", pods.iter().filter(selected).cloned().collect())
        } else if path.contains("/brokersets/") {
            let mut bs = serde_json::to_value(example()).unwrap();
            bs["status"] = body["status"].clone();
            bs
        } else {
            echo(body)
        }
    }
}

fn applies(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|(m, p, _)| m == Method::PATCH && !p.contains("/status"))
        .map(|(_, p, _)| p.split('?').next().unwrap().rsplit_once("/namespaces/default/").unwrap().1.to_string())
        .collect()
}

fn status_patch(seen: &[Seen]) -> &Value {
    support::status_patch(seen, "/brokersets/demo")
}

#[tokio::test]
async fn a_new_brokerset_is_applied_by_one_forced_field_manager_and_reports_its_pods() {
    let base = answers(vec![sts("demo-0", 2), sts("demo-1", 1)]);
    let seen = run(example(), move |m: &Method, p: &str, b: &Value| {
        match p.contains("/secrets/") {
            true => support::not_found(), // a new cluster: no credentials yet
            false => base(m, p, b),
        }
    })
    .await;
    assert_eq!(
        applies(&seen),
        [
            "configmaps/demo-0-config",
            "configmaps/demo-1-config",
            "services/demo-namesrv",
            "services/demo-controller",
            "services/demo-0",
            "services/demo-0-client",
            "services/demo-1",
            "services/demo-1-client",
            "poddisruptionbudgets/demo-controller",
            "poddisruptionbudgets/demo-0",
            "poddisruptionbudgets/demo-1",
            "deployments/demo-namesrv",
            "statefulsets/demo-controller",
            "statefulsets/demo-0",
            "statefulsets/demo-1",
        ]
    );
    for (m, p, body) in seen.iter().filter(|(m, _, _)| m == Method::PATCH) {
        // Server-side apply, one field manager, forced: another manager's change is drift.
        assert!(p.contains("fieldManager=ferrocket-operator") && p.contains("force=true"), "{m} {p}");
        assert!(body["apiVersion"].is_string() && body["kind"].is_string(), "{p}: {body}");
    }
    let status = status_patch(&seen);
    assert_eq!(status["status"]["observedGeneration"], 3);
    let ready = condition(status, "Ready");
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("PodsNotReady")));
    assert!(ready["message"].as_str().unwrap().contains("demo-1"), "{ready}");
    assert_eq!(condition(status, "Reconciling")["status"], "True");
    assert_eq!(status["status"]["groups"][0], json!({"name": "demo-0", "readyReplicas": 2, "epoch": 0}));

    // The cluster's credentials: generated before the pods that read them, owned by the BrokerSet.
    let made = seen.iter().position(|(m, p, _)| m == Method::POST && p.contains("/secrets?")).expect("a Secret made");
    let first_apply = seen.iter().position(|(m, p, _)| m == Method::PATCH && !p.contains("/status")).unwrap();
    assert!(made < first_apply, "the Secret comes before the workloads");
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(seen[made].2.clone()).unwrap();
    assert_eq!(secret.metadata.name.as_deref(), Some("demo-auth"));
    assert_eq!(secret.metadata.owner_references.as_ref().unwrap()[0].kind, "BrokerSet");
    let data = secret.data.unwrap();
    assert_eq!(data["accessKey"].0, b"ferrocket-cluster");
    assert!(data["secretKey"].0.len() == 64 && data["secretKey"].0.iter().all(u8::is_ascii_hexdigit));
    assert!(support::events(&seen).contains(&"CredentialsGenerated".to_string()));
}

#[tokio::test]
async fn a_named_credentials_secret_that_is_missing_degrades_the_brokerset_and_is_not_made() {
    let mut bs = example();
    bs.spec.auth.secret_name = Some("team-credentials".into());
    let base = answers(vec![sts("demo-0", 0), sts("demo-1", 0)]);
    let seen = run(bs, move |m: &Method, p: &str, b: &Value| match p.contains("/secrets/") {
        true => support::not_found(),
        false => base(m, p, b),
    })
    .await;
    assert!(!seen.iter().any(|(m, p, _)| m == Method::POST && p.contains("/secrets")), "only the default is generated");
    let degraded = condition(status_patch(&seen), "Degraded");
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("CredentialsUnavailable"))
    );
    assert!(degraded["message"].as_str().unwrap().contains("team-credentials"), "{degraded}");
    assert!(events(&seen).contains(&"CredentialsUnavailable".to_string()));
}

#[tokio::test]
async fn existing_credentials_are_never_replaced() {
    let seen = run(example(), answers(vec![sts("demo-0", 2), sts("demo-1", 2)])).await;
    assert!(seen.iter().any(|(m, p, _)| m == Method::GET && p.contains("/secrets/demo-auth")), "{seen:#?}");
    assert!(!seen.iter().any(|(m, p, _)| m == Method::POST && p.contains("/secrets")), "{seen:#?}");
}

#[tokio::test]
async fn every_group_ready_makes_the_brokerset_ready() {
    let seen = run(example(), answers(vec![sts("demo-0", 2), sts("demo-1", 2)])).await;
    let status = status_patch(&seen);
    assert_eq!(condition(status, "Ready")["status"], "True");
    assert_eq!(condition(status, "Reconciling")["status"], "False");
    assert_eq!(condition(status, "Degraded")["status"], "False");
}

#[tokio::test]
async fn a_paused_or_unmanaged_brokerset_is_left_alone() {
    for (key, value) in [("ferrocket.io/pause-reconciliation", "true"), ("ferrocket.io/managed", "false")] {
        let mut bs = example();
        bs.metadata.annotations = Some([(key.to_string(), value.to_string())].into());
        let seen = run(bs, answers(vec![])).await;
        assert!(seen.is_empty(), "{key}: {seen:?}");
    }
}

#[tokio::test]
async fn removing_a_broker_group_is_refused_with_a_condition_and_an_event() {
    let seen = run(example(), answers(vec![sts("demo-0", 2), sts("demo-1", 2), sts("demo-2", 2)])).await;
    assert!(applies(&seen).is_empty(), "nothing is applied: {:?}", applies(&seen));
    assert_eq!(events(&seen), ["ScaleDownRefused"]);
    let degraded = condition(status_patch(&seen), "Degraded");
    assert_eq!((degraded["status"].as_str(), degraded["reason"].as_str()), (Some("True"), Some("ScaleDownRefused")));
    assert!(degraded["message"].as_str().unwrap().contains("demo-2"));

    // With the annotation the group's StatefulSet is deleted after the applies.
    let mut allowed = example();
    allowed.metadata.annotations = Some([("ferrocket.io/allow-scale-down".to_string(), "true".to_string())].into());
    let seen = run(allowed, answers(vec![sts("demo-0", 2), sts("demo-1", 2), sts("demo-2", 2)])).await;
    assert_eq!(applies(&seen).len(), 15);
    assert!(seen.iter().any(|(m, p, _)| m == Method::DELETE && p.contains("/statefulsets/demo-2")));
}

#[tokio::test]
async fn an_invalid_spec_gets_a_condition_and_an_event_and_nothing_is_applied() {
    let mut bs = example();
    bs.spec.config.insert("broker_name".into(), "x".into());
    let seen = run(bs, answers(vec![])).await;
    assert!(applies(&seen).is_empty());
    assert_eq!(events(&seen), ["InvalidSpec"]);
    let ready = condition(status_patch(&seen), "Ready");
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("InvalidSpec")));
}

#[tokio::test]
async fn a_new_revision_rolls_one_pod_per_group_and_only_ready_groups() {
    let mut bs = example();
    bs.spec.slaves_per_group = 0;
    bs.spec.broker_groups = 3;
    let sets = vec![
        sts_rolling("demo-0", 1, 1, "r1", "r2"),
        sts_rolling("demo-1", 1, 1, "r1", "r2"),
        sts_rolling("demo-2", 1, 0, "r1", "r2"),
    ];
    let pods = vec![pod("demo-0", 0, "r1", true), pod("demo-1", 0, "r1", true), pod("demo-2", 0, "r1", false)];
    let seen = run(bs, answers_with_pods(sets, pods)).await;
    // One pod per group at a time; a group whose pod is not ready waits.
    assert_eq!(deleted_pods(&seen), ["demo-0-0", "demo-1-0"]);
    // kube's Recorder folds the second into the first Event's series (a PATCH).
    assert_eq!(events(&seen), ["RollingPod"]);
    let ready = condition(status_patch(&seen), "Ready");
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("RollingUpdate")));
    assert!(ready["message"].as_str().unwrap().contains("demo-2: waiting for pods to be ready"), "{ready}");
}

#[tokio::test]
async fn no_pod_of_a_replicated_group_rolls_while_its_in_sync_state_is_unknown() {
    let sets = vec![sts_rolling("demo-0", 2, 2, "r1", "r2"), sts_rolling("demo-1", 2, 2, "r2", "r2")];
    let pods = vec![pod("demo-0", 0, "r1", true), pod("demo-0", 1, "r1", true)];
    let seen = run(example(), answers_with_pods(sets, pods)).await;
    assert!(deleted_pods(&seen).is_empty(), "{seen:#?}");
    let ready = condition(status_patch(&seen), "Ready");
    assert_eq!(ready["reason"], "RollingUpdate");
    assert!(ready["message"].as_str().unwrap().contains("in-sync state is unknown"), "{ready}");
}

#[tokio::test]
async fn an_older_server_gets_what_it_serves_and_a_condition_saying_what_is_missing() {
    let seen = run(example(), answers_on(20, vec![sts("demo-0", 2), sts("demo-1", 2)], vec![])).await;
    let applied = applies(&seen);
    assert!(!applied.iter().any(|a| a.starts_with("poddisruptionbudgets")), "{applied:?}");
    assert_eq!(applied.len(), 12);
    let sts = seen.iter().find(|(m, p, _)| m == Method::PATCH && p.contains("/statefulsets/demo-0?")).unwrap();
    assert!(sts.2["spec"].get("persistentVolumeClaimRetentionPolicy").is_none());
    assert!(!sts.2.to_string().contains("pod-index"));
    let degraded = condition(status_patch(&seen), "Degraded");
    assert_eq!((degraded["status"].as_str(), degraded["reason"].as_str()), (Some("True"), Some("FeaturesUnavailable")));
    assert!(degraded["message"].as_str().unwrap().contains("policy/v1"), "{degraded}");
    assert_eq!(condition(status_patch(&seen), "Ready")["status"], "True", "it still runs");
    assert_eq!(events(&seen), ["FeaturesUnavailable"]);
}

#[tokio::test]
async fn controller_members_roll_one_at_a_time_only_while_all_are_ready_and_the_leader_last() {
    let sets = |ready| vec![sts("demo-0", 2), sts("demo-1", 2), controller_sts(3, ready, "r1", "r2")];
    let pods = |ready_1| (0..3).map(|i| controller_pod(i, "r1", i != 1 || ready_1)).collect::<Vec<_>>();
    // No leader is known here (no broker answers): pod 0 stands in for it and goes last.
    let seen = run(example(), answers_with_pods(sets(3), pods(true))).await;
    assert_eq!(deleted_pods(&seen), ["demo-controller-2"]);
    let ready = condition(status_patch(&seen), "Ready");
    assert!(ready["message"].as_str().unwrap().contains("restarting demo-controller-2"), "{ready}");
    // A member that is not ready (restarting, or outside a working group) holds the roll.
    let seen = run(example(), answers_with_pods(sets(2), pods(false))).await;
    assert!(deleted_pods(&seen).is_empty(), "{seen:#?}");
    let ready = condition(status_patch(&seen), "Ready");
    assert_eq!(ready["status"], "False");
    assert!(ready["message"].as_str().unwrap().contains("demo-controller: waiting for pods to be ready"), "{ready}");
}

#[tokio::test]
async fn a_controller_member_not_ready_keeps_the_brokerset_not_ready() {
    let sets = vec![sts("demo-0", 2), sts("demo-1", 2), controller_sts(3, 2, "r2", "r2")];
    let seen = run(example(), answers(sets)).await;
    let ready = condition(status_patch(&seen), "Ready");
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("PodsNotReady")));
    assert!(ready["message"].as_str().unwrap().contains("demo-controller"), "{ready}");
}

#[tokio::test]
async fn a_controller_statefulset_with_ordered_pods_is_replaced_keeping_its_pods() {
    let mut old = controller_sts(3, 3, "r1", "r1");
    old["spec"]["podManagementPolicy"] = json!("OrderedReady");
    let seen = run(example(), answers(vec![sts("demo-0", 2), sts("demo-1", 2), old])).await;
    let deleted = seen.iter().find(|(m, p, _)| m == Method::DELETE && p.contains("/statefulsets/demo-controller"));
    let (_, _, body) = deleted.expect("the old StatefulSet is deleted");
    assert_eq!(body["propagationPolicy"], "Orphan", "its pods keep running: {body}");
    assert!(!applies(&seen).contains(&"statefulsets/demo-controller".to_string()), "made again once it is gone");
    assert!(events(&seen).contains(&"ControllerStatefulSetReplaced".to_string()));
    let ready = condition(status_patch(&seen), "Ready");
    assert!(ready["message"].as_str().unwrap().contains("old StatefulSet to be replaced"), "{ready}");
}

#[tokio::test]
async fn shrinking_the_controller_group_is_refused_with_a_condition_and_an_event() {
    let mut bs = example();
    bs.spec.controller.replicas = 1;
    let seen = run(bs, answers(vec![sts("demo-0", 2), sts("demo-1", 2), controller_sts(3, 3, "r1", "r1")])).await;
    assert!(applies(&seen).is_empty(), "nothing is applied: {:?}", applies(&seen));
    assert_eq!(events(&seen), ["ControllerScaleDownRefused"]);
    let degraded = condition(status_patch(&seen), "Degraded");
    assert_eq!(degraded["reason"], "ControllerScaleDownRefused");
    assert!(degraded["message"].as_str().unwrap().contains("from 3 to 1"), "{degraded}");
}
