//! The nameserver process: the [`RouteTable`] behind the `ferrocket.v1.Namesrv` gRPC service
//! and RocketMQ Remoting's route requests (one port for both), and the task that drops brokers that stopped registering (RocketMQ `NamesrvController`).

use std::sync::Arc;
use std::time::Duration;

use ferrocket_engine::metrics::RefusalLabel;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use super::routes::RouteTable;
use crate::auth::Auth;
use crate::config::Config;
use crate::grpc::auth::SuperOnly;
use crate::proto::namesrv::namesrv_server::{Namesrv, NamesrvServer};
use crate::proto::namesrv::*;
use crate::store::now_ms;

/// The gRPC service over one route table.
#[derive(Clone, Default)]
pub struct NamesrvService {
    table: Arc<Mutex<RouteTable>>,
}

#[tonic::async_trait]
impl Namesrv for NamesrvService {
    async fn register_broker(
        &self,
        req: Request<RegisterBrokerRequest>,
    ) -> Result<Response<RegisterBrokerResponse>, Status> {
        let reg = req.into_inner().registration.unwrap_or_default();
        let info = reg.broker.clone().unwrap_or_default();
        if info.broker_name.is_empty() || info.endpoint.is_empty() {
            return Err(Status::invalid_argument("a registration needs broker.broker_name and broker.endpoint"));
        }
        let topics = reg.topics.len();
        if self.table.lock().register(reg, now_ms()) {
            tracing::info!(broker = %info.broker_name, id = info.broker_id, endpoint = %info.endpoint, topics, "broker registered");
        }
        Ok(Response::new(RegisterBrokerResponse {}))
    }

    async fn unregister_broker(
        &self,
        req: Request<UnregisterBrokerRequest>,
    ) -> Result<Response<UnregisterBrokerResponse>, Status> {
        let r = req.into_inner();
        if self.table.lock().unregister(&r.broker_name, &r.endpoint) {
            tracing::info!(broker = %r.broker_name, endpoint = %r.endpoint, "broker unregistered");
        }
        Ok(Response::new(UnregisterBrokerResponse {}))
    }

    async fn query_route(&self, req: Request<NamesrvRouteRequest>) -> Result<Response<NamesrvRouteResponse>, Status> {
        let groups = self.table.lock().route(&req.into_inner().topic);
        Ok(Response::new(NamesrvRouteResponse { groups }))
    }

    async fn cluster_info(&self, _req: Request<ClusterInfoRequest>) -> Result<Response<ClusterInfoResponse>, Status> {
        Ok(Response::new(ClusterInfoResponse { brokers: self.table.lock().brokers() }))
    }
}

/// The nameserver's metrics: brokers and broker groups registered, topics routed.
fn render_metrics(table: &RouteTable, refused: &Family<RefusalLabel, Counter>) -> String {
    use prometheus_client::metrics::gauge::Gauge;
    let brokers = table.brokers();
    let mut groups: Vec<&str> =
        brokers.iter().filter_map(|b| b.broker.as_ref()).map(|b| b.broker_name.as_str()).collect();
    groups.dedup();
    let mut topics: Vec<&str> = brokers.iter().flat_map(|b| b.topics.iter().map(|t| t.name.as_str())).collect();
    topics.sort();
    topics.dedup();
    let mut registry = prometheus_client::registry::Registry::with_prefix("ferrocket_namesrv");
    for (name, help, n) in [
        ("brokers", "Brokers registered", brokers.len()),
        ("broker_groups", "Broker groups with a registered broker", groups.len()),
        ("topics", "Topics routed", topics.len()),
    ] {
        let g = Gauge::<i64>::default();
        g.set(n as i64);
        registry.register(name, help, g);
    }
    registry.register("auth_refused", "Requests refused by authentication or authorization", refused.clone());
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// Runs a nameserver on `cfg.listen` until SIGTERM or SIGINT: prints `ready <addr>` once it
/// serves, drops brokers not heard from for `broker_expiry_ms`, and with `metrics_listen` serves
/// `/metrics`, `/healthz` and `/readyz`, and with `enable_controller` also serves the master
/// election controller. Errors: an address cannot be bound, the controller state is unreadable.
pub async fn run(mut cfg: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    cfg.listen = listener.local_addr()?;
    let service = NamesrvService::default();
    let table = service.table.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Registration and the controller are for the cluster's own brokers and its operators.
    let refused = Family::<RefusalLabel, Counter>::default();
    let auth = Arc::new(Auth::load(&cfg, None)?);
    let super_only = SuperOnly::new(auth.clone(), refused.clone());
    // Remoting clients dial the same port (9876) as gRPC ones.
    let remoting = crate::remoting::namesrv::processor(crate::remoting::namesrv::Routes::Table(table.clone()));
    let port = crate::port::Port::new(&cfg, &crate::tls::acceptor(&cfg)?, Some(remoting));
    let incoming = crate::port::serve(listener, port, stop_rx.clone());
    let expiry = cfg.broker_expiry_ms;
    let metrics_table = table.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis((expiry / 10).clamp(100, 5_000)));
        loop {
            tick.tick().await;
            for (name, endpoint) in table.lock().expire(now_ms(), expiry) {
                tracing::warn!(broker = %name, %endpoint, expiry_ms = expiry, "broker expired: no registration within broker_expiry_ms");
            }
        }
    });
    // A controller member is ready once it is part of a working group; a nameserver alone always.
    let (controller, raft, ready): (_, _, crate::http::CheckReady) = match cfg.enable_controller {
        true => {
            let dialer = crate::cluster::dialer(&cfg, &auth)?;
            let s = crate::controller::service::start(&cfg, dialer).await?;
            (
                Some(InterceptedService::new(s.controller, super_only.clone())),
                Some(InterceptedService::new(s.raft, super_only.clone())),
                s.ready,
            )
        }
        false => (None, None, Arc::new(|| Ok(()))),
    };
    if let Some(addr) = cfg.metrics_listen {
        let metrics = Arc::new(move || render_metrics(&metrics_table.lock(), &refused));
        crate::http::serve(addr, metrics, ready, stop_rx).await?;
    }
    let server = tonic::transport::Server::builder()
        .add_service(NamesrvServer::with_interceptor(service, super_only))
        .add_optional_service(controller)
        .add_optional_service(raft)
        .serve_with_incoming_shutdown(incoming, async move {
            crate::http::shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
    crate::server::announce_ready(&cfg, "nameserver")?;
    server.await?;
    tracing::info!("stopped cleanly");
    Ok(())
}
