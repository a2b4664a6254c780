//! The nameserver's Remoting requests (RocketMQ `ClientRequestProcessor`,
//! `DefaultRequestProcessor`): routes, cluster info and the topic list, from the same
//! registrations the gRPC routes use (REMOTING.md §2, §2c).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Value};

use super::codes::*;
use super::command::Command;
use super::conn::{BoxFuture, Connection, Processor};
use crate::broker::Broker;
use crate::namesrv::routes::RouteTable;
use crate::proto::namesrv::{BrokerInfo, GroupRoute, TopicRoute};
use crate::proto::v2::Permission;

/// The topic producers fall back to for a topic without a route; the broker creates the real
/// topic on the first send where auto-creation is on (RocketMQ `TopicValidator.AUTO_CREATE_TOPIC_KEY_TOPIC`).
pub const AUTO_CREATE_TOPIC: &str = "TBW102";
/// Clients at or above this version (V4_9_4) get standard JSON with quoted map keys.
const STANDARD_JSON_VERSION: i32 = 401;

/// Where a nameserver's routes come from.
#[derive(Clone)]
pub enum Routes {
    /// A `namesrv` process: what brokers registered.
    Table(Arc<Mutex<RouteTable>>),
    /// Standalone: the one local broker, which serves every topic it has (and `TBW102` where it
    /// auto-creates topics).
    Local(Arc<Broker>),
}

impl Routes {
    /// The broker groups serving `topic`.
    fn route(&self, topic: &str) -> Vec<GroupRoute> {
        match self {
            Routes::Table(t) => t.lock().route(topic),
            Routes::Local(b) => {
                let cfg = b.config();
                let t = match b.topics().get(topic) {
                    Some(t) => crate::grpc::admin::topic_route(&t),
                    None if topic == AUTO_CREATE_TOPIC && cfg.auto_create_topic => TopicRoute {
                        name: topic.into(),
                        queue_count: cfg.default_queue_count,
                        permission: Permission::ReadWrite as i32,
                        message_types: vec![],
                    },
                    None => return vec![],
                };
                vec![GroupRoute { broker_name: cfg.broker_name.clone(), brokers: vec![local_info(b)], topic: Some(t) }]
            }
        }
    }

    /// Every broker with its topics.
    fn brokers(&self) -> Vec<(BrokerInfo, Vec<String>)> {
        match self {
            Routes::Table(t) => t
                .lock()
                .brokers()
                .into_iter()
                .filter_map(|r| Some((r.broker?, r.topics.into_iter().map(|t| t.name).collect())))
                .collect(),
            Routes::Local(b) => vec![(local_info(b), b.topics().list().into_iter().map(|t| t.name).collect())],
        }
    }
}

/// The local broker as a registration would name it.
pub fn local_info(b: &Broker) -> BrokerInfo {
    let cfg = b.config();
    BrokerInfo {
        broker_name: cfg.broker_name.clone(),
        broker_id: b.route_id(),
        endpoint: cfg.advertised(),
        last_heartbeat_ms: 0,
        epoch: b.role().epoch,
        remoting_endpoint: cfg.remoting_advertised(),
        cluster: cfg.cluster_name.clone(),
    }
}

/// RocketMQ `PermName` bits of a wire permission: READ 4, WRITE 2.
fn perm_bits(p: i32) -> u32 {
    match Permission::try_from(p).unwrap_or(Permission::ReadWrite) {
        Permission::Read => 4,
        Permission::Write => 2,
        Permission::ReadWrite => 6,
        _ => 0,
    }
}

/// A JSON object with integer keys as fastjson writes a `HashMap<Long, String>`: unquoted for old
/// clients (`{0:"a"}`), quoted for standard JSON; always compact (the Go client splits it on
/// `,` and `:`).
fn id_map(entries: &[(u32, String)], quote: bool) -> String {
    let mut s = String::from("{");
    for (i, (id, addr)) in entries.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let q = if quote { "\"" } else { "" };
        let _ = write!(s, "{q}{id}{q}:{}", Value::String(addr.clone()));
    }
    s.push('}');
    s
}

/// A group's Remoting brokers, master first; brokers that serve no Remoting are left out.
fn addrs(g: &GroupRoute) -> Vec<(u32, String)> {
    g.brokers
        .iter()
        .filter(|b| !b.remoting_endpoint.is_empty())
        .map(|b| (b.broker_id, b.remoting_endpoint.clone()))
        .collect()
}

/// A broker's cluster name; a registration without one (an older broker) is RocketMQ's default.
fn cluster_of(b: &BrokerInfo) -> &str {
    if b.cluster.is_empty() {
        "DefaultCluster"
    } else {
        &b.cluster
    }
}

/// BrokerData (`route/BrokerData.java`): one broker group's addresses by broker id.
fn broker_data_json(name: &str, cluster: &str, addrs: &[(u32, String)], quote: bool) -> String {
    format!(
        "{{\"brokerAddrs\":{},\"brokerName\":{},\"cluster\":{},\"enableActingMaster\":false}}",
        id_map(addrs, quote),
        Value::String(name.to_string()),
        Value::String(cluster.to_string()),
    )
}

/// TopicRouteData (`route/TopicRouteData.java`) for `groups`, compact JSON.
pub fn route_json(groups: &[GroupRoute], quote: bool) -> String {
    let mut brokers = Vec::new();
    let mut queues = Vec::new();
    for g in groups {
        let a = addrs(g);
        if a.is_empty() {
            continue;
        }
        // `a` is not empty, so neither is the group.
        brokers.push(broker_data_json(&g.broker_name, cluster_of(&g.brokers[0]), &a, quote));
        let t = g.topic.clone().unwrap_or_default();
        queues.push(
            json!({
                "brokerName": g.broker_name,
                "perm": perm_bits(t.permission),
                "readQueueNums": t.queue_count,
                "topicSysFlag": 0,
                "writeQueueNums": t.queue_count,
            })
            .to_string(),
        );
    }
    format!(
        "{{\"brokerDatas\":[{}],\"filterServerTable\":{{}},\"queueDatas\":[{}]}}",
        brokers.join(","),
        queues.join(",")
    )
}

