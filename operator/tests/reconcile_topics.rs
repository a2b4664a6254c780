//! The Topic, ConsumerGroup and User reconcilers with kube's client over a `tower-test` mock and real
//! brokers: a `ferrocket namesrv` and a `ferrocket broker` (broker group `demo-0`) on 127.0.0.1,
//! both with authentication on, which the reconcilers sign for with the credentials of the
//! BrokerSet's Secret. What they apply is read back from the broker's Admin service.

#[path = "../../broker/tests/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocket_operator::crd::{BrokerSet, ConsumerGroup, DeletionPolicy, Topic, User};
use ferrocket_operator::reconcile::{consumergroup, topic, user, Error};
use ferrocket_proto::admin::admin_client::AdminClient;
use ferrocket_proto::admin::{
    CreateTopicRequest, DescribeTopicRequest, ListAclsRequest, ListGroupsRequest, ListUsersRequest, TopicConfig,
};
use ferrocket_proto::clients::Nameservers;
use ferrocket_proto::dial::Dialer;
use ferrocket_proto::signing::{SignedChannel, Signer};
use http::Method;
use kube::runtime::controller::Action;
use serde_json::{json, Value};
use support::{condition, echo, events, list, Seen};

/// A nameserver and the master of broker group `demo-0`, registered with it.
struct Brokers {
    _namesrv: common::Proc,
    broker: common::Proc,
    namesrv_addr: String,
    _dir: tempfile::TempDir,
}

async fn brokers() -> Brokers {
    let dir = tempfile::tempdir().unwrap();
    let namesrv = common::start("namesrv", &dir.path().join("ns"), support::AUTH_CONFIG);
    let config = format!(
        "{}broker_name = \"demo-0\"\nnamesrv_addrs = [\"{}\"]\ncommitlog_segment_bytes = 8388608\n",
        support::AUTH_CONFIG,
        namesrv.addr
    );
    let broker = common::start("broker", &dir.path().join("b"), &config);
    let namesrv_addr = namesrv.addr.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !Nameservers::from_list(&namesrv_addr, Dialer::plain(cluster()))
        .masters()
        .await
        .is_ok_and(|m| m.iter().any(|(g, _)| g == "demo-0"))
    {
        assert!(Instant::now() < deadline, "demo-0 registered with the nameserver within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Brokers { _namesrv: namesrv, broker, namesrv_addr, _dir: dir }
}

fn cluster() -> Signer {
    Signer::new(support::CLUSTER.0, support::CLUSTER.1)
}

async fn admin(b: &Brokers) -> AdminClient<SignedChannel> {
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", b.broker.addr)).unwrap();
    AdminClient::with_interceptor(ch.connect().await.unwrap(), cluster())
}

/// The queue count of `name` on the broker, `None` if it has no such topic.
async fn queues_on_broker(b: &Brokers, name: &str) -> Option<u32> {
    let r = admin(b).await.describe_topic(DescribeTopicRequest { name: name.into() }).await.ok()?;
    r.into_inner().topic.map(|t| t.queue_count)
}

fn broker_set() -> Value {
    let mut bs: BrokerSet = support::example("brokerset.yaml");
    bs.spec.broker_groups = 1;
    serde_json::to_value(bs).unwrap()
}

/// A Topic from the example, already carrying the finalizer (a first reconcile adds it).
fn a_topic() -> Topic {
    let mut t: Topic = support::example("topic.yaml");
    t.metadata.finalizers = Some(vec!["ferrocket.io/cleanup".into()]);
    t.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-01-02T00:00:00Z".parse().unwrap()));
    t
}

/// The fake API server: the BrokerSet `demo`, `topics` for a Topic list, writes echoed.
fn answers(topics: Vec<Value>) -> impl Fn(&Method, &str, &Value) -> Value {
    move |method, path, body| {
        if method == Method::GET && path.contains("/brokersets/demo") {
            broker_set()
        } else if method == Method::GET && path.contains("/secrets/demo-auth") {
            support::cluster_secret()
        } else if method == Method::GET
            && (path.contains("/topics") || path.contains("/consumergroups") || path.contains("/users"))
        {
            list("Topic", topics.clone())
        } else if body.is_array() || path.contains("/status") {
            // A JSON patch (the finalizer's) or a status patch: the object, as patched.
            let mut obj = topics.last().cloned().unwrap();
            obj["status"] = body["status"].clone();
            obj
        } else {
            echo(body)
        }
    }
}

async fn reconcile_topic(addr: &str, t: Topic, others: Vec<Value>) -> (Result<Action, Error>, Vec<Seen>) {
    let mut all = others;
    all.push(serde_json::to_value(&t).unwrap());
    support::against(addr, answers(all), |ctx| topic::reconcile(Arc::new(t), ctx)).await
}

#[tokio::test]
async fn a_topic_is_created_on_every_broker_group_and_its_queues_reported() {
    let b = brokers().await;
    let (result, seen) = reconcile_topic(&b.namesrv_addr, a_topic(), vec![]).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(queues_on_broker(&b, "orders").await, Some(8));
    let status = support::status_patch(&seen, "/topics/orders");
    assert_eq!(status["status"]["queues"], json!([{"group": "demo-0", "queues": 8}]));
    assert_eq!(status["status"]["observedGeneration"], 3);
    let ready = condition(status, "Ready");
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("True"), Some("Applied")));

    // More queues reach the broker; a placement naming a group the BrokerSet lacks is refused.
    let mut more = a_topic();
    more.spec.queues = 12;
    let (result, _) = reconcile_topic(&b.namesrv_addr, more, vec![]).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(queues_on_broker(&b, "orders").await, Some(12));
    let mut misplaced = a_topic();
    misplaced.spec.placement.groups = vec!["demo-7".into()];
    let (_, seen) = reconcile_topic(&b.namesrv_addr, misplaced, vec![]).await;
    let degraded = condition(support::status_patch(&seen, "/topics/orders"), "Degraded");
    assert_eq!((degraded["status"].as_str(), degraded["reason"].as_str()), (Some("True"), Some("InvalidPlacement")));
    assert_eq!(events(&seen), ["InvalidPlacement"]);
}

