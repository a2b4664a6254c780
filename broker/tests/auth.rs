//! Authentication end to end, on real processes: with `auth_enabled`, every gRPC and Remoting
//! request needs a user's signature; Admin, replication and user management take a super user;
//! a slave signs its own calls with the cluster's credentials and copies the master's users; the
//! CLI signs with the same variables the broker reads; access rules decide what a normal user may
//! do with which topics and groups, over both protocols; refusals are counted by reason.

mod common;
#[path = "common/remoting.rs"]
mod remoting_io;

use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use ferrocket::remoting::codes::*;
use ferrocket::remoting::command::{Command, SerializeType};
use ferrocket_proto::admin::admin_client::AdminClient;
use ferrocket_proto::admin::{
    AclRule, ListAclsRequest, ListTopicsRequest, ListUsersRequest, PutAclRuleRequest, ReplicaStatusRequest,
    UpsertUserRequest, User,
};
use ferrocket_proto::signing::{self, SignedChannel, Signer};
use ferrocket_proto::v2::*;
use remoting_io::roundtrip;

const AUTH: &str = "auth_enabled = true\nauth_access_key = \"cluster\"\nauth_secret_key = \"cluster-secret\"\n";

fn cluster() -> Signer {
    Signer::new("cluster", "cluster-secret")
}

async fn admin(addr: &str, signer: Signer) -> AdminClient<SignedChannel> {
    let ch = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    AdminClient::with_interceptor(ch, signer)
}

fn user(name: &str, secret: &str, super_user: bool) -> UpsertUserRequest {
    UpsertUserRequest { user: Some(User { name: name.into(), secret: secret.into(), super_user, disabled: false }) }
}

/// A SendMessage of one message to `topic`: its status's code and message.
async fn send_to(c: &mut Client, topic: &str, id: &str) -> (Code, String) {
    let r = c.send_message(SendMessageRequest { messages: vec![message(topic, id, b"x".to_vec())] }).await.unwrap();
    let s = r.into_inner().status.unwrap();
    (Code::try_from(s.code).unwrap(), s.message)
}

/// A broker with authentication on and `/metrics`: (process, metrics address).
fn secured(dir: &std::path::Path) -> (Proc, String) {
    let metrics = free_addr();
    (start("standalone", &dir.join("b"), &format!("{AUTH}metrics_listen = \"{metrics}\"\n")), metrics)
}

/// A SEND_MESSAGE_V2 of `hello` to `topic`, as the Java producer sends it.
fn remoting_send(topic: &str, opaque: i32) -> Command {
    let mut c = Command::request(SEND_MESSAGE_V2, opaque, false, SerializeType::Json);
    c.put("a", "PG").put("b", topic).put("c", "TBW102").put("d", 4).put("e", 0).put("f", 0).put("g", 0).put("h", 0);
    c.body = b"hello".to_vec();
    c
}

