//! The nameserver process: the [`RouteTable`] behind the `ferrocket.v1.Namesrv` gRPC service,
//! and the task that drops brokers that stopped registering (RocketMQ `NamesrvController`).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tonic::{Request, Response, Status};

use super::routes::RouteTable;
use crate::config::Config;
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
        if self.table.lock().unregister(&r.broker_name, r.broker_id) {
            tracing::info!(broker = %r.broker_name, id = r.broker_id, "broker unregistered");
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

/// Runs a nameserver on `cfg.listen` until SIGTERM or SIGINT: prints `ready <addr>` once it
/// serves, and drops brokers not heard from for `broker_expiry_ms`. Errors: the address cannot
/// be bound.
pub async fn run(mut cfg: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    cfg.listen = listener.local_addr()?;
    let service = NamesrvService::default();
    let table = service.table.clone();
    let expiry = cfg.broker_expiry_ms;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis((expiry / 10).clamp(100, 5_000)));
        loop {
            tick.tick().await;
            for (name, id) in table.lock().expire(now_ms(), expiry) {
                tracing::warn!(broker = %name, id, expiry_ms = expiry, "broker expired: no registration within broker_expiry_ms");
            }
        }
    });
    let server =
        tonic::transport::Server::builder().add_service(NamesrvServer::new(service)).serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            crate::server::shutdown_signal(),
        );
    crate::server::announce_ready(&cfg, "nameserver")?;
    server.await?;
    tracing::info!("stopped cleanly");
    Ok(())
}
