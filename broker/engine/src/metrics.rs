//! Prometheus metrics: one registry per broker, served as text on `GET /metrics` at
//! `metrics_listen` when that is set (by the binary, through `ferrocket-runtime`). Traffic per topic, consumer lag,
//! transactions, dead letters, scheduled delivery, retention and CommitLog flush latency.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label of per-topic metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// The topic.
    pub topic: String,
}

/// Labels of per-group metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    /// The consumer group (`group@clientid` for a broadcast group's client).
    pub group: String,
    /// The topic.
    pub topic: String,
}

/// Labels of refused requests.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    /// `grpc` or `remoting`.
    pub protocol: &'static str,
    /// [`crate::auth::Refusal::reason`].
    pub reason: &'static str,
}

/// Label of per-slave metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SlaveLabel {
    /// The slave's broker id.
    pub slave: String,
}

/// Messages and body bytes through the protocol, per topic.
#[derive(Debug, Default)]
pub struct TrafficMetrics {
    /// Messages stored by a send (gRPC SendMessage, Remoting SEND_MESSAGE and its batch).
    pub messages_in: Family<TopicLabel, Counter>,
    /// Body bytes of those messages.
    pub bytes_in: Family<TopicLabel, Counter>,
    /// Messages handed to consumers (gRPC ReceiveMessage and PullMessage, Remoting POP_MESSAGE
    /// and PULL_MESSAGE), redeliveries included.
    pub messages_out: Family<TopicLabel, Counter>,
    /// Body bytes handed to consumers.
    pub bytes_out: Family<TopicLabel, Counter>,
}

impl TrafficMetrics {
    /// Counts messages stored, each given as (topic, body bytes).
    pub fn sent<'a>(&self, messages: impl IntoIterator<Item = (&'a str, usize)>) {
        count_by_topic(&self.messages_in, &self.bytes_in, messages);
    }
    /// Counts messages handed out, each given as (topic, body bytes).
    pub fn delivered<'a>(&self, messages: impl IntoIterator<Item = (&'a str, usize)>) {
        count_by_topic(&self.messages_out, &self.bytes_out, messages);
    }
}

/// Adds `items` (topic, body bytes) to the two families with one label lookup per run of one
/// topic: a call's messages are nearly always one topic's, and a lookup per message cost a label
/// allocation, a hash of the topic and, with thousands of topics, a cache miss.
fn count_by_topic<'a>(
    messages: &Family<TopicLabel, Counter>,
    bytes: &Family<TopicLabel, Counter>,
    items: impl IntoIterator<Item = (&'a str, usize)>,
) {
    let add = |(topic, n, b): (&str, u64, u64)| {
        let l = TopicLabel { topic: topic.to_string() };
        messages.get_or_create(&l).inc_by(n);
        bytes.get_or_create(&l).inc_by(b);
    };
    let mut run: Option<(&str, u64, u64)> = None;
    for (topic, size) in items {
        match &mut run {
            Some((t, n, b)) if *t == topic => {
                *n += 1;
                *b += size as u64;
            }
            _ => {
                if let Some(done) = run.replace((topic, 1, size as u64)) {
                    add(done);
                }
            }
        }
    }
    if let Some(done) = run {
        add(done);
    }
}

/// Counters of the transaction service since start.
#[derive(Debug, Default)]
pub struct TxCounters {
    /// Transactions committed (by the producer or its checker).
    pub commits: Counter,
    /// Transactions rolled back (by the producer, its checker, or the broker giving up).
    pub rollbacks: Counter,
    /// Check-backs sent to a producer.
    pub checks_sent: Counter,
    /// Check-backs repeated because the previous one got no answer in time.
    pub check_timeouts: Counter,
    /// Transactions rolled back after `transaction_check_max` unanswered checks.
    pub check_max_rollbacks: Counter,
}

/// Counters of consumption since start.
#[derive(Debug, Default)]
pub struct ConsumeCounters {
    /// Messages moved to a `%DLQ%` topic.
    pub dead_lettered: Counter,
}

/// Scheduled delivery (timer) metrics.
#[derive(Debug)]
pub struct TimerMetrics {
    /// Scheduled messages delivered to their topic.
    pub delivered: Counter,
    /// How late each scheduled message was written to its topic, ms.
    pub lateness_ms: Histogram,
    /// Messages scheduled and not yet delivered; set when scraped.
    pub scheduled: Gauge,
}

/// Retention and disk metrics.
#[derive(Debug, Default)]
pub struct RetentionMetrics {
    /// CommitLog segments deleted by retention.
    pub segments_deleted: Counter,
    /// Used share of the data disk at the last retention pass, 0.0..=1.0.
    pub disk_used_ratio: Gauge<f64, std::sync::atomic::AtomicU64>,
}

