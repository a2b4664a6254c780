//! A slave over the real protocol: it refuses sends and receives with FORBIDDEN (its master takes
//! them), and it routes clients to its master.

mod common;

use common::*;
use ferrocket_broker::proto::v2::*;

#[tokio::test]
async fn a_slave_refuses_writes_and_routes_to_its_master() {
    let dir = tempfile::tempdir().unwrap();
    let master = start("standalone", &dir.path().join("m"), "");
    let slave = start(
        "broker",
        &dir.path().join("s"),
        &format!("broker_id = 1\nbroker_role = \"slave\"\nha_master_addr = \"{}\"\n", master.addr),
    );
    let mut m = client(&master.addr).await;
    assert_eq!(send(&mut m, message("t", "ID1", b"x".to_vec())).await, Code::Ok);

    let mut s = client(&slave.addr).await;
    assert_eq!(send(&mut s, message("t", "ID2", b"y".to_vec())).await, Code::Forbidden);
    let (status, _) = receive(&mut s, "g", "t", secs(30)).await;
    assert_eq!(status, Code::Forbidden);
    // The slave copies the master's topics every 2 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let r = loop {
        let r = route(&mut s, "t").await;
        if code(&r.status) == Code::Ok {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "the slave never learned topic t: {:?}", r.status);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let brokers: Vec<_> = r.message_queues.iter().map(|q| q.broker.clone().unwrap()).collect();
    assert!(!brokers.is_empty());
    let master_port: i32 = master.addr.rsplit(':').next().unwrap().parse().unwrap();
    assert!(brokers.iter().all(|b| b.id == 0 && b.endpoints.as_ref().unwrap().addresses[0].port == master_port));
}