/// ClusterInfo (`body/ClusterInfo.java`): brokerAddrTable and clusterAddrTable.
fn cluster_info_json(brokers: &[(BrokerInfo, Vec<String>)], quote: bool) -> String {
    // Per broker group: its cluster and its (broker id, address) pairs.
    type Group = (String, Vec<(u32, String)>);
    let mut groups: BTreeMap<&str, Group> = BTreeMap::new();
    for (b, _) in brokers.iter().filter(|(b, _)| !b.remoting_endpoint.is_empty()) {
        let e = groups.entry(&b.broker_name).or_insert_with(|| (cluster_of(b).to_string(), Vec::new()));
        e.1.push((b.broker_id, b.remoting_endpoint.clone()));
    }
    let mut clusters: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let table: Vec<String> = groups
        .iter()
        .map(|(name, (cluster, addrs))| {
            clusters.entry(cluster.as_str()).or_default().push(name);
            format!("{}:{}", Value::String(name.to_string()), broker_data_json(name, cluster, addrs, quote))
        })
        .collect();
    format!("{{\"brokerAddrTable\":{{{}}},\"clusterAddrTable\":{}}}", table.join(","), json!(clusters))
}

/// Answers one nameserver request.
pub fn handle(routes: &Routes, req: &Command) -> Command {
    let quote =
        req.version >= STANDARD_JSON_VERSION || req.ext.get("acceptStandardJsonOnly").is_some_and(|v| v == "true");
    match req.code {
        GET_ROUTEINFO_BY_TOPIC => {
            let topic = req.ext.get("topic").cloned().unwrap_or_default();
            let groups = routes.route(&topic);
            if groups.iter().all(|g| addrs(g).is_empty()) {
                return Command::response_to(
                    req,
                    TOPIC_NOT_EXIST,
                    format!("No topic route info in name server for the topic: {topic}"),
                );
            }
            let mut r = Command::response_to(req, SUCCESS, None);
            r.body = route_json(&groups, quote).into_bytes();
            r
        }
        GET_BROKER_CLUSTER_INFO => {
            let mut r = Command::response_to(req, SUCCESS, None);
            r.body = cluster_info_json(&routes.brokers(), quote).into_bytes();
            r
        }
        GET_ALL_TOPIC_LIST_FROM_NAMESERVER => {
            let mut topics: Vec<String> = routes.brokers().into_iter().flat_map(|(_, t)| t).collect();
            topics.sort();
            topics.dedup();
            let mut r = Command::response_to(req, SUCCESS, None);
            r.body = json!({ "topicList": topics }).to_string().into_bytes();
            r
        }
        code => Command::response_to(
            req,
            REQUEST_CODE_NOT_SUPPORTED,
            format!("request code {code} not supported by the nameserver"),
        ),
    }
}

/// The Remoting processor of a nameserver over `routes`.
pub fn processor(routes: Routes) -> Processor {
    Processor {
        handle: Arc::new(move |_conn: Arc<Connection>, req: Command| -> BoxFuture<Option<Command>> {
            let reply = handle(&routes, &req);
            Box::pin(async move { Some(reply) })
        }),
        closed: Arc::new(|_| {}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, brokers: &[(u32, &str)], queues: u32) -> GroupRoute {
        GroupRoute {
            broker_name: name.into(),
            brokers: brokers
                .iter()
                .map(|(id, addr)| BrokerInfo {
                    broker_name: name.into(),
                    broker_id: *id,
                    remoting_endpoint: addr.to_string(),
                    cluster: "C".into(),
                    ..Default::default()
                })
                .collect(),
            topic: Some(TopicRoute {
                name: "t".into(),
                queue_count: queues,
                permission: Permission::ReadWrite as i32,
                message_types: vec![],
            }),
        }
    }

    #[test]
    fn routes_are_compact_with_keys_quoted_by_client_version() {
        let g = [group("b", &[(0, "10.0.0.1:10911"), (1, "10.0.0.2:10911")], 4)];
        assert_eq!(
            route_json(&g, true),
            r#"{"brokerDatas":[{"brokerAddrs":{"0":"10.0.0.1:10911","1":"10.0.0.2:10911"},"brokerName":"b","cluster":"C","enableActingMaster":false}],"filterServerTable":{},"queueDatas":[{"brokerName":"b","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#
        );
        assert!(route_json(&g, false).contains(r#"{0:"10.0.0.1:10911",1:"10.0.0.2:10911"}"#));
        let v: Value = serde_json::from_str(&route_json(&g, true)).unwrap();
        assert_eq!(v["queueDatas"][0]["perm"], 6);
    }

    #[test]
    fn cluster_info_groups_brokers_by_cluster() {
        let b = |name: &str, id, addr: &str| {
            (
                BrokerInfo {
                    broker_name: name.into(),
                    broker_id: id,
                    remoting_endpoint: addr.into(),
                    cluster: "C".into(),
                    ..Default::default()
                },
                vec![],
            )
        };
        let s = cluster_info_json(&[b("a", 0, "h:1"), b("a", 1, "h:2"), b("z", 0, "h:3")], true);
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["brokerAddrTable"]["a"]["brokerAddrs"]["1"], "h:2");
        assert_eq!(v["clusterAddrTable"]["C"], json!(["a", "z"]));
    }
}
