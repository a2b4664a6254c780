//! Every MessagingService request type, as random bytes decoded into it and as valid requests
//! with extreme field values: the broker answers each with a status (or a gRPC error for bytes
//! that are no request), never panics, and keeps serving. Durations and timestamps from the wire
//! are converted with checked arithmetic: values near 2^61 s are refused with their status, not
//! wrapped into a plausible one.

mod common;

use common::*;
use ferrocket_proto::v2::*;
use rand::{Rng, SeedableRng};
use tonic::Request;

/// Random requests per request type; fixed seed, so a failure is repeatable.
const CASES: usize = 200;

fn huge() -> prost_types::Duration {
    prost_types::Duration { seconds: 1 << 61, nanos: 0 }
}

/// Field values at the edges: wrapping points of second-to-ms conversions, signs, limits.
const EDGES: [i64; 9] = [i64::MIN, -1, 0, 1, 999_999_999, 1_000_000_000, 1 << 31, 1 << 61, i64::MAX];

/// A random request of type `T`: a valid `template` encoded, then mutated (bytes overwritten with
/// random or edge values, inserted, dropped, cut), decoded again; if the result is no valid
/// encoding, a request decoded from purely random bytes; if neither decodes, the default.
fn mutated<T: prost::Message + Default>(template: &T, rng: &mut rand::rngs::StdRng) -> T {
    let mut bytes = template.encode_to_vec();
    for _ in 0..rng.random_range(1..6) {
        let at = rng.random_range(0..=bytes.len());
        match rng.random_range(0..5) {
            0 if at < bytes.len() => bytes[at] = rng.random(),
            1 => {
                // A varint of an edge value, where a field's value may be.
                let mut v = EDGES[rng.random_range(0..EDGES.len())] as u64;
                let mut varint = Vec::new();
                loop {
                    varint.push((v as u8 & 0x7f) | if v >= 0x80 { 0x80 } else { 0 });
                    v >>= 7;
                    if v == 0 {
                        break;
                    }
                }
                bytes.splice(at..at, varint);
            }
            2 => bytes.insert(at, rng.random()),
            3 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    T::decode(bytes.as_slice()).unwrap_or_else(|_| {
        let random: Vec<u8> = (0..rng.random_range(0..128)).map(|_| rng.random()).collect();
        T::decode(random.as_slice()).unwrap_or_default()
    })
}

/// A status is present in a unary response, or in the first item of a streamed one.
fn has_status(s: &Option<Status>) -> bool {
    s.is_some()
}

async fn first_receive_status(c: &mut Client, r: ReceiveMessageRequest) -> Option<Code> {
    let mut stream = c.receive_message(r).await.ok()?.into_inner();
    while let Ok(Some(item)) = stream.message().await {
        if let Some(receive_message_response::Content::Status(s)) = item.content {
            return Code::try_from(s.code).ok();
        }
    }
    None
}

async fn first_pull_status(c: &mut Client, r: PullMessageRequest) -> Option<Code> {
    let mut stream = c.pull_message(r).await.ok()?.into_inner();
    while let Ok(Some(item)) = stream.message().await {
        if let Some(pull_message_response::Content::Status(s)) = item.content {
            return Code::try_from(s.code).ok();
        }
    }
    None
}

/// Sends one random request of every type; panics if a unary answer lacks its status.
async fn one_round(c: &mut Client, rng: &mut rand::rngs::StdRng) {
    let group = res("g");
    let topic = res("fuzz");
    let queue = Some(MessageQueue { topic: topic.clone(), id: 0, ..Default::default() });
    let handle = "v1.0.0.0000000000000000.b".to_string();
    let entry = AckMessageEntry { message_id: "ID-1".into(), receipt_handle: handle.clone(), lite_topic: None };
    macro_rules! unary {
        ($method:ident, $template:expr) => {{
            let req = mutated(&$template, rng);
            // Bounded: a random long poll is capped by the broker, the call by its deadline.
            let mut r = Request::new(req);
            r.set_timeout(std::time::Duration::from_secs(25));
            // A decoded request always gets an answer with a status: a transport error here is
            // a handler that panicked or hung.
            let resp = c.$method(r).await.unwrap_or_else(|e| panic!("{}: {e}", stringify!($method)));
            assert!(has_status(&resp.into_inner().status), concat!(stringify!($method), " answered without a status"));
        }};
    }
    unary!(query_route, QueryRouteRequest { topic: topic.clone(), endpoints: None });
    unary!(heartbeat, HeartbeatRequest { group: group.clone(), ..Default::default() });
    let mut delayed = message("fuzz", "ID-F", b"fuzz".to_vec());
    let sp = delayed.system_properties.as_mut().unwrap();
    sp.message_type = MessageType::Delay as i32;
    sp.delivery_timestamp = Some(prost_types::Timestamp { seconds: 4_000_000_000, nanos: 0 });
    unary!(send_message, SendMessageRequest { messages: vec![message("fuzz", "ID-F", b"fuzz".to_vec()), delayed] });
    unary!(query_assignment, QueryAssignmentRequest { topic: topic.clone(), group: group.clone(), endpoints: None });
    unary!(ack_message, AckMessageRequest { group: group.clone(), topic: topic.clone(), entries: vec![entry] });
    unary!(
        forward_message_to_dead_letter_queue,
        ForwardMessageToDeadLetterQueueRequest {
            group: group.clone(),
            topic: topic.clone(),
            receipt_handle: handle.clone(),
            message_id: "ID-1".into(),
            delivery_attempt: 1,
            max_delivery_attempts: 16,
            lite_topic: None,
        }
    );
    unary!(update_offset, UpdateOffsetRequest { group: group.clone(), message_queue: queue.clone(), offset: 0 });
    unary!(get_offset, GetOffsetRequest { group: group.clone(), message_queue: queue.clone() });
    unary!(
        query_offset,
        QueryOffsetRequest {
            message_queue: queue.clone(),
            query_offset_policy: QueryOffsetPolicy::Timestamp as i32,
            timestamp: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }),
        }
    );
    unary!(
        end_transaction,
        EndTransactionRequest {
            topic: topic.clone(),
            message_id: "ID-1".into(),
            transaction_id: "0000000000000001".into(),
            resolution: TransactionResolution::Commit as i32,
            source: TransactionSource::SourceClient as i32,
            trace_context: String::new(),
        }
    );
    unary!(notify_client_termination, NotifyClientTerminationRequest { group: group.clone() });
    unary!(
        change_invisible_duration,
        ChangeInvisibleDurationRequest {
            group: group.clone(),
            topic: topic.clone(),
            receipt_handle: handle.clone(),
            invisible_duration: Some(secs(30)),
            message_id: "ID-1".into(),
            lite_topic: None,
            suspend: None,
        }
    );
    unary!(recall_message, RecallMessageRequest { topic: topic.clone(), recall_handle: "0.0".into() });
    unary!(sync_lite_subscription, SyncLiteSubscriptionRequest::default());
    let mut recv = mutated(&ferrocket_proto::requests::receive("g", "fuzz", 16, 30_000, 0), rng);
    recv.long_polling_timeout = Some(secs(rng.random_range(0..2)));
    let mut r = Request::new(recv);
    r.set_timeout(std::time::Duration::from_secs(25));
    let mut stream = c.receive_message(r).await.expect("receive_message answers").into_inner();
    let first = stream.message().await.expect("a first item").expect("the stream is not empty");
    assert!(matches!(first.content, Some(receive_message_response::Content::Status(_))), "{first:?}");
    let template = PullMessageRequest {
        group: group.clone(),
        message_queue: queue,
        offset: 0,
        batch_size: 8,
        filter_expression: Some(FilterExpression { r#type: FilterType::Sql as i32, expression: "a > 1".into() }),
        long_polling_timeout: None,
    };
    let mut pull = mutated(&template, rng);
    pull.long_polling_timeout = Some(secs(rng.random_range(0..2)));
    assert!(first_pull_status(c, pull).await.is_some(), "pull_message answered without a status");
    let telemetry = mutated(
        &TelemetryCommand {
            status: None,
            command: Some(telemetry_command::Command::Settings(Settings {
                client_type: Some(ClientType::Producer as i32),
                ..Default::default()
            })),
        },
        rng,
    );
    let mut t = Request::new(tokio_stream::iter([telemetry]));
    t.metadata_mut().insert("x-mq-client-id", "fuzz".parse().unwrap());
    if let Ok(mut replies) = c.telemetry(t).await.map(|s| s.into_inner()) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), replies.message()).await;
    }
}

