//! The `ferrocket` command: run a broker (`standalone`, `broker`), manage topics, benchmark.

use std::path::PathBuf;
use std::sync::OnceLock;

use clap::{Parser, Subcommand, ValueEnum};
use ferrocket_engine::config::{Config, Overrides};
use ferrocket_proto::admin::admin_client::AdminClient;
use ferrocket_proto::admin::{
    ClusterStatusRequest, ClusterStatusResponse, CreateTopicRequest, DeleteGroupRequest, DeleteTopicRequest,
    DescribeGroupRequest, DescribeTopicRequest, ExponentialBackoff, GroupConfig, ListGroupsRequest, ListTopicsRequest,
    ListTransactionsRequest, QueryMessageRequest, TopicConfig, UpsertGroupRequest,
};
use ferrocket_proto::clients::Nameservers;
use ferrocket_proto::dial::Dialer;
use ferrocket_proto::signing::{SignedChannel, Signer};
use ferrocket_proto::v2::{MessageType, Permission};

#[derive(Parser)]
#[command(name = "ferrocket", version, about = "Ferrocket: a RocketMQ-compatible message broker")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Access key the CLI signs its calls with (a super user's, where authentication is on); for
    /// `standalone`, `broker` and `namesrv` the config key `auth_access_key` (the same variable).
    #[arg(long, global = true, env = "FERROCKET_AUTH_ACCESS_KEY")]
    auth_access_key: Option<String>,
    /// Its secret key.
    #[arg(long, global = true, env = "FERROCKET_AUTH_SECRET_KEY", hide_env_values = true)]
    auth_secret_key: Option<String>,
    /// PEM CA bundle the CLI trusts: set, it dials brokers and nameservers over TLS; for
    /// `standalone`, `broker` and `namesrv` the config key `tls_ca_file`.
    #[arg(long, global = true, env = "FERROCKET_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// The name servers' certificates are checked for instead of the dialled host; for server
    /// commands the config key `tls_server_name`.
    #[arg(long, global = true, env = "FERROCKET_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,
}

/// How the CLI dials and signs its calls (set once from the command line).
static DIALER: OnceLock<Dialer> = OnceLock::new();

