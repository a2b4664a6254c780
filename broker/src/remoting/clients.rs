//! The Remoting clients a broker knows from their heartbeats (RocketMQ `ConsumerManager`,
//! `ProducerManager`): each consumer group's members with their subscriptions and connection,
//! and each producer group's connections (where check-backs go).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Deserialize;

use super::conn::Connection;
use crate::store::now_ms;

/// A client not heard from for this long is dropped, ms (RocketMQ `channelExpiredTimeout`, 120 s).
pub const CLIENT_EXPIRY_MS: u64 = 120_000;

/// HeartbeatData, the body of HEART_BEAT (`protocol/heartbeat/HeartbeatData.java`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeartbeatData {
    /// The client instance id (`ip@instance`).
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Producer groups of the client.
    pub producer_data_set: Vec<ProducerData>,
    /// Consumer groups of the client.
    pub consumer_data_set: Vec<ConsumerData>,
}

/// One producer group of a heartbeat.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerData {
    /// The producer group.
    pub group_name: String,
}

/// A scalar as text: Java and Go send enum names, the C++ client ordinals.
fn scalar_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        v => v.to_string(),
    })
}

/// One consumer group of a heartbeat.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerData {
    /// The consumer group.
    pub group_name: String,
    /// `CONSUME_PASSIVELY` (push), `CONSUME_ACTIVELY` (pull), `CONSUME_POP` (C++: an ordinal).
    #[serde(deserialize_with = "scalar_text")]
    pub consume_type: String,
    /// `CLUSTERING` or `BROADCASTING` (C++: 1 or 0, `MessageModel` ordinals).
    #[serde(deserialize_with = "scalar_text")]
    pub message_model: String,
    /// Its subscriptions.
    pub subscription_data_set: Vec<SubscriptionData>,
}

/// One subscription (`SubscriptionData`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionData {
    /// Topic.
    pub topic: String,
    /// The expression: tags joined by `||`, `*`, or SQL92.
    #[serde(deserialize_with = "scalar_text")]
    pub sub_string: String,
    /// `TAG` (default) or `SQL92`.
    pub expression_type: Option<String>,
}

struct Member {
    conn: Arc<Connection>,
    subscriptions: Vec<SubscriptionData>,
    last_ms: u64,
}

/// A producer's connection and when it last sent a heartbeat (ms since the epoch).
type Producer = (Arc<Connection>, u64);

/// Every client of this broker, by group.
#[derive(Default)]
pub struct ClientTable {
    consumers: Mutex<HashMap<String, BTreeMap<String, Member>>>,
    /// By producer group, by client id: connection and last heartbeat (ms since the epoch).
    producers: Mutex<HashMap<String, BTreeMap<String, Producer>>>,
}

impl ClientTable {
    /// Records a heartbeat from `conn`; returns the consumer groups whose membership changed.
    pub fn heartbeat(&self, conn: &Arc<Connection>, hb: &HeartbeatData) -> Vec<String> {
        let now = now_ms();
        let mut changed = Vec::new();
        let mut consumers = self.consumers.lock();
        for c in &hb.consumer_data_set {
            let members = consumers.entry(c.group_name.clone()).or_default();
            let m = Member { conn: conn.clone(), subscriptions: c.subscription_data_set.clone(), last_ms: now };
            match members.insert(hb.client_id.clone(), m) {
                Some(old) if old.conn.id == conn.id => {}
                _ => changed.push(c.group_name.clone()),
            }
        }
        drop(consumers);
        let mut producers = self.producers.lock();
        for p in &hb.producer_data_set {
            producers.entry(p.group_name.clone()).or_default().insert(hb.client_id.clone(), (conn.clone(), now));
        }
        changed
    }

    /// Removes a client from the groups it names (UNREGISTER_CLIENT); returns the consumer groups
    /// it left.
    pub fn unregister(
        &self,
        client_id: &str,
        producer_group: Option<&str>,
        consumer_group: Option<&str>,
    ) -> Vec<String> {
        if let Some(g) = producer_group {
            if let Some(p) = self.producers.lock().get_mut(g) {
                p.remove(client_id);
            }
        }
        let mut left = Vec::new();
        if let Some(g) = consumer_group {
            if self.consumers.lock().get_mut(g).is_some_and(|m| m.remove(client_id).is_some()) {
                left.push(g.to_string());
            }
        }
        left
    }

    /// Drops every client on a closed connection, and every client silent for
    /// [`CLIENT_EXPIRY_MS`]; returns the consumer groups that lost members.
    pub fn remove_where(&self, closed: Option<u64>) -> Vec<String> {
        let now = now_ms();
        let gone =
            |conn: &Connection, last: u64| Some(conn.id) == closed || now.saturating_sub(last) > CLIENT_EXPIRY_MS;
        let mut changed = Vec::new();
        for (g, members) in self.consumers.lock().iter_mut() {
            let before = members.len();
            members.retain(|_, m| !gone(&m.conn, m.last_ms));
            if members.len() != before {
                changed.push(g.clone());
            }
        }
        for members in self.producers.lock().values_mut() {
            members.retain(|_, (c, last)| !gone(c, *last));
        }
        changed
    }

    /// The client ids of a consumer group, sorted (clients allocate queues over this list).
    pub fn consumer_ids(&self, group: &str) -> Vec<String> {
        self.consumers.lock().get(group).map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// The connections of a consumer group's members.
    pub fn consumer_connections(&self, group: &str) -> Vec<Arc<Connection>> {
        self.consumers.lock().get(group).map(|m| m.values().map(|m| m.conn.clone()).collect()).unwrap_or_default()
    }

    /// A consumer group's subscription to `topic`, as its newest heartbeat declared it.
    pub fn subscription(&self, group: &str, topic: &str) -> Option<SubscriptionData> {
        let consumers = self.consumers.lock();
        let members = consumers.get(group)?;
        members
            .values()
            .max_by_key(|m| m.last_ms)
            .and_then(|m| m.subscriptions.iter().find(|s| s.topic == topic).cloned())
            .or_else(|| members.values().find_map(|m| m.subscriptions.iter().find(|s| s.topic == topic).cloned()))
    }

    /// A connection of a producer group, most recently heard from first (for check-backs).
    pub fn producer_connection(&self, group: &str) -> Option<Arc<Connection>> {
        let producers = self.producers.lock();
        producers
            .get(group)?
            .values()
            .filter(|(c, _)| c.is_open())
            .max_by_key(|(_, last)| *last)
            .map(|(c, _)| c.clone())
    }
}