#[tokio::test]
async fn the_newer_of_two_topics_claiming_one_name_gets_resource_conflict() {
    let b = brokers().await;
    let mut older = a_topic();
    older.metadata.name = Some("orders-first".into());
    older.spec.topic_name = Some("orders".into());
    older.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2025-06-01T00:00:00Z".parse().unwrap()));
    let mut newer = a_topic();
    newer.spec.queues = 3;
    let (result, seen) = reconcile_topic(&b.namesrv_addr, newer, vec![serde_json::to_value(older).unwrap()]).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(queues_on_broker(&b, "orders").await, None, "the conflicting Topic changed nothing");
    let ready = condition(support::status_patch(&seen, "/topics/orders"), "Ready");
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("ResourceConflict")));
    assert!(ready["message"].as_str().unwrap().contains("orders-first"), "{ready}");
    assert_eq!(events(&seen), ["ResourceConflict"]);
}

#[tokio::test]
async fn deletion_carries_out_the_deletion_policy_before_the_finalizer_goes() {
    let b = brokers().await;
    for (policy, kept) in [(DeletionPolicy::Retain, Some(8)), (DeletionPolicy::Delete, None)] {
        let topic = TopicConfig { name: "orders".into(), queue_count: 8, permission: 6, accept_message_types: vec![1] };
        admin(&b).await.create_topic(CreateTopicRequest { topic: Some(topic) }).await.unwrap();
        let mut t = a_topic();
        t.spec.deletion_policy = policy;
        t.metadata.deletion_timestamp = t.metadata.creation_timestamp.clone();
        let applied = ferrocket_operator::crd::QueueAllocation { group: "demo-0".into(), queues: 8 };
        t.status = Some(ferrocket_operator::crd::TopicStatus { queues: vec![applied], ..Default::default() });
        let (result, seen) = reconcile_topic(&b.namesrv_addr, t, vec![]).await;
        assert!(result.is_ok(), "{policy:?}: {result:?}");
        assert_eq!(queues_on_broker(&b, "orders").await, kept, "{policy:?}");
        // Then the finalizer is removed (a tested JSON patch, as kube's finalizer helper does).
        let (_, path, patch) = seen.last().unwrap();
        assert!(
            path.contains("/topics/orders") && patch[1] == json!({"op": "remove", "path": "/metadata/finalizers/0"}),
            "{seen:#?}"
        );
    }
}

