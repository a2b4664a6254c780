//! Builders for the requests a client sends, shared by `ferrocket bench` and the tests.

use crate::v2::*;

/// A resource (topic or group) without a namespace.
pub fn resource(name: &str) -> Option<Resource> {
    Some(Resource { resource_namespace: String::new(), name: name.to_string() })
}

/// A ReceiveMessage request for every queue of `topic` on the broker (pop consumption), TAG `*`,
/// with `invisible_ms` and a long poll of at most `poll_ms`.
pub fn receive(group: &str, topic: &str, batch: i32, invisible_ms: u64, poll_ms: u64) -> ReceiveMessageRequest {
    let ms = |ms: u64| prost_types::Duration { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 };
    ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(MessageQueue { topic: resource(topic), id: -1, ..Default::default() }),
        filter_expression: Some(FilterExpression { r#type: FilterType::Tag as i32, expression: "*".into() }),
        batch_size: batch,
        invisible_duration: Some(ms(invisible_ms)),
        auto_renew: false,
        long_polling_timeout: Some(ms(poll_ms)),
        attempt_id: None,
    }
}

/// True if a response status is present and OK.
pub fn ok(status: &Option<Status>) -> bool {
    status.as_ref().is_some_and(|s| s.code == Code::Ok as i32)
}
