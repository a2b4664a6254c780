//! The BrokerSet reconciler against kube's client over a `tower-test` mock: the exact requests it
//! makes (server-side applies with one forced field manager, the status patch, Events) for a new
//! BrokerSet, a paused one, a refused scale-down and an invalid spec.

use std::sync::Arc;

use ferrocket_operator::crd::BrokerSet;
use ferrocket_operator::reconcile::{brokerset, Context};
use http::{Method, Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

/// One request the reconciler made: method, path with query, JSON body (null if none).
type Seen = (Method, String, Value);

/// Runs `reconcile` against a fake API server that answers with `answer(method, path, body)`,
/// and returns every request in order.
async fn run(bs: BrokerSet, answer: impl Fn(&Method, &str, &Value) -> Value + Send + 'static) -> Vec<Seen> {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
            let path = parts.uri.path_and_query().unwrap().to_string();
            let reply = answer(&parts.method, &path, &body);
            seen.push((parts.method, path, body));
            send.send_response(Response::builder().body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap());
        }
        seen
    });
    let ctx = Arc::new(Context::new(Client::new(service, "default")));
    let result = brokerset::reconcile(Arc::new(bs), ctx.clone()).await;
    drop(ctx);
    let seen = server.await.unwrap();
    result.unwrap_or_else(|e| panic!("reconcile failed: {e}; requests: {seen:#?}"));
    seen
}

fn example() -> BrokerSet {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/kubernetes/brokerset.yaml")).unwrap();
    let mut bs: BrokerSet = serde_yaml_ng::from_str(&text).unwrap();
    bs.metadata.uid = Some("uid-1".into());
    bs.metadata.generation = Some(3);
    bs
}

fn sts(name: &str, ready: i32) -> Value {
    json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"selector": {}, "template": {}, "serviceName": name},
           "status": {"replicas": 2, "readyReplicas": ready}})
}

/// The fake API server's answers: lists of StatefulSets from `sets`, the BrokerSet with the
/// patched status for a status patch, everything else echoed.
fn answers(sets: Vec<Value>) -> impl Fn(&Method, &str, &Value) -> Value {
    move |method, path, body| {
        if method == Method::GET && path.contains("/statefulsets") {
            json!({"apiVersion": "apps/v1", "kind": "StatefulSetList", "metadata": {}, "items": sets})
        } else if path.contains("/brokersets/") {
            let mut bs = serde_json::to_value(example()).unwrap();
            bs["status"] = body["status"].clone();
            bs
        } else {
            let mut echo = body.clone();
            if echo.get("metadata").is_none() {
                echo["metadata"] = json!({});
            }
            echo
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
    &seen
        .iter()
        .find(|(m, p, _)| m == Method::PATCH && p.contains("/brokersets/demo/status"))
        .expect("a status patch")
        .2
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap()
}

#[tokio::test]
async fn a_new_brokerset_is_applied_by_one_forced_field_manager_and_reports_its_pods() {
    let seen = run(example(), answers(vec![sts("demo-0", 2), sts("demo-1", 1)])).await;
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
    let event = seen.iter().find(|(m, p, _)| m == Method::POST && p.contains("/events")).expect("an Event");
    assert_eq!((event.2["type"].as_str(), event.2["reason"].as_str()), (Some("Warning"), Some("ScaleDownRefused")));
    let degraded = condition(status_patch(&seen), "Degraded");
    assert_eq!((degraded["status"].as_str(), degraded["reason"].as_str()), (Some("True"), Some("ScaleDownRefused")));
    assert!(degraded["message"].as_str().unwrap().contains("demo-2"));

    // With the annotation the group's StatefulSet is deleted after the applies.
    let mut allowed = example();
    allowed.metadata.annotations = Some([("ferrocket.io/allow-scale-down".to_string(), "true".to_string())].into());
    let seen = run(allowed, answers(vec![sts("demo-0", 2), sts("demo-1", 2), sts("demo-2", 2)])).await;
    assert_eq!(applies(&seen).len(), 14);
    assert!(seen.iter().any(|(m, p, _)| m == Method::DELETE && p.contains("/statefulsets/demo-2")));
}

#[tokio::test]
async fn an_invalid_spec_gets_a_condition_and_an_event_and_nothing_is_applied() {
    let mut bs = example();
    bs.spec.config.insert("broker_name".into(), "x".into());
    let seen = run(bs, answers(vec![])).await;
    assert!(applies(&seen).is_empty());
    assert!(seen.iter().any(|(m, p, b)| m == Method::POST && p.contains("/events") && b["reason"] == "InvalidSpec"));
    let ready = condition(status_patch(&seen), "Ready");
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("InvalidSpec")));
}
