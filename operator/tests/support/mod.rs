//! A fake Kubernetes API server for reconciler tests: kube's client over a `tower-test` mock
//! pair, answering each request with a function of it and recording them all.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;

use ferrocket_operator::admin::Brokers;
use ferrocket_operator::reconcile::{Context, Error};
use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::Client;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// One request the reconciler made: method, path with query, JSON body (null if none).
pub type Seen = (Method, String, Value);

/// Runs `reconcile` with a context whose API server answers `answer(method, path, body)` and
/// whose brokers are reached through `nameserver`; returns its result and every request in order.
pub async fn against<F, Fut>(
    nameserver: &str,
    answer: impl Fn(&Method, &str, &Value) -> Value + Send + 'static,
    reconcile: F,
) -> (Result<Action, Error>, Vec<Seen>)
where
    F: FnOnce(Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
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
            // A `Status` answer with a code is sent with that HTTP status (a 404, say).
            let code = if reply["kind"] == "Status" { reply["code"].as_u64().unwrap_or(200) as u16 } else { 200 };
            let response = Response::builder().status(code).body(Body::from(serde_json::to_vec(&reply).unwrap()));
            send.send_response(response.unwrap());
        }
        seen
    });
    let brokers = Brokers { nameserver_override: Some(nameserver.into()) };
    let ctx = Arc::new(Context::with_brokers(Client::new(service, "default"), brokers));
    let result = reconcile(ctx).await; // drops the context: the fake server's stream ends
    let seen = server.await.unwrap();
    (result, seen)
}

/// An example resource from `examples/kubernetes/<file>`, with a uid and generation 3.
pub fn example<K: DeserializeOwned + kube::Resource>(file: &str) -> K {
    let path = format!("{}/../examples/kubernetes/{file}", env!("CARGO_MANIFEST_DIR"));
    let mut k: K = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    k.meta_mut().uid = Some("uid-1".into());
    k.meta_mut().generation = Some(3);
    k
}

/// The body of the (last) status patch to a path containing `fragment`.
pub fn status_patch<'a>(seen: &'a [Seen], fragment: &str) -> &'a Value {
    &seen
        .iter()
        .rev()
        .find(|(m, p, _)| m == Method::PATCH && p.contains(fragment) && p.contains("/status"))
        .unwrap_or_else(|| panic!("a status patch of {fragment}: {seen:#?}"))
        .2
}

/// The condition of `type_` in a status patch.
pub fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap()
}

/// The reasons of the Events posted, in order.
pub fn events(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|(m, p, _)| m == Method::POST && p.contains("/events"))
        .map(|(_, _, b)| b["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `body` echoed back as the object (with metadata), as an API server answers a write.
pub fn echo(body: &Value) -> Value {
    let mut echo = body.clone();
    if echo.get("metadata").is_none() {
        echo["metadata"] = json!({});
    }
    echo
}

/// A list of `items` of `kind`.
pub fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {}, "items": items})
}

/// The cluster's credentials the fake API server holds in Secret `demo-auth` (the brokers of the
/// tests run with them).
pub const CLUSTER: (&str, &str) = ("cluster", "cluster-secret");

/// The broker config lines of authentication with [`CLUSTER`].
pub const AUTH_CONFIG: &str =
    "auth_enabled = true\nauth_access_key = \"cluster\"\nauth_secret_key = \"cluster-secret\"\n";

/// A Secret `name` holding `data`, as the API server returns it.
pub fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    use k8s_openapi::ByteString;
    let data = data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect();
    let s = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    let mut v = serde_json::to_value(s).unwrap();
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Secret");
    v
}

/// The credentials Secret every BrokerSet of the examples uses (`demo-auth`, generated).
pub fn cluster_secret() -> Value {
    secret("demo-auth", &[("accessKey", CLUSTER.0), ("secretKey", CLUSTER.1)])
}

/// The API server's answer for a missing object.
pub fn not_found() -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "metadata": {}})
}
