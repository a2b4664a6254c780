//! Prometheus metrics: one registry per broker, served as text on `GET /metrics` at
//! `metrics_listen` when that is set. Transactions, dead letters and scheduled delivery.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::broker::Broker;

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
        Metrics { registry, tx, open_transactions, consume, timer, retention }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Serves `GET /metrics` on `addr` until `stopping` turns true. Errors: the address cannot be bound.
pub async fn serve(addr: SocketAddr, broker: Arc<Broker>, mut stopping: watch::Receiver<bool>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for metrics: {e}"))?;
    tracing::info!(listen = %listener.local_addr()?, "serving /metrics");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let broker = broker.clone();
            async move {
                let m = broker.metrics();
                m.open_transactions.set(broker.open_transaction_count() as i64);
                m.timer.scheduled.set(broker.scheduled_count() as i64);
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.encode())
            }
        }),
    );
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopping.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    Ok(())
}
