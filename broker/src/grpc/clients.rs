//! Live clients: one Telemetry session per client id (`x-mq-client-id`), kept so the broker can
//! push commands to a producer (transaction check-backs) and answer its settings.

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::proto::v2::{
    settings::PubSub, ClientType, CustomizedBackoff, ExponentialBackoff, Publishing, RetryPolicy, Settings,
    Subscription, TelemetryCommand,
};

use super::convert::ms_to_duration;
use crate::consume::groups::{Backoff, ConsumeType, GroupConfig};
use crate::proto::v2::retry_policy::Strategy;

/// Sender half of a Telemetry response stream.
pub type CommandSender = mpsc::Sender<Result<TelemetryCommand, tonic::Status>>;

/// One live Telemetry session.
#[derive(Clone)]
pub struct Session {
    /// Producer, push or simple consumer, as the client said in its Settings.
    pub client_type: ClientType,
    /// Topics a producer publishes to.
    pub topics: Vec<String>,
    /// Where commands to the client go.
    pub tx: CommandSender,
    /// Distinguishes a reconnected session from the one it replaced.
    pub epoch: u64,
}

/// Every live session by client id.
#[derive(Default)]
pub struct Clients {
    sessions: Mutex<HashMap<String, Session>>,
}

impl Clients {
    /// Records (or replaces) a client's session.
    pub fn register(&self, client_id: &str, s: Session) {
        self.sessions.lock().insert(client_id.to_string(), s);
    }

    /// Removes a client's session if it is still the one of `epoch` (`None`: whatever it is).
    pub fn remove(&self, client_id: &str, epoch: Option<u64>) {
        let mut m = self.sessions.lock();
        if m.get(client_id).is_some_and(|s| epoch.is_none_or(|e| e == s.epoch)) {
            m.remove(client_id);
        }
    }

    /// The session of a client, if connected.
    pub fn get(&self, client_id: &str) -> Option<Session> {
        self.sessions.lock().get(client_id).cloned()
    }

    /// Where a check-back for a transaction of `topic` sent by `client_id` goes: that producer if
    /// it is connected, else any connected producer of the topic (RocketMQ asks the producer group).
    pub fn producer_for(&self, client_id: &str, topic: &str) -> Option<(String, Session)> {
        let m = self.sessions.lock();
        if let Some(s) = m.get(client_id).filter(|s| s.client_type == ClientType::Producer) {
            return Some((client_id.to_string(), s.clone()));
        }
        m.iter()
            .find(|(_, s)| s.client_type == ClientType::Producer && s.topics.iter().any(|t| t == topic))
            .map(|(id, s)| (id.clone(), s.clone()))
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// True when no client is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every session, ending their response streams (shutdown).
    pub fn clear(&self) {
        self.sessions.lock().clear();
    }
}

/// The Settings the broker answers a client's Settings with: the client's own, completed with what
/// the official clients need from the server (DESIGN.md §4): for producers an exponential
/// `backoff_policy` and `publishing.max_body_size`; for consumers `subscription.fifo`,
/// `receive_batch_size`, `long_polling_timeout` and a `backoff_policy` with `max_attempts` (the
/// group's retry schedule: `group`'s config, else the broker's defaults).
pub fn merged_settings(client: &Settings, cfg: &Config, group: Option<&GroupConfig>) -> Settings {
    let mut s = client.clone();
    let ty = client.client_type.and_then(|t| ClientType::try_from(t).ok()).unwrap_or(ClientType::Unspecified);
    match ty {
        ClientType::Producer => {
            let topics = match &client.pub_sub {
                Some(PubSub::Publishing(p)) => p.topics.clone(),
                _ => Vec::new(),
            };
            s.pub_sub = Some(PubSub::Publishing(Publishing {
                topics,
                max_body_size: cfg.max_body_bytes.min(i32::MAX as u64) as i32,
                validate_message_type: true,
            }));
            let exponential = client
                .backoff_policy
                .as_ref()
                .is_some_and(|b| matches!(b.strategy, Some(Strategy::ExponentialBackoff(_))));
            if !exponential {
                // RocketMQ proxy's default producer policy: 3 attempts, 10 ms doubling up to 1 s.
                s.backoff_policy = Some(RetryPolicy {
                    max_attempts: client
                        .backoff_policy
                        .as_ref()
                        .map(|b| b.max_attempts)
                        .filter(|m| *m > 0)
                        .unwrap_or(3),
                    strategy: Some(Strategy::ExponentialBackoff(ExponentialBackoff {
                        initial: Some(ms_to_duration(10)),
                        max: Some(ms_to_duration(1000)),
                        multiplier: 2.0,
                    })),
                });
            }
        }
        _ => {
            let mut sub = match &client.pub_sub {
                Some(PubSub::Subscription(s)) => s.clone(),
                _ => Subscription::default(),
            };
            let default_group;
            let g = match group {
                Some(g) => g,
                None => {
                    default_group = cfg.default_group("");
                    &default_group
                }
            };
            sub.fifo = Some(g.consume_type == ConsumeType::Fifo);
            sub.receive_batch_size = Some(sub.receive_batch_size.filter(|b| *b > 0).unwrap_or(32));
            let requested = sub
                .long_polling_timeout
                .as_ref()
                .and_then(super::convert::duration_to_ms)
                .unwrap_or(cfg.long_polling_max_ms);
            sub.long_polling_timeout = Some(ms_to_duration(requested.min(cfg.long_polling_max_ms)));
            s.pub_sub = Some(PubSub::Subscription(sub));
            let strategy = match &g.backoff {
                Backoff::Customized { next_ms } => Strategy::CustomizedBackoff(CustomizedBackoff {
                    next: next_ms.iter().map(|ms| ms_to_duration(*ms)).collect(),
                }),
                Backoff::Exponential { initial_ms, max_ms, multiplier } => {
                    Strategy::ExponentialBackoff(ExponentialBackoff {
                        initial: Some(ms_to_duration(*initial_ms)),
                        max: Some(ms_to_duration(*max_ms)),
                        multiplier: *multiplier,
                    })
                }
            };
            s.backoff_policy =
                Some(RetryPolicy { max_attempts: g.max_delivery_attempts as i32, strategy: Some(strategy) });
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producers_get_exponential_backoff_and_max_body_size() {
        let client = Settings { client_type: Some(ClientType::Producer as i32), ..Default::default() };
        let s = merged_settings(&client, &Config::default(), None);
        let Some(PubSub::Publishing(p)) = s.pub_sub else { panic!("no publishing") };
        assert_eq!(p.max_body_size, 4 << 20);
        assert!(matches!(s.backoff_policy.unwrap().strategy, Some(Strategy::ExponentialBackoff(_))));
    }

    #[test]
    fn consumers_get_subscription_defaults_and_max_attempts() {
        let client = Settings { client_type: Some(ClientType::SimpleConsumer as i32), ..Default::default() };
        let s = merged_settings(&client, &Config::default(), None);
        let Some(PubSub::Subscription(sub)) = s.pub_sub else { panic!("no subscription") };
        assert_eq!(sub.fifo, Some(false));
        assert_eq!(sub.receive_batch_size, Some(32));
        assert_eq!(sub.long_polling_timeout.unwrap().seconds, 20);
        assert_eq!(s.backoff_policy.unwrap().max_attempts, 17);
    }
}
