//! The broker engine's API: send, receive, ack, change invisible time, topics, groups,
//! transactions, scheduled messages. It ties the store, the registries and consumer progress
//! together and knows nothing of gRPC.

mod consume;
mod durable;
mod failover;
mod retention;
mod retry;
mod timer;
mod transactions;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use thiserror::Error;

pub use consume::{Consumer, Pulled, PROP_DLQ_ATTEMPTS, PROP_DLQ_DROPPED, PROP_DLQ_ORIGIN_TOPIC};
pub use durable::{Outgoing, Sent};
pub use retention::CleanReport;
pub use retry::{SendBack, SentBack, PROP_DELAY_LEVEL, PROP_ORIGIN_MESSAGE_ID, PROP_RETRY_TOPIC};
pub use transactions::{Check, CheckOutcome};

use crate::config::{BrokerRole, Config};
use crate::consume::groups::{GroupError, GroupManager};
use crate::consume::progress_log::{self, ProgressLog};
use crate::consume::state::{AckRecord, ConsumeState, QueueKey, QueueState, ACK_LOG_TOPIC};
use crate::metrics::Metrics;
use crate::state_log::LogCheckpoint;
use crate::store::files::{skip_if_full, write_or_skip};
use crate::store::record::Record;
use crate::store::{Listeners, RecordClass, Store, StoreError};
use crate::timer::log::TimerCheckpoint;
use crate::timer::TimerLog;
use crate::topics::{self, MessageType, Permission, TopicConfig, TopicError, TopicManager};
use crate::txn::{self, TxLog, TxState};
use transactions::check_timing;

/// Why an engine call was refused. Each front end maps each to its protocol's status code.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// The topic does not exist (and auto-creation is off or not allowed for it).
    #[error("topic {0} does not exist")]
    TopicNotFound(String),
    /// This master has not heard from the controller for `ha_fence_after_ms`, so another may be
    /// elected: it takes no writes until the controller answers again.
    #[error("this master cannot reach the controller and may have been replaced: writes refused until it can")]
    Fenced,
    /// The topic request itself is invalid (name, queue count) or could not be persisted.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The topic's permission forbids the operation (topic, missing right).
    #[error("topic {0} is not {1}")]
    Permission(String, &'static str),
    /// The message names a queue the topic does not have.
    #[error("queue {queue} does not exist in topic {topic} ({count} queues)")]
    QueueOutOfRange {
        /// The topic.
        topic: String,
        /// The queue id asked for.
        queue: u32,
        /// Queues the topic has.
        count: u32,
    },
    /// The topic does not accept this message type.
    #[error("topic {topic} does not accept {ty:?} messages (accepts {accepts:?})")]
    TypeNotAccepted {
        /// The topic.
        topic: String,
        /// The message's type.
        ty: MessageType,
        /// The types the topic accepts.
        accepts: Vec<MessageType>,
    },
    /// The transaction id or message id names no open transaction (why).
    #[error("invalid transaction: {0}")]
    InvalidTransaction(String),
    /// The transaction already ended the other way (a COMMIT after a ROLLBACK, or the reverse).
    #[error("{0}")]
    TransactionConflict(String),
    /// The receipt handle is malformed, stale, expired or already acknowledged (why).
    #[error("invalid receipt handle: {0}")]
    InvalidHandle(String),
    /// The consumer group does not exist (and auto-creation is off).
    #[error("consumer group {0} does not exist")]
    GroupNotFound(String),
    /// The group request is invalid or could not be persisted.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// A broadcast group needs the client's id (`x-mq-client-id`) to keep its progress.
    #[error("a broadcast consumer group needs the client id (x-mq-client-id)")]
    ClientIdRequired,
    /// A pull or offset update names an offset outside the queue (why).
    #[error("{0}")]
    IllegalOffset(String),
    /// A delivery time or delay level out of range (why).
    #[error("{0}")]
    IllegalDeliveryTime(String),
    /// A recall handle that names no scheduled message of the topic (why).
    #[error("invalid recall handle: {0}")]
    InvalidRecallHandle(String),
    /// The message's properties (tag, keys, user and system properties together) are larger
    /// than [`crate::limits::MAX_PROPERTIES_BYTES`].
    #[error("message properties are {len} bytes encoded, at most {max}")]
    PropertiesTooLarge {
        /// Their encoded size, bytes.
        len: usize,
        /// The limit, bytes.
        max: usize,
    },
    /// The data disk is above `disk_refuse_write_ratio`: new messages are refused until
    /// retention frees space (RocketMQ's "disk full" SERVICE_NOT_AVAILABLE).
    #[error("disk full: the data disk is {:.1}% used, above disk_refuse_write_ratio {:.1}%; new messages are refused until retention frees space", used * 100.0, limit * 100.0)]
    DiskFull {
        /// Used share of the data disk, 0.0..=1.0.
        used: f64,
        /// `disk_refuse_write_ratio`.
        limit: f64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// SYNC_FLUSH: the fsync did not cover the write within `sync_flush_timeout_ms` (RocketMQ
    /// FLUSH_DISK_TIMEOUT); the write is stored but not known to be on disk.
    #[error("stored, but not flushed to disk within sync_flush_timeout_ms ({waited_ms} ms)")]
    FlushTimeout {
        /// How long the write waited, ms.
        waited_ms: u64,
    },
    /// SYNC replication: the in-sync slaves did not confirm the write in time, or this broker
    /// stopped being master (RocketMQ SLAVE_NOT_AVAILABLE / FLUSH_SLAVE_TIMEOUT).
    #[error(transparent)]
    NotReplicated(#[from] crate::ha::NotReplicated),
    /// One durability failure shared by every message of a batch or ack request.
    #[error(transparent)]
    NotDurable(Arc<BrokerError>),
}

/// Queue id of a message whose queue the broker picks (see [`Broker::send`]).
pub const ANY_QUEUE: u32 = u32::MAX;

/// Where a sent message was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOk {
    /// Queue the message was stored in.
    pub queue_id: u32,
    /// Its offset in that queue (0 for a scheduled message until it is delivered).
    pub queue_offset: u64,
    /// CommitLog offset of the stored record (for a scheduled message, of its timer record; for
    /// a transaction, of its half message): what an offset message id encodes.
    pub physical_offset: u64,
}

/// One message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The stored message.
    pub record: Record,
    /// Handle to ack it or change its invisible time with.
    pub receipt_handle: String,
    /// 1 for the first delivery.
    pub attempt: u32,
    /// How long it stays invisible, ms.
    pub invisible_ms: u64,
    /// When it becomes visible again, ms since the epoch: its invisible time ends here.
    pub visible_at_ms: u64,
}

