//! Bad input over the real gRPC protocol gets its RocketMQ status code, and disturbs neither
//! stored data nor other clients.

mod common;

use common::*;
use ferrocket_proto::admin::admin_client::AdminClient;
use ferrocket_proto::admin::DescribeTopicRequest;
use ferrocket_proto::v2::*;

#[tokio::test]
async fn each_bad_input_gets_its_status_and_stored_data_stays() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start("standalone", &dir.path().join("data"), "");
    let mut c = client(&broker.addr).await;
    assert_eq!(send(&mut c, message("good", "ID-1", b"kept".to_vec())).await, Code::Ok);

    assert_eq!(send(&mut c, message("good", "", b"x".to_vec())).await, Code::IllegalMessageId);
    assert_eq!(send(&mut c, message("good", "ID-2", vec![0; (4 << 20) + 1])).await, Code::MessageBodyTooLarge);
    assert_eq!(send(&mut c, message("bad topic", "ID-3", b"x".to_vec())).await, Code::IllegalTopic);
    assert_eq!(send(&mut c, message("RMQ_SYS_TRANS_HALF_TOPIC", "ID-4", b"x".to_vec())).await, Code::IllegalTopic);
    let mut fifo_without_group = message("good", "ID-5", b"x".to_vec());
    fifo_without_group.system_properties.as_mut().unwrap().message_type = MessageType::Fifo as i32;
    assert_eq!(send(&mut c, fifo_without_group).await, Code::MessagePropertyConflictWithType);
    let empty = c.send_message(SendMessageRequest { messages: vec![] }).await.unwrap().into_inner();
    assert_eq!(code(&empty.status), Code::BadRequest);

    // Oversized tag, keys and trace context are the client's error (4xx, not retried), refused
    // before anything is stored: a stored message must always fit its DLQ copy.
    let with = |f: &dyn Fn(&mut SystemProperties)| {
        let mut m = message("good", "ID-6", b"x".to_vec());
        f(m.system_properties.as_mut().unwrap());
        m
    };
    let big = "t".repeat(65_000);
    assert_eq!(send(&mut c, with(&|sp| sp.tag = Some(big.clone()))).await, Code::MessagePropertiesTooLarge);
    let keys: Vec<String> = (0..70).map(|i| format!("{i:04}{}", "k".repeat(1000))).collect();
    assert_eq!(send(&mut c, with(&|sp| sp.keys = keys.clone())).await, Code::MessagePropertiesTooLarge);
    let trace = "0".repeat(70_000);
    assert_eq!(send(&mut c, with(&|sp| sp.trace_context = Some(trace.clone()))).await, Code::MessagePropertiesTooLarge);
    let mut many = message("good", "ID-7", b"x".to_vec());
    many.user_properties = (0..129).map(|i| (format!("p{i}"), "v".into())).collect();
    assert_eq!(send(&mut c, many).await, Code::MessagePropertiesTooLarge);

    // Invisible time outside 10 s ..= 12 h (the defaults).
    assert_eq!(receive(&mut c, "grp", "good", secs(5)).await.0, Code::IllegalInvisibleTime);
    assert_eq!(receive(&mut c, "grp", "good", secs(13 * 3600)).await.0, Code::IllegalInvisibleTime);
    assert_eq!(receive(&mut c, "bad group!", "good", secs(30)).await.0, Code::IllegalConsumerGroup);
    // A group whose %RETRY% topic would not be a legal topic (RocketMQ allows 255 characters).
    assert_eq!(receive(&mut c, &"g".repeat(121), "good", secs(30)).await.0, Code::IllegalConsumerGroup);
    assert_eq!(receive(&mut c, &"g".repeat(120), "good", secs(30)).await.0, Code::Ok);

    // Receipt handles: forged, malformed, stale (after ChangeInvisibleDuration), reused.
    let (status, msgs) = receive(&mut c, "grp", "good", secs(30)).await;
    assert_eq!((status, msgs.len()), (Code::Ok, 1));
    let sp = msgs[0].system_properties.clone().unwrap();
    assert_eq!(msgs[0].body, b"kept");
    let h1 = sp.receipt_handle.unwrap();
    assert_eq!(ack(&mut c, "grp", "good", "garbage").await, Code::InvalidReceiptHandle);
    assert_eq!(ack(&mut c, "grp", "good", "v1.0.0.00000000000000ff.broker-a").await, Code::InvalidReceiptHandle);
    let changed = c
        .change_invisible_duration(ChangeInvisibleDurationRequest {
            group: res("grp"),
            topic: res("good"),
            receipt_handle: h1.clone(),
            invisible_duration: Some(secs(60)),
            message_id: sp.message_id.clone(),
            lite_topic: None,
            suspend: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&changed.status), Code::Ok);
    let h2 = changed.receipt_handle;
    assert_ne!(h1, h2);
    assert_eq!(ack(&mut c, "grp", "good", &h1).await, Code::InvalidReceiptHandle, "stale handle");
    assert_eq!(ack(&mut c, "other-group", "good", &h2).await, Code::InvalidReceiptHandle, "another group's handle");
    assert_eq!(ack(&mut c, "grp", "good", &h2).await, Code::Ok);
    assert_eq!(ack(&mut c, "grp", "good", &h2).await, Code::InvalidReceiptHandle, "already acknowledged");

    // Telemetry without a client id.
    let out = tokio_stream::iter(vec![TelemetryCommand { status: None, command: None }]);
    let mut replies = c.telemetry(out).await.unwrap().into_inner();
    let reply = replies.message().await.unwrap().expect("a reply");
    assert_eq!(code(&reply.status), Code::ClientIdRequired);

    // None of it touched the stored message, and another group still gets it.
    let mut admin = AdminClient::connect(format!("http://{}", broker.addr)).await.unwrap();
    let d = admin.describe_topic(DescribeTopicRequest { name: "good".into() }).await.unwrap().into_inner();
    assert_eq!(d.queues.iter().map(|q| q.max_offset).sum::<u64>(), 1);
    let (status, msgs) = receive(&mut c, "other-group", "good", secs(30)).await;
    assert_eq!((status, msgs[0].body.as_slice()), (Code::Ok, &b"kept"[..]));
}