#[tokio::test]
async fn unreachable_brokers_fail_the_reconcile_for_a_retry_and_say_so_in_the_status() {
    let (result, seen) = reconcile_topic("127.0.0.1:1", a_topic(), vec![]).await;
    assert!(matches!(result, Err(Error::Finalizer(_))), "{result:?}");
    let ready = condition(support::status_patch(&seen, "/topics/orders"), "Ready");
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("BrokersUnavailable")));
    assert_eq!(result.unwrap_err().reason(), "BrokersUnavailable");
}

#[tokio::test]
async fn without_the_clusters_credentials_nothing_is_called_and_the_status_says_why() {
    let b = brokers().await;
    let t = serde_json::to_value(a_topic()).unwrap();
    let missing = move |method: &Method, path: &str, body: &Value| {
        if path.contains("/secrets/") {
            support::not_found()
        } else {
            answers(vec![t.clone()])(method, path, body)
        }
    };
    let (result, seen) =
        support::against(&b.namesrv_addr, missing, |ctx| topic::reconcile(Arc::new(a_topic()), ctx)).await;
    let e = result.unwrap_err();
    assert_eq!(e.reason(), "CredentialsUnavailable", "{e}");
    assert!(e.to_string().contains("Secret default/demo-auth does not exist"), "{e}");
    let ready = condition(support::status_patch(&seen, "/topics/orders"), "Ready");
    assert_eq!(ready["reason"], "CredentialsUnavailable", "{ready}");
    assert_eq!(queues_on_broker(&b, "orders").await, None);
}

#[tokio::test]
async fn a_first_reconcile_only_adds_the_finalizer() {
    let mut t = a_topic();
    t.metadata.finalizers = None;
    let (result, seen) = reconcile_topic("127.0.0.1:1", t, vec![]).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let (method, path, patch) = &seen[0];
    assert_eq!((method, path.contains("/topics/orders")), (&Method::PATCH, true));
    assert!(patch.to_string().contains("ferrocket.io/cleanup"), "{patch}");
}

#[tokio::test]
async fn a_consumer_group_is_configured_on_every_broker_group() {
    let b = brokers().await;
    let mut cg: ConsumerGroup = support::example("consumergroup.yaml");
    cg.metadata.finalizers = Some(vec!["ferrocket.io/cleanup".into()]);
    let all = vec![serde_json::to_value(&cg).unwrap()];
    let (result, seen) =
        support::against(&b.namesrv_addr, answers(all), |ctx| consumergroup::reconcile(Arc::new(cg), ctx)).await;
    assert!(result.is_ok(), "{result:?}");
    let groups = admin(&b).await.list_groups(ListGroupsRequest {}).await.unwrap().into_inner().groups;
    let billing = groups.iter().find(|g| g.name == "billing").expect("billing on the broker");
    assert_eq!(billing.max_delivery_attempts, 5);
    let backoff = billing.exponential_backoff.as_ref().expect("exponential backoff");
    assert_eq!((backoff.initial_ms, backoff.max_ms), (1000, 60000));
    let status = support::status_patch(&seen, "/consumergroups/billing");
    assert_eq!(
        (status["status"]["retryTopic"].as_str(), status["status"]["dlqTopic"].as_str()),
        (Some("%RETRY%billing"), Some("%DLQ%billing"))
    );
    assert_eq!(condition(status, "Ready")["status"], "True");
}

#[tokio::test]
async fn an_unmanaged_topic_loses_the_finalizer_and_touches_no_broker() {
    let mut t = a_topic();
    t.metadata.annotations = Some([("ferrocket.io/managed".to_string(), "false".to_string())].into());
    t.metadata.deletion_timestamp = t.metadata.creation_timestamp.clone();
    t.spec.deletion_policy = DeletionPolicy::Delete;
    // No brokers at all: a broker call would fail the reconcile.
    let (result, seen) = reconcile_topic("127.0.0.1:1", t, vec![]).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].2[1], json!({"op": "remove", "path": "/metadata/finalizers/0"}));
}

