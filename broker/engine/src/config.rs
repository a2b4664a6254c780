//! One typed configuration for every role, with the defaults of DESIGN.md §6 and the key names of
//! §7. Sources, weakest first: built-in defaults, a TOML file, `FERROCKET_<KEY>` environment
//! variables, command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use ferrocket_store::StoreConfig;
pub use ferrocket_store::{ConsumeQueueStore, FlushDiskType};

/// A broker's role without a controller (RocketMQ `brokerRole`, less its SYNC/ASYNC part, which
/// is [`Replication`]). Config values: `master`, `slave`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerRole {
    /// Accepts writes; slaves replicate from it.
    Master,
    /// Replicates its master's CommitLog; read-only.
    Slave,
}

/// How a master acknowledges against its slaves (RocketMQ `SYNC_MASTER` / `ASYNC_MASTER`).
/// Config values: `async`, `sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replication {
    /// After the master's own write.
    Async,
    /// Once the in-sync slaves hold the message (and at least `min_in_sync_replicas` replicas).
    Sync,
}

impl Replication {
    /// The config value (`async`, `sync`).
    pub fn as_str(self) -> &'static str {
        match self {
            Replication::Async => "async",
            Replication::Sync => "sync",
        }
    }
}

/// What every port of a process (gRPC, Remoting, the nameserver's) accepts; RocketMQ's
/// `tls.server.mode`. Config values: `permissive`, `enforcing`, `disabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// TLS and plaintext side by side, told apart by the first byte (RocketMQ's proxy with
    /// `tlsTestModeEnable`, its default): every official client connects with its defaults.
    Permissive,
    /// TLS only: a plaintext connection is closed before it is read. Ferrocket's own processes
    /// then dial with TLS as well, trusting `tls_ca_file`, which this mode needs.
    Enforcing,
    /// Plaintext only.
    Disabled,
}