fn dialer() -> Dialer {
    DIALER.get().cloned().unwrap_or_default()
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// TOML config file (keys as in DESIGN.md §7; env FERROCKET_<KEY> overrides it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// gRPC listen address, host:port.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Nameserver role and broker in one process, topics auto-created, data in ./ferrocket-data;
    /// gRPC on 8081, Remoting on 10911 and a Remoting nameserver on 9876.
    Standalone(ServeArgs),
    /// A broker process (topics must be created first); with `namesrv_addrs` it registers with
    /// the nameservers and routes clients to every broker group.
    Broker(ServeArgs),
    /// A nameserver: the route table brokers register with (default listen 127.0.0.1:9876).
    Namesrv(ServeArgs),
    /// What the nameservers know: broker groups, brokers, roles, endpoints, last registration.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
        /// Nameserver addresses, comma-separated `host:port`.
        #[arg(long, global = true, default_value = "127.0.0.1:9876")]
        namesrv: String,
        /// Ask this broker instead (its Admin ClusterStatus, through its own nameservers).
        #[arg(long, global = true)]
        server: Option<String>,
    },
    /// Create, list and describe topics through the Admin service.
    Topic {
        #[command(subcommand)]
        cmd: TopicCmd,
        /// Broker address.
        #[arg(long, global = true, default_value = "127.0.0.1:8081")]
        server: String,
        #[command(flatten)]
        cluster: ClusterTarget,
    },
    /// Inspect transactional messages through the Admin service.
    Tx {
        #[command(subcommand)]
        cmd: TxCmd,
        /// Broker address.
        #[arg(long, global = true, default_value = "127.0.0.1:8081")]
        server: String,
    },
    /// Configure and inspect consumer groups through the Admin service.
    Group {
        #[command(subcommand)]
        cmd: GroupCmd,
        /// Broker address.
        #[arg(long, global = true, default_value = "127.0.0.1:8081")]
        server: String,
        #[command(flatten)]
        cluster: ClusterTarget,
    },
    /// Manage users (authentication) through the Admin service of a master.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
        /// Broker address.
        #[arg(long, global = true, default_value = "127.0.0.1:8081")]
        server: String,
    },
    /// Manage users' access rules on topics and groups through the Admin service of a master.
    Acl {
        #[command(subcommand)]
        cmd: AclCmd,
        /// Broker address.
        #[arg(long, global = true, default_value = "127.0.0.1:8081")]
        server: String,
    },
    /// Look up stored messages through the IndexFile.
    Message {
        #[command(subcommand)]
        cmd: MessageCmd,
        /// Broker address.
        #[arg(long, global = true, default_value = "127.0.0.1:8081")]
        server: String,
    },
    /// Load-test a broker: throughput and latency of sends and/or receives.
    Bench {
        #[command(flatten)]
        opts: ferrocket::bench::BenchOpts,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Perm {
    Rw,
    R,
    W,
}

#[derive(Clone, Copy, ValueEnum)]
enum Ty {
    Normal,
    Fifo,
    Delay,
    Transaction,
}

#[derive(Subcommand)]
enum TxCmd {
    /// Open (pending) transactions: count, oldest age, check-backs; and the service's counters.
    List {
        /// Only this topic.
        #[arg(long, default_value = "")]
        topic: String,
        /// Most transactions to list (oldest first).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print the response as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where a configuration change goes in a cluster: the masters of its broker groups.
#[derive(clap::Args, Clone)]
struct ClusterTarget {
    /// Apply creates and deletes to the masters of a cluster's broker groups, found through these
    /// nameservers (comma-separated `host:port`), instead of to --server.
    #[arg(long, global = true)]
    namesrv: Option<String>,
    /// With --namesrv: only these broker groups (comma-separated); default all of them. For
    /// `topic create`, `group:queues` gives that group its own queue count.
    #[arg(long, global = true, value_delimiter = ',')]
    groups: Vec<String>,
}

impl ClusterTarget {
    /// The named broker groups, each with its queue count if one was given (`group:queues`).
    /// Errors: a queue count that is not a number.
    fn targets(&self) -> anyhow::Result<Vec<(String, Option<u32>)>> {
        self.groups
            .iter()
            .map(|g| match g.split_once(':') {
                Some((name, q)) => {
                    let q =
                        q.parse().map_err(|_| anyhow::anyhow!("--groups {g}: queue count {q:?} is not a number"))?;
                    Ok((name.to_string(), Some(q)))
                }
                None => Ok((g.clone(), None)),
            })
            .collect()
    }
}

#[derive(Subcommand, Clone)]
enum GroupCmd {
    /// Create or replace a consumer group.
    Create {
        name: String,
        /// FIFO: per message group, the next message only after the previous one is done.
        #[arg(long)]
        fifo: bool,
        /// Every client receives every message.
        #[arg(long)]
        broadcast: bool,
        /// Deliveries before a message goes to %DLQ%<name> (default: the broker's, 17).
        #[arg(long, default_value_t = 0)]
        max_delivery_attempts: u32,
        /// Retry delays (customized backoff), e.g. `1s,5s,30s`; the last repeats.
        #[arg(long, value_delimiter = ',', value_parser = humantime::parse_duration)]
        backoff: Vec<std::time::Duration>,
        /// Exponential backoff instead: `INITIAL,MAX,MULTIPLIER`, e.g. `1s,1m,2`.
        #[arg(long, conflicts_with = "backoff")]
        exponential: Option<String>,
    },
    /// Delete a group's configuration (its progress is kept).
    Delete { name: String },
    /// Every configured group.
    List,
    /// A group's configuration, retry and DLQ topics, and lag per queue.
    Describe {
        name: String,
        /// Print the response as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A group's lag per topic and queue, and in total.
    Lag {
        name: String,
        /// Print the response as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create a user, or replace it (its secret, kind and state).
    Create {
        /// Access key.
        name: String,
        /// Secret key, 6 to 128 bytes.
        #[arg(long, env = "FERROCKET_USER_SECRET_KEY", hide_env_values = true)]
        secret_key: String,
        /// A super user (Admin and everything else).
        #[arg(long = "super")]
        super_user: bool,
        /// Keep the user but refuse it.
        #[arg(long)]
        disabled: bool,
    },
    /// Delete a user.
    Delete { name: String },
    /// Every user (without secrets).
    List,
}

#[derive(Subcommand)]
enum AclCmd {
    /// Give a user a rule on a resource, replacing its rule on the same resource.
    Create {
        #[arg(long)]
        user: String,
        /// `Topic:<name>`, `Group:<name>` (a trailing `*` makes a prefix) or `*`.
        #[arg(long)]
        resource: String,
        /// pub, sub or all.
        #[arg(long, value_delimiter = ',', default_value = "all")]
        actions: Vec<String>,
        /// Peers the rule applies to (IP or CIDR, repeatable); default any.
        #[arg(long = "source-ip")]
        source_ips: Vec<String>,
        /// Deny instead of allow.
        #[arg(long)]
        deny: bool,
    },
    /// Delete a user's rule on a resource, or all its rules.
    Delete {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "")]
        resource: String,
    },
    /// Every user's rules, or one user's.
    List {
        #[arg(long, default_value = "")]
        user: String,
    },
}

#[derive(Subcommand)]
enum MessageCmd {
    /// A message by id.
    Get {
        #[arg(long)]
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Messages of a topic by key, newest first.
    Query {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 32)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Clone)]
enum TopicCmd {
    /// Create a topic, or update it (queues may grow, never shrink).
    Create {
        name: String,
        #[arg(long, default_value_t = 8)]
        queues: u32,
        #[arg(long, value_enum, default_value_t = Perm::Rw)]
        perm: Perm,
        /// Accepted message types.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "normal")]
        types: Vec<Ty>,
    },
    List,
    Describe {
        name: String,
    },
    /// Delete a topic: its configuration, ConsumeQueues and consumer progress.
    Delete {
        name: String,
    },
}

/// mimalloc instead of glibc's malloc: 14 to 18 % less broker CPU per message at 32 senders, batch
/// 1, over both protocols (docs/BENCHMARKS.md run 13); glibc consolidated its fast bins on every
/// allocation of a message-sized buffer.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: not into files, journald or `kubectl logs`.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let credentials = cli.auth_access_key.as_deref().zip(cli.auth_secret_key.as_deref());
    let dialer =
        Dialer::from_files(Signer::from(credentials), cli.tls_ca_file.as_deref(), cli.tls_server_name.as_deref());
    match dialer {
        Ok(d) => {
            let _ = DIALER.set(d);
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A server's config: `base`, then the file, env and flags (`global` the global flags that are
/// config keys: credentials and TLS trust).
fn load(a: ServeArgs, base: Config, global: &Overrides) -> anyhow::Result<Config> {
    let flags = Overrides { listen: a.listen, data_dir: a.data_dir, ..global.clone() };
    Config::load(base, a.config.as_deref(), &flags)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let auth = Overrides {
        auth_access_key: cli.auth_access_key,
        auth_secret_key: cli.auth_secret_key,
        tls_ca_file: cli.tls_ca_file,
        tls_server_name: cli.tls_server_name,
        ..Overrides::default()
    };
    match cli.cmd {
        Cmd::Standalone(a) => {
            let base = Config { auto_create_topic: true, ..Config::default() };
            ferrocket::server::run(load(a, base, &auth)?, true).await
        }
        Cmd::Broker(a) => ferrocket::server::run(load(a, Config::default(), &auth)?, false).await,
        Cmd::Namesrv(a) => {
            let base = Config { listen: "127.0.0.1:9876".parse()?, ..Config::default() };
            ferrocket::namesrv::service::run(load(a, base, &auth)?).await
        }
        Cmd::Cluster { cmd: ClusterCmd::Status { json }, namesrv, server } => {
            let status = match server {
                Some(server) => admin(&server)
                    .await?
                    .cluster_status(ClusterStatusRequest {})
                    .await
                    .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                    .into_inner(),
                None => ferrocket_proto::clients::cluster_status(&Nameservers::from_list(&namesrv, dialer())).await?,
            };
            print_cluster_status(&status, json)
        }
        Cmd::Topic { cmd, server, cluster } => match cluster.namesrv.clone() {
            Some(ns) if matches!(cmd, TopicCmd::Create { .. } | TopicCmd::Delete { .. }) => {
                let targets = cluster.targets()?;
                let names: Vec<String> = targets.iter().map(|(n, _)| n.clone()).collect();
                for (group, endpoint) in masters(&ns, &names).await? {
                    let mut cmd = cmd.clone();
                    if let (TopicCmd::Create { queues, .. }, Some((_, Some(q)))) =
                        (&mut cmd, targets.iter().find(|(n, _)| *n == group))
                    {
                        *queues = *q;
                    }
                    print!("{group}: ");
                    topic(cmd, &endpoint).await?;
                }
                Ok(())
            }
            _ => topic(cmd, &server).await,
        },
        Cmd::Tx { cmd: TxCmd::List { topic, limit, json }, server } => tx_list(&server, topic, limit, json).await,
        Cmd::Group { cmd, server, cluster } => match cluster.namesrv {
            Some(ns) if matches!(cmd, GroupCmd::Create { .. } | GroupCmd::Delete { .. }) => {
                for (g, endpoint) in masters(&ns, &cluster.groups).await? {
                    print!("{g}: ");
                    group(cmd.clone(), &endpoint).await?;
                }
                Ok(())
            }
            _ => group(cmd, &server).await,
        },
        Cmd::Message { cmd, server } => message(cmd, &server).await,
        Cmd::User { cmd, server } => user(cmd, &server).await,
        Cmd::Acl { cmd, server } => acl(cmd, &server).await,
        Cmd::Bench { opts, json } => {
            let r = ferrocket::bench::run(opts).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{} B messages, concurrency {}, {:.1} s", r.size, r.concurrency, r.seconds);
                for (name, side) in [("send", &r.produce), ("receive+ack", &r.consume)] {
                    if let Some(s) = side {
                        println!(
                            "{name:>12}: {:>9.0} msgs/s {:>7.1} MiB/s  p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms  ({} msgs, {} errors)",
                            s.msgs_per_sec, s.mib_per_sec, s.p50_ms, s.p99_ms, s.p999_ms, s.messages, s.errors
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

fn print_topic(t: &TopicConfig) {
    let types: Vec<&str> = t
        .accept_message_types
        .iter()
        .map(|m| MessageType::try_from(*m).map(|m| m.as_str_name()).unwrap_or("?"))
        .collect();
    let perm = Permission::try_from(t.permission).map(|p| p.as_str_name()).unwrap_or("?");
    println!("{:<40} queues={:<4} perm={:<10} types={}", t.name, t.queue_count, perm, types.join(","));
}

async fn tx_list(server: &str, topic: String, limit: u32, json: bool) -> anyhow::Result<()> {
    let mut c = admin(server).await?;
    let r = c.list_transactions(ListTransactionsRequest { topic, limit }).await?.into_inner();
    let k = r.counters.unwrap_or_default();
    if json {
        let txs: Vec<_> = r
            .transactions
            .iter()
            .map(|t| serde_json::json!({"transaction_id": t.transaction_id, "topic": t.topic, "client_id": t.client_id, "age_ms": t.age_ms, "checks": t.checks}))
            .collect();
        let counters = serde_json::json!({"commits": k.commits, "rollbacks": k.rollbacks, "checks_sent": k.checks_sent,
            "check_timeouts": k.check_timeouts, "check_max_rollbacks": k.check_max_rollbacks});
        println!(
            "{}",
            serde_json::json!({"open": r.open, "oldest_age_ms": r.oldest_age_ms, "transactions": txs, "counters": counters})
        );
        return Ok(());
    }
    println!("open transactions: {}  oldest: {:.1} s", r.open, r.oldest_age_ms as f64 / 1000.0);
    println!("{:<18} {:<30} {:>9} {:>7}  client", "transaction", "topic", "age s", "checks");
    for t in &r.transactions {
        println!(
            "{:<18} {:<30} {:>9.1} {:>7}  {}",
            t.transaction_id,
            t.topic,
            t.age_ms as f64 / 1000.0,
            t.checks,
            t.client_id
        );
    }
    println!(
        "since start: commits {}  rollbacks {}  check-backs sent {}  check timeouts {}  rolled back after check max {}",
        k.commits, k.rollbacks, k.checks_sent, k.check_timeouts, k.check_max_rollbacks
    );
    Ok(())
}

/// An Admin client of `server`, its calls signed with the CLI's credentials. Errors: unreachable.
async fn admin(server: &str) -> anyhow::Result<AdminClient<SignedChannel>> {
    let dialer = dialer();
    let ch = dialer.endpoint(server)?.connect().await.map_err(|e| anyhow::anyhow!("cannot reach {server}: {e}"))?;
    Ok(AdminClient::with_interceptor(ch, dialer.signer()))
}

async fn acl(cmd: AclCmd, server: &str) -> anyhow::Result<()> {
    use ferrocket_proto::admin::{AclRule, DeleteAclRuleRequest, ListAclsRequest, PutAclRuleRequest};
    let mut c = admin(server).await?;
    let failed = |s: tonic::Status| anyhow::anyhow!("{}", s.message());
    match cmd {
        AclCmd::Create { user, resource, actions, source_ips, deny } => {
            let rule = AclRule { resource: resource.clone(), actions, source_ips, deny };
            c.put_acl_rule(PutAclRuleRequest { user: user.clone(), rule: Some(rule) }).await.map_err(failed)?;
            println!("rule of {user} on {resource} saved");
        }
        AclCmd::Delete { user, resource } => {
            c.delete_acl_rule(DeleteAclRuleRequest { user: user.clone(), resource }).await.map_err(failed)?;
            println!("rules of {user} deleted");
        }
        AclCmd::List { user } => {
            for a in c.list_acls(ListAclsRequest { user }).await.map_err(failed)?.into_inner().acls {
                for r in &a.rules {
                    let from = if r.source_ips.is_empty() { "any".to_string() } else { r.source_ips.join(",") };
                    let decision = if r.deny { "deny" } else { "allow" };
                    println!("{:<24} {:<40} {:<12} {decision:<6} from {from}", a.user, r.resource, r.actions.join(","));
                }
            }
        }
    }
    Ok(())
}

async fn user(cmd: UserCmd, server: &str) -> anyhow::Result<()> {
    use ferrocket_proto::admin::{DeleteUserRequest, ListUsersRequest, UpsertUserRequest, User};
    let mut c = admin(server).await?;
    let failed = |s: tonic::Status| anyhow::anyhow!("{}", s.message());
    match cmd {
        UserCmd::Create { name, secret_key, super_user, disabled } => {
            let user = User { name: name.clone(), secret: secret_key, super_user, disabled };
            c.upsert_user(UpsertUserRequest { user: Some(user) }).await.map_err(failed)?;
            println!("user {name} saved");
        }
        UserCmd::Delete { name } => {
            c.delete_user(DeleteUserRequest { name: name.clone() }).await.map_err(failed)?;
            println!("user {name} deleted");
        }
        UserCmd::List => {
            for u in c.list_users(ListUsersRequest { with_secrets: false }).await.map_err(failed)?.into_inner().users {
                let kind = if u.super_user { "super" } else { "normal" };
                println!("{:<40} {kind:<7} {}", u.name, if u.disabled { "disabled" } else { "enabled" });
            }
        }
    }
    Ok(())
}

/// The gRPC endpoints of the masters of `groups` (all groups if empty), from the nameservers.
/// Errors: no nameserver answered, or a named group has no registered master.
async fn masters(namesrv: &str, groups: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut masters = Nameservers::from_list(namesrv, dialer()).masters().await?;
    masters.retain(|(name, _)| groups.is_empty() || groups.contains(name));
    for g in groups {
        anyhow::ensure!(
            masters.iter().any(|(n, _)| n == g),
            "broker group {g} has no master registered with the nameservers"
        );
    }
    anyhow::ensure!(!masters.is_empty(), "no broker group is registered with the nameservers");
    Ok(masters)
}

async fn topic(cmd: TopicCmd, server: &str) -> anyhow::Result<()> {
    let mut c = admin(server).await?;
    match cmd {
        TopicCmd::Create { name, queues, perm, types } => {
            let permission = match perm {
                Perm::Rw => Permission::ReadWrite,
                Perm::R => Permission::Read,
                Perm::W => Permission::Write,
            };
            let types = types
                .iter()
                .map(|t| match t {
                    Ty::Normal => MessageType::Normal,
                    Ty::Fifo => MessageType::Fifo,
                    Ty::Delay => MessageType::Delay,
                    Ty::Transaction => MessageType::Transaction,
                } as i32)
                .collect();
            let topic =
                TopicConfig { name, queue_count: queues, permission: permission as i32, accept_message_types: types };
            let r = c
                .create_topic(CreateTopicRequest { topic: Some(topic) })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            print!("{} ", if r.created { "created" } else { "updated" });
            print_topic(&r.topic.unwrap_or_default());
        }
        TopicCmd::Delete { name } => {
            c.delete_topic(DeleteTopicRequest { name: name.clone() })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            println!("deleted {name}");
        }
        TopicCmd::List => {
            for t in c.list_topics(ListTopicsRequest {}).await?.into_inner().topics {
                print_topic(&t);
            }
        }
        TopicCmd::Describe { name } => {
            let r = c
                .describe_topic(DescribeTopicRequest { name })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            print_topic(&r.topic.unwrap_or_default());
            println!("{:>6} {:>12} {:>12}", "queue", "min_offset", "max_offset");
            for q in r.queues {
                println!("{:>6} {:>12} {:>12}", q.queue_id, q.min_offset, q.max_offset);
            }
        }
    }
    Ok(())
}

fn group_json(g: &GroupConfig) -> serde_json::Value {
    let backoff = match &g.exponential_backoff {
        Some(e) => {
            serde_json::json!({"exponential": {"initial_ms": e.initial_ms, "max_ms": e.max_ms, "multiplier": e.multiplier}})
        }
        None => serde_json::json!({"customized_ms": g.customized_backoff_ms}),
    };
    serde_json::json!({"name": g.name, "fifo": g.fifo, "broadcast": g.broadcast,
        "max_delivery_attempts": g.max_delivery_attempts, "backoff": backoff})
}

async fn group(cmd: GroupCmd, server: &str) -> anyhow::Result<()> {
    let mut c = admin(server).await?;
    let err = |s: tonic::Status| anyhow::anyhow!("{}", s.message());
    match cmd {
        GroupCmd::Create { name, fifo, broadcast, max_delivery_attempts, backoff, exponential } => {
            let exponential_backoff = match exponential {
                None => None,
                Some(e) => {
                    let parts: Vec<&str> = e.split(',').collect();
                    let [initial, max, mult] = parts[..] else {
                        anyhow::bail!("--exponential takes INITIAL,MAX,MULTIPLIER, got {e:?}");
                    };
                    Some(ExponentialBackoff {
                        initial_ms: humantime::parse_duration(initial)?.as_millis() as u64,
                        max_ms: humantime::parse_duration(max)?.as_millis() as u64,
                        multiplier: mult.parse()?,
                    })
                }
            };
            let g = GroupConfig {
                name,
                fifo,
                broadcast,
                max_delivery_attempts,
                customized_backoff_ms: backoff.iter().map(|d| d.as_millis() as u64).collect(),
                exponential_backoff,
            };
            let r = c.upsert_group(UpsertGroupRequest { group: Some(g) }).await.map_err(err)?.into_inner();
            println!("{} {}", if r.created { "created" } else { "updated" }, group_json(&r.group.unwrap_or_default()));
        }
        GroupCmd::Delete { name } => {
            c.delete_group(DeleteGroupRequest { name: name.clone() }).await.map_err(err)?;
            println!("deleted {name}");
        }
        GroupCmd::List => {
            for g in c.list_groups(ListGroupsRequest {}).await.map_err(err)?.into_inner().groups {
                println!("{}", group_json(&g));
            }
        }
        GroupCmd::Describe { name, json } | GroupCmd::Lag { name, json } => {
            let r = c.describe_group(DescribeGroupRequest { name }).await.map_err(err)?.into_inner();
            let queues: Vec<_> = r
                .queues
                .iter()
                .map(|q| {
                    serde_json::json!({"topic": q.topic, "queue_id": q.queue_id, "ack_offset": q.ack_offset,
                    "max_offset": q.max_offset, "lag": q.lag})
                })
                .collect();
            if json {
                let g = group_json(&r.group.unwrap_or_default());
                println!(
                    "{}",
                    serde_json::json!({"group": g, "retry_topic": r.retry_topic, "dlq_topic": r.dlq_topic,
                        "total_lag": r.total_lag, "queues": queues, "broadcast_clients": r.broadcast_clients})
                );
                return Ok(());
            }
            println!("{}", group_json(&r.group.unwrap_or_default()));
            println!("retry topic {}  DLQ {}  total lag {}", r.retry_topic, r.dlq_topic, r.total_lag);
            println!("{:<40} {:>6} {:>12} {:>12} {:>10}", "topic", "queue", "ack_offset", "max_offset", "lag");
            for q in &r.queues {
                println!("{:<40} {:>6} {:>12} {:>12} {:>10}", q.topic, q.queue_id, q.ack_offset, q.max_offset, q.lag);
            }
        }
    }
    Ok(())
}

async fn message(cmd: MessageCmd, server: &str) -> anyhow::Result<()> {
    let mut c = admin(server).await?;
    let (req, json) = match cmd {
        MessageCmd::Get { id, json } => (QueryMessageRequest { message_id: id, limit: 1, ..Default::default() }, json),
        MessageCmd::Query { topic, key, limit, json } => {
            (QueryMessageRequest { topic, key, limit, ..Default::default() }, json)
        }
    };
    let r = c.query_message(req).await.map_err(|s| anyhow::anyhow!("{}", s.message()))?.into_inner();
    if r.messages.is_empty() {
        anyhow::bail!("no message found");
    }
    for m in &r.messages {
        let states: serde_json::Map<String, serde_json::Value> =
            m.states.iter().map(|s| (s.group.clone(), s.state.clone().into())).collect();
        let props: std::collections::BTreeMap<_, _> = m.properties.iter().collect();
        let body = String::from_utf8_lossy(&m.body);
        let store_time = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(m.store_timestamp_ms),
        );
        let v = serde_json::json!({"message_id": m.message_id, "topic": m.topic, "queue_id": m.queue_id,
            "queue_offset": m.queue_offset, "commitlog_offset": m.commitlog_offset,
            "store_time": store_time.to_string(), "store_timestamp_ms": m.store_timestamp_ms,
            "properties": props, "body": body, "body_bytes": m.body.len(), "delivery": states});
        if json {
            println!("{v}");
        } else {
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Every registered broker with the state it reports (role, epoch, CommitLog offsets, its
    /// slaves' lag) and, if a nameserver runs the controller, each group's epoch, master and
    /// in-sync set.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn print_cluster_status(status: &ClusterStatusResponse, json: bool) -> anyhow::Result<()> {
    let now = ferrocket_engine::store::now_ms();
    if json {
        let brokers: Vec<serde_json::Value> = status
            .brokers
            .iter()
            .map(|s| {
                let b = s.broker.clone().unwrap_or_default();
                let r = s.replica.clone();
                serde_json::json!({"broker_name": b.broker_name, "broker_id": b.broker_id, "endpoint": b.endpoint,
                    "remoting_endpoint": b.remoting_endpoint, "cluster": b.cluster,
                    "role": r.as_ref().map(|r| r.role.clone()), "registered_role": if b.broker_id == 0 { "master" } else { "slave" },
                    "epoch": r.as_ref().map_or(b.epoch, |r| r.epoch), "last_heartbeat_ms": b.last_heartbeat_ms,
                    "max_offset": r.as_ref().map(|r| r.max_offset), "min_offset": r.as_ref().map(|r| r.min_offset),
                    "master": r.as_ref().map(|r| r.master.clone()), "in_sync": r.as_ref().map(|r| r.in_sync.clone()),
                    "replication_lag_bytes": r.as_ref().and_then(|r| r.replication_lag_bytes),
                    "slaves": r.as_ref().map(|r| r.slaves.iter().map(|x| serde_json::json!({"endpoint": x.endpoint,
                        "offset": x.offset, "lag_bytes": x.lag_bytes, "in_sync": x.in_sync})).collect::<Vec<_>>()),
                    "error": (!s.error.is_empty()).then(|| s.error.clone()),
                    "topics": s.topics.iter().map(|t| serde_json::json!({"name": t.name, "queues": t.queue_count})).collect::<Vec<_>>()})
            })
            .collect();
        let controller: Vec<serde_json::Value> = status
            .controller
            .iter()
            .map(|g| {
                let v = g.view.clone().unwrap_or_default();
                serde_json::json!({"broker_name": v.broker_name, "epoch": v.epoch, "master": v.master,
                    "sync_state_set": v.sync_state_set,
                    "members": g.members.iter().map(|m| serde_json::json!({"endpoint": m.endpoint, "epoch": m.epoch,
                        "max_offset": m.max_offset, "silent_ms": m.silent_ms})).collect::<Vec<_>>()})
            })
            .collect();
        let leader = status
            .controller_leader
            .as_ref()
            .map(|l| serde_json::json!({"id": l.leader_id, "term": l.term, "members": l.members}));
        println!(
            "{}",
            serde_json::json!({ "brokers": brokers, "controller": controller, "controller_leader": leader })
        );
        return Ok(());
    }
    println!(
        "{:<16} {:>3} {:<7} {:>5} {:<22} {:<22} {:>12} {:>10} {:>7} {:>9}",
        "group", "id", "role", "epoch", "endpoint", "remoting", "max offset", "lag", "topics", "last seen"
    );
    for s in &status.brokers {
        let b = s.broker.clone().unwrap_or_default();
        let ago = now.saturating_sub(b.last_heartbeat_ms) as f64 / 1000.0;
        let (role, epoch, end, lag) = match &s.replica {
            Some(r) => {
                let lag = match (r.role.as_str(), r.replication_lag_bytes) {
                    ("master", _) => r.slaves.iter().map(|x| x.lag_bytes).max().map_or("-".into(), |l| l.to_string()),
                    (_, Some(l)) => l.to_string(),
                    (_, None) => "not repl.".into(),
                };
                (r.role.clone(), r.epoch, r.max_offset.to_string(), lag)
            }
            None => ("down".into(), b.epoch, "-".into(), "-".into()),
        };
        println!(
            "{:<16} {:>3} {:<7} {:>5} {:<22} {:<22} {:>12} {:>10} {:>7} {:>8.1}s",
            b.broker_name,
            b.broker_id,
            role,
            epoch,
            b.endpoint,
            if b.remoting_endpoint.is_empty() { "-" } else { &b.remoting_endpoint },
            end,
            lag,
            s.topics.len(),
            ago
        );
    }
    if let Some(l) = &status.controller_leader {
        println!("\ncontroller leader: member {} in term {} of {}", l.leader_id, l.term, l.members.join(", "));
    }
    if !status.controller.is_empty() {
        println!("\ncontroller: {:<16} {:>5} {:<22} in-sync set", "group", "epoch", "master");
        for g in &status.controller {
            let v = g.view.clone().unwrap_or_default();
            println!(
                "            {:<16} {:>5} {:<22} {}",
                v.broker_name,
                v.epoch,
                v.master,
                v.sync_state_set.join(", ")
            );
        }
    }
    Ok(())
}