/// Reconciles `u` against the fake API server, which keeps the Secrets written to it in
/// `secrets` (the cluster's is there from the start).
async fn reconcile_user(
    b: &Brokers,
    u: User,
    secrets: Arc<std::sync::Mutex<Vec<Value>>>,
) -> (Result<Action, Error>, Vec<Seen>) {
    let all = vec![serde_json::to_value(&u).unwrap()];
    let base = answers(all);
    let answer = move |m: &Method, p: &str, body: &Value| {
        let mut held = secrets.lock().unwrap();
        if *m == Method::POST && p.contains("/secrets?") {
            held.push(body.clone());
            body.clone()
        } else if *m == Method::GET && p.contains("/secrets/") {
            let name = p.rsplit('/').next().unwrap().split('?').next().unwrap();
            held.iter().find(|s| s["metadata"]["name"] == name).cloned().unwrap_or_else(support::not_found)
        } else {
            base(m, p, body)
        }
    };
    support::against(&b.namesrv_addr, answer, |ctx| user::reconcile(Arc::new(u), ctx)).await
}

#[tokio::test]
async fn a_user_gets_a_generated_secret_and_exactly_its_rules_on_every_broker_group_and_goes_when_deleted() {
    let b = brokers().await;
    let secrets = Arc::new(std::sync::Mutex::new(vec![support::cluster_secret()]));
    let mut u: User = support::example("user.yaml");
    u.metadata.finalizers = Some(vec!["ferrocket.io/cleanup".into()]);
    let (result, seen) = reconcile_user(&b, u.clone(), secrets.clone()).await;
    assert!(result.is_ok(), "{result:?}");

    // The Secret: made once, owned by the User, and its key signs in at the broker.
    let made: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(secrets.lock().unwrap().last().unwrap().clone()).unwrap();
    assert_eq!(made.metadata.name.as_deref(), Some("orders-app-credentials"));
    assert_eq!(made.metadata.owner_references.as_ref().unwrap()[0].kind, "User");
    let data = made.data.unwrap();
    assert_eq!(data["accessKey"].0, b"orders-app");
    let secret = String::from_utf8(data["secretKey"].0.clone()).unwrap();
    let mut app = common::signed_client(&b.broker.addr, Signer::new("orders-app", &secret)).await;
    let hb = app.heartbeat(ferrocket_proto::v2::HeartbeatRequest::default()).await.unwrap().into_inner();
    assert_eq!(common::code(&hb.status), ferrocket_proto::v2::Code::Ok);
    let status = support::status_patch(&seen, "/users/orders-app");
    assert_eq!(status["status"]["groups"], json!(["demo-0"]));
    assert_eq!(status["status"]["secretName"], "orders-app-credentials");
    assert_eq!(condition(status, "Ready")["status"], "True");
    let rules = |acls: ferrocket_proto::admin::ListAclsResponse| -> Vec<String> {
        acls.acls.into_iter().flat_map(|a| a.rules).map(|r| format!("{} {}", r.resource, r.actions.join(","))).collect()
    };
    let acls = admin(&b).await.list_acls(ListAclsRequest { user: "orders-app".into() }).await.unwrap().into_inner();
    assert_eq!(rules(acls), ["Topic:orders* PUB,SUB", "Group:billing SUB"]);

    // A rule removed from the spec goes from the broker; the Secret is not made again.
    u.spec.acls.truncate(1);
    let (result, _) = reconcile_user(&b, u.clone(), secrets.clone()).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(secrets.lock().unwrap().len(), 2, "the cluster's and the user's, made once");
    let acls = admin(&b).await.list_acls(ListAclsRequest { user: "orders-app".into() }).await.unwrap().into_inner();
    assert_eq!(rules(acls), ["Topic:orders* PUB,SUB"]);

    // Deleted: the user and its rules go from the broker before the finalizer.
    u.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-01-02T00:00:00Z".parse().unwrap()));
    let (result, seen) = reconcile_user(&b, u, secrets).await;
    assert!(result.is_ok(), "{result:?}");
    let users = admin(&b).await.list_users(ListUsersRequest { with_secrets: false }).await.unwrap().into_inner();
    assert!(!users.users.iter().any(|u| u.name == "orders-app"), "{users:?}");
    let acls = admin(&b).await.list_acls(ListAclsRequest { user: "orders-app".into() }).await.unwrap().into_inner();
    assert!(rules(acls).is_empty());
    let (_, path, patch) = seen.last().unwrap();
    assert!(path.contains("/users/orders-app") && patch[1]["op"] == "remove", "{seen:#?}");
}
