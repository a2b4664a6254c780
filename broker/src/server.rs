//! Running a broker process: open the engine, serve gRPC, print `ready <addr>`, and on SIGTERM or
//! SIGINT stop long polls and Telemetry streams, drain, flush and exit 0 (DESIGN.md §7).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::cluster::registration;
use crate::config::Config;
use crate::grpc::admin::AdminService;
use crate::grpc::auth::SuperOnly;
use crate::grpc::clients::Clients;
use crate::grpc::messaging::Messaging;
use crate::port::{serve_remoting, Port};
use crate::proto::admin::admin_server::AdminServer;
use crate::proto::clients::Nameservers;
use crate::proto::namesrv::ha_server::HaServer;
use crate::proto::v2::messaging_service_server::MessagingServiceServer;

/// Longest a graceful shutdown waits for open calls before closing anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `cfg` until SIGTERM or SIGINT: gRPC on `listen` (TLS beside plaintext, `tls_mode`),
/// Remoting on `remoting_listen`, and with `standalone` a Remoting nameserver on
/// `remoting_namesrv_listen` that routes every topic here.
/// Errors: an address cannot be bound, the data directory cannot be opened or recovered, or the
/// TLS certificate cannot be loaded.
pub async fn run(mut cfg: Config, standalone: bool) -> anyhow::Result<()> {
    let bind = |addr: std::net::SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
    };
    let listener = bind(cfg.listen).await?;
    cfg.listen = listener.local_addr()?; // port 0 -> the port the OS chose
    let remoting = bind(cfg.remoting_listen).await?;
    cfg.remoting_listen = remoting.local_addr()?;
    let remoting_namesrv = if standalone { Some(bind(cfg.remoting_namesrv_listen).await?) } else { None };
    if let Some(l) = &remoting_namesrv {
        cfg.remoting_namesrv_listen = l.local_addr()?;
    }
    // Before recovery, which can take long: a bad certificate fails the start at once.
    let tls = crate::tls::acceptor(&cfg)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // Probes answer during recovery too: alive, not ready.
    let opened: Arc<OnceLock<Arc<Broker>>> = Arc::default();
    let registered = Arc::new(AtomicBool::new(cfg.namesrv_addrs.is_empty()));
    if let Some(addr) = cfg.metrics_listen {
        let (o, r) = (opened.clone(), registered.clone());
        let metrics = Arc::new(move || o.get().map(|b| b.render_metrics()).unwrap_or_default());
        let o = opened.clone();
        let ready = Arc::new(move || match (o.get(), r.load(Ordering::Acquire)) {
            (None, _) => Err("recovering the store".to_string()),
            (Some(_), false) => Err("not registered with any nameserver".to_string()),
            (Some(b), true) if b.is_slave() => match b.replication_lag() {
                None => Err("not replicating from the master".to_string()),
                Some(lag) if lag > b.config().ha_max_lag_bytes => {
                    Err(format!("{lag} bytes behind the master (ha_max_lag_bytes {})", b.config().ha_max_lag_bytes))
                }
                Some(_) => Ok(()),
            },
            (Some(_), true) => Ok(()),
        });
        crate::http::serve(addr, metrics, ready, stop_rx.clone()).await?;
    }
    let open_cfg = cfg.clone();
    let broker = tokio::task::spawn_blocking(move || Broker::open(open_cfg)).await??;
    let _ = opened.set(broker.clone());
    let clients = Arc::new(Clients::default());
    // One for every connection to another Ferrocket process: the CA file is read here, once.
    let dialer = crate::cluster::dialer(broker.config(), broker.auth())?;
    let nameservers =
        (!cfg.namesrv_addrs.is_empty()).then(|| Nameservers::new(cfg.namesrv_addrs.clone(), dialer.clone()));
    // Both idle while the role does not need them (a promotion or demotion switches them over).
    crate::cluster::slave::spawn_slave(broker.clone(), dialer.clone(), nameservers.clone(), stop_rx.clone());
    if cfg.controller_addr.is_some() {
        crate::cluster::controller_client::spawn(broker.clone(), &dialer, cfg.controller_addrs(), stop_rx.clone());
    }
    if let Some(ns) = &nameservers {
        registration::spawn(broker.clone(), ns.clone(), registered, stop_rx.clone());
    }
    let rb = Arc::new(crate::remoting::broker::RemotingBroker {
        broker: broker.clone(),
        clients: Default::default(),
        store_host: cfg.remoting_advertised(),
    });
    crate::remoting::broker::spawn_expiry(rb.clone(), stop_rx.clone());
    crate::checkback::spawn(broker.clone(), clients.clone(), rb.clone(), stop_rx.clone());
    let remoting_port = |p| Port::new(&cfg, &tls, Some(p));
    serve_remoting(remoting, remoting_port(crate::remoting::broker::processor(rb)), stop_rx.clone());
    if let Some(l) = remoting_namesrv {
        let routes = crate::remoting::namesrv::Routes::Local(broker.clone());
        serve_remoting(l, remoting_port(crate::remoting::namesrv::processor(routes)), stop_rx.clone());
    }
    // Replication and Admin are for the cluster's own processes and its operators: super users.
    let super_only = SuperOnly::new(broker.auth().clone(), broker.metrics().auth_refused.clone());
    let ha = HaServer::with_interceptor(
        crate::grpc::ha::HaService::new(broker.clone(), stop_rx.clone()),
        super_only.clone(),
    );
    let admin = AdminService::new(broker.clone(), nameservers.clone());
    let messaging = Messaging::new(broker.clone(), clients.clone(), stop_rx.clone(), nameservers);
    let max_msg = (cfg.max_body_bytes as usize).saturating_mul(2).max(16 << 20);
    let incoming = crate::port::serve(listener, Port::new(&cfg, &tls, None), stop_rx.clone());
    let ending = broker.clone();
    let server = tonic::transport::Server::builder()
        .add_service(MessagingServiceServer::new(messaging).max_decoding_message_size(max_msg))
        .add_service(AdminServer::with_interceptor(admin, super_only))
        .add_service(ha)
        .serve_with_incoming_shutdown(incoming, async move {
            crate::http::shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
            ending.end_long_polls();
            clients.clear();
        });
    tracing::info!(data_dir = %cfg.data_dir.display(), flush = ?cfg.flush_disk_type, namesrv = ?cfg.namesrv_addrs,
        remoting = %cfg.remoting_listen, remoting_namesrv = ?standalone.then_some(cfg.remoting_namesrv_listen), "broker opened");
    announce_ready(&cfg, "broker")?;
    let mut server = std::pin::pin!(server);
    tokio::select! {
        r = &mut server => r?,
        _ = async { crate::http::shutdown_signal().await; tokio::time::sleep(DRAIN_TIMEOUT).await } => {
            tracing::warn!("calls still open after the drain timeout; closing");
        }
    }
    tokio::task::spawn_blocking(move || broker.shutdown()).await??;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Logs and prints `ready <listen address>` (the line scripts and tests wait for). Errors: stdout.
pub(crate) fn announce_ready(cfg: &Config, role: &str) -> std::io::Result<()> {
    tracing::info!(listen = %cfg.listen, role, "ready");
    println!("ready {}", cfg.listen);
    std::io::stdout().flush()
}
