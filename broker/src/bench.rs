//! `ferrocket bench`: load generator speaking the RocketMQ 5 gRPC protocol (the same calls the
//! official clients make), for throughput and latency figures (docs/BENCHMARKS.md). It drives
//! Ferrocket and Apache RocketMQ's proxy alike: every call carries a client id, and receivers
//! announce their subscription on a Telemetry stream first, as the official clients do.
//! `--protocol remoting` sends as the Java Remoting producer does instead ([`remoting`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::proto::requests::{self, resource as res};
use crate::proto::v2::messaging_service_client::MessagingServiceClient;
use crate::proto::v2::*;

pub mod remoting;

/// Which protocol the load speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// RocketMQ 5 gRPC, the calls of the official 5.x clients.
    Grpc,
    /// RocketMQ Remoting, as the Java `DefaultMQProducer` sends ([`remoting`]; senders only).
    Remoting,
}

/// Which sides to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Senders only.
    Produce,
    /// Receivers only (of what is already stored).
    Consume,
    /// Both at once.
    Both,
    /// Senders of TRANSACTION messages, each committed with EndTransaction (three records each).
    Tx,
    /// Senders of TRANSACTION messages left open (to measure the broker with many pending).
    TxOpen,
}

impl Mode {
    fn sends(self) -> bool {
        self != Mode::Consume
    }
    fn receives(self) -> bool {
        matches!(self, Mode::Consume | Mode::Both)
    }
    fn transactional(self) -> bool {
        matches!(self, Mode::Tx | Mode::TxOpen)
    }
}

/// What to run (also the `ferrocket bench` flags).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOpts {
    /// Broker address, `host:port`: its gRPC port, or its Remoting port with `--protocol remoting`.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub server: String,
    /// The protocol of the load.
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    pub protocol: Protocol,
    /// Topic to send to and receive from (auto-created in standalone mode).
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Consumer group of the receivers.
    #[arg(long, default_value = "bench-group")]
    pub group: String,
    /// Spread the load over this many topics, `<topic>-0` to `<topic>-<N-1>`, each created first
    /// through the Admin service (the time it took is reported); receivers consume topic i as
    /// group `<group>-<i>`. 1: `--topic` and `--group` themselves.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// Body size, bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Concurrent senders (and as many receivers).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Messages per SendMessage call, all to one topic (the protocol allows several).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// How long to run, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Which sides to run.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,
    /// Stop sending after this many messages, or, for `--mode consume`, stop once this many were
    /// received (0: no limit; the run still ends at --duration).
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// Send DELAY messages due this long after the run starts, e.g. `30s` (needs --messages).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay_after: Option<Duration>,
    /// Spread the due times of the --messages DELAY messages evenly over this long after
    /// --delay-after, e.g. `10s`: messages / spread is the due rate.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub delay_spread: Duration,
    /// How long a received message stays invisible, e.g. `60s` (the receive's invisible duration;
    /// the broker bounds it, 10 s to 12 h by default).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub invisible: Duration,
    /// Receivers never ack: what they receive stays in flight for --invisible (to measure the
    /// broker with many messages in flight).
    #[arg(long)]
    pub no_ack: bool,
    /// Send FIFO messages over this many message groups (`g0` to `g<N-1>`, in turn), to topics
    /// created first through the Admin service, and receive as FIFO consumer groups (made so
    /// through it): the broker hands out a message only after the previous one of its message
    /// group is acked. 0: normal messages and groups.
    #[arg(long, default_value_t = 0)]
    pub message_groups: u64,
    /// Send at most this many messages per second over all senders (0: as fast as they can).
    /// Each message then carries its send time, and receivers report end-to-end latency.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

