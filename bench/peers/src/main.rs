//! `peer-bench`: one load generator for Ferrocket, NATS JetStream and RabbitMQ, so that
//! docs/BENCHMARKS.md compares them with the same publishers, in-flight window, body size and
//! duration (issue "the cost of one call"). scripts/bench.py --peers starts the servers and runs it.
//!
//! - Ferrocket: `ferrocket bench` itself (the RocketMQ 5 gRPC calls of the official clients); a
//!   publisher's window of `--batch` messages is one SendMessage call. With `--protocol remoting`
//!   (sends only) it sends as the Java Remoting producer does: SEND_MESSAGE_V2, or one
//!   SEND_BATCH_MESSAGE per window.
//! - NATS JetStream: async-nats; a publisher publishes `--batch` messages to a file-store stream and
//!   then awaits their PubAcks. Consumers share one durable pull consumer (explicit acks) and fetch
//!   up to 32 messages per pull.
//! - RabbitMQ: lapin; a publisher has its own channel in confirm mode and publishes `--batch`
//!   persistent messages to a durable queue (`--queue-type classic` or `quorum`), then awaits their
//!   confirms. Consumers each have a channel with a prefetch of 32 and ack every delivery.
//!
//! Prints the report of `ferrocket bench --json` (messages, msgs/s, call latency percentiles in ms,
//! errors); a call is one window of `--batch` messages, or one fetch (NATS) or delivery (RabbitMQ).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ferrocket::bench::{BenchOpts, BenchReport, Mode, Side};
use futures_util::StreamExt;

/// The system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum System {
    Ferrocket,
    Nats,
    Rabbitmq,
}

/// RabbitMQ's queue types: classic (written to disk lazily) or quorum (Raft, fsync before confirm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum QueueType {
    Classic,
    Quorum,
}

#[derive(Debug, Parser)]
#[command(name = "peer-bench", about = "One load generator for Ferrocket, NATS JetStream and RabbitMQ")]
struct Cli {
    /// Which server `--server` is (NATS: its client port; RabbitMQ: its AMQP port, user guest).
    #[arg(long, value_enum)]
    system: System,
    /// RabbitMQ only: the queue's type.
    #[arg(long, value_enum, default_value_t = QueueType::Classic)]
    queue_type: QueueType,
    /// The run; `--batch` is each publisher's in-flight window and `--messages` ends a consume run.
    #[command(flatten)]
    opts: BenchOpts,
}

/// Publishers (and consumers) per server connection, as `ferrocket bench` shares its channels.
const TASKS_PER_CONNECTION: usize = 8;
/// Messages a consumer asks for at once: NATS's fetch size, RabbitMQ's prefetch, Ferrocket's
/// ReceiveMessage batch.
const CONSUMER_BATCH: usize = 32;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let o = cli.opts.clone();
    anyhow::ensure!(matches!(o.mode, Mode::Produce | Mode::Consume), "--mode is produce or consume");
    let report = match cli.system {
        System::Ferrocket => ferrocket::bench::run(o).await?,
        System::Nats => nats(&o).await?,
        System::Rabbitmq => rabbitmq(&o, cli.queue_type).await?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Runs `task(i)` for each of `--concurrency` tasks until `--duration` ends or, in a consume run
/// with `--messages`, until that many were counted; then reports `side`.
async fn drive<F, Fut>(o: &BenchOpts, side: Arc<Side>, stop: Arc<AtomicBool>, task: F) -> BenchReport
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..o.concurrency).map(|i| tokio::spawn(task(i))).collect();
    let deadline = tokio::time::Instant::now() + o.duration;
    let messages = if o.mode == Mode::Consume { o.messages } else { 0 };
    ferrocket::bench::wait_for_messages(&side, messages, deadline).await;
    stop.store(true, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let report = side.report(secs, o.size);
    let produce = o.mode == Mode::Produce;
    BenchReport {
        size: o.size,
        concurrency: o.concurrency,
        batch: o.batch,
        topics: None,
        seconds: secs,
        produce: produce.then(|| report.clone()),
        consume: (!produce).then_some(report),
    }
}

