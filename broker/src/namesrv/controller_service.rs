//! The controller's gRPC service (`ferrocket.v1.Controller`) and its election scan, run by a
//! nameserver with `enable_controller`. The state lives in `<data_dir>/controller.json`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tonic::{Request, Response, Status};

use super::controller::{AlterError, Controller};
use crate::config::Config;
use crate::proto::namesrv::controller_server::{self, ControllerServer};
use crate::proto::namesrv::*;

/// The service over one [`Controller`].
#[derive(Clone)]
pub struct ControllerService {
    inner: Arc<Mutex<Controller>>,
}

impl ControllerService {
    /// Opens the controller state in `cfg.data_dir` and starts the election scan (every
    /// `controller_heartbeat_interval_ms`). Errors: see [`Controller::open`].
    pub fn start(cfg: &Config) -> anyhow::Result<ControllerServer<ControllerService>> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        let path = cfg.data_dir.join("controller.json");
        let timeout = Duration::from_millis(cfg.controller_heartbeat_timeout_ms);
        let inner = Arc::new(Mutex::new(Controller::open(&path, timeout)?));
        tracing::info!(state = %path.display(), timeout_ms = cfg.controller_heartbeat_timeout_ms, "controller started");
        let scan = inner.clone();
        let every = Duration::from_millis(cfg.controller_heartbeat_interval_ms.clamp(50, 1_000) / 2);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = scan.lock().tick(Instant::now()) {
                    tracing::error!(error = %e, "cannot persist an election; retrying on the next scan");
                }
            }
        });
        Ok(ControllerServer::new(ControllerService { inner }))
    }
}

#[tonic::async_trait]
impl controller_server::Controller for ControllerService {
    async fn heartbeat(&self, req: Request<ControllerHeartbeat>) -> Result<Response<GroupView>, Status> {
        let hb = req.into_inner();
        if hb.broker_name.is_empty() || hb.endpoint.is_empty() {
            return Err(Status::invalid_argument("a controller heartbeat needs broker_name and endpoint"));
        }
        let view = self.inner.lock().heartbeat(&hb, Instant::now()).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(view))
    }

    async fn alter_sync_state_set(
        &self,
        req: Request<AlterSyncStateSetRequest>,
    ) -> Result<Response<GroupView>, Status> {
        let r = req.into_inner();
        let set: BTreeSet<String> = r.sync_state_set.into_iter().collect();
        match self.inner.lock().alter_sync_state_set(&r.broker_name, &r.master, r.epoch, set) {
            Ok(view) => Ok(Response::new(view)),
            Err(e @ AlterError::Io(_)) => Err(Status::internal(e.to_string())),
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }

    async fn list_groups(
        &self,
        _req: Request<ListControllerGroupsRequest>,
    ) -> Result<Response<ListControllerGroupsResponse>, Status> {
        Ok(Response::new(ListControllerGroupsResponse { groups: self.inner.lock().list(Instant::now()) }))
    }
}