/// The broker's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Transaction counters.
    pub tx: TxCounters,
    /// Open transactions; set when scraped.
    pub open_transactions: Gauge,
    /// Consumption counters.
    pub consume: ConsumeCounters,
    /// Scheduled delivery.
    pub timer: TimerMetrics,
    /// Retention and disk.
    pub retention: RetentionMetrics,
    /// Traffic per topic.
    pub traffic: TrafficMetrics,
    /// Messages not yet acked per group and topic; set when scraped.
    pub consumer_lag: Family<GroupLabel, Gauge>,
    /// A master's connected slaves: CommitLog bytes each lacks; set when scraped.
    pub replication_lag: Family<SlaveLabel, Gauge>,
    /// A master's slaves in sync (`ha_max_lag_bytes`, `ha_max_lag_ms`); set when scraped.
    pub slaves_in_sync: Gauge,
    /// CommitLog bytes not yet dispatched to ConsumeQueues (RocketMQ `dispatchBehindBytes`):
    /// what consumers cannot see yet; set when scraped.
    pub dispatch_lag: Gauge,
    /// Requests refused by authentication or authorization, per protocol and reason.
    pub auth_refused: Family<RefusalLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let tx = TxCounters::default();
        let open_transactions = Gauge::default();
        let mut registry = Registry::with_prefix("ferrocket");
        registry.register("transactions_committed", "Transactions committed", tx.commits.clone());
        registry.register("transactions_rolled_back", "Transactions rolled back", tx.rollbacks.clone());
        registry.register("transaction_checks_sent", "Check-backs sent to producers", tx.checks_sent.clone());
        registry.register(
            "transaction_check_timeouts",
            "Check-backs repeated because the previous one got no answer",
            tx.check_timeouts.clone(),
        );
        registry.register(
            "transaction_check_max_rollbacks",
            "Transactions rolled back after transaction_check_max unanswered check-backs",
            tx.check_max_rollbacks.clone(),
        );
        registry.register(
            "transactions_open",
            "Half messages not yet committed or rolled back",
            open_transactions.clone(),
        );
        let consume = ConsumeCounters::default();
        registry.register("messages_dead_lettered", "Messages moved to a %DLQ% topic", consume.dead_lettered.clone());
        let timer = TimerMetrics {
            delivered: Counter::default(),
            lateness_ms: Histogram::new([1.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0]),
            scheduled: Gauge::default(),
        };
        registry.register("timer_delivered", "Scheduled messages delivered to their topic", timer.delivered.clone());
        registry.register(
            "timer_lateness_ms",
            "How late scheduled messages were written to their topic, ms",
            timer.lateness_ms.clone(),
        );
        registry.register("timer_scheduled", "Messages scheduled and not yet delivered", timer.scheduled.clone());
        let retention = RetentionMetrics::default();
        registry.register(
            "commitlog_segments_deleted",
            "CommitLog segments deleted by retention",
            retention.segments_deleted.clone(),
        );
        registry.register(
            "disk_used_ratio",
            "Used share of the data disk at the last retention pass",
            retention.disk_used_ratio.clone(),
        );
        let traffic = TrafficMetrics::default();
        registry.register("messages_in", "Messages stored by SendMessage, per topic", traffic.messages_in.clone());
        registry.register("bytes_in", "Body bytes stored by SendMessage, per topic", traffic.bytes_in.clone());
        registry.register("messages_out", "Messages handed to consumers, per topic", traffic.messages_out.clone());
        registry.register("bytes_out", "Body bytes handed to consumers, per topic", traffic.bytes_out.clone());
        let consumer_lag = Family::<GroupLabel, Gauge>::default();
        registry.register("consumer_lag", "Messages not yet acked, per consumer group and topic", consumer_lag.clone());
        let replication_lag = Family::<SlaveLabel, Gauge>::default();
        registry.register("replication_lag_bytes", "CommitLog bytes a connected slave lacks", replication_lag.clone());
        let slaves_in_sync = Gauge::default();
        registry.register("slaves_in_sync", "Slaves in sync with this master", slaves_in_sync.clone());
        let dispatch_lag = Gauge::default();
        registry.register(
            "dispatch_lag_bytes",
            "CommitLog bytes not yet dispatched to ConsumeQueues (not yet visible to consumers)",
            dispatch_lag.clone(),
        );
        let auth_refused = Family::<RefusalLabel, Counter>::default();
        registry.register("auth_refused", "Requests refused by authentication or authorization", auth_refused.clone());
        Metrics {
            registry,
            tx,
            open_transactions,
            consume,
            timer,
            retention,
            traffic,
            consumer_lag,
            replication_lag,
            slaves_in_sync,
            dispatch_lag,
            auth_refused,
        }
    }
}

impl Metrics {
    /// Registers the store's CommitLog flush latency histogram (ms per flush that wrote something).
    pub fn register_flush_latency(&mut self, h: Histogram) {
        self.registry.register("commitlog_flush_ms", "Time to flush the CommitLog to disk, ms", h);
    }

    /// Sets the consumer lag gauges to `lags` (group, topic, messages not yet acked).
    pub fn set_consumer_lags(&self, lags: Vec<(String, String, u64)>) {
        self.consumer_lag.clear();
        for (group, topic, lag) in lags {
            self.consumer_lag.get_or_create(&GroupLabel { group, topic }).set(lag as i64);
        }
    }

    /// Sets the replication gauges: each slave's lag behind a master log ending at `end`
    /// (bytes), and how many slaves are in sync.
    pub fn set_replication(
        &self,
        end: u64,
        slaves: &std::collections::BTreeMap<String, crate::ha::SlaveState>,
        in_sync: usize,
    ) {
        self.replication_lag.clear();
        for (endpoint, s) in slaves {
            self.replication_lag
                .get_or_create(&SlaveLabel { slave: endpoint.clone() })
                .set(end.saturating_sub(s.offset) as i64);
        }
        self.slaves_in_sync.set(in_sync as i64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// The histogram of the store's CommitLog flush latency, ms per flush that wrote something.
pub fn flush_histogram() -> Histogram {
    Histogram::new([0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0])
}
