//! A topic's accepted message types: checked where the front end asks (gRPC, as RocketMQ's proxy
//! checks them), not where it does not (Remoting, as RocketMQ's broker makes no such check).

use std::collections::BTreeMap;

use ferrocket_engine::broker::{Broker, BrokerError, Outgoing};
use ferrocket_engine::config::Config;
use ferrocket_engine::store::now_ms;
use ferrocket_engine::store::record::Record;
use ferrocket_engine::topics::{MessageType, Permission, TopicConfig};

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

fn send(b: &Broker, ty: MessageType, check_type: bool) -> Result<(), BrokerError> {
    let record =
        Record { topic: "plain".into(), properties: BTreeMap::new(), body: b"x".to_vec(), ..Default::default() };
    let deliver_at_ms = (ty == MessageType::Delay).then(|| now_ms() + 60_000);
    let mut batch = [Outgoing { record, ty, deliver_at_ms, check_type }];
    block(b.send_batch(&mut batch, "producer")).remove(0).map(|_| ())
}

#[test]
fn a_normal_topic_refuses_other_types_only_where_the_front_end_checks() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(Config { data_dir: dir.path().to_path_buf(), ..Config::default() }).unwrap();
    let topic = TopicConfig {
        name: "plain".into(),
        queue_count: 1,
        permission: Permission::ReadWrite,
        message_types: vec![MessageType::Normal],
    };
    b.topics().upsert(topic).unwrap();
    for ty in [MessageType::Delay, MessageType::Transaction] {
        match send(&b, ty, true) {
            Err(BrokerError::TypeNotAccepted { topic, ty: refused, .. }) => {
                assert_eq!((topic.as_str(), refused), ("plain", ty))
            }
            other => panic!("{ty:?} to a NORMAL topic, checked: {other:?}"),
        }
        send(&b, ty, false).unwrap_or_else(|e| panic!("{ty:?} to a NORMAL topic, unchecked: {e}"));
    }
    send(&b, MessageType::Normal, true).unwrap();
    b.shutdown().unwrap();
}