/// Results of one side.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SideReport {
    /// Messages sent (or received and acked) successfully.
    pub messages: u64,
    /// Messages per second over the run.
    pub msgs_per_sec: f64,
    /// Body bytes per second, MiB/s.
    pub mib_per_sec: f64,
    /// Call latency percentiles, ms (send: SendMessage; receive: ReceiveMessage + AckMessage).
    pub p50_ms: f64,
    /// 99th percentile call latency, ms.
    pub p99_ms: f64,
    /// 99.9th percentile call latency, ms.
    pub p999_ms: f64,
    /// Calls that failed or returned a non-OK status.
    pub errors: u64,
    /// Why the first of them failed (the gRPC error or the response status), if any did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Receive side, DELAY messages only: how long after its delivery time each message was
    /// received, ms (p50, p99, p999, max).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lateness_ms: Option<[f64; 4]>,
    /// Receive side, with `--rate`: receive time minus send time of each message, ms (p50, p99,
    /// p999, max).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2e_ms: Option<[f64; 4]>,
}

/// Results of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Body size, bytes.
    pub size: usize,
    /// Concurrent senders (and receivers).
    pub concurrency: usize,
    /// Messages per SendMessage call.
    pub batch: usize,
    /// With `--topics` above 1: how many topics the run spread over, and the seconds it took to
    /// create them (32 at a time) before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topics: Option<(usize, f64)>,
    /// Measured run time, s.
    pub seconds: f64,
    /// Send side, if run.
    pub produce: Option<SideReport>,
    /// Receive side, if run.
    pub consume: Option<SideReport>,
}

/// The counters and call-latency histogram of one side of a run, shared by its tasks; also used
/// by the peer load generator (bench/peers) so every system is measured the same way.
pub struct Side {
    count: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    hist: Mutex<Histogram<u64>>,
    /// Receive time minus delivery time of DELAY messages, µs.
    late: Mutex<Histogram<u64>>,
    /// Receive time minus send time (`--rate` runs), µs.
    e2e: Mutex<Histogram<u64>>,
}

