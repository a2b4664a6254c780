//! Looking messages up (RocketMQ `QueryMessageProcessor`): VIEW_MESSAGE_BY_ID by the CommitLog
//! offset an offset message id encodes, QUERY_MESSAGE by key or unique id through the IndexFile.

use super::broker::{refusal, RemotingBroker};
use super::codes::*;
use super::command::Command;
use super::header::{Header, Refusal};
use super::wire::encode_message;

/// Most messages one QUERY_MESSAGE returns.
const MAX_QUERY: usize = 64;

/// Handles VIEW_MESSAGE_BY_ID and QUERY_MESSAGE; the body is the messages in the pull layout.
pub fn query(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let h = Header::of(req);
    let mut r = Command::response_to(req, SUCCESS, None);
    if req.code == VIEW_MESSAGE_BY_ID {
        let rec = rb.broker.read_at(h.num("offset")?).map_err(|e| (SYSTEM_ERROR, refusal(&e).1))?;
        encode_message(&rec, &rb.store_host, &mut r.body);
        return Ok(r);
    }
    let (topic, key) = (h.text("topic")?, h.text("key")?);
    let max = h.opt_num::<usize>("maxNum")?.unwrap_or(32).clamp(1, MAX_QUERY);
    let (begin, end) =
        (h.opt_num::<u64>("beginTimestamp")?.unwrap_or(0), h.opt_num::<u64>("endTimestamp")?.unwrap_or(u64::MAX));
    let by_id = req.ext.get("_UNIQUE_KEY_QUERY").is_some_and(|v| v == "true");
    let index_key = if by_id { format!("#id#{key}") } else { format!("{topic}#{key}") };
    let found: Vec<_> = rb
        .broker
        .store()
        .query_index(&index_key, max)
        .into_iter()
        .filter(|m| m.topic == topic && (by_id || (begin..=end).contains(&m.store_timestamp)))
        .collect();
    if found.is_empty() {
        return Err((QUERY_NOT_FOUND, "can not find message, maybe time range not correct".into()));
    }
    let last = found.iter().map(|m| (m.store_timestamp, m.physical_offset)).max().unwrap_or_default();
    r.put("indexLastUpdateTimestamp", last.0).put("indexLastUpdatePhyoffset", last.1);
    for m in &found {
        encode_message(m, &rb.store_host, &mut r.body);
    }
    Ok(r)
}
