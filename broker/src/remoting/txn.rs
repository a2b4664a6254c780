//! Transactions over Remoting (RocketMQ `EndTransactionProcessor`, `Broker2Client`): END_TRANSACTION
//! from the producer, and CHECK_TRANSACTION_STATE to a connection of its producer group.

use std::sync::Arc;

use super::broker::{refusal, RemotingBroker};
use super::codes::*;
use super::command::Command;
use super::conn::Connection;
use super::header::{Header, Refusal};
use super::wire::{encode_message, offset_msg_id};
use crate::broker::Check;
use crate::store::PROP_MSG_ID;
use crate::txn::Resolution;

/// Property: the producer group of a transactional message (RocketMQ `PGROUP`).
pub const PROP_PRODUCER_GROUP: &str = "PGROUP";
/// `commitOrRollback` values (`MessageSysFlag.TRANSACTION_*_TYPE`).
const COMMIT: i32 = 0x8;
const ROLLBACK: i32 = 0xC;

/// END_TRANSACTION: commit (8), roll back (12) or leave open (0) the half message at queue offset
/// `tranStateTableOffset` of the half topic (what the send answered as `queueOffset`, and the
/// check-back as `tranStateTableOffset`); `msgId` must be its unique id. The half is found by its
/// position, as RocketMQ's `EndTransactionProcessor` finds it by `commitLogOffset`, not by
/// `transactionId`, which the Go client does not echo (its check-back header decoder drops it).
pub async fn end_transaction(rb: &RemotingBroker, req: &Command) -> Result<Command, Refusal> {
    let h = Header::of(req);
    let resolution = match h.num::<i32>("commitOrRollback")? {
        COMMIT => Some(Resolution::Commit),
        ROLLBACK => Some(Resolution::Rollback),
        _ => None,
    };
    let reason = if h.flag("fromTransactionCheck") { "check" } else { "client" };
    let topic = h.get("topic").unwrap_or("");
    let transaction_id = match h.opt_num::<u64>("tranStateTableOffset")? {
        Some(half) => crate::txn::transaction_id(half),
        None => h.text("transactionId")?.to_string(),
    };
    rb.broker
        .end_transaction(topic, h.text("msgId")?, &transaction_id, resolution, reason)
        .await
        .map_err(|e| refusal(&e))?;
    Ok(Command::response_to(req, SUCCESS, None))
}

/// A live Remoting connection of the producer group that sent the transaction: the message's
/// `PGROUP`, else the group it was sent under; with the group's name.
pub fn producer_of(rb: &RemotingBroker, c: &Check) -> Option<(String, Arc<Connection>)> {
    let group = c.message.properties.get(PROP_PRODUCER_GROUP).cloned().unwrap_or_else(|| c.client_id.clone());
    let conn = rb.clients.producer_connection(&group)?;
    Some((group, conn))
}

/// Sends CHECK_TRANSACTION_STATE for `c` on `conn` (oneway); false if its write queue is full or
/// it closed. The body is the message as it would be committed (real topic and queue).
pub fn check_back(rb: &RemotingBroker, conn: &Connection, c: &Check) -> bool {
    let m = &c.message;
    let mut body = Vec::new();
    encode_message(m, &rb.store_host, &mut body);
    let ext = [
        ("topic", m.topic.clone()),
        ("tranStateTableOffset", m.queue_offset.to_string()),
        ("commitLogOffset", m.physical_offset.to_string()),
        ("msgId", m.properties.get(PROP_MSG_ID).cloned().unwrap_or_default()),
        ("transactionId", c.transaction_id.clone()),
        ("offsetMsgId", offset_msg_id(&rb.store_host, m.physical_offset)),
    ];
    conn.try_notify(CHECK_TRANSACTION_STATE, &ext, body)
}