/// Broker configuration. Every field is a config key (DESIGN.md §7); units are in the names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address (`host:port`), default `127.0.0.1:8081`.
    pub listen: SocketAddr,
    /// Address advertised to clients in routes; defaults to `listen` (set it when listening on 0.0.0.0).
    pub advertised_addr: Option<String>,
    /// RocketMQ Remoting listen address of the broker (`host:port`), default `127.0.0.1:10911`
    /// (RocketMQ `listenPort`); port 0 takes any free port.
    pub remoting_listen: SocketAddr,
    /// Remoting address advertised in routes and offset message ids; defaults to
    /// `remoting_listen` (set it when listening on 0.0.0.0).
    pub remoting_advertised_addr: Option<String>,
    /// Standalone only: the Remoting nameserver's listen address (`host:port`), default
    /// `127.0.0.1:9876`; it routes every topic to this broker. (A `namesrv` process serves
    /// Remoting on its `listen` port, beside gRPC.)
    pub remoting_namesrv_listen: SocketAddr,
    /// Cluster name (RocketMQ `brokerClusterName`, `DefaultCluster`), shown by Remoting's
    /// GET_BROKER_CLUSTER_INFO and `mqadmin clusterList`.
    pub cluster_name: String,
    /// Root of the store: `commitlog/`, `consumequeue/`, `index/`, `config/`.
    pub data_dir: PathBuf,
    /// `async` (default) or `sync`.
    pub flush_disk_type: FlushDiskType,
    /// Period of the ASYNC_FLUSH flush thread, ms (RocketMQ `flushIntervalCommitLog`, 500).
    pub flush_interval_ms: u64,
    /// SYNC_FLUSH: longest a write waits for its fsync, ms (5 s, RocketMQ `syncFlushTimeout`);
    /// then the client is told FLUSH_DISK_TIMEOUT (gRPC MASTER_PERSISTENCE_TIMEOUT).
    pub sync_flush_timeout_ms: u64,
    /// Size of one CommitLog MappedFile, bytes (RocketMQ `mappedFileSizeCommitLog`, 1 GiB). Two
    /// are allocated from the first message on: the one written and the spare that keeps acks
    /// and other control records writable on a full disk (docs/OPERATIONS.md).
    pub commitlog_segment_bytes: u64,
    /// ConsumeQueue entries per file (RocketMQ `mappedFileSizeConsumeQueue` / 20, 300,000), for
    /// the file store.
    pub consume_queue_entries_per_file: u64,
    /// Which store holds the ConsumeQueues: `files` (default; a directory and files per queue,
    /// RocketMQ's default) or `lsm` (one LSM store for all queues, RocketMQ 5's `storeType =
    /// defaultRocksDB`: for thousands of topics; docs/OPERATIONS.md). Fixed when the data
    /// directory is created: opening it with the other store is refused.
    pub consume_queue_store: ConsumeQueueStore,
    /// Hash slots per IndexFile (RocketMQ `maxHashSlotNum`, 5,000,000).
    pub index_slots: u32,
    /// Entries per IndexFile (RocketMQ `maxIndexNum`, 20,000,000).
    pub index_max_entries: u32,
    /// Create unknown topics on first send (on in standalone mode, off otherwise).
    pub auto_create_topic: bool,
    /// Queue count of auto-created topics.
    pub default_queue_count: u32,
    /// Largest message body accepted, bytes (4 MiB).
    pub max_body_bytes: u64,
    /// Invisible time used when a consumer sends none (push consumers), ms (60 s).
    pub default_invisible_ms: u64,
    /// Smallest invisible time a consumer may ask for, ms (10 s).
    pub min_invisible_ms: u64,
    /// Largest invisible time a consumer may ask for, ms (12 h).
    pub max_invisible_ms: u64,
    /// Longest a ReceiveMessage long poll is held, ms (20 s).
    pub long_polling_max_ms: u64,
    /// Delivery attempts before a message is dead-lettered (17: the first delivery and 16 retries).
    pub max_delivery_attempts: u32,
    /// Create a consumer group with the defaults on first use (RocketMQ
    /// `autoCreateSubscriptionGroup`, default true); off, unknown groups get CONSUMER_GROUP_NOT_FOUND.
    pub auto_create_group: bool,
    /// Retry backoff per attempt (delay levels from level 3, RocketMQ's default).
    #[serde(with = "durations")]
    pub retry_backoff: Vec<Duration>,
    /// Transaction timeout before a half message is checked back, ms (6 s).
    pub transaction_timeout_ms: u64,
    /// Period of the transaction check scan, ms (30 s, RocketMQ >= 5.1.1).
    pub transaction_check_interval_ms: u64,
    /// Check-backs before an orphaned half message is rolled back (15).
    pub transaction_check_max: u32,
    /// The 18 delay levels of RocketMQ (`messageDelayLevel`).
    #[serde(with = "durations")]
    pub delay_levels: Vec<Duration>,
    /// Longest allowed delay of a DELAY message, ms (3 days).
    pub timer_max_delay_ms: u64,
    /// How long CommitLog segments are kept, hours (72).
    pub file_reserved_hours: u64,
    /// Disk usage above which the oldest segments are deleted early (0.75).
    pub disk_max_used_ratio: f64,
    /// Disk usage above which new messages are refused while reads and acks go on (0.90,
    /// RocketMQ `diskSpaceWarningLevelRatio`).
    pub disk_refuse_write_ratio: f64,
    /// Period of the retention pass (age and disk checks), ms (10 s, RocketMQ `cleanResourceInterval`).
    pub clean_interval_ms: u64,
    /// Nameserver addresses (`host:port`; a DNS name stands for all its addresses, looked up
    /// again at each registration); empty in standalone mode.
    pub namesrv_addrs: Vec<String>,
    /// How often a broker re-registers with the nameservers, ms (30 s, RocketMQ
    /// `registerNameServerPeriod`); topic changes are registered within a second.
    pub heartbeat_interval_ms: u64,
    /// Nameserver: a broker not heard from for this long is dropped from routes, ms (120 s,
    /// RocketMQ `BROKER_CHANNEL_EXPIRED_TIME`).
    pub broker_expiry_ms: u64,
    /// Broker group name (RocketMQ `brokerName`).
    pub broker_name: String,
    /// 0 for the master, > 0 for slaves.
    pub broker_id: u32,
    /// `master` (default) or `slave`.
    pub broker_role: BrokerRole,
    /// `async` (default) or `sync` master/slave replication.
    pub replication: Replication,
    /// Replicas (master included) that must hold a message before a SYNC replication send is
    /// acknowledged (2: a SYNC send really waits for a slave; RocketMQ 5's default of 1 silently
    /// makes SYNC_MASTER asynchronous).
    pub min_in_sync_replicas: u32,
    /// How long a SYNC replication send waits for `min_in_sync_replicas`, ms (3 s, RocketMQ
    /// `slaveTimeout`); then it gets SLAVE_PERSISTENCE_TIMEOUT.
    pub ha_sync_timeout_ms: u64,
    /// A slave out of sync lags more than this many bytes (256 MiB, RocketMQ `haMaxGapNotInSync`).
    pub ha_max_lag_bytes: u64,
    /// A slave out of sync has not reported for this long, ms (15 s, RocketMQ
    /// `haMaxTimeSlaveNotCatchup`).
    pub ha_max_lag_ms: u64,
    /// A slave's master (`host:port` of its gRPC); unset, the nameservers say (the group's
    /// broker id 0).
    pub ha_master_addr: Option<String>,
    /// Nameserver: also run the master election controller (RocketMQ
    /// `enableControllerInNamesrv`), keeping its Raft log and snapshots in
    /// `<data_dir>/controller/`. Alone (no `controller_peers`) it is a one-member group; a
    /// `<data_dir>/controller.json` from before is imported on its first start.
    pub enable_controller: bool,
    /// Nameserver with `enable_controller`: every member of the controller's Raft group, each
    /// `id=host:port` (ids above 0, each once; the address is that nameserver's gRPC port, which
    /// the members dial). 3 members keep electing with 1 down, 5 with 2 (RocketMQ 5's DLedger
    /// controller, `controllerDLegerPeers`). Empty: a one-member group. Fixed for the group's
    /// life: members cannot be added or removed while it runs.
    pub controller_peers: Vec<String>,
    /// This nameserver's id in `controller_peers` (RocketMQ `controllerDLegerSelfId`); 0: the
    /// id of the entry whose address is this nameserver's advertised address (what the operator
    /// relies on: each pod advertises its stable name).
    pub controller_id: u64,
    /// Broker: the controller's `host:port`, or every member's, separated by `;` or `,` (RocketMQ
    /// `controllerAddr`); the broker follows the members' redirects to their leader. Set, the
    /// broker takes its role (master or slave, and whose slave) from the controller instead of
    /// `broker_role`, and is read-only until the controller has answered; `broker_id` 0 makes it
    /// the preferred first master.
    pub controller_addr: Option<String>,
    /// How often a broker heartbeats the controller, ms (1 s).
    pub controller_heartbeat_interval_ms: u64,
    /// A master with a controller that has had no answer from it for this long (counted from the
    /// last heartbeat it answered) refuses writes until it answers again, ms (3 s). Below
    /// `controller_heartbeat_timeout_ms`, so a master cut off stops before a successor can be
    /// elected: two masters never take writes at once.
    pub ha_fence_after_ms: u64,
    /// A master silent this long is replaced from its in-sync set, ms (4 s; with the 1 s heartbeat
    /// a new master is serving within about 5 s of a crash).
    pub controller_heartbeat_timeout_ms: u64,
    /// Address of the Prometheus `/metrics` endpoint; none by default.
    pub metrics_listen: Option<SocketAddr>,
    /// TLS on the gRPC and Remoting ports (`permissive`: TLS and plaintext both, as RocketMQ's
    /// proxy; `enforcing`: TLS only).
    pub tls_mode: TlsMode,
    /// PEM certificate chain served on the gRPC and Remoting ports (cert-manager's `tls.crt`), with
    /// `tls_key_file`; read again when it changes. Unset: a self-signed certificate made on first
    /// start and kept in `<data_dir>/tls/`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file` (cert-manager's `tls.key`).
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA bundle (cert-manager's `ca.crt`) that this process trusts when it dials another
    /// Ferrocket process (registration, replication, the controller). Set: those connections use
    /// TLS, checking the server's certificate against it; unset: plaintext. Read once at start.
    pub tls_ca_file: Option<PathBuf>,
    /// The name the servers' certificates are checked for when this process dials them (their
    /// SAN); unset: the dialled host. For a certificate that names the cluster, not each pod.
    pub tls_server_name: Option<String>,
    /// How often the state is checkpointed, ms: what changed in consumer progress is appended to
    /// the progress log (`progress/`), open transactions and the log lengths are written to
    /// `config/state.json` (RocketMQ: `flushConsumerOffsetInterval`, 5 s).
    pub consumer_snapshot_interval_ms: u64,
    /// Verify every request's signature ([`crate::auth`]; RocketMQ `authenticationEnabled`).
    /// Off by default; needs `auth_access_key` and `auth_secret_key`.
    pub auth_enabled: bool,
    /// The cluster's own super user (RocketMQ `initAuthenticationUser` and
    /// `innerClientAuthenticationCredentials` in one): Ferrocket's processes sign their calls to
    /// each other with it, and operators use it. Not stored; the same on every process.
    pub auth_access_key: Option<String>,
    /// Its secret key; better set as `FERROCKET_AUTH_SECRET_KEY` than in a file.
    pub auth_secret_key: Option<String>,
    /// Farthest a gRPC request's signed `x-mq-date-time` may be from this process's clock, ms
    /// (15 min, as AWS SigV4); older signatures are refused as replays. 0 turns the check off
    /// (the Python client signs its local time as if it were UTC).
    pub auth_clock_skew_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        let secs = Duration::from_secs;
        let mins = |m: u64| Duration::from_secs(60 * m);
        Self {
            listen: "127.0.0.1:8081".parse().expect("literal address"),
            advertised_addr: None,
            remoting_listen: "127.0.0.1:10911".parse().expect("literal address"),
            remoting_advertised_addr: None,
            remoting_namesrv_listen: "127.0.0.1:9876".parse().expect("literal address"),
            cluster_name: "DefaultCluster".into(),
            data_dir: PathBuf::from("ferrocket-data"),
            flush_disk_type: FlushDiskType::Async,
            flush_interval_ms: 500,
            sync_flush_timeout_ms: 5_000,
            commitlog_segment_bytes: 1 << 30,
            consume_queue_entries_per_file: 300_000,
            consume_queue_store: ConsumeQueueStore::Files,
            index_slots: 5_000_000,
            index_max_entries: 20_000_000,
            auto_create_topic: false,
            default_queue_count: 8,
            max_body_bytes: 4 << 20,
            default_invisible_ms: 60_000,
            min_invisible_ms: 10_000,
            max_invisible_ms: 12 * 3_600_000,
            long_polling_max_ms: 20_000,
            max_delivery_attempts: 17,
            auto_create_group: true,
            retry_backoff: [10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200]
                .into_iter()
                .map(secs)
                .collect(),
            transaction_timeout_ms: 6_000,
            transaction_check_interval_ms: 30_000,
            transaction_check_max: 15,
            delay_levels: vec![
                secs(1),
                secs(5),
                secs(10),
                secs(30),
                mins(1),
                mins(2),
                mins(3),
                mins(4),
                mins(5),
                mins(6),
                mins(7),
                mins(8),
                mins(9),
                mins(10),
                mins(20),
                mins(30),
                mins(60),
                mins(120),
            ],
            timer_max_delay_ms: 3 * 24 * 3_600_000,
            file_reserved_hours: 72,
            disk_max_used_ratio: 0.75,
            disk_refuse_write_ratio: 0.90,
            clean_interval_ms: 10_000,
            namesrv_addrs: Vec::new(),
            heartbeat_interval_ms: 30_000,
            broker_expiry_ms: 120_000,
            broker_name: "broker-a".into(),
            broker_id: 0,
            broker_role: BrokerRole::Master,
            replication: Replication::Async,
            min_in_sync_replicas: 2,
            ha_sync_timeout_ms: 3_000,
            ha_max_lag_bytes: 256 << 20,
            ha_max_lag_ms: 15_000,
            ha_master_addr: None,
            enable_controller: false,
            controller_peers: Vec::new(),
            controller_id: 0,
            controller_addr: None,
            controller_heartbeat_interval_ms: 1_000,
            controller_heartbeat_timeout_ms: 4_000,
            ha_fence_after_ms: 3_000,
            metrics_listen: None,
            tls_mode: TlsMode::Permissive,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            tls_server_name: None,
            consumer_snapshot_interval_ms: 5_000,
            auth_enabled: false,
            auth_access_key: None,
            auth_secret_key: None,
            auth_clock_skew_ms: 15 * 60_000,
        }
    }
}

