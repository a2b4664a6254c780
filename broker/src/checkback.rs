//! The check-back service: asks producers about transactions left open too long (RocketMQ
//! `TransactionalMessageCheckService`), over the protocol the producer speaks: a gRPC producer by
//! `RecoverOrphanedTransactionCommand` on its Telemetry stream (it answers with EndTransaction,
//! `source = SOURCE_SERVER_CHECK`), a Remoting producer group by CHECK_TRANSACTION_STATE on one
//! of its connections (it answers with END_TRANSACTION, `fromTransactionCheck = true`). The
//! engine decides what is due and counts each check in the CommitLog; this task only delivers
//! them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::broker::{Broker, Check, CheckOutcome};
use crate::grpc::clients::Clients;
use crate::grpc::convert::record_to_wire;
use crate::proto::v2::{telemetry_command::Command, RecoverOrphanedTransactionCommand, TelemetryCommand};
use crate::remoting::broker::RemotingBroker;

/// Most check-backs handed out per tick, over all producers (a backlog drains over several ticks
/// instead of becoming a check storm).
const MAX_CHECKS_PER_TICK: usize = 1000;
/// Most check-backs sent to one producer per tick.
const MAX_CHECKS_PER_PRODUCER_PER_TICK: usize = 100;

/// Runs until `stopping` turns true. It wakes every `min(timeout, interval, 1 s)`, so checks are
/// sent close to when they fall due.
pub fn spawn(
    broker: Arc<Broker>,
    clients: Arc<Clients>,
    remoting: Arc<RemotingBroker>,
    mut stopping: watch::Receiver<bool>,
) {
    let cfg = broker.config();
    let tick = cfg.transaction_timeout_ms.min(cfg.transaction_check_interval_ms).clamp(50, 1000);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(tick)) => {}
                _ = stopping.changed() => return,
            }
            if broker.is_slave() {
                continue;
            }
            let (b, clients, remoting) = (broker.clone(), clients.clone(), remoting.clone());
            let _ = tokio::task::spawn_blocking(move || {
                let mut sent: HashMap<String, usize> = HashMap::new();
                b.run_checks(crate::store::now_ms(), MAX_CHECKS_PER_TICK, |c| {
                    deliver(&clients, &remoting, &mut sent, c)
                })
            })
            .await;
        }
    });
}

/// Sends one check-back to the producer that sent the half message, else to any gRPC producer
/// of its topic, else to a Remoting connection of its producer group; at most
/// [`MAX_CHECKS_PER_PRODUCER_PER_TICK`] per producer (`sent` counts this tick's).
fn deliver(clients: &Clients, remoting: &RemotingBroker, sent: &mut HashMap<String, usize>, c: &Check) -> CheckOutcome {
    // The producer, and how to hand it the check without waiting (false: its queue is full).
    let (producer, send): (String, Box<dyn FnOnce() -> bool + '_>) =
        if let Some((id, session)) = clients.producer_for(&c.client_id, &c.topic) {
            let cmd = TelemetryCommand {
                status: None,
                command: Some(Command::RecoverOrphanedTransactionCommand(RecoverOrphanedTransactionCommand {
                    message: Some(record_to_wire(&c.message, None, "")),
                    transaction_id: c.transaction_id.clone(),
                })),
            };
            (id, Box::new(move || session.tx.try_send(Ok(cmd)).is_ok()))
        } else if let Some((group, conn)) = crate::remoting::txn::producer_of(remoting, c) {
            (group, Box::new(move || crate::remoting::txn::check_back(remoting, &conn, c)))
        } else {
            tracing::debug!(transaction = %c.transaction_id, topic = %c.topic, "no live producer to check back with");
            return CheckOutcome::NoProducer;
        };
    let n = sent.entry(producer).or_default();
    if *n >= MAX_CHECKS_PER_PRODUCER_PER_TICK {
        return CheckOutcome::Deferred;
    }
    if !send() {
        return CheckOutcome::Deferred; // the stream or connection is full: ask again next tick
    }
    *n += 1;
    CheckOutcome::Sent
}