/// Contents of `config/state.json`: the progress log's, the transaction log's and the timer
/// log's files, all as of one CommitLog offset; the ack, half, op and timer records after it are
/// replayed on start.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct StateFile {
    commitlog_offset: u64,
    /// The progress log's generation and length (absent in snapshots written before it existed).
    #[serde(default)]
    progress: Option<LogCheckpoint>,
    /// Snapshots written before the progress log kept every queue's progress here: read once,
    /// to import it.
    #[serde(default, skip_serializing)]
    queues: Vec<(QueueKey, QueueState)>,
    /// The transaction log's generation and length (absent in snapshots written before it).
    #[serde(default)]
    tx_log: Option<LogCheckpoint>,
    /// Snapshots written before the transaction log kept open transactions here: read once, to
    /// import them.
    #[serde(default, skip_serializing)]
    transactions: Option<TxState>,
    /// The timer log's bucket files (absent in snapshots written before it existed).
    #[serde(default)]
    timer_log: Option<TimerCheckpoint>,
    /// Snapshots written before the timer log kept scheduled messages here, (due ms, CommitLog
    /// offset, size): read once, to import them.
    #[serde(default, skip_serializing)]
    timers: Vec<(u64, u64, u32)>,
}

/// Applies one CommitLog record to consumer progress (an ack record) or open transactions (half
/// and op records); [`TimerLog::apply`] takes the timer's. Used on a slave for every record its
/// master sends (and, split by offset, when replaying after the snapshot on start).
fn replay(rec: &Record, size: u32, state: &mut ConsumeState, tx: &mut TxState, timing: crate::txn::CheckTiming) {
    if !replay_ack(rec, state) {
        tx.apply(rec, size, timing);
    }
}