/// Serde adapter: a list of durations written the human way (`["1s", "2m"]`).
mod durations {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|d| humantime::format_duration(*d).to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| humantime::parse_duration(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Prefix of the environment variables that set config keys (`FERROCKET_<KEY>`).
pub const ENV_PREFIX: &str = "FERROCKET_";

/// Values given on the command line; `None` leaves the lower layers in force.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--auth-access-key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_access_key: Option<String>,
    /// `--auth-secret-key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_secret_key: Option<String>,
    /// `--tls-ca-file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// `--tls-server-name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
}

impl Config {
    /// Loads defaults, then `file` (TOML, if given), then `FERROCKET_*` env, then `flags`.
    /// Environment variables with the prefix that name no config key (a script's own
    /// `FERROCKET_BIN`, say) are ignored with a warning rather than refused: the environment is
    /// shared, the config file is not.
    /// `base` supplies role-specific defaults (standalone turns `auto_create_topic` on).
    ///
    /// Errors: unreadable or malformed file, unknown key, or a value of the wrong type; the
    /// message names the key and the source.
    pub fn load(base: Config, file: Option<&Path>, flags: &Overrides) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(base));
        if let Some(path) = file {
            anyhow::ensure!(path.exists(), "config file {} does not exist", path.display());
            fig = fig.merge(Toml::file_exact(path));
        }
        let known = Self::keys();
        for (key, _) in std::env::vars() {
            if let Some(k) = key.strip_prefix(ENV_PREFIX) {
                if !known.contains(&k.to_lowercase()) {
                    tracing::warn!(variable = %key, "environment variable names no config key; ignored");
                }
            }
        }
        let env = Env::prefixed(ENV_PREFIX).filter(move |k| known.iter().any(|n| k.as_str().eq_ignore_ascii_case(n)));
        let cfg: Config = fig.merge(env).merge(Serialized::defaults(flags)).extract()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every config key, as written in files (snake_case).
    pub fn keys() -> Vec<String> {
        match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Rejects values the broker cannot run with. Errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        ensure!(self.commitlog_segment_bytes >= 64 * 1024, "commitlog_segment_bytes must be at least 65536");
        ensure!(
            self.max_body_bytes + 64 * 1024 <= self.commitlog_segment_bytes,
            "max_body_bytes must be at least 64 KiB smaller than commitlog_segment_bytes (a record never spans segments)"
        );
        ensure!(self.consume_queue_entries_per_file > 0, "consume_queue_entries_per_file must be > 0");
        ensure!(self.index_slots > 0 && self.index_max_entries > 0, "index_slots and index_max_entries must be > 0");
        ensure!((1..=1024).contains(&self.default_queue_count), "default_queue_count must be in 1..=1024");
        ensure!(self.min_invisible_ms <= self.default_invisible_ms, "default_invisible_ms must be >= min_invisible_ms");
        ensure!(self.default_invisible_ms <= self.max_invisible_ms, "default_invisible_ms must be <= max_invisible_ms");
        ensure!(self.flush_interval_ms > 0, "flush_interval_ms must be > 0");
        ensure!(self.long_polling_max_ms > 0, "long_polling_max_ms must be > 0");
        ensure!(
            (0.0..=1.0).contains(&self.disk_max_used_ratio) && (0.0..=1.0).contains(&self.disk_refuse_write_ratio),
            "disk_max_used_ratio and disk_refuse_write_ratio must be in 0.0..=1.0"
        );
        ensure!(self.clean_interval_ms > 0, "clean_interval_ms must be > 0");
        ensure!(
            self.heartbeat_interval_ms > 0 && self.broker_expiry_ms > 0,
            "heartbeat_interval_ms and broker_expiry_ms must be > 0"
        );
        ensure!(
            self.controller_heartbeat_interval_ms > 0
                && self.controller_heartbeat_timeout_ms > self.controller_heartbeat_interval_ms,
            "controller_heartbeat_timeout_ms must be larger than controller_heartbeat_interval_ms (> 0)"
        );
        ensure!(
            self.ha_fence_after_ms > 0 && self.ha_fence_after_ms < self.controller_heartbeat_timeout_ms,
            "ha_fence_after_ms must be above 0 and below controller_heartbeat_timeout_ms (a master cut off must stop \
             before a successor can be elected)"
        );
        if self.enable_controller {
            self.controller_members()?;
        }
        ensure!(
            self.tls_cert_file.is_some() == self.tls_key_file.is_some(),
            "tls_cert_file and tls_key_file must be set together"
        );
        ensure!(
            self.tls_mode != TlsMode::Enforcing || (self.tls_cert_file.is_some() && self.tls_ca_file.is_some()),
            "tls_mode = \"enforcing\" needs tls_cert_file, tls_key_file and tls_ca_file (this process's own \
             connections to other Ferrocket processes must use TLS too)"
        );
        Ok(())
    }

