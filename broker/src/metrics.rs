//! Prometheus metrics: one registry per broker, served as text on `GET /metrics` at
//! `metrics_listen` when that is set. Transaction counters for now; issue 5 adds the rest.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
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

/// The broker's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Transaction counters.
    pub tx: TxCounters,
    /// Open transactions; set when scraped.
    pub open_transactions: Gauge,
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
        Metrics { registry, tx, open_transactions }
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