/// Applies `rec` to consumer progress if it is an ack record; returns whether it is one.
fn replay_ack(rec: &Record, state: &mut ConsumeState) -> bool {
    if rec.topic != ACK_LOG_TOPIC {
        return false;
    }
    match serde_json::from_slice::<AckRecord>(&rec.body) {
        Ok(ack) => state.apply(&ack),
        Err(e) => tracing::error!(offset = rec.physical_offset, error = %e, "unreadable ack record skipped"),
    }
    true
}

/// Moves every group's progress into the range its queue holds now (after retention or a cut
/// of the log removed entries; see [`QueueState::clamp`]).
fn clamp_to_store(state: &mut ConsumeState, store: &Store) {
    for ((_, topic, q), st) in state.iter_mut() {
        st.clamp(store.min_queue_offset(topic, *q), store.max_queue_offset(topic, *q));
    }
}

/// Opens the timer log in `<data_dir>/timerlog` as the snapshot recorded it, importing the
/// scheduled messages of a snapshot written before it existed; returns it and the CommitLog
/// offset its replay starts at. A log that does not match the snapshot (a file missing or cut
/// short) is rebuilt from the whole CommitLog, which holds every timer record. Errors: I/O.
fn open_timer_log(cfg: &Config, snapshot: &mut StateFile) -> std::io::Result<(TimerLog, u64)> {
    let dir = cfg.data_dir.join("timerlog");
    let mut imported: Vec<_> = std::mem::take(&mut snapshot.timers).into_iter().map(|(d, o, s)| ((d, o), s)).collect();
    let open = |c: Option<TimerCheckpoint>| match c {
        Some(c) => TimerLog::open(&dir, c, std::mem::take(&mut imported)),
        None => TimerLog::open(&dir, TimerCheckpoint::new(), []),
    };
    open_or_rebuild("timer log", snapshot.timer_log.take().unwrap_or_default(), snapshot.commitlog_offset, open)
}

/// Opens a log of the snapshot with `open` at `checkpoint`, or, when the log does not match the
/// snapshot (a file missing, cut short or unreadable: [`std::io::ErrorKind::InvalidData`]),
/// empty, to be rebuilt from the records of the whole CommitLog. Returns it and the CommitLog
/// offset its records replay from: the snapshot's (`from`), or 0 when rebuilt. Errors: I/O.
fn open_or_rebuild<C, T>(
    what: &str,
    checkpoint: C,
    from: u64,
    mut open: impl FnMut(Option<C>) -> std::io::Result<T>,
) -> std::io::Result<(T, u64)> {
    match open(Some(checkpoint)) {
        Ok(opened) => Ok((opened, from)),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            tracing::error!(error = %e, "{what} does not match the state snapshot; rebuilding it from the CommitLog");
            Ok((open(None)?, 0))
        }
        Err(e) => Err(e),
    }
}

/// Opens the progress log in `<data_dir>/progress` as the snapshot recorded it (see
/// [`open_or_rebuild`]), or imports the progress of a snapshot written before it existed; returns
/// it, the progress, and the CommitLog offset its ack records replay from. Errors: I/O.
fn open_progress_log(cfg: &Config, snapshot: &mut StateFile) -> std::io::Result<(ProgressLog, ConsumeState, u64)> {
    let dir = cfg.data_dir.join("progress");
    let Some(checkpoint) = snapshot.progress else {
        let (log, _) = progress_log::open(&dir, None)?;
        let imported = ConsumeState::from_entries(std::mem::take(&mut snapshot.queues));
        return Ok((log, imported, snapshot.commitlog_offset));
    };
    let open = |c| progress_log::open(&dir, c);
    let ((log, state), from) = open_or_rebuild("progress log", checkpoint, snapshot.commitlog_offset, open)?;
    Ok((log, state, from))
}

/// Opens the transaction log in `<data_dir>/transactions` as the snapshot recorded it (see
/// [`open_or_rebuild`]), or imports the open transactions of a snapshot written before it
/// existed; returns it, the transactions, and the CommitLog offset their half and op records
/// replay from. Errors: I/O.
fn open_tx_log(cfg: &Config, snapshot: &mut StateFile) -> std::io::Result<(TxLog, TxState, u64)> {
    let dir = cfg.data_dir.join("transactions");
    let Some(checkpoint) = snapshot.tx_log else {
        let (log, _) = txn::open_log(&dir, None)?;
        let imported = snapshot.transactions.take().unwrap_or_default().imported();
        return Ok((log, imported, snapshot.commitlog_offset));
    };
    let open = |c| txn::open_log(&dir, c);
    let ((log, tx), from) = open_or_rebuild("transaction log", checkpoint, snapshot.commitlog_offset, open)?;
    Ok((log, tx, from))
}

