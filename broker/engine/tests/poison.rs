//! Messages that must always be able to leave: limits refused on send, a stored message too large
//! for its DLQ copy dead-lettered anyway, and the queue the broker picks when the producer
//! leaves it open (RocketMQ proxy behaviour).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ferrocket_engine::broker::{Broker, BrokerError, Consumer, ANY_QUEUE, PROP_DLQ_DROPPED, PROP_DLQ_ORIGIN_TOPIC};
use ferrocket_engine::config::Config;
use ferrocket_engine::consume::filter::Filter;
use ferrocket_engine::store::record::Record;
use ferrocket_engine::store::{RecordClass, PROP_MESSAGE_GROUP, PROP_MSG_ID, PROP_TAGS};
use ferrocket_engine::topics::MessageType;

fn cfg(dir: &Path) -> Config {
    Config { data_dir: dir.to_path_buf(), auto_create_topic: true, default_queue_count: 8, ..Config::default() }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

fn msg(topic: &str, id: &str, props: &[(&str, String)]) -> Record {
    let mut properties: BTreeMap<String, String> = props.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    properties.insert(PROP_MSG_ID.into(), id.into());
    Record { topic: topic.into(), queue_id: ANY_QUEUE, properties, body: b"body".to_vec(), ..Default::default() }
}

#[test]
fn oversized_properties_are_refused_on_send_with_a_client_error() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(cfg(dir.path())).unwrap();
    let err = block(b.send(&mut msg("T", "ID-1", &[(PROP_TAGS, "t".repeat(40_000))]), MessageType::Normal));
    assert!(matches!(err, Err(BrokerError::PropertiesTooLarge { max: 32_768, .. })), "{err:?}");
    assert_eq!(b.store().commitlog_end(), 0, "nothing stored");
    b.shutdown().unwrap();
}

#[test]
fn a_stored_message_too_large_for_its_dlq_copy_is_dead_lettered_without_its_largest_properties() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(cfg(dir.path())).unwrap();
    b.topic_or_create("T").unwrap();
    // Stored before today's limits: a 65,500-byte tag leaves no room for the DLQ properties.
    let mut old = msg("T", "ID-OLD", &[(PROP_TAGS, "t".repeat(65_500))]);
    old.queue_id = 0;
    b.store().append(&mut old, true, RecordClass::Message).unwrap();
    let c = Consumer { group: "g", client_id: "c1" };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let got = loop {
        let got = b.receive(c, "T", &Filter::ALL, 1, 60_000).unwrap();
        if !got.is_empty() || std::time::Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(got.len(), 1, "the old message is delivered");
    block(b.forward_to_dlq(c, "T", &got[0].receipt_handle)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let dlq = loop {
        let got = b.receive(Consumer { group: "ops", client_id: "c1" }, "%DLQ%g", &Filter::ALL, 1, 60_000).unwrap();
        if !got.is_empty() || std::time::Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(dlq.len(), 1, "the message reached %DLQ%g");
    let p = &dlq[0].record.properties;
    assert_eq!((p[PROP_MSG_ID].as_str(), p[PROP_DLQ_ORIGIN_TOPIC].as_str()), ("ID-OLD", "T"));
    assert_eq!(p[PROP_DLQ_DROPPED], PROP_TAGS);
    assert!(!p.contains_key(PROP_TAGS));
    b.shutdown().unwrap();
}

#[test]
fn the_broker_spreads_messages_without_a_queue_and_keeps_a_message_group_on_one() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(cfg(dir.path())).unwrap();
    let mut per_queue: HashMap<u32, usize> = HashMap::new();
    for i in 0..800 {
        // Another topic in between must not skew this one's turn.
        block(b.send(&mut msg("Other", &format!("O{i}"), &[]), MessageType::Normal)).unwrap();
        let at = block(b.send(&mut msg("T", &format!("ID{i}"), &[]), MessageType::Normal)).unwrap();
        *per_queue.entry(at.queue_id).or_default() += 1;
    }
    assert_eq!(per_queue.len(), 8, "{per_queue:?}");
    assert!(per_queue.values().all(|n| *n == 100), "round robin: {per_queue:?}");
    // A message group always lands on the queue Guava's consistent hash picks for it, as on
    // RocketMQ's proxy ("order-7".hashCode() over 8 queues is 4).
    for i in 0..20 {
        let mut m = msg("T", &format!("F{i}"), &[(PROP_MESSAGE_GROUP, "order-7".into())]);
        assert_eq!(block(b.send(&mut m, MessageType::Fifo)).unwrap().queue_id, 4);
    }
    // A producer that names a queue the topic has keeps it.
    let mut named = msg("T", "N", &[]);
    named.queue_id = 3;
    assert_eq!(block(b.send(&mut named, MessageType::Normal)).unwrap().queue_id, 3);
    b.shutdown().unwrap();
}