    /// A consumer group with the broker's defaults: concurrent, clustering,
    /// `max_delivery_attempts`, and `retry_backoff` as a customized backoff.
    pub fn default_group(&self, name: &str) -> crate::consume::groups::GroupConfig {
        use crate::consume::groups::{Backoff, ConsumeType, GroupConfig};
        GroupConfig {
            name: name.to_string(),
            consume_type: ConsumeType::Concurrent,
            max_delivery_attempts: self.max_delivery_attempts,
            backoff: Backoff::Customized { next_ms: self.retry_backoff.iter().map(|d| d.as_millis() as u64).collect() },
            broadcast: false,
        }
    }

    /// What the store needs of it.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            data_dir: self.data_dir.clone(),
            flush_disk_type: self.flush_disk_type,
            flush_interval_ms: self.flush_interval_ms,
            commitlog_segment_bytes: self.commitlog_segment_bytes,
            consume_queue_entries_per_file: self.consume_queue_entries_per_file,
            consume_queue_store: self.consume_queue_store,
            index_slots: self.index_slots,
            index_max_entries: self.index_max_entries,
        }
    }

    /// The controller group's members from `controller_peers`, by id: with none, this process
    /// alone as member 1 at its advertised address. Errors: an entry that is not `id=host:port`,
    /// an id of 0 or given twice, or `controller_id` not among them.
    pub fn controller_members(&self) -> anyhow::Result<std::collections::BTreeMap<u64, String>> {
        use anyhow::{ensure, Context};
        if self.controller_peers.is_empty() {
            return Ok([(1, self.advertised())].into());
        }
        let mut members = std::collections::BTreeMap::new();
        for peer in &self.controller_peers {
            let (id, addr) = peer.split_once('=').context(format!("controller_peers: {peer:?} is not id=host:port"))?;
            let id: u64 = id
                .trim()
                .parse()
                .ok()
                .filter(|i| *i > 0)
                .context(format!("controller_peers: {peer:?} needs an id above 0"))?;
            ensure!(addr.contains(':'), "controller_peers: {peer:?} is not id=host:port");
            ensure!(members.insert(id, addr.trim().to_string()).is_none(), "controller_peers: id {id} is given twice");
        }
        self.controller_self_id(&members)?;
        Ok(members)
    }

    /// This process's id among `members` (from [`Config::controller_members`]): `controller_id`,
    /// or with 0 the member at the advertised address. Errors: no such member.
    pub fn controller_self_id(&self, members: &std::collections::BTreeMap<u64, String>) -> anyhow::Result<u64> {
        let me = self.advertised();
        let id = match self.controller_id {
            0 => members.iter().find(|(_, a)| **a == me).map(|(i, _)| *i),
            id => members.contains_key(&id).then_some(id),
        };
        id.ok_or_else(|| {
            anyhow::anyhow!(
                "controller_id {} (0: the member at the advertised address {me}) is not among controller_peers {:?}",
                self.controller_id,
                self.controller_peers
            )
        })
    }

    /// The controller addresses from `controller_addr` (`;` or `,` separated), in order.
    pub fn controller_addrs(&self) -> Vec<String> {
        let list = self.controller_addr.as_deref().unwrap_or("");
        list.split([';', ',']).map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect()
    }

    /// The `host:port` clients should dial to reach this broker.
    pub fn advertised(&self) -> String {
        self.advertised_addr.clone().unwrap_or_else(|| self.listen.to_string())
    }

    /// The `host:port` Remoting clients should dial to reach this broker, also the store host
    /// of its offset message ids.
    pub fn remoting_advertised(&self) -> String {
        self.remoting_advertised_addr.clone().unwrap_or_else(|| self.remoting_listen.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error type
    fn file_env_and_flags_layer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(
            &file,
            "flush_disk_type = \"sync\"\ndefault_queue_count = 4\nretry_backoff = [\"1s\", \"2m\"]\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("FERROCKET_DEFAULT_QUEUE_COUNT", "6");
            jail.set_env("FERROCKET_BIN", "/usr/bin/ferrocket"); // a script's own variable: ignored
            let flags = Overrides { data_dir: Some("/x".into()), ..Default::default() };
            let cfg = Config::load(Config::default(), Some(&file), &flags).unwrap();
            assert_eq!(cfg.flush_disk_type, FlushDiskType::Sync);
            assert_eq!(cfg.default_queue_count, 6, "env beats file");
            assert_eq!(cfg.data_dir, PathBuf::from("/x"), "flags beat env");
            assert_eq!(cfg.retry_backoff, vec![Duration::from_secs(1), Duration::from_secs(120)]);
            Ok(())
        });
    }

    /// Loads `text` as the config file alone. It runs in a `Jail` because `Config::load` reads
    /// the process environment, which another test's jail may be setting at the same moment.
    #[allow(clippy::result_large_err)]
    fn load_file(text: &str) -> anyhow::Result<Config> {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            jail.create_file("f.toml", text)?;
            let file = jail.directory().join("f.toml");
            out = Some(Config::load(Config::default(), Some(&file), &Overrides::default()));
            Ok(())
        });
        out.unwrap()
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let err = load_file("no_such_key = 1\n").unwrap_err();
        assert!(err.to_string().contains("no_such_key"), "{err}");
        let err = load_file("default_queue_count = 0\n").unwrap_err();
        assert!(err.to_string().contains("default_queue_count"), "{err}");
    }

    #[test]
    fn closed_sets_parse_their_values_and_refuse_others_naming_the_allowed_ones() {
        // What the operator renders for a SYNC group's slave.
        let cfg = load_file("replication = \"sync\"\nbroker_role = \"slave\"\nflush_disk_type = \"sync\"\n").unwrap();
        assert_eq!((cfg.replication, cfg.broker_role), (Replication::Sync, BrokerRole::Slave));
        let err = format!("{:#}", load_file("replication = \"SYNC\"\n").unwrap_err());
        assert!(err.contains("replication") && err.contains("`async`") && err.contains("`sync`"), "{err}");
    }

    #[test]
    fn controller_peers_and_addresses_parse_and_bad_ones_are_refused_by_name() {
        let ok = "enable_controller = true\ncontroller_id = 2\ncontroller_peers = [\"1=a:1\", \"2=b:1\", \"3=c:1\"]\n";
        let members = load_file(ok).unwrap().controller_members().unwrap();
        assert_eq!(members.into_iter().collect::<Vec<_>>(), [(1, "a:1".into()), (2, "b:1".into()), (3, "c:1".into())]);
        for bad in ["[\"1=a:1\", \"1=b:1\"]", "[\"0=a:1\"]", "[\"a:1\"]", "[\"1=a:1\", \"3=c:1\"]"] {
            let text = format!("enable_controller = true\ncontroller_id = 2\ncontroller_peers = {bad}\n");
            let err = format!("{:#}", load_file(&text).unwrap_err());
            assert!(err.contains("controller_"), "{bad}: {err}");
        }
        // Alone, the controller is member 1; a broker splits RocketMQ's list.
        let alone = load_file("enable_controller = true\n").unwrap();
        assert_eq!(alone.controller_members().unwrap().len(), 1);
        let broker = load_file("controller_addr = \"a:1; b:1,c:1\"\n").unwrap();
        assert_eq!(broker.controller_addrs(), ["a:1", "b:1", "c:1"]);
    }
}