/// The role a broker starts in: with a controller, a slave of no one yet (read-only until the
/// controller answers); otherwise `broker_role`, a slave following `ha_master_addr` if set.
fn initial_role(cfg: &Config, epoch: u64) -> crate::ha::role::Role {
    use crate::ha::role::{Role, RoleKind};
    if cfg.controller_addr.is_some() {
        Role { kind: RoleKind::Slave { master: None }, epoch }
    } else if cfg.broker_role == BrokerRole::Slave {
        Role { kind: RoleKind::Slave { master: cfg.ha_master_addr.clone() }, epoch: 0 }
    } else {
        Role { kind: RoleKind::Master, epoch: 0 }
    }
}

/// The engine of one broker.
pub struct Broker {
    cfg: Config,
    store: Arc<Store>,
    topics: TopicManager,
    /// Consumer progress. A receive, ack or invisible-time change takes the read lock and its
    /// queue's mutex, and appends its ack record while holding them; a checkpoint takes the write
    /// lock, so every ack record below the CommitLog offset it records is in what it takes. One
    /// group's receive thus never waits on another group's ack.
    consume: RwLock<ConsumeState>,
    /// Open transactions. Half and op records are appended while holding this lock, so a
    /// snapshot taken under it splits them cleanly at one CommitLog offset.
    tx: Mutex<TxState>,
    /// Scheduled messages; timer, recall and delivered records are appended under this lock (as
    /// half messages are under `tx`'s).
    timer: Mutex<TimerLog>,
    groups: GroupManager,
    auth: Arc<crate::auth::Auth>,
    metrics: Metrics,
    rotate: AtomicUsize,
    /// Per topic: the next queue a message without a message group goes to ([`ANY_QUEUE`]).
    send_rotation: Mutex<std::collections::HashMap<String, u32>>,
    /// Queue locks of orderly pull consumers.
    locks: crate::consume::locks::QueueLocks,
    /// Bumped when a message may have become available without a new one (FIFO acks, nacks to 0,
    /// dead letters, offset resets): wakes long polls.
    wakeups: tokio::sync::watch::Sender<u64>,
    /// The store's progress, for waiters: records dispatched below, CommitLog flushed below,
    /// CommitLog end after each append.
    dispatched: Arc<tokio::sync::watch::Sender<u64>>,
    flushed: Arc<tokio::sync::watch::Sender<u64>>,
    appended: Arc<tokio::sync::watch::Sender<u64>>,
    /// Turns true when the server stops: every long poll returns.
    polls_ending: tokio::sync::watch::Sender<bool>,
    /// CommitLog offset of the last state snapshot (replay starts there): retention keeps it.
    snapshot_offset: AtomicU64,
    /// Consumer progress on disk. Held while a snapshot is taken and written, so two never
    /// interleave (it appends in snapshot order; it and the timer log delete files only a
    /// written snapshot no longer lists).
    progress_log: Mutex<ProgressLog>,
    /// Open transactions on disk, written by what changed at each snapshot.
    tx_log: Mutex<TxLog>,
    /// The data disk's used share, shared with the store's segment listener.
    disk: Arc<retention::DiskGuard>,
    /// What this master's slaves have confirmed.
    replicas: Arc<crate::ha::Replicas>,
    /// Master or slave, and the controller epoch.
    role: tokio::sync::watch::Sender<crate::ha::role::Role>,
    /// Where each epoch of this broker's log began (`config/epochs.json`).
    epochs: Mutex<crate::ha::epochs::EpochHistory>,
    /// On a slave: bytes behind the master at the last chunk; `u64::MAX` while not replicating.
    replication_lag: AtomicU64,
    /// The write lease the controller client renews (see [`Broker::hold_lease`]).
    lease: crate::ha::lease::Lease,
    stopping: AtomicBool,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Broker {
    /// Opens the store (recovering it), the topic and group registries, consumer progress, open
    /// transactions and scheduled messages (snapshot plus replayed records), and starts the
    /// snapshot and timer threads. Errors: anything that makes the data
    /// directory unusable, naming the file.
    pub fn open(cfg: Config) -> anyhow::Result<Arc<Broker>> {
        let dispatched = Arc::new(tokio::sync::watch::channel(0).0);
        let flushed = Arc::new(tokio::sync::watch::channel(0).0);
        let appended = Arc::new(tokio::sync::watch::channel(0).0);
        let flush_ms = crate::metrics::flush_histogram();
        let disk = Arc::new(retention::DiskGuard::new(cfg.disk_max_used_ratio, cfg.disk_refuse_write_ratio));
        let listeners = {
            let (d, f, a, h) = (dispatched.clone(), flushed.clone(), appended.clone(), flush_ms.clone());
            let (guard, data_dir) = (disk.clone(), cfg.data_dir.clone());
            Listeners {
                dispatched: Some(Box::new(move |o| {
                    d.send_replace(o);
                })),
                flushed: Some(Box::new(move |o| {
                    f.send_replace(o);
                })),
                // Called for every record: skip the watch's lock while no replication stream
                // waits (a stream subscribes before it looks for bytes, so it misses none).
                appended: Some(Box::new(move |o| {
                    if a.receiver_count() > 0 {
                        a.send_replace(o);
                    }
                })),
                flush_ms: Some(Box::new(move |ms| h.observe(ms))),
                segment_created: Some(Box::new(move || guard.measure(&data_dir))),
            }
        };
        let store = Store::open(cfg.store_config(), listeners)?;
        flushed.send_replace(store.flushed());
        let config_dir = cfg.data_dir.join("config");
        std::fs::create_dir_all(&config_dir)?;
        let topics = TopicManager::load(&config_dir.join("topics.json"))?;
        let groups = GroupManager::load(&config_dir.join("groups.json"))?;
        let auth = Arc::new(crate::auth::Auth::load(&cfg, Some(&config_dir))?);
        let state_path = config_dir.join("state.json");
        let mut snapshot: StateFile = match std::fs::read(&state_path) {
            // Every ack, half and op record is also in the CommitLog: an unreadable snapshot means
            // replaying all of them.
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::error!(file = %state_path.display(), error = %e, "unreadable state snapshot; replaying the whole CommitLog");
                StateFile::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
            Err(e) => return Err(e.into()),
        };
        let from = snapshot.commitlog_offset;
        let (mut timers, timers_from) = open_timer_log(&cfg, &mut snapshot)?;
        let (progress_log, mut state, progress_from) = open_progress_log(&cfg, &mut snapshot)?;
        let (tx_log, mut tx, tx_from) = open_tx_log(&cfg, &mut snapshot)?;
        let timing = check_timing(&cfg);
        let mut replayed = 0u64;
        let mut failed = None;
        store.scan(tx_from.min(timers_from).min(progress_from), |rec, size| {
            let at = rec.physical_offset;
            if rec.topic == ACK_LOG_TOPIC {
                if at >= progress_from {
                    replayed += replay_ack(rec, &mut state) as u64;
                }
            } else if at >= tx_from {
                tx.apply(rec, size, timing);
            }
            if at >= timers_from {
                if let Err(e) = timers.apply(rec, size) {
                    failed.get_or_insert(e);
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        clamp_to_store(&mut state, &store);
        tracing::info!(
            queues = state.len(),
            replayed_acks = replayed,
            open_transactions = tx.pending().len(),
            scheduled = timers.len(),
            "state loaded"
        );
        let mut metrics = Metrics::default();
        metrics.register_flush_latency(flush_ms);
        let epochs = crate::ha::epochs::EpochHistory::load(&config_dir.join("epochs.json"))?;
        let role = initial_role(&cfg, epochs.last_epoch());
        let bounds =
            crate::ha::LagBounds { bytes: cfg.ha_max_lag_bytes, time: Duration::from_millis(cfg.ha_max_lag_ms) };
        let broker = Arc::new(Broker {
            cfg,
            store,
            topics,
            consume: RwLock::new(state),
            tx: Mutex::new(tx),
            timer: Mutex::new(timers),
            groups,
            auth,
            metrics,
            rotate: AtomicUsize::new(0),
            send_rotation: Mutex::new(std::collections::HashMap::new()),
            locks: Default::default(),
            wakeups: tokio::sync::watch::channel(0).0,
            dispatched,
            flushed,
            appended,
            polls_ending: tokio::sync::watch::channel(false).0,
            snapshot_offset: AtomicU64::new(from),
            progress_log: Mutex::new(progress_log),
            tx_log: Mutex::new(tx_log),
            disk,
            replicas: Arc::new(crate::ha::Replicas::new(bounds)),
            lease: Default::default(),
            role: tokio::sync::watch::channel(role).0,
            epochs: Mutex::new(epochs),
            replication_lag: AtomicU64::new(u64::MAX),
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        let b = broker.clone();
        let snap = std::thread::Builder::new().name("state-snapshot".into()).spawn(move || b.snapshot_loop())?;
        let b = broker.clone();
        let clean = std::thread::Builder::new().name("retention".into()).spawn(move || b.clean_loop())?;
        // A slave writes only its master's bytes: deliveries and dead letters happen there, and
        // the timer thread idles until a promotion.
        broker.store.set_replica(broker.is_slave());
        broker.update_dispatch_limit();
        let b = broker.clone();
        let timer = std::thread::Builder::new().name("timer".into()).spawn(move || b.timer_loop())?;
        broker.threads.lock().extend([snap, clean, timer]);
        Ok(broker)
    }

    /// A receiver that changes whenever a record is appended to the CommitLog (a master's
    /// replication streams wait on it).
    pub fn subscribe_appended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The storage engine.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// On a slave: CommitLog bytes it lacks behind its master, as of the last chunk received;
    /// `None` while it is not replicating (not connected yet, or the stream broke).
    pub fn replication_lag(&self) -> Option<u64> {
        Some(self.replication_lag.load(Ordering::Acquire)).filter(|l| *l != u64::MAX)
    }

    /// Records the slave's lag (see [`Broker::replication_lag`]).
    pub fn set_replication_lag(&self, lag: Option<u64>) {
        self.replication_lag.store(lag.map_or(u64::MAX, |l| l.min(u64::MAX - 1)), Ordering::Release);
    }

    /// What this master's slaves have confirmed (SYNC replication waits on it).
    pub fn replicas(&self) -> &Arc<crate::ha::Replicas> {
        &self.replicas
    }

    /// On a slave: writes CommitLog bytes its master sent at `offset` (whole records) and applies
    /// the acks, transaction ops and timer records among them, so the slave's state is the
    /// master's and it can take over. Returns the new CommitLog end.
    /// Errors: bytes that do not continue the log, I/O.
    pub fn apply_replicated(&self, offset: u64, data: &[u8]) -> Result<u64, BrokerError> {
        let timing = check_timing(&self.cfg);
        // One lock of each for the whole chunk (the snapshot's order), not per record, taken
        // before the bytes are written: a snapshot then never records an offset past records
        // its state lacks.
        let (mut state, mut tx, mut timers) = (self.consume.write(), self.tx.lock(), self.timer.lock());
        let end = self.store.append_raw(offset, data)?;
        let mut failed = None;
        self.store.scan(offset, |rec, size| {
            replay(rec, size, &mut state, &mut tx, timing);
            if let Err(e) = timers.apply(rec, size) {
                failed.get_or_insert(e);
            }
        })?;
        match failed {
            Some(e) => Err(StoreError::Io(e).into()),
            None => Ok(end),
        }
    }

    /// The topic registry.
    pub fn topics(&self) -> &TopicManager {
        &self.topics
    }

    /// Deletes a topic: its configuration, ConsumeQueues and every group's progress on it
    /// (RocketMQ `deleteTopic`). `allow_system`: a slave mirroring its master may delete the
    /// broker's own topics too. Errors: [`TopicError::NotFound`], [`TopicError::Reserved`] for a
    /// system topic, I/O.
    pub fn delete_topic(&self, name: &str, allow_system: bool) -> Result<(), BrokerError> {
        if !allow_system && topics::is_system(name) {
            return Err(TopicError::Reserved(name.to_string()).into());
        }
        self.topics.delete(name)?;
        self.consume.write().remove_where(|(_, topic, _)| topic == name);
        self.store.delete_topic(name)?;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// The topic, created with the defaults if it is unknown and `auto_create_topic` is on.
    /// Errors: [`BrokerError::TopicNotFound`], or an illegal/reserved name.
    pub fn topic_or_create(&self, name: &str) -> Result<TopicConfig, BrokerError> {
        if let Some(t) = self.topics.get(name) {
            return Ok(t);
        }
        topics::validate_name(name)?;
        if !self.cfg.auto_create_topic || topics::is_system(name) {
            return Err(BrokerError::TopicNotFound(name.to_string()));
        }
        let cfg = TopicConfig {
            name: name.to_string(),
            queue_count: self.cfg.default_queue_count,
            permission: Permission::ReadWrite,
            message_types: MessageType::ALL.to_vec(),
        };
        if self.topics.upsert(cfg.clone())? {
            tracing::info!(topic = name, queues = cfg.queue_count, "topic auto-created");
        }
        Ok(self.topics.get(name).unwrap_or(cfg))
    }

    /// Appends a message (`rec` with topic, queue id, properties and body set), checking that its
    /// topic accepts type `accepts` where that is given; returns where it went and the CommitLog
    /// end to make durable. Errors: as [`Broker::send`].
    pub(crate) fn append_message(
        &self,
        rec: &mut Record,
        accepts: Option<MessageType>,
    ) -> Result<(SendOk, u64), BrokerError> {
        self.check_send(rec, accepts)?;
        let r = self.store.append(rec, true, RecordClass::Message)?;
        Ok((SendOk { queue_id: rec.queue_id, queue_offset: r.queue_offset, physical_offset: r.physical_offset }, r.end))
    }

    /// The checks every send makes: disk not too full, properties within
    /// [`crate::limits::MAX_PROPERTIES_BYTES`], topic exists (or is auto-created), writable, queue
    /// in range, and message type `accepts` accepted where it is given. Picks the queue of a
    /// message sent to [`ANY_QUEUE`].
    fn check_send(&self, rec: &mut Record, accepts: Option<MessageType>) -> Result<(), BrokerError> {
        if self.is_slave() {
            return Err(StoreError::ReadOnly.into());
        }
        if self.is_fenced() {
            return Err(BrokerError::Fenced);
        }
        self.check_disk()?;
        let len = crate::limits::properties_bytes(rec);
        if len > crate::limits::MAX_PROPERTIES_BYTES {
            return Err(BrokerError::PropertiesTooLarge { len, max: crate::limits::MAX_PROPERTIES_BYTES });
        }
        let topic = self.topic_or_create(&rec.topic)?;
        if !topic.permission.writable() {
            return Err(BrokerError::Permission(topic.name, "writable"));
        }
        if rec.queue_id == ANY_QUEUE {
            rec.queue_id = self.pick_queue(&topic, rec);
        }
        if rec.queue_id >= topic.queue_count {
            return Err(BrokerError::QueueOutOfRange {
                topic: topic.name,
                queue: rec.queue_id,
                count: topic.queue_count,
            });
        }
        if let Some(ty) = accepts.filter(|ty| !topic.message_types.contains(ty)) {
            return Err(BrokerError::TypeNotAccepted { topic: topic.name, ty, accepts: topic.message_types });
        }
        Ok(())
    }

    /// The queue for a message whose producer left the choice to the broker, as RocketMQ's proxy
    /// picks it (`SendMessageActivity.SendMessageQueueSelector`): a message with a message group
    /// by the consistent hash of the group's Java hash code, so a group keeps one queue and its
    /// order; any other in turn over the topic's queues.
    fn pick_queue(&self, topic: &TopicConfig, rec: &Record) -> u32 {
        let n = topic.queue_count.max(1);
        if let Some(g) = rec.properties.get(crate::store::PROP_MESSAGE_GROUP) {
            return crate::limits::consistent_hash(crate::store::consume_queue::java_string_hash(g) as i64, n);
        }
        let mut rotation = self.send_rotation.lock();
        let next = match rotation.get_mut(&topic.name) {
            Some(n) => n,
            None => rotation.entry(topic.name.clone()).or_insert_with(rand::random::<u32>),
        };
        let q = *next % n;
        *next = next.wrapping_add(1);
        q
    }

    /// The queue locks of orderly pull consumers (LOCK_BATCH_MQ).
    pub fn queue_locks(&self) -> &crate::consume::locks::QueueLocks {
        &self.locks
    }

    /// The broker's metrics (transaction counters among them).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The users and the verification of requests ([`crate::auth`]).
    pub fn auth(&self) -> &Arc<crate::auth::Auth> {
        &self.auth
    }

    /// The broker's metrics as Prometheus text, with the gauges that are computed on demand (open
    /// transactions, scheduled messages, consumer lag, replication, dispatch lag) brought up to
    /// date first.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        m.open_transactions.set(self.open_transaction_count() as i64);
        m.timer.scheduled.set(self.scheduled_count() as i64);
        m.set_consumer_lags(self.consumer_lags());
        let end = self.store.commitlog_end();
        m.set_replication(end, &self.replicas.slaves(), self.replicas.waited_on(end).len());
        m.dispatch_lag.set(end.saturating_sub(self.store.dispatched()) as i64);
        m.encode()
    }

    /// Writes `config/state.json` (the progress, transaction and timer logs' files as of the
    /// CommitLog end), after flushing the CommitLog up to there, appending what changed to the
    /// progress and transaction logs and fsyncing the timer log files it lists. Errors: I/O.
    pub fn snapshot(&self) -> std::io::Result<()> {
        let (mut progress_log, mut tx_log) = (self.progress_log.lock(), self.tx_log.lock());
        let (mut snap, capture, changes, whole, tx_changes, tx_whole) = {
            let mut consume = self.consume.write();
            let mut tx = self.tx.lock();
            let mut timers = self.timer.lock();
            // Ack, half, op and timer records are appended under these locks, so every one
            // below this offset is reflected in what is taken.
            let mut capture = timers.capture()?;
            let whole = progress_log.needs_whole();
            let changes = consume.take_changes(whole);
            let tx_whole = tx_log.needs_whole();
            let tx_changes = tx.take_changes(tx_whole);
            let snap = StateFile {
                commitlog_offset: self.store.commitlog_end(),
                timer_log: Some(std::mem::take(&mut capture.checkpoint)),
                ..StateFile::default()
            };
            (snap, capture, changes, whole, tx_changes, tx_whole)
        };
        let synced = self.store.flush_log().and_then(|_| capture.sync());
        if synced.is_err() {
            // The changes taken will not be written: the next checkpoint writes everything (a
            // failed write below sees to that itself).
            progress_log.force_whole();
            tx_log.force_whole();
        }
        let written = synced.and_then(|()| {
            // Both written even if one fails: each makes its own next write whole then.
            let (progress, tx) = (progress_log.write(changes, whole), tx_log.write(tx_changes, tx_whole));
            Ok((progress?, tx?))
        });
        // On a full disk the snapshot is skipped (below too): the records after the last one are
        // replayed, and retention keeps them.
        match skip_if_full(&self.cfg.data_dir, "progress and transaction logs", written)? {
            Some((progress, tx)) => (snap.progress, snap.tx_log) = (Some(progress), Some(tx)),
            None => return Ok(()),
        }
        self.topics.registry().persist_if_dirty()?;
        self.groups.registry().persist_if_dirty()?;
        if write_or_skip(&self.cfg.data_dir.join("config").join("state.json"), &snap, "state snapshot")? {
            self.snapshot_offset.fetch_max(snap.commitlog_offset, Ordering::AcqRel);
            self.timer.lock().forget_retired(&capture)?;
            progress_log.forget_retired();
            tx_log.forget_retired();
        }
        Ok(())
    }

    fn snapshot_loop(&self) {
        self.every(Duration::from_millis(self.cfg.consumer_snapshot_interval_ms.max(100)), false, || {
            if let Err(e) = self.snapshot() {
                tracing::error!(error = %e, "consumer progress snapshot failed");
            }
        });
    }

    /// Runs `f` every `interval` (and once first if `at_start`) until the broker stops; checks
    /// for the stop every 50 ms at most, so shutdown never waits a whole interval.
    fn every(&self, interval: Duration, at_start: bool, mut f: impl FnMut()) {
        let tick = Duration::from_millis(50).min(interval);
        let mut waited = if at_start { interval } else { Duration::ZERO };
        while !self.stopping.load(Ordering::Acquire) {
            if waited >= interval {
                waited = Duration::ZERO;
                f();
            }
            std::thread::sleep(tick);
            waited += tick;
        }
    }

    /// Stops the engine: final snapshot, store flush and checkpoint. Idempotent. Errors: I/O.
    pub fn shutdown(&self) -> std::io::Result<()> {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        for h in self.threads.lock().drain(..) {
            let _ = h.join();
        }
        self.store.shutdown()?;
        self.snapshot()
    }
}
