//! Consumer (subscription) group configuration: FIFO or concurrent, broadcast or clustering, how
//! often a message is delivered before it is dead-lettered, and the retry backoff the clients are
//! told. Persisted in `config/groups.json` (RocketMQ `SubscriptionGroupManager`,
//! `subscriptionGroup.json`).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::registry::{Named, Registry};
use crate::topics;

/// Prefix of a group's retry topic (RocketMQ `MixAll.RETRY_GROUP_TOPIC_PREFIX`).
pub const RETRY_PREFIX: &str = "%RETRY%";
/// Prefix of a group's dead-letter topic (RocketMQ `MixAll.DLQ_GROUP_TOPIC_PREFIX`).
pub const DLQ_PREFIX: &str = "%DLQ%";
/// Most delivery attempts a group may configure.
pub const MAX_ATTEMPTS: u32 = 1000;

/// How a group's messages are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConsumeType {
    /// Any message to any consumer, in parallel.
    #[default]
    Concurrent,
    /// Per message group, the next message only after the previous one is acked or dead-lettered.
    Fifo,
}

/// Delay before the next delivery of a message that was not acked, as told to clients in their
/// Settings (`apache.rocketmq.v2.RetryPolicy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// The n-th retry waits `next_ms[n-1]` ms (the last value repeats): RocketMQ's delay levels.
    Customized {
        /// Delays, ms, at least one.
        next_ms: Vec<u64>,
    },
    /// `initial_ms * multiplier^(n-1)`, at most `max_ms`.
    Exponential {
        /// First delay, ms.
        initial_ms: u64,
        /// Largest delay, ms.
        max_ms: u64,
        /// Growth per retry, >= 1.
        multiplier: f32,
    },
}

impl Backoff {
    /// Delay before delivery attempt `attempt + 1` after attempt `attempt` (1-based) failed, ms.
    pub fn delay_ms(&self, attempt: u32) -> u64 {
        let n = attempt.max(1);
        match self {
            Backoff::Customized { next_ms } => {
                next_ms.get(n as usize - 1).or(next_ms.last()).copied().unwrap_or(10_000)
            }
            Backoff::Exponential { initial_ms, max_ms, multiplier } => {
                let d = *initial_ms as f64 * (*multiplier as f64).powi(n as i32 - 1);
                (d as u64).min(*max_ms)
            }
        }
    }
}

/// One consumer group's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupConfig {
    /// Group name (RocketMQ's topic-name rule, at most [`crate::limits::GROUP_MAX_LEN`], 120,
    /// characters).
    pub name: String,
    /// FIFO or concurrent.
    #[serde(default)]
    pub consume_type: ConsumeType,
    /// Deliveries of one message before it goes to the group's DLQ, 1..=1000 (RocketMQ default 17).
    pub max_delivery_attempts: u32,
    /// Retry schedule told to clients.
    pub backoff: Backoff,
    /// Every client id gets every message (RocketMQ BROADCASTING) instead of sharing them.
    #[serde(default)]
    pub broadcast: bool,
}

impl Named for GroupConfig {
    fn name(&self) -> &str {
        &self.name
    }
}

impl GroupConfig {
    /// The group's retry topic name (`%RETRY%<group>`).
    pub fn retry_topic(&self) -> String {
        format!("{RETRY_PREFIX}{}", self.name)
    }

    /// The group's dead-letter topic name (`%DLQ%<group>`).
    pub fn dlq_topic(&self) -> String {
        dlq_topic(&self.name)
    }

    /// Checks the values. Errors: [`GroupError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), GroupError> {
        let bad = |m: String| Err(GroupError::Invalid(m));
        let max = crate::limits::GROUP_MAX_LEN;
        if !topics::is_legal_name(&self.name, max) || self.name.starts_with('%') {
            return bad(format!(
                "illegal group name {:?}: 1..={max} characters of [a-zA-Z0-9_|-] (its %RETRY% topic must fit in 127)",
                self.name
            ));
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.max_delivery_attempts) {
            return bad(format!(
                "max_delivery_attempts {} out of range 1..={MAX_ATTEMPTS}",
                self.max_delivery_attempts
            ));
        }
        match &self.backoff {
            Backoff::Customized { next_ms } if next_ms.is_empty() => bad("customized backoff needs a delay".into()),
            Backoff::Exponential { initial_ms, max_ms, multiplier }
                if *initial_ms == 0 || max_ms < initial_ms || multiplier.is_nan() || *multiplier < 1.0 =>
            {
                bad("exponential backoff needs 0 < initial_ms <= max_ms and multiplier >= 1".into())
            }
            _ => Ok(()),
        }
    }
}