/// Waits until `side` has counted `messages` (looking every 20 ms; 0: no count ends the wait) or
/// `deadline` passes.
pub async fn wait_for_messages(side: &Side, messages: u64, deadline: tokio::time::Instant) {
    if messages == 0 {
        return tokio::time::sleep_until(deadline).await;
    }
    while side.messages() < messages && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Side {
    /// An empty side.
    pub fn new() -> Arc<Side> {
        Arc::new(Side {
            count: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            hist: Mutex::new(Histogram::new(3).expect("3 sig figs")),
            late: Mutex::new(Histogram::new(3).expect("3 sig figs")),
            e2e: Mutex::new(Histogram::new(3).expect("3 sig figs")),
        })
    }
    /// Messages counted so far.
    pub fn messages(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    /// Counts one failed call; the first failure's `why` goes into the report.
    pub fn failed(&self, why: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().get_or_insert_with(|| why.to_string());
    }
    /// Records one successful call that started at `start`, of `n` messages (a failed one is
    /// [`Side::failed`]).
    pub fn record(&self, start: Instant, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
        let _ = self.hist.lock().record(start.elapsed().as_micros() as u64);
    }
    /// The report of a run of `secs` seconds with bodies of `size` bytes.
    pub fn report(&self, secs: f64, size: usize) -> SideReport {
        let h = self.hist.lock();
        let n = self.count.load(Ordering::Relaxed);
        let q = |p| h.value_at_quantile(p) as f64 / 1000.0;
        SideReport {
            messages: n,
            msgs_per_sec: n as f64 / secs,
            mib_per_sec: n as f64 * size as f64 / secs / (1 << 20) as f64,
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            errors: self.errors.load(Ordering::Relaxed),
            first_error: self.first_error.lock().clone(),
            lateness_ms: quantiles_ms(&self.late.lock()),
            e2e_ms: quantiles_ms(&self.e2e.lock()),
        }
    }
}

/// p50, p99, p999 and max of a histogram of µs, in ms; None if it is empty.
fn quantiles_ms(h: &Histogram<u64>) -> Option<[f64; 4]> {
    let q = |p| h.value_at_quantile(p) as f64 / 1000.0;
    (!h.is_empty()).then(|| [q(0.5), q(0.99), q(0.999), h.max() as f64 / 1000.0])
}

/// User property holding a message's send time, µs since the Unix epoch (`--rate` runs).
const SENT_AT: &str = "bench-sent-us";

/// Adds the headers the official clients send on every call (`x-mq-client-id`, `x-mq-language`,
/// `x-mq-protocol`; apache/rocketmq-clients `Signature`). Apache RocketMQ's proxy refuses a call
/// without a client id (CLIENT_ID_REQUIRED) and finds a receive's subscription by it.
#[derive(Clone)]
struct ClientHeaders(AsciiMetadataValue);

impl tonic::service::Interceptor for ClientHeaders {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let m = req.metadata_mut();
        m.insert("x-mq-client-id", self.0.clone());
        m.insert("x-mq-language", AsciiMetadataValue::from_static("RUST"));
        m.insert("x-mq-protocol", AsciiMetadataValue::from_static("v2"));
        Ok(req)
    }
}

type Client = MessagingServiceClient<InterceptedService<Channel, ClientHeaders>>;

/// Announces a SimpleConsumer of `group` on `topic` (all tags) over a Telemetry stream and waits
/// (at most 10 s) for the broker's answer, as the official clients do before their first receive.
/// The returned stream must stay open while the receivers run. Errors: the call fails or the
/// broker answers with a non-OK status.
async fn announce_consumer(
    c: &mut Client,
    group: &str,
    topic: &str,
) -> anyhow::Result<tonic::Streaming<TelemetryCommand>> {
    let ms = |ms: u64| prost_types::Duration { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 };
    let settings = Settings {
        client_type: Some(ClientType::SimpleConsumer as i32),
        request_timeout: Some(ms(10_000)),
        pub_sub: Some(settings::PubSub::Subscription(Subscription {
            group: res(group),
            subscriptions: vec![SubscriptionEntry {
                topic: res(topic),
                expression: Some(FilterExpression { r#type: FilterType::Tag as i32, expression: "*".into() }),
            }],
            fifo: Some(false),
            receive_batch_size: Some(32),
            long_polling_timeout: Some(ms(RECEIVE_POLL_MS)),
            ..Default::default()
        })),
        user_agent: Some(Ua {
            language: Language::Rust as i32,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let command = TelemetryCommand { status: None, command: Some(telemetry_command::Command::Settings(settings)) };
    // The request stream stays open (pending after the settings): closing it ends the session.
    let outbound = tokio_stream::StreamExt::chain(tokio_stream::once(command), tokio_stream::pending());
    let mut replies = c.telemetry(outbound).await?.into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), replies.message()).await;
    let reply = first.map_err(|_| anyhow::anyhow!("no answer to the consumer's settings within 10 s"))??;
    let status = reply.and_then(|r| r.status);
    anyhow::ensure!(status.is_none() || requests::ok(&status), "settings refused: {status:?}");
    Ok(replies)
}

/// `Ok` for an OK response status, else the status as text (code and message).
fn refusal(status: Option<&Status>) -> Result<(), String> {
    match status {
        Some(s) if s.code == Code::Ok as i32 => Ok(()),
        Some(s) => {
            Err(format!("status {:?} ({}): {}", Code::try_from(s.code).unwrap_or(Code::Unspecified), s.code, s.message))
        }
        None => Err("a response without a status".into()),
    }
}

/// Commits each of a send's half messages (the real message and the op record follow). Errors:
/// the first EndTransaction that fails, as text.
async fn commit(c: &mut Client, topic: &str, entries: Vec<SendResultEntry>) -> Result<(), String> {
    for e in entries {
        let end = EndTransactionRequest {
            topic: res(topic),
            message_id: e.message_id,
            transaction_id: e.transaction_id,
            resolution: TransactionResolution::Commit as i32,
            source: TransactionSource::SourceClient as i32,
            trace_context: String::new(),
        };
        let r = c.end_transaction(end).await.map_err(|e| e.to_string())?;
        refusal(r.get_ref().status.as_ref())?;
    }
    Ok(())
}

/// `base` alone for `n` = 1, else `base-0` to `base-<n-1>`.
fn names(base: &str, n: usize) -> Vec<String> {
    match n {
        0 | 1 => vec![base.to_string()],
        n => (0..n).map(|i| format!("{base}-{i}")).collect(),
    }
}

/// Creates `topics` (8 queues, as `mqadmin updateTopic` makes; every message type) through the Admin
/// service, 32 calls at a time; returns the seconds it took. Errors: a call that fails.
async fn create_topics(ch: &Channel, topics: &Arc<Vec<String>>) -> anyhow::Result<f64> {
    use ferrocket_proto::admin::{admin_client::AdminClient, CreateTopicRequest, TopicConfig};
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..32 {
        let (mut admin, topics) = (AdminClient::new(ch.clone()), topics.clone());
        tasks.push(tokio::spawn(async move {
            for name in topics.iter().skip(k).step_by(32) {
                let types = [MessageType::Normal, MessageType::Fifo, MessageType::Delay, MessageType::Transaction];
                let topic = TopicConfig {
                    name: name.clone(),
                    queue_count: 8,
                    permission: 0,
                    accept_message_types: types.iter().map(|t| *t as i32).collect(),
                };
                admin.create_topic(CreateTopicRequest { topic: Some(topic) }).await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Makes `groups` FIFO consumer groups through the Admin service. Errors: a call that fails.
async fn fifo_groups(ch: &Channel, groups: &[String]) -> anyhow::Result<()> {
    use ferrocket_proto::admin::{admin_client::AdminClient, GroupConfig, UpsertGroupRequest};
    let mut admin = AdminClient::new(ch.clone());
    for name in groups {
        let group = GroupConfig { name: name.clone(), fifo: true, ..Default::default() };
        admin.upsert_group(UpsertGroupRequest { group: Some(group) }).await?;
    }
    Ok(())
}

/// Long-polling time of each ReceiveMessage, ms (Apache RocketMQ's proxy raises it to its minimum
/// of 5,000).
const RECEIVE_POLL_MS: u64 = 1_000;
/// Deadline of each ReceiveMessage call, ms: it must cover the proxy's polling time.
const RECEIVE_DEADLINE_MS: u64 = 20_000;

/// Delivery time of the `k`-th of `n` DELAY messages: `start_ms + after`, plus `k / n` of `spread`.
fn due_ms(start_ms: u64, after: Duration, spread: Duration, k: u64, n: u64) -> u64 {
    start_ms + after.as_millis() as u64 + (spread.as_millis() as u64 * k) / n.max(1)
}

fn timestamp(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Lets the spawned `senders` and receiver `tasks` run until the senders are done with a
/// `--messages` run, or `--duration` ends (or, consume-only with `--messages`, `received` counted
/// that many); then sets `stop`, waits for every task and returns the seconds measured.
async fn run_until_done(
    o: &BenchOpts,
    mut senders: Vec<tokio::task::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    received: &Side,
    stop: &AtomicBool,
) -> f64 {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + o.duration;
    if o.messages > 0 && o.mode.sends() {
        for t in senders.drain(..) {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
    } else {
        wait_for_messages(received, o.messages, deadline).await;
    }
    stop.store(true, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    for t in senders.into_iter().chain(tasks) {
        let _ = t.await;
    }
    secs
}

/// Runs the benchmark. Errors: the broker cannot be reached, the topic has no route or the
/// broker refuses the receivers' subscription; over Remoting, a mode other than produce.
pub async fn run(o: BenchOpts) -> anyhow::Result<BenchReport> {
    if o.protocol == Protocol::Remoting {
        return remoting::run(o).await;
    }
    let endpoint = format!("http://{}", o.server);
    let headers = ClientHeaders(format!("ferrocket-bench@{}@{}", std::process::id(), now_us()).parse()?);
    // A few connections, so one HTTP/2 connection is not the bottleneck.
    let mut channels = Vec::new();
    for _ in 0..o.concurrency.div_ceil(8).max(1) {
        channels.push(Channel::from_shared(endpoint.clone())?.connect().await?);
    }
    let connect = |ch: Channel| MessagingServiceClient::with_interceptor(ch, headers.clone());
    let mut client = connect(channels[0].clone());
    let topics: Arc<Vec<String>> = Arc::new(names(&o.topic, o.topics));
    let created = match o.topics > 1 || o.message_groups > 0 {
        true => Some((o.topics, create_topics(&channels[0], &topics).await?)),
        false => None,
    };
    let route = client.query_route(QueryRouteRequest { topic: res(&topics[0]), endpoints: None }).await?.into_inner();
    let queues = route.message_queues.len().max(1) as i32;
    anyhow::ensure!(requests::ok(&route.status), "no route for {}: {:?}", topics[0], route.status);
    anyhow::ensure!(o.delay_after.is_none() || o.messages > 0, "--delay-after needs --messages");
    let groups = names(&o.group, o.topics);
    if o.message_groups > 0 && o.mode.receives() {
        fifo_groups(&channels[0], &groups).await?;
    }
    let mut _sessions = Vec::new();
    if o.mode.receives() {
        for (group, topic) in groups.iter().zip(topics.iter()) {
            _sessions.push(announce_consumer(&mut client, group, topic).await?);
        }
    }
    // Each sender's pace with --rate: one call per `interval`.
    let interval =
        (o.rate > 0).then(|| Duration::from_secs_f64((o.concurrency * o.batch.max(1)) as f64 / o.rate as f64));
    let start_ms = crate::store::now_ms();
    let stop = Arc::new(AtomicBool::new(false));
    let claimed = Arc::new(AtomicU64::new(0)); // messages senders have started on (for --messages)
    let (prod, cons) = (Side::new(), Side::new());
    let (mut senders, mut tasks) = (Vec::new(), Vec::new());
    let body = vec![b'x'; o.size];
    // The official 5.x clients fill in born_host themselves (the Python client its local IP).
    let born_host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "ferrocket-bench".into());
    for t in 0..o.concurrency {
        let ch = channels[t % channels.len()].clone();
        if o.mode.sends() {
            let (stop, side, body, topics) = (stop.clone(), prod.clone(), body.clone(), topics.clone());
            let born_host = born_host.clone();
            let batch = o.batch.max(1);
            let mode = o.mode;
            let (limit, claimed) = (o.messages, claimed.clone());
            let message_groups = o.message_groups;
            let ty = match (mode.transactional(), o.delay_after) {
                (true, _) => MessageType::Transaction,
                (false, Some(_)) => MessageType::Delay,
                (false, None) if message_groups > 0 => MessageType::Fifo,
                (false, None) => MessageType::Normal,
            };
            let (delay_after, spread) = (o.delay_after, o.delay_spread);
            let mut c = connect(ch);
            senders.push(tokio::spawn(async move {
                let mut i = 0u64;
                let mut next = tokio::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(every) = interval {
                        tokio::time::sleep_until(next).await;
                        next += every;
                    }
                    let first = claimed.fetch_add(batch as u64, Ordering::Relaxed);
                    if limit > 0 && first >= limit {
                        break;
                    }
                    let topic = &topics[(first / batch as u64) as usize % topics.len()];
                    let mut messages = Vec::with_capacity(batch);
                    for k in first..first + batch as u64 {
                        i += 1;
                        let delivery_timestamp = delay_after.map(|d| timestamp(due_ms(start_ms, d, spread, k, limit)));
                        let mut user_properties = std::collections::HashMap::new();
                        if interval.is_some() {
                            user_properties.insert(SENT_AT.to_string(), now_us().to_string());
                        }
                        messages.push(Message {
                            topic: res(topic),
                            user_properties,
                            system_properties: Some(SystemProperties {
                                message_id: format!("B{t:04}{i:012}"),
                                tag: Some("bench".into()),
                                message_type: ty as i32,
                                queue_id: ((t as u64 + i) % queues as u64) as i32,
                                delivery_timestamp,
                                message_group: (message_groups > 0).then(|| format!("g{}", k % message_groups)),
                                born_host: born_host.clone(),
                                ..Default::default()
                            }),
                            body: body.clone(),
                        });
                    }
                    let start = Instant::now();
                    let sent = c
                        .send_message(SendMessageRequest { messages })
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| refusal(r.get_ref().status.as_ref()).map(|()| r.into_inner().entries));
                    let outcome = match (sent, mode) {
                        (Ok(entries), Mode::Tx) => commit(&mut c, topic, entries).await,
                        (sent, _) => sent.map(drop),
                    };
                    match outcome {
                        Ok(()) => side.record(start, batch as u64),
                        Err(why) => side.failed(why),
                    }
                }
            }));
        }
        if o.mode.receives() {
            let ch = channels[(t + 1) % channels.len()].clone();
            let (stop, side) = (stop.clone(), cons.clone());
            // Receiver t serves topics t, t + concurrency, ... in turn (or topic t mod N).
            let mine: Vec<(String, String)> = (t..topics.len().max(t + 1))
                .step_by(o.concurrency)
                .map(|i| (topics[i % topics.len()].clone(), groups[i % groups.len()].clone()))
                .collect();
            let mut c = connect(ch);
            let (invisible_ms, no_ack) = (o.invisible.as_millis() as u64, o.no_ack);
            tasks.push(tokio::spawn(async move {
                for turn in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (topic, group) = &mine[turn % mine.len()];
                    let start = Instant::now();
                    let mut req =
                        tonic::Request::new(requests::receive(group, topic, 32, invisible_ms, RECEIVE_POLL_MS));
                    req.set_timeout(Duration::from_millis(RECEIVE_DEADLINE_MS));
                    let resp = match c.receive_message(req).await {
                        Ok(resp) => resp,
                        Err(e) => {
                            side.failed(e);
                            continue;
                        }
                    };
                    let mut stream = resp.into_inner();
                    let mut entries = Vec::new();
                    while let Ok(Some(item)) = stream.message().await {
                        if let Some(receive_message_response::Content::Message(m)) = item.content {
                            let sp = m.system_properties.unwrap_or_default();
                            if let Some(due) = &sp.delivery_timestamp {
                                let due_us = due.seconds * 1_000_000 + due.nanos as i64 / 1000;
                                let at_us = crate::store::now_ms() as i64 * 1000;
                                let _ = side.late.lock().record((at_us - due_us).max(0) as u64);
                            }
                            if let Some(sent) = m.user_properties.get(SENT_AT).and_then(|v| v.parse::<u64>().ok()) {
                                let _ = side.e2e.lock().record(now_us().saturating_sub(sent));
                            }
                            entries.push(AckMessageEntry {
                                message_id: sp.message_id,
                                receipt_handle: sp.receipt_handle.unwrap_or_default(),
                                lite_topic: None,
                            });
                        }
                    }
                    if entries.is_empty() {
                        continue;
                    }
                    if no_ack {
                        side.record(start, entries.len() as u64);
                        continue;
                    }
                    let n = entries.len() as u64;
                    let acked = c
                        .ack_message(AckMessageRequest { group: res(group), topic: res(topic), entries })
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| refusal(r.into_inner().status.as_ref()));
                    match acked {
                        Ok(()) => side.record(start, n),
                        Err(why) => side.failed(why),
                    }
                }
            }));
        }
    }
    let secs = run_until_done(&o, senders, tasks, &cons, &stop).await;
    Ok(BenchReport {
        size: o.size,
        concurrency: o.concurrency,
        batch: o.batch,
        topics: created,
        seconds: secs,
        produce: o.mode.sends().then(|| prod.report(secs, o.size)),
        consume: o.mode.receives().then(|| cons.report(secs, o.size)),
    })
}