#[tokio::test]
async fn without_auto_create_unknown_topics_are_not_found_until_created_and_topics_persist() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = start("broker", &data, "");
    let mut c = client(&broker.addr).await;
    assert_eq!(send(&mut c, message("orders", "ID-1", b"x".to_vec())).await, Code::TopicNotFound);
    let missing = route(&mut c, "orders").await;
    assert_eq!(code(&missing.status), Code::TopicNotFound);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrocket"))
        .args(["topic", "create", "orders", "--queues", "3", "--types", "normal,fifo", "--server", &broker.addr])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(send(&mut c, message("orders", "ID-1", b"x".to_vec())).await, Code::Ok);
    let route = route(&mut c, "orders").await;
    assert_eq!(route.message_queues.len(), 3);
    let q = &route.message_queues[0];
    assert_eq!(q.permission, Permission::ReadWrite as i32);
    assert_eq!(q.broker.as_ref().unwrap().id, 0);
    assert_eq!(
        q.broker.as_ref().unwrap().endpoints.as_ref().unwrap().addresses[0].port.to_string(),
        broker.addr.rsplit(':').next().unwrap()
    );
    assert_eq!(q.accept_message_types, vec![MessageType::Normal as i32, MessageType::Fifo as i32]);
    drop(c);
    drop(broker);

    let broker = start("broker", &data, "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrocket"))
        .args(["topic", "describe", "orders", "--server", &broker.addr])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("queues=3") && text.contains("FIFO"), "{text}");
    let shrink = std::process::Command::new(env!("CARGO_BIN_EXE_ferrocket"))
        .args(["topic", "create", "orders", "--queues", "2", "--server", &broker.addr])
        .output()
        .unwrap();
    assert!(!shrink.status.success());
    assert!(String::from_utf8_lossy(&shrink.stderr).contains("shrinking"));
}

/// Several messages in one SendMessage call: each gets its own status; a bad one is refused
/// without affecting the others.
#[tokio::test]
async fn a_batch_send_reports_each_message_and_stores_only_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start("standalone", &dir.path().join("data"), "");
    let mut c = client(&broker.addr).await;
    let mut first = message("batch", "ID-A", b"a".to_vec());
    // The broker picks the queue, as RocketMQ's proxy does: a client's queue id is ignored.
    first.system_properties.as_mut().unwrap().queue_id = 200;
    let messages = vec![first, message("batch", "", b"b".to_vec()), message("batch", "ID-C", b"c".to_vec())];
    let r = c.send_message(SendMessageRequest { messages }).await.unwrap().into_inner();
    let codes: Vec<Code> = r.entries.iter().map(|e| code(&e.status)).collect();
    assert_eq!(codes, vec![Code::Ok, Code::IllegalMessageId, Code::Ok]);
    assert_eq!(code(&r.status), Code::IllegalMessageId, "the call reports its first failure");
    assert_eq!((r.entries[0].message_id.as_str(), r.entries[2].message_id.as_str()), ("ID-A", "ID-C"));
    let msgs = receive_n(&mut c, "g", "batch", 2).await;
    let mut bodies: Vec<&[u8]> = msgs.iter().map(|m| m.body.as_slice()).collect();
    bodies.sort();
    assert_eq!(bodies, vec![&b"a"[..], &b"c"[..]]);
    let a = msgs.iter().find(|m| m.body == b"a").unwrap().system_properties.clone().unwrap();
    assert!((0..8).contains(&a.queue_id), "queue {} of the topic's 8", a.queue_id);
    assert_eq!(
        (a.delivery_attempt, a.body_digest.unwrap().checksum.as_str()),
        (Some(1), "0CC175B9C0F1B6A831C399E269772661")
    );
}
