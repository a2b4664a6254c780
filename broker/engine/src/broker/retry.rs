//! Sending a consumed message back for another attempt, as RocketMQ's broker does for Remoting
//! consumers (`AbstractSendMessageProcessor.consumerSendMsgBack`, REMOTING.md §2b): a copy goes
//! to the group's retry topic `%RETRY%<group>` after its delay level, or to `%DLQ%<group>` once
//! the message has been reconsumed `max_reconsume_times` times.

use super::{Broker, BrokerError};
use crate::consume::groups::RETRY_PREFIX;
use crate::store::now_ms;
use crate::store::record::{peek, Peek, Record};
use crate::store::{RecordClass, PROP_MSG_ID};
use crate::topics::TopicConfig;

/// Property: the topic a retried message was first sent to (RocketMQ `RETRY_TOPIC`).
pub const PROP_RETRY_TOPIC: &str = "RETRY_TOPIC";
/// Property: the message id of the first copy (RocketMQ `ORIGIN_MESSAGE_ID`).
pub const PROP_ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";
/// Property: the delay level of a message (RocketMQ `DELAY`).
pub const PROP_DELAY_LEVEL: &str = "DELAY";
/// Reconsume count a consumer allows when it does not say (RocketMQ `maxReconsumeTimes`, 16).
const DEFAULT_MAX_RECONSUME_TIMES: u32 = 16;

/// A CONSUMER_SEND_MSG_BACK request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendBack {
    /// The consumer group.
    pub group: String,
    /// CommitLog offset of the consumed message.
    pub commitlog_offset: u64,
    /// 0: the next level for its reconsume count (3 + count); > 0: this level; < 0: dead-letter now.
    pub delay_level: i32,
    /// Reconsumes allowed before the DLQ (the consumer's setting; 16 if absent).
    pub max_reconsume_times: Option<u32>,
    /// The first copy's message id, if the consumer names it.
    pub origin_msg_id: Option<String>,
}

/// Where a sent-back message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentBack {
    /// To the retry topic, due at this time (ms since the epoch).
    Retry {
        /// Delivery time, ms since the epoch.
        due_ms: u64,
    },
    /// To the DLQ.
    DeadLettered,
}

impl Broker {
    /// The record at CommitLog offset `offset`. Errors: [`BrokerError::IllegalOffset`] if no
    /// message starts there; store errors.
    pub fn read_at(&self, offset: u64) -> Result<Record, BrokerError> {
        let prefix = self.store.read_raw(offset, 8).unwrap_or_default();
        match peek(&prefix) {
            Ok(Peek::Message(size)) => Ok(self.store.read_record(offset, size)?),
            _ => Err(BrokerError::IllegalOffset(format!("no message at CommitLog offset {offset}"))),
        }
    }

    /// The delivery time of delay level `level` from `now` (ms since the epoch): levels count
    /// from 1, and one past the last is the last (RocketMQ `messageDelayLevel`). None for 0.
    pub fn delay_level_due(&self, level: u32, now: u64) -> Option<u64> {
        let levels = &self.cfg.delay_levels;
        let i = (level as usize).min(levels.len()).checked_sub(1)?;
        Some(now + levels[i].as_millis() as u64)
    }

    /// The consumer group's retry topic, created (one queue) on first use: a Remoting push
    /// consumer subscribes to it from its first heartbeat on (RocketMQ creates it then too).
    /// Errors: as [`Broker::group_or_create`], an illegal name, I/O.
    pub fn retry_topic_or_create(&self, group: &str) -> Result<TopicConfig, BrokerError> {
        let g = self.group_or_create(group)?;
        self.group_topic_or_create(&g.retry_topic())
    }

    /// Where a message a producer sends to `topic` goes: a send to `%RETRY%<group>` (a
    /// consumer's fallback when CONSUMER_SEND_MSG_BACK failed) of a message already reconsumed
    /// more than `max_reconsume_times` (16 if absent) goes to `%DLQ%<group>` instead, as RocketMQ's
    /// `handleRetryAndDLQ` sends it; both are created on first use. Any other topic is itself.
    /// Errors: as [`Broker::group_or_create`], I/O.
    pub fn send_target(
        &self,
        topic: &str,
        reconsume_times: u32,
        max_reconsume_times: Option<u32>,
    ) -> Result<String, BrokerError> {
        let Some(group) = topic.strip_prefix(RETRY_PREFIX) else { return Ok(topic.to_string()) };
        let g = self.group_or_create(group)?;
        let target = if reconsume_times > max_reconsume_times.unwrap_or(DEFAULT_MAX_RECONSUME_TIMES) {
            g.dlq_topic()
        } else {
            g.retry_topic()
        };
        Ok(self.group_topic_or_create(&target)?.name)
    }

    /// Stores the copy for [`Broker::send_back`]; returns where it went and the CommitLog end to
    /// make durable.
    pub(crate) fn send_back_now(&self, req: &SendBack) -> Result<(SentBack, u64), BrokerError> {
        let g = self.group_or_create(&req.group)?;
        let mut rec = self.read_at(req.commitlog_offset)?;
        let origin_topic = rec.properties.get(PROP_RETRY_TOPIC).cloned().unwrap_or_else(|| rec.topic.clone());
        if !origin_topic.starts_with(RETRY_PREFIX) {
            rec.properties.insert(PROP_RETRY_TOPIC.into(), origin_topic);
        }
        let origin_id = req.origin_msg_id.clone().filter(|s| !s.is_empty());
        let origin_id = origin_id.or_else(|| rec.properties.get(PROP_ORIGIN_MESSAGE_ID).cloned());
        if let Some(id) = origin_id.or_else(|| rec.properties.get(PROP_MSG_ID).cloned()) {
            rec.properties.insert(PROP_ORIGIN_MESSAGE_ID.into(), id);
        }
        rec.properties.remove(PROP_DELAY_LEVEL);
        let times = rec.reconsume_times;
        let max = req.max_reconsume_times.unwrap_or(DEFAULT_MAX_RECONSUME_TIMES);
        rec.reconsume_times = times + 1;
        rec.queue_id = 0;
        rec.prepared_transaction_offset = 0;
        if times >= max || req.delay_level < 0 {
            rec.topic = self.group_topic_or_create(&g.dlq_topic())?.name;
            let r = self.store.append(&mut rec, true, RecordClass::Control)?;
            tracing::info!(group = %g.name, offset = req.commitlog_offset, reconsumed = times, "message sent back to the DLQ");
            self.metrics.consume.dead_lettered.inc();
            return Ok((SentBack::DeadLettered, r.end));
        }
        rec.topic = self.group_topic_or_create(&g.retry_topic())?.name;
        let level = if req.delay_level == 0 { 3 + times } else { req.delay_level as u32 };
        let now = now_ms();
        let due = self.delay_level_due(level, now).unwrap_or(now);
        let (_, end, _) = self.append_scheduled(&mut rec, due, false)?;
        Ok((SentBack::Retry { due_ms: due }, end))
    }
}