/// NATS JetStream: stream `--topic` (file storage, subject `--topic`) and durable pull consumer
/// `--group`, both created if absent. Errors: the server cannot be reached or refuses them.
async fn nats(o: &BenchOpts) -> anyhow::Result<BenchReport> {
    use async_nats::jetstream::{self, consumer, stream};
    let mut contexts = Vec::new();
    for _ in 0..o.concurrency.div_ceil(TASKS_PER_CONNECTION).max(1) {
        let client = async_nats::connect(o.server.as_str()).await.context("connecting to NATS")?;
        contexts.push(jetstream::new(client));
    }
    let config = stream::Config {
        name: o.topic.clone(),
        subjects: vec![o.topic.clone()],
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let stream = contexts[0].get_or_create_stream(config).await.context("creating the stream")?;
    let (side, stop) = (Side::new(), Arc::new(AtomicBool::new(false)));
    let body = bytes::Bytes::from(vec![b'x'; o.size]);
    if o.mode == Mode::Produce {
        let (batch, subject) = (o.batch.max(1), o.topic.clone());
        return Ok(drive(o, side.clone(), stop.clone(), |i| {
            let (js, side, stop, body, subject) =
                (contexts[i % contexts.len()].clone(), side.clone(), stop.clone(), body.clone(), subject.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let mut acks = Vec::with_capacity(batch);
                    let mut failed = None;
                    for _ in 0..batch {
                        match js.publish(subject.clone(), body.clone()).await {
                            Ok(ack) => acks.push(ack),
                            Err(e) => failed = Some(format!("publish: {e}")),
                        }
                    }
                    for ack in acks {
                        if let Err(e) = ack.await {
                            failed = Some(format!("publish ack: {e}"));
                        }
                    }
                    match failed {
                        None => side.record(start, batch as u64),
                        Some(why) => side.failed(why),
                    }
                }
            }
        })
        .await);
    }
    let durable = consumer::pull::Config {
        durable_name: Some(o.group.clone()),
        ack_policy: consumer::AckPolicy::Explicit,
        max_ack_pending: (o.concurrency * CONSUMER_BATCH * 4) as i64,
        ..Default::default()
    };
    let pull: consumer::PullConsumer =
        stream.get_or_create_consumer(&o.group, durable).await.context("creating the consumer")?;
    Ok(drive(o, side.clone(), stop.clone(), |_| {
        let (pull, side, stop) = (pull.clone(), side.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let fetched = pull.fetch().max_messages(CONSUMER_BATCH).expires(Duration::from_secs(1)).messages();
                let mut batch = match fetched.await {
                    Ok(batch) => batch,
                    Err(e) => {
                        side.failed(format!("fetch: {e}"));
                        continue;
                    }
                };
                let (mut n, mut failed) = (0, None);
                while let Some(m) = batch.next().await {
                    match m {
                        Ok(m) => {
                            if let Err(e) = m.ack().await {
                                failed = Some(format!("ack: {e}"));
                            }
                            n += 1;
                        }
                        Err(e) => failed = Some(format!("message: {e}")),
                    }
                }
                match failed {
                    Some(why) => side.failed(why),
                    None if n > 0 => side.record(start, n),
                    None => {}
                }
            }
        }
    })
    .await)
}

/// RabbitMQ: durable queue `--topic` of `queue_type` on the default exchange, declared if absent.
/// Errors: the server cannot be reached or refuses the declaration.
async fn rabbitmq(o: &BenchOpts, queue_type: QueueType) -> anyhow::Result<BenchReport> {
    use lapin::options::*;
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let uri = format!("amqp://guest:guest@{}/%2f", o.server);
    let mut connections = Vec::new();
    for _ in 0..o.concurrency.div_ceil(TASKS_PER_CONNECTION).max(1) {
        connections.push(Connection::connect(&uri, ConnectionProperties::default()).await.context("connecting")?);
    }
    let mut arguments = FieldTable::default();
    let kind = match queue_type {
        QueueType::Classic => "classic",
        QueueType::Quorum => "quorum",
    };
    arguments.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
    let setup = connections[0].create_channel().await?;
    setup
        .queue_declare(o.topic.as_str().into(), QueueDeclareOptions::durable(), arguments)
        .await
        .context("declaring the queue")?;
    let mut channels = Vec::new();
    for i in 0..o.concurrency {
        let channel = connections[i % connections.len()].create_channel().await?;
        match o.mode {
            Mode::Produce => channel.confirm_select(ConfirmSelectOptions::default()).await?,
            _ => channel.basic_qos(CONSUMER_BATCH as u16, BasicQosOptions::default()).await?,
        }
        channels.push(channel);
    }
    let (side, stop) = (Side::new(), Arc::new(AtomicBool::new(false)));
    let body = Arc::new(vec![b'x'; o.size]);
    if o.mode == Mode::Produce {
        let batch = o.batch.max(1);
        return Ok(drive(o, side.clone(), stop.clone(), |i| {
            let (channel, side, stop, body, queue) =
                (channels[i].clone(), side.clone(), stop.clone(), body.clone(), o.topic.clone());
            async move {
                let persistent = BasicProperties::default().with_delivery_mode(2);
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let mut confirms = Vec::with_capacity(batch);
                    let mut failed = None;
                    for _ in 0..batch {
                        let sent = channel
                            .basic_publish(
                                "".into(),
                                queue.as_str().into(),
                                BasicPublishOptions::default(),
                                &body,
                                persistent.clone(),
                            )
                            .await;
                        match sent {
                            Ok(confirm) => confirms.push(confirm),
                            Err(e) => failed = Some(format!("basic.publish: {e}")),
                        }
                    }
                    for confirm in confirms {
                        match confirm.await {
                            Ok(c) if c.is_ack() => {}
                            Ok(_) => failed = Some("the broker nacked the publish".to_string()),
                            Err(e) => failed = Some(format!("publish confirm: {e}")),
                        }
                    }
                    match failed {
                        None => side.record(start, batch as u64),
                        Some(why) => side.failed(why),
                    }
                }
            }
        })
        .await);
    }
    Ok(drive(o, side.clone(), stop.clone(), |i| {
        let (channel, side, stop, queue) = (channels[i].clone(), side.clone(), stop.clone(), o.topic.clone());
        async move {
            let tag = format!("peer-bench-{i}");
            let consumed = channel.basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                Default::default(),
                Default::default(),
            );
            let mut deliveries = match consumed.await {
                Ok(deliveries) => deliveries,
                Err(e) => return side.failed(format!("basic.consume: {e}")),
            };
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let next = tokio::time::timeout(Duration::from_secs(1), deliveries.next()).await;
                match next {
                    Ok(Some(Ok(d))) => match d.ack(BasicAckOptions::default()).await {
                        Ok(_) => side.record(start, 1),
                        Err(e) => side.failed(format!("basic.ack: {e}")),
                    },
                    Ok(Some(Err(e))) => side.failed(format!("delivery: {e}")),
                    Ok(None) => side.failed("the consumer was cancelled"),
                    Err(_) => {} // nothing left to deliver within 1 s
                }
            }
        }
    })
    .await)
}
