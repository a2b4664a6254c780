//! Authentication end to end, on real processes: with `auth_enabled`, every gRPC and Remoting
//! request needs a user's signature; Admin, replication and user management take a super user;
//! a slave signs its own calls with the cluster's credentials and copies the master's users; the
//! CLI signs with the same variables the broker reads; refusals are counted by reason.

mod common;
#[path = "common/remoting.rs"]
mod remoting_io;

use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use ferrocket::remoting::codes::*;
use ferrocket::remoting::command::{Command, SerializeType};
use ferrocket_proto::admin::admin_client::AdminClient;
use ferrocket_proto::admin::{ListTopicsRequest, ListUsersRequest, ReplicaStatusRequest, UpsertUserRequest, User};
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

/// A SendMessage status's code and message.
async fn send_status(c: &mut Client, id: &str) -> (Code, String) {
    let r = c.send_message(SendMessageRequest { messages: vec![message("t", id, b"x".to_vec())] }).await.unwrap();
    let s = r.into_inner().status.unwrap();
    (Code::try_from(s.code).unwrap(), s.message)
}

#[tokio::test]
async fn grpc_calls_need_a_signature_and_admin_a_super_user() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_addr();
    let b = start("standalone", &dir.path().join("b"), &format!("{AUTH}metrics_listen = \"{metrics}\"\n"));

    let mut anonymous = client(&b.addr).await;
    let (code, msg) = send_status(&mut anonymous, "A1").await;
    assert_eq!(code, Code::Unauthorized, "{msg}");
    assert_eq!(code_of_route(&mut anonymous).await, Code::Unauthorized);
    let refused = admin(&b.addr, Signer::default()).await.list_topics(ListTopicsRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    admin(&b.addr, cluster()).await.upsert_user(user("alice", "alice-secret", false)).await.unwrap();
    let mut alice = signed_client(&b.addr, Signer::new("alice", "alice-secret")).await;
    assert_eq!(send_status(&mut alice, "A2").await.0, Code::Ok);
    let got = receive_n(&mut alice, "g", "t", 1).await;
    assert_eq!(got.iter().map(|m| m.body.as_slice()).collect::<Vec<_>>(), [b"x"]);

    let mut guessing = signed_client(&b.addr, Signer::new("alice", "guessed-secret")).await;
    let (code, msg) = send_status(&mut guessing, "A3").await;
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
    let send = |opaque| {
        let mut c = Command::request(SEND_MESSAGE_V2, opaque, false, SerializeType::Json);
        c.put("a", "PG").put("b", "t").put("c", "TBW102").put("d", 4).put("e", 0).put("f", 0).put("g", 0).put("h", 0);
        c.body = b"hello".to_vec();
        c
    };
    let refused = roundtrip(&mut s, &send(1));
    assert_eq!(refused.code, NO_PERMISSION, "{:?}", refused.remark);

    let mut signed = send(2);
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
async fn a_slave_signs_its_calls_and_copies_the_masters_users_and_the_cli_manages_them() {
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
    let out = cli(&["user", "list"], true);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("bob") && listed.contains("normal") && !listed.contains("bob-secret"), "{listed}");

    // Replication and the slave's copy of topics, groups and users go through signed calls.
    let mut on_slave = admin(&slave.addr, cluster()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let users = on_slave.list_users(ListUsersRequest { with_secrets: false }).await.unwrap().into_inner().users;
        if users.iter().any(|u| u.name == "bob") {
            break;
        }
        assert!(Instant::now() < deadline, "the slave never copied user bob: {users:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = admin(&master.addr, cluster()).await.replica_status(ReplicaStatusRequest {}).await.unwrap();
    assert_eq!(status.into_inner().slaves.len(), 1, "the slave replicates from the master");

    // The copied user signs in at the slave.
    let mut bob = signed_client(&slave.addr, Signer::new("bob", "bob-secret")).await;
    let hb = bob.heartbeat(HeartbeatRequest::default()).await.unwrap().into_inner();
    assert_eq!(code(&hb.status), Code::Ok);
}