#[tokio::test]
async fn random_and_extreme_requests_get_statuses_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    // One queue: the broker picks the queue of a send, and the pull below reads queue 0.
    let mut broker = start("standalone", &dir.path().join("data"), "default_queue_count = 1\n");
    let mut c = client(&broker.addr).await;
    assert_eq!(send(&mut c, message("fuzz", "ID-1", b"kept".to_vec())).await, Code::Ok);

    // Extreme values: refused with their own status, not wrapped into a plausible one.
    let mut receive = ferrocket_proto::requests::receive("g", "fuzz", 16, 30_000, 0);
    receive.invisible_duration = Some(huge());
    assert_eq!(first_receive_status(&mut c, receive.clone()).await, Some(Code::IllegalInvisibleTime));
    receive.invisible_duration = Some(prost_types::Duration { seconds: 30, nanos: -1 });
    assert_eq!(first_receive_status(&mut c, receive.clone()).await, Some(Code::IllegalInvisibleTime));
    receive.invisible_duration = Some(secs(30));
    receive.long_polling_timeout = Some(huge());
    assert_eq!(first_receive_status(&mut c, receive.clone()).await, Some(Code::IllegalPollingTime));
    receive.long_polling_timeout = Some(secs(-1));
    assert_eq!(first_receive_status(&mut c, receive).await, Some(Code::IllegalPollingTime));

    let change = ChangeInvisibleDurationRequest {
        group: res("g"),
        topic: res("fuzz"),
        receipt_handle: "h".into(),
        invisible_duration: Some(huge()),
        message_id: "ID-1".into(),
        lite_topic: None,
        suspend: None,
    };
    let r = c.change_invisible_duration(change).await.unwrap().into_inner();
    assert_eq!(code(&r.status), Code::IllegalInvisibleTime);

    for seconds in [1i64 << 61, i64::MAX, -1] {
        let mut delayed = message("fuzz", "ID-D", b"later".to_vec());
        let sp = delayed.system_properties.as_mut().unwrap();
        sp.message_type = MessageType::Delay as i32;
        sp.delivery_timestamp = Some(prost_types::Timestamp { seconds, nanos: 0 });
        assert_eq!(send(&mut c, delayed).await, Code::IllegalDeliveryTime, "delivery at {seconds} s");
    }

    let mut pull = PullMessageRequest {
        group: res("g"),
        message_queue: Some(MessageQueue { topic: res("fuzz"), id: 0, ..Default::default() }),
        offset: 0,
        batch_size: 8,
        filter_expression: None,
        long_polling_timeout: Some(huge()),
    };
    assert_eq!(first_pull_status(&mut c, pull.clone()).await, Some(Code::IllegalPollingTime));
    pull.long_polling_timeout = Some(secs(5)); // held until the message is dispatched
    assert_eq!(first_pull_status(&mut c, pull).await, Some(Code::Ok));

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_f422);
    for _ in 0..CASES {
        one_round(&mut c, &mut rng).await;
    }

    // Still serving, the stored message intact, and the process alive.
    assert!(broker.child.try_wait().unwrap().is_none(), "the broker exited");
    let mut fresh = client(&broker.addr).await;
    let got = receive_n(&mut fresh, "after-fuzz", "fuzz", 1).await;
    assert!(got.iter().any(|m| m.body == b"kept"), "the message stored before the fuzzing is still delivered");
    assert_eq!(code(&route(&mut fresh, "fuzz").await.status), Code::Ok);
}
