//! Pull consumers (PullMessage, UpdateOffset, GetOffset, QueryOffset), DELAY message bounds and
//! recall, and SQL92 filter errors, over the real gRPC protocol against the real binary.

mod common;

use common::*;
use ferrocket_proto::v2::*;
use std::collections::HashSet;

fn queue(topic: &str, id: i32) -> Option<MessageQueue> {
    Some(MessageQueue { topic: res(topic), id, ..Default::default() })
}

async fn pull(c: &mut Client, topic: &str, offset: i64, batch: i32) -> (Code, Vec<Message>, i64) {
    let req = PullMessageRequest {
        group: res("puller"),
        message_queue: queue(topic, 0),
        offset,
        batch_size: batch,
        filter_expression: None,
        long_polling_timeout: Some(secs(2)), // the dispatcher writes the ConsumeQueue shortly after a send
    };
    let mut stream = c.pull_message(req).await.unwrap().into_inner();
    let (mut status, mut msgs, mut next) = (Code::Unspecified, vec![], -1);
    while let Some(r) = stream.message().await.unwrap() {
        match r.content.unwrap() {
            pull_message_response::Content::Status(s) => status = code(&Some(s)),
            pull_message_response::Content::Message(m) => msgs.push(m),
            pull_message_response::Content::NextOffset(n) => next = n,
        }
    }
    (status, msgs, next)
}