/// The dead-letter topic of `group` (`%DLQ%<group>`).
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

/// Why a group request was refused.
#[derive(Debug, Error)]
pub enum GroupError {
    /// A field is out of range (which, why).
    #[error("invalid consumer group: {0}")]
    Invalid(String),
    /// The group does not exist.
    #[error("consumer group {0} does not exist")]
    NotFound(String),
    /// The groups file could not be written.
    #[error("writing {}: {err}", path.display())]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The I/O error.
        err: io::Error,
    },
}

/// The consumer groups of one broker.
pub struct GroupManager {
    groups: Registry<GroupConfig>,
}

impl GroupManager {
    /// Loads `path` (absent means no groups). Errors: I/O or malformed JSON, naming the file.
    pub fn load(path: &Path) -> io::Result<GroupManager> {
        Ok(GroupManager { groups: Registry::load(path)? })
    }

    /// The registry underneath (for [`Registry::insert_unpersisted`] and
    /// [`Registry::persist_if_dirty`]).
    pub fn registry(&self) -> &Registry<GroupConfig> {
        &self.groups
    }

    /// The group, if it exists.
    pub fn get(&self, name: &str) -> Option<GroupConfig> {
        self.groups.get(name)
    }

    /// Every group, by name.
    pub fn list(&self) -> Vec<GroupConfig> {
        self.groups.list()
    }

    /// Creates or replaces a group (RocketMQ `updateAndCreateSubscriptionGroup`); returns true if
    /// it was created. Errors: [`GroupError::Invalid`], I/O.
    pub fn upsert(&self, cfg: GroupConfig) -> Result<bool, GroupError> {
        cfg.validate()?;
        self.groups.update(|m| Ok(m.insert(cfg).is_none()), |path, err| GroupError::Io { path, err })
    }

    /// Deletes a group's configuration (its progress stays, as in RocketMQ). Errors:
    /// [`GroupError::NotFound`], I/O.
    pub fn delete(&self, name: &str) -> Result<(), GroupError> {
        self.groups.update(
            |m| m.remove(name).map(|_| ()).ok_or_else(|| GroupError::NotFound(name.to_string())),
            |path, err| GroupError::Io { path, err },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str) -> GroupConfig {
        GroupConfig {
            name: name.into(),
            consume_type: ConsumeType::Fifo,
            max_delivery_attempts: 3,
            backoff: Backoff::Customized { next_ms: vec![1000, 2000] },
            broadcast: false,
        }
    }

    #[test]
    fn backoff_follows_the_schedule_and_caps() {
        let c = Backoff::Customized { next_ms: vec![1000, 2000] };
        assert_eq!([c.delay_ms(1), c.delay_ms(2), c.delay_ms(9)], [1000, 2000, 2000]);
        let e = Backoff::Exponential { initial_ms: 100, max_ms: 1000, multiplier: 2.0 };
        assert_eq!([e.delay_ms(1), e.delay_ms(3), e.delay_ms(10)], [100, 400, 1000]);
    }

    #[test]
    fn upsert_validates_persists_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("groups.json");
        let m = GroupManager::load(&path).unwrap();
        assert!(m.upsert(group("g1")).unwrap());
        assert!(!m.upsert(group("g1")).unwrap());
        let mut bad = group("g2");
        bad.max_delivery_attempts = 0;
        assert!(matches!(m.upsert(bad), Err(GroupError::Invalid(_))));
        assert!(matches!(m.upsert(group("%DLQ%x")), Err(GroupError::Invalid(_))));
        let m = GroupManager::load(&path).unwrap();
        assert_eq!(m.get("g1").unwrap().consume_type, ConsumeType::Fifo);
        m.delete("g1").unwrap();
        assert!(matches!(m.delete("g1"), Err(GroupError::NotFound(_))));
        assert_eq!(dlq_topic("g"), "%DLQ%g");
    }
}
