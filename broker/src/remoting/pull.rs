//! PULL_MESSAGE and LITE_PULL_MESSAGE (RocketMQ `PullMessageProcessor`, REMOTING.md §2a): a
//! commit of the consumer's offset riding on the pull, the subscription's filter, and a long
//! poll while the queue has nothing new.

use std::time::Duration;

use super::broker::{refusal, RemotingBroker};
use super::codes::*;
use super::command::Command;
use super::header::{Header, Refusal};
use super::wire::encode_message;
use crate::broker::BrokerError;
use crate::consume::filter::{Filter, TagFilter};
use crate::consume::sql::SqlFilter;

/// sysFlag: the request commits `commitOffset` (`PullSysFlag`).
const COMMIT_OFFSET: u32 = 0x1;
/// sysFlag: hold the pull while nothing is new.
const SUSPEND: u32 = 0x2;
/// sysFlag: the subscription is in the header (else the heartbeat's is used).
const SUBSCRIPTION: u32 = 0x4;
/// Longest a pull is held, ms, whatever the client asks (its own timeout is 30 s by default).
const MAX_SUSPEND_MS: u64 = 30_000;
/// Most messages one pull returns.
const MAX_PULL_BATCH: usize = 1024;

/// The filter of an expression of `kind` (`TAG` or `SQL92`). Errors: SUBSCRIPTION_PARSE_FAILED.
pub(super) fn filter_of(expr: &str, kind: Option<&str>) -> Result<Filter, Refusal> {
    match kind {
        Some(k) if k.eq_ignore_ascii_case("SQL92") => SqlFilter::parse(expr).map(Filter::Sql),
        _ => TagFilter::parse(expr).map(Filter::Tag),
    }
    .map_err(|e| (SUBSCRIPTION_PARSE_FAILED, format!("cannot parse subscription {expr:?}: {e}")))
}

/// The filter of `group`'s subscription to `topic` as its members' heartbeats gave it; every
/// message when none did. Errors: SUBSCRIPTION_PARSE_FAILED.
pub(super) fn heartbeat_filter(rb: &RemotingBroker, group: &str, topic: &str) -> Result<Filter, Refusal> {
    match rb.clients.subscription(group, topic) {
        Some(s) => filter_of(&s.sub_string, s.expression_type.as_deref()),
        None => Ok(Filter::ALL),
    }
}

/// Handles one pull.
pub async fn pull(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let h = Header::of(req);
    let group = h.text("consumerGroup")?;
    let topic = h.text("topic")?;
    let q: u32 = h.num("queueId")?;
    let offset: u64 = h.num::<i64>("queueOffset")?.max(0) as u64;
    let max_msgs = h.num::<i64>("maxMsgNums")?.clamp(1, MAX_PULL_BATCH as i64) as usize;
    let sys_flag = h.num::<i32>("sysFlag")? as u32;
    let suspend_ms = h.opt_num::<i64>("suspendTimeoutMillis")?.unwrap_or(0).clamp(0, MAX_SUSPEND_MS as i64) as u64;
    let broker = &rb.broker;
    broker.group_or_create(group).map_err(|e| refusal(&e))?;
    broker.check_receivable(topic).map_err(|e| refusal(&e))?;
    if sys_flag & COMMIT_OFFSET != 0 {
        if let Some(commit) = h.opt_num::<i64>("commitOffset")?.filter(|c| *c >= 0) {
            if let Err(e) = broker.update_offset(group, topic, q, commit as u64).await {
                tracing::debug!(group, topic, queue = q, error = %e, "offset commit riding on a pull refused");
            }
        }
    }
    let filter = if sys_flag & SUBSCRIPTION != 0 {
        filter_of(h.get("subscription").unwrap_or("*"), h.get("expressionType"))?
    } else {
        heartbeat_filter(rb, group, topic)?
    };
    let store = broker.store();
    let mut found = broker.pull(topic, q, offset, max_msgs, &filter);
    if sys_flag & SUSPEND != 0 && suspend_ms > 0 && matches!(&found, Ok((m, next)) if m.is_empty() && *next <= offset) {
        found = broker.pull_long(topic, q, offset, max_msgs, &filter, Duration::from_millis(suspend_ms)).await;
    }
    let (min, max) = (store.min_queue_offset(topic, q), store.max_queue_offset(topic, q));
    let (code, next, msgs) = match found {
        Ok((msgs, next)) if !msgs.is_empty() => (SUCCESS, next, msgs),
        Ok((_, next)) if next > offset => (PULL_RETRY_IMMEDIATELY, next, Vec::new()),
        Ok(_) => (PULL_NOT_FOUND, offset, Vec::new()),
        // Past the end: the client starts again at the end (RocketMQ OFFSET_OVERFLOW_BADLY).
        Err(BrokerError::IllegalOffset(why)) => {
            let mut r = Command::response_to(req, PULL_OFFSET_MOVED, why);
            r.put("suggestWhichBrokerId", 0).put("nextBeginOffset", max).put("minOffset", min).put("maxOffset", max);
            return Ok(r);
        }
        Err(e) => return Err(refusal(&e)),
    };
    let mut r = Command::response_to(req, code, None);
    r.put("suggestWhichBrokerId", 0).put("nextBeginOffset", next).put("minOffset", min).put("maxOffset", max);
    for m in &msgs {
        encode_message(m, &rb.store_host, &mut r.body);
    }
    Ok(r)
}