#[tokio::test]
async fn grpc_calls_need_a_signature_and_admin_a_super_user() {
    let dir = tempfile::tempdir().unwrap();
    let (b, metrics) = secured(dir.path());

    let mut anonymous = client(&b.addr).await;
    let (code, msg) = send_to(&mut anonymous, "t", "A1").await;
    assert_eq!(code, Code::Unauthorized, "{msg}");
    assert_eq!(code_of_route(&mut anonymous).await, Code::Unauthorized);
    let refused = admin(&b.addr, Signer::default()).await.list_topics(ListTopicsRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    let mut as_cluster = admin(&b.addr, cluster()).await;
    as_cluster.upsert_user(user("alice", "alice-secret", false)).await.unwrap();
    as_cluster.put_acl_rule(rule("alice", "*", &["all"], false)).await.unwrap();
    let mut alice = signed_client(&b.addr, Signer::new("alice", "alice-secret")).await;
    assert_eq!(send_to(&mut alice, "t", "A2").await.0, Code::Ok);
    let got = receive_n(&mut alice, "g", "t", 1).await;
    assert_eq!(got.iter().map(|m| m.body.as_slice()).collect::<Vec<_>>(), [b"x"]);

    let mut guessing = signed_client(&b.addr, Signer::new("alice", "guessed-secret")).await;
    let (code, msg) = send_to(&mut guessing, "t", "A3").await;
    assert_eq!((code, msg.as_str()), (Code::Unauthorized, "signature of user alice does not match"));
    let forbidden = admin(&b.addr, Signer::new("alice", "alice-secret")).await.list_topics(ListTopicsRequest {}).await;
    assert_eq!(forbidden.unwrap_err().code(), tonic::Code::PermissionDenied);

    // A signature made an hour ago, replayed.
    let old = signing::format_date(SystemTime::now() - Duration::from_secs(3600));
    let mut req = tonic::Request::new(SendMessageRequest { messages: vec![message("t", "A4", b"x".to_vec())] });
    req.metadata_mut().insert("authorization", signing::authorization("alice", "alice-secret", &old).parse().unwrap());
    req.metadata_mut().insert("x-mq-date-time", old.parse().unwrap());
    let s = client(&b.addr).await.send_message(req).await.unwrap().into_inner().status.unwrap();
    assert_eq!(s.code, Code::Unauthorized as i32);
    assert!(s.message.contains("ms from the broker's clock"), "{}", s.message);

    let text = http_get(&metrics, "/metrics");
    for reason in ["no_credentials", "bad_signature", "not_super", "clock_skew"] {
        let line = format!("ferrocket_auth_refused_total{{protocol=\"grpc\",reason=\"{reason}\"}}");
        assert!(text.lines().any(|l| l.starts_with(&line)), "{line} missing from:\n{text}");
    }
    // Nothing anyone sent ever names a secret in the log: the refusals name the user only.
}

async fn code_of_route(c: &mut Client) -> Code {
    code(&route(c, "t").await.status)
}

#[test]
fn remoting_requests_need_the_acl_hooks_signature() {
    let dir = tempfile::tempdir().unwrap();
    let b = start("standalone", &dir.path().join("b"), AUTH);
    let mut s = TcpStream::connect(&b.remoting).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let refused = roundtrip(&mut s, &remoting_send("t", 1));
    assert_eq!(refused.code, NO_PERMISSION, "{:?}", refused.remark);

    let mut signed = remoting_send("t", 2);
    ferrocket::remoting::auth::sign(&mut signed, "cluster", "cluster-secret");
    let ok = roundtrip(&mut s, &signed);
    assert_eq!(ok.code, SUCCESS, "{:?}", ok.remark);

    // Signed, then changed on the way: the body is covered too.
    signed.body = b"HELLO".to_vec();
    signed.opaque = 3;
    let tampered = roundtrip(&mut s, &signed);
    assert_eq!(tampered.code, NO_PERMISSION);
    assert_eq!(tampered.remark.as_deref(), Some("signature of user cluster does not match"));
}

#[tokio::test]
async fn a_slave_signs_its_calls_and_copies_the_masters_users_and_rules_and_the_cli_manages_them() {
    let dir = tempfile::tempdir().unwrap();
    let master = start("standalone", &dir.path().join("m"), AUTH);
    let slave = start(
        "broker",
        &dir.path().join("s"),
        &format!("{AUTH}broker_id = 1\nbroker_role = \"slave\"\nha_master_addr = \"{}\"\n", master.addr),
    );
    let cli = |args: &[&str], signed: bool| {
        let mut c = std::process::Command::new(binary());
        c.args(args).args(["--server", &master.addr]).env_remove("FERROCKET_AUTH_ACCESS_KEY");
        if signed {
            c.env("FERROCKET_AUTH_ACCESS_KEY", "cluster").env("FERROCKET_AUTH_SECRET_KEY", "cluster-secret");
        }
        c.output().unwrap()
    };
    let out = cli(&["user", "create", "bob", "--secret-key", "bob-secret"], false);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credentials"), "{out:?}");
    let out = cli(&["user", "create", "bob", "--secret-key", "bob-secret"], true);
    assert!(out.status.success(), "{out:?}");
    let out = cli(&["acl", "create", "--user", "bob", "--resource", "Topic:t*", "--actions", "pub,sub"], true);
    assert!(out.status.success(), "{out:?}");
    let out = cli(&["user", "list"], true);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("bob") && listed.contains("normal") && !listed.contains("bob-secret"), "{listed}");

    // Replication and the slave's copy of topics, groups and users go through signed calls.
    let mut on_slave = admin(&slave.addr, cluster()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let users = on_slave.list_users(ListUsersRequest { with_secrets: false }).await.unwrap().into_inner().users;
        let acls = on_slave.list_acls(ListAclsRequest { user: String::new() }).await.unwrap().into_inner().acls;
        if users.iter().any(|u| u.name == "bob") && acls.iter().any(|a| a.user == "bob" && a.rules.len() == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "the slave never copied user bob and its rule: {users:?} {acls:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = admin(&master.addr, cluster()).await.replica_status(ReplicaStatusRequest {}).await.unwrap();
    assert_eq!(status.into_inner().slaves.len(), 1, "the slave replicates from the master");

    // The copied user signs in at the slave.
    let mut bob = signed_client(&slave.addr, Signer::new("bob", "bob-secret")).await;
    let hb = bob.heartbeat(HeartbeatRequest::default()).await.unwrap().into_inner();
    assert_eq!(code(&hb.status), Code::Ok);
}

fn rule(user: &str, resource: &str, actions: &[&str], deny: bool) -> PutAclRuleRequest {
    let actions = actions.iter().map(|a| a.to_string()).collect();
    PutAclRuleRequest {
        user: user.into(),
        rule: Some(AclRule { resource: resource.into(), actions, source_ips: vec![], deny }),
    }
}

#[tokio::test]
async fn access_rules_decide_what_a_normal_user_may_do_on_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let (b, metrics) = secured(dir.path());
    let mut admin = admin(&b.addr, cluster()).await;
    admin.upsert_user(user("alice", "alice-secret", false)).await.unwrap();
    let mut alice = signed_client(&b.addr, Signer::new("alice", "alice-secret")).await;

    let (code, msg) = send_to(&mut alice, "orders-eu", "R1").await;
    assert_eq!(code, Code::Forbidden);
    assert_eq!(msg, "user alice may not PUB Topic:orders-eu from 127.0.0.1: no rule allows it");

    admin.put_acl_rule(rule("alice", "Topic:orders-*", &["pub"], false)).await.unwrap();
    admin.put_acl_rule(rule("alice", "Topic:orders-secret", &["all"], true)).await.unwrap();
    assert_eq!(send_to(&mut alice, "orders-eu", "R2").await.0, Code::Ok);
    assert_eq!(send_to(&mut alice, "payments", "R3").await.0, Code::Forbidden);
    let (code, msg) = send_to(&mut alice, "orders-secret", "R4").await;
    assert_eq!(
        (code, msg.as_str()),
        (Code::Forbidden, "user alice may not PUB Topic:orders-secret from 127.0.0.1: a rule denies it")
    );

    // Receiving needs SUB on the topic and on the group.
    let (code, _) = receive(&mut alice, "billing", "orders-eu", secs(30)).await;
    assert_eq!(code, Code::Forbidden);
    admin.put_acl_rule(rule("alice", "Topic:orders-eu", &["pub", "sub"], false)).await.unwrap();
    assert_eq!(
        receive(&mut alice, "billing", "orders-eu", secs(30)).await.0,
        Code::Forbidden,
        "the group is not allowed yet"
    );
    admin.put_acl_rule(rule("alice", "Group:billing", &["sub"], false)).await.unwrap();
    let got = receive_n(&mut alice, "billing", "orders-eu", 1).await;
    assert_eq!(got.len(), 1);

    // A rule for other peers does not apply to 127.0.0.1.
    let mut elsewhere = rule("alice", "Topic:audit", &["pub"], false);
    elsewhere.rule.as_mut().unwrap().source_ips = vec!["10.0.0.0/8".into()];
    admin.put_acl_rule(elsewhere).await.unwrap();
    assert_eq!(send_to(&mut alice, "audit", "R5").await.0, Code::Forbidden);
    let bad = admin.put_acl_rule(rule("alice", "Queue:x", &["pub"], false)).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    let listed = admin.list_acls(ListAclsRequest { user: "alice".into() }).await.unwrap().into_inner().acls;
    assert_eq!(listed[0].rules.len(), 5, "{listed:?}");

    // The same rules over Remoting.
    let mut s = TcpStream::connect(&b.remoting).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let send = |topic: &str, opaque| {
        let mut c = remoting_send(topic, opaque);
        ferrocket::remoting::auth::sign(&mut c, "alice", "alice-secret");
        c
    };
    assert_eq!(roundtrip(&mut s, &send("orders-eu", 1)).code, SUCCESS);
    let refused = roundtrip(&mut s, &send("payments", 2));
    assert_eq!(refused.code, NO_PERMISSION);
    assert_eq!(
        refused.remark.as_deref(),
        Some("user alice may not PUB Topic:payments from 127.0.0.1: no rule allows it")
    );

    let text = http_get(&metrics, "/metrics");
    for protocol in ["grpc", "remoting"] {
        let line = format!("ferrocket_auth_refused_total{{protocol=\"{protocol}\",reason=\"denied\"}}");
        assert!(text.lines().any(|l| l.starts_with(&line)), "{line} missing from:\n{text}");
    }
}

#[test]
fn enabled_authentication_needs_the_cluster_credentials_from_config_env_or_flags() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("b.toml");
    std::fs::write(&cfg, "auth_enabled = true\nremoting_listen = \"127.0.0.1:0\"\n").unwrap();
    let run = |flags: &[&str]| {
        let mut c = std::process::Command::new(binary());
        c.args(["broker", "--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(flags)
            .env_remove("FERROCKET_AUTH_ACCESS_KEY")
            .env_remove("FERROCKET_AUTH_SECRET_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let out = run(&[]).wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth_access_key"), "{out:?}");

    let mut ok = run(&["--auth-access-key", "cluster", "--auth-secret-key", "cluster-secret"]);
    let mut line = String::new();
    BufReader::new(ok.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _ = ok.kill();
    let _ = ok.wait();
    assert!(line.starts_with("ready "), "the flags are the config keys: {line:?}");
}

#[tokio::test]
async fn rogue_processes_and_malformed_headers_are_refused_cleanly() {
    use ferrocket_proto::namesrv::controller_client::ControllerClient;
    use ferrocket_proto::namesrv::ha_client::HaClient;
    use ferrocket_proto::namesrv::namesrv_client::NamesrvClient;
    use ferrocket_proto::namesrv::{BrokerRegistration, ControllerHeartbeat, RegisterBrokerRequest, SlaveReport};
    let dir = tempfile::tempdir().unwrap();
    let ns = start("namesrv", &dir.path().join("ns"), &format!("{AUTH}enable_controller = true\n"));
    let (b, _) = secured(dir.path());
    let channel = |addr: &str| tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();

    // A rogue broker cannot register, nor heartbeat the controller; a rogue slave cannot replicate.
    // Not even as a user of the brokers: only the cluster's own credentials are taken.
    let mut admin_b = admin(&b.addr, cluster()).await;
    admin_b.upsert_user(user("mallory", "mallory-secret", false)).await.unwrap();
    for signer in [Signer::default(), Signer::new("mallory", "mallory-secret")] {
        let reg = RegisterBrokerRequest {
            registration: Some(BrokerRegistration {
                broker: Some(ferrocket_proto::namesrv::BrokerInfo {
                    broker_name: "rogue".into(),
                    endpoint: "127.0.0.1:1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let r = NamesrvClient::with_interceptor(channel(&ns.addr), signer.clone()).register_broker(reg).await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::Unauthenticated);
        let hb =
            ControllerHeartbeat { broker_name: "rogue".into(), endpoint: "127.0.0.1:1".into(), ..Default::default() };
        let r = ControllerClient::with_interceptor(channel(&ns.addr), signer.clone()).heartbeat(hb).await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::Unauthenticated);
        let reports = tokio_stream::iter(vec![SlaveReport { broker_name: "rogue".into(), ..Default::default() }]);
        let r = HaClient::with_interceptor(channel(&b.addr), signer.clone()).replicate(reports).await;
        let code = r.err().map(|e| e.code());
        assert!(
            matches!(code, Some(tonic::Code::Unauthenticated | tonic::Code::PermissionDenied)),
            "{signer:?}: {code:?}"
        );
    }

    // Malformed authorization headers: missing parts, another algorithm, garbage, 100 KB.
    let date = signing::format_date(SystemTime::now());
    let good = signing::authorization("cluster", "cluster-secret", &date);
    let huge =
        format!("MQv2-HMAC-SHA1 Credential={}, SignedHeaders=x-mq-date-time, Signature=00", "a".repeat(100 << 10));
    for value in [
        "MQv2-HMAC-SHA1".to_string(),
        "MQv2-HMAC-SHA1 Credential=cluster".to_string(),
        good.replace("HMAC-SHA1", "HMAC-SHA256"),
        "Bearer abc".to_string(),
        good.replace("Signature=", "Signature=zz"),
        huge,
    ] {
        let mut req = tonic::Request::new(SendMessageRequest { messages: vec![message("t", "M1", b"x".to_vec())] });
        req.metadata_mut().insert("authorization", value.parse().unwrap());
        req.metadata_mut().insert("x-mq-date-time", date.parse().unwrap());
        let refused = match client(&b.addr).await.send_message(req).await {
            Ok(r) => r.into_inner().status.unwrap().code == Code::Unauthorized as i32,
            Err(s) => s.code() != tonic::Code::Ok, // the HTTP/2 layer refused headers that large
        };
        assert!(refused, "{}...", &value[..value.len().min(60)]);
    }
    // Nothing was stored, and the broker serves the next signed call as before.
    let topics = admin_b.list_topics(ListTopicsRequest {}).await.unwrap().into_inner().topics;
    assert!(!topics.iter().any(|t| t.name == "t"), "{topics:?}");
    let mut ok = signed_client(&b.addr, cluster()).await;
    assert_eq!(send_to(&mut ok, "t", "M2").await.0, Code::Ok);
}