#[tokio::test]
async fn pull_consumer_reads_by_offset_and_commits_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start("standalone", &dir.path().join("data"), "default_queue_count = 1\n");
    let mut c = client(&broker.addr).await;
    for i in 0..5 {
        assert_eq!(send(&mut c, message("pulled", &format!("ID-{i}"), format!("m{i}").into_bytes())).await, Code::Ok);
    }
    // Wait (bounded) until the dispatcher has written all five to the ConsumeQueue.
    let end = QueryOffsetRequest {
        message_queue: queue("pulled", 0),
        query_offset_policy: QueryOffsetPolicy::End as i32,
        timestamp: None,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while c.query_offset(end.clone()).await.unwrap().into_inner().offset < 5 {
        assert!(std::time::Instant::now() < deadline, "messages not dispatched within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, msgs, next) = pull(&mut c, "pulled", 0, 3).await;
    assert_eq!((status, msgs.len(), next), (Code::Ok, 3, 3));
    assert_eq!(msgs[2].body, b"m2");
    let (status, msgs, next) = pull(&mut c, "pulled", 3, 10).await;
    assert_eq!((status, msgs.len(), next), (Code::Ok, 2, 5));
    assert_eq!(pull(&mut c, "pulled", 5, 10).await.0, Code::MessageNotFound);
    assert_eq!(pull(&mut c, "pulled", 6, 10).await.0, Code::IllegalOffset);

    let get = |c: &mut Client| {
        let req = GetOffsetRequest { group: res("puller"), message_queue: queue("pulled", 0) };
        let mut c = c.clone();
        async move { c.get_offset(req).await.unwrap().into_inner() }
    };
    assert_eq!(code(&get(&mut c).await.status), Code::OffsetNotFound);
    let update = |offset| UpdateOffsetRequest { group: res("puller"), message_queue: queue("pulled", 0), offset };
    assert_eq!(code(&c.update_offset(update(4)).await.unwrap().into_inner().status), Code::Ok);
    assert_eq!(code(&c.update_offset(update(9)).await.unwrap().into_inner().status), Code::IllegalOffset);
    let got = get(&mut c).await;
    assert_eq!((code(&got.status), got.offset), (Code::Ok, 4));
    // A pop consumer of the same group continues from the committed position.
    let msgs = receive_n(&mut c, "puller", "pulled", 1).await;
    assert_eq!(msgs[0].body, b"m4");

    let query = |policy: QueryOffsetPolicy, ts: Option<prost_types::Timestamp>| QueryOffsetRequest {
        message_queue: queue("pulled", 0),
        query_offset_policy: policy as i32,
        timestamp: ts,
    };
    let q = c.query_offset(query(QueryOffsetPolicy::Beginning, None)).await.unwrap().into_inner();
    assert_eq!(q.offset, 0);
    let q = c.query_offset(query(QueryOffsetPolicy::End, None)).await.unwrap().into_inner();
    assert_eq!(q.offset, 5);
    let future = prost_types::Timestamp { seconds: 4_000_000_000, nanos: 0 };
    let q = c.query_offset(query(QueryOffsetPolicy::Timestamp, Some(future))).await.unwrap().into_inner();
    assert_eq!(q.offset, 5);
    let past = prost_types::Timestamp { seconds: 1, nanos: 0 };
    let q = c.query_offset(query(QueryOffsetPolicy::Timestamp, Some(past))).await.unwrap().into_inner();
    assert_eq!(q.offset, 0);
}

fn delayed(id: &str, at_ms: u64) -> Message {
    let mut m = message("timed", id, b"later".to_vec());
    let sp = m.system_properties.as_mut().unwrap();
    sp.message_type = MessageType::Delay as i32;
    sp.delivery_timestamp =
        Some(prost_types::Timestamp { seconds: (at_ms / 1000) as i64, nanos: ((at_ms % 1000) * 1_000_000) as i32 });
    m
}

#[tokio::test]
async fn delay_bounds_recall_and_sql_errors_get_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start("standalone", &dir.path().join("data"), "timer_max_delay_ms = 60000\n");
    let mut c = client(&broker.addr).await;
    let now = ferrocket_engine::store::now_ms();
    assert_eq!(send(&mut c, delayed("FAR", now + 120_000)).await, Code::IllegalDeliveryTime);
    let mut no_time = delayed("NT", now);
    no_time.system_properties.as_mut().unwrap().delivery_timestamp = None;
    assert_eq!(send(&mut c, no_time).await, Code::MessagePropertyConflictWithType);

    let r = c.send_message(SendMessageRequest { messages: vec![delayed("SOON", now + 30_000)] }).await.unwrap();
    let entry = r.into_inner().entries.remove(0);
    assert_eq!(code(&entry.status), Code::Ok);
    assert!(!entry.recall_handle.is_empty());
    let recall = |h: &str| RecallMessageRequest { topic: res("timed"), recall_handle: h.to_string() };
    let r = c.recall_message(recall(&entry.recall_handle)).await.unwrap().into_inner();
    assert_eq!((code(&r.status), r.message_id.as_str()), (Code::Ok, "SOON"));
    let again = c.recall_message(recall(&entry.recall_handle)).await.unwrap().into_inner();
    assert_eq!(code(&again.status), Code::InvalidReceiptHandle, "already recalled");
    let bad = c.recall_message(recall("t1.x.y")).await.unwrap().into_inner();
    assert_eq!(code(&bad.status), Code::InvalidReceiptHandle);

    // A past delivery time is delivered at once.
    assert_eq!(send(&mut c, delayed("PAST", now - 1000)).await, Code::Ok);
    let msgs = receive_n(&mut c, "g", "timed", 1).await;
    assert_eq!(msgs[0].system_properties.as_ref().unwrap().message_id, "PAST");

    let req = ReceiveMessageRequest {
        group: res("g"),
        message_queue: Some(MessageQueue { topic: res("timed"), ..Default::default() }),
        filter_expression: Some(FilterExpression { r#type: FilterType::Sql as i32, expression: "a = ".into() }),
        batch_size: 1,
        invisible_duration: Some(secs(30)),
        long_polling_timeout: Some(secs(1)),
        ..Default::default()
    };
    let mut stream = c.receive_message(req).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let Some(receive_message_response::Content::Status(s)) = first.content else { panic!("no status first") };
    assert_eq!(Code::try_from(s.code).unwrap(), Code::BadRequest);
    assert!(s.message.contains("invalid SQL92 filter"), "{}", s.message);
}

/// kill -9 while scheduled messages are sent, recalled and delivered, with state snapshots (and
/// so timer log checkpoints) every 100 ms: each kill lands before, in or after one. Every
/// acknowledged message that was not recalled is delivered exactly once, never before it is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_messages_survive_kill9_in_the_middle_of_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = "consumer_snapshot_interval_ms = 100\n";
    let mut broker = start("standalone", &data, config);
    let mut sent = std::collections::BTreeMap::new();
    for round in 0..5u64 {
        let mut c = client(&broker.addr).await;
        let now = ferrocket_engine::store::now_ms();
        for i in 0..200u64 {
            let id = format!("r{round}-{i}");
            // Due 1 to 13 s ahead, over two or three buckets: later rounds deliver earlier ones'.
            let due = now + 1_000 + (i * 7_919) % 12_000;
            let r = c.send_message(SendMessageRequest { messages: vec![delayed(&id, due)] }).await.unwrap();
            let entry = r.into_inner().entries.remove(0);
            assert_eq!(code(&entry.status), Code::Ok);
            if i % 25 == 0 {
                let req = RecallMessageRequest { topic: res("timed"), recall_handle: entry.recall_handle };
                assert_eq!(code(&c.recall_message(req).await.unwrap().into_inner().status), Code::Ok);
            } else {
                sent.insert(id, due);
            }
        }
        // Fault injection, not synchronisation: the kill lands at a different point each round.
        tokio::time::sleep(std::time::Duration::from_millis(130 * round)).await;
        drop(broker); // SIGKILL
        broker = start("standalone", &data, config);
    }
    let mut c = client(&broker.addr).await;
    let mut got = std::collections::BTreeMap::<String, u32>::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while got.len() < sent.len() && std::time::Instant::now() < deadline {
        let (_, msgs) = receive(&mut c, "g", "timed", secs(60)).await;
        for m in msgs {
            let sp = m.system_properties.as_ref().unwrap();
            let stored = sp.store_timestamp.as_ref().map_or(0, |t| t.seconds * 1000 + t.nanos as i64 / 1_000_000);
            let due = sent.get(&sp.message_id).copied().unwrap_or_else(|| panic!("unexpected {}", sp.message_id));
            assert!(stored as u64 >= due, "{} delivered at {stored}, due {due}", sp.message_id);
            *got.entry(sp.message_id.clone()).or_default() += 1;
            assert_eq!(ack(&mut c, "g", "timed", sp.receipt_handle.as_deref().unwrap()).await, Code::Ok);
        }
    }
    let missing: Vec<_> = sent.keys().filter(|id| !got.contains_key(*id)).collect();
    assert!(missing.is_empty(), "{} of {} never delivered: {missing:?}", missing.len(), sent.len());
    // Nothing more is due: a last poll finds no second copy of anything.
    let (_, extra) = receive(&mut c, "g", "timed", secs(60)).await;
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id.clone()).collect();
    assert!(twice.is_empty() && extra.is_empty(), "delivered twice: {twice:?}, later: {}", extra.len());
}

/// Consumer progress is written by what changed (the progress log): kill -9 at different points
/// of its checkpoints, and of its compaction into a new generation, never redelivers a message
/// whose ack was answered Ok, and loses none; a message left in flight comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_stay_acked_across_kill9_in_the_middle_of_progress_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Deliveries left unacked (or cut off by a kill) come back after 3 s.
    let config = "consumer_snapshot_interval_ms = 100\nmin_invisible_ms = 1000\n";
    let mut broker = start("standalone", &data, config);
    let mut c = client(&broker.addr).await;
    let total = 4_000;
    for i in 0..total {
        assert_eq!(send(&mut c, message("work", &format!("m{i}"), vec![b'x'; 16])).await, Code::Ok);
    }
    // Message ids delivered, acked (answered Ok), and delivered again after that.
    let (mut seen, mut acked, mut again) = (HashSet::new(), HashSet::new(), Vec::new());
    let mut deliveries = 0;
    for round in 0..10u64 {
        // Fault injection, not synchronisation: each round consumes for a different time, so
        // the kill lands at a different point of the 100 ms checkpoints.
        let until = std::time::Instant::now() + std::time::Duration::from_millis(300 + 170 * round);
        let (last, deadline) = (round == 9, until + std::time::Duration::from_secs(60));
        while std::time::Instant::now() < until || (last && acked.len() < total) {
            let stuck = deliveries >= 4 * total || std::time::Instant::now() > deadline;
            assert!(!stuck, "{} of {total} acked after {deliveries} deliveries", acked.len());
            let (status, msgs) = receive(&mut c, "g", "work", secs(3)).await;
            assert!(matches!(status, Code::Ok | Code::MessageNotFound), "{status:?}");
            for m in msgs {
                deliveries += 1;
                let sp = m.system_properties.unwrap();
                let id = sp.message_id;
                if acked.contains(&id) {
                    again.push(id.clone());
                }
                // Every other message stays in flight on its first delivery (before the last
                // round), so checkpoints carry in-flight entries too.
                if !seen.insert(id.clone()) || last || id.ends_with(['0', '2', '4', '6', '8']) {
                    let code = ack(&mut c, "g", "work", sp.receipt_handle.as_deref().unwrap()).await;
                    if code == Code::Ok {
                        acked.insert(id);
                    }
                }
            }
        }
        if !last {
            drop(broker); // SIGKILL
            broker = start("standalone", &data, config);
            c = client(&broker.addr).await;
        }
    }
    // Everything is acked: a long poll finds nothing.
    let (_, extra) = receive(&mut c, "g", "work", secs(3)).await;
    let extra: Vec<_> = extra.into_iter().map(|m| m.system_properties.unwrap().message_id).collect();
    assert!(again.is_empty() && extra.is_empty(), "delivered after their ack: {again:?}, later: {extra:?}");
    let generations: Vec<_> =
        std::fs::read_dir(data.join("progress")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(generations.iter().all(|g| g != "00000000000000000001.log"), "never compacted: {generations:?}");
}
