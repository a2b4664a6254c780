#![warn(missing_docs)]
//! What every Ferrocket process runs beside its work. The HTTP side, on `metrics_listen`:
//! `/metrics` (Prometheus text), `/healthz` (the process is up: always 200) and `/readyz` (it can
//! serve: 200, or 503 with the reason), for Prometheus and the Kubernetes liveness and readiness
//! probes; and the signal that stops a process.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use tokio::sync::watch;

/// Renders the Prometheus text exposition (called on each scrape).
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;
/// `Ok` when the process can serve, else why not (called on each probe).
pub type CheckReady = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Serves the three endpoints on `addr` until `stopping` turns true. Errors: the address cannot
/// be bound.
pub async fn serve(
    addr: SocketAddr,
    metrics: RenderMetrics,
    ready: CheckReady,
    mut stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for /metrics and probes: {e}"))?;
    tracing::info!(listen = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = metrics();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let r = ready();
                async move {
                    match r {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
                    }
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

/// Returns on the first SIGTERM or SIGINT (how Kubernetes and a terminal stop a process).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
