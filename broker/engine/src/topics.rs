//! Topic configuration: queue count, permission and accepted message types, persisted in
//! `config/topics.json` (RocketMQ `TopicConfigManager`, `topics.json`).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::registry::{Named, Registry};

/// Longest topic name, characters (RocketMQ `TOPIC_MAX_LENGTH`).
pub const TOPIC_MAX_LEN: usize = 127;
/// Most queues a topic may have.
pub const MAX_QUEUES: u32 = 1024;

/// What clients may do with a topic's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Neither read nor write.
    None,
    /// Consumers may read; producers may not write.
    Read,
    /// Producers may write; consumers may not read.
    Write,
    /// Both.
    ReadWrite,
}

impl MessageType {
    /// Every type, in order (what auto-created and DLQ topics accept).
    pub const ALL: [MessageType; 4] =
        [MessageType::Normal, MessageType::Fifo, MessageType::Delay, MessageType::Transaction];
}

impl Permission {
    /// True if consumers may read.
    pub fn readable(self) -> bool {
        matches!(self, Permission::Read | Permission::ReadWrite)
    }
    /// True if producers may write.
    pub fn writable(self) -> bool {
        matches!(self, Permission::Write | Permission::ReadWrite)
    }
}

/// Message types of RocketMQ 5 (`TopicMessageType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    /// Plain messages.
    Normal,
    /// Messages with a message group, delivered in order per group.
    Fifo,
    /// Messages delivered at a given time.
    Delay,
    /// Half messages committed or rolled back by the producer.
    Transaction,
}

/// One topic's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Topic name.
    pub name: String,
    /// Number of queues, 1..=[`MAX_QUEUES`].
    pub queue_count: u32,
    /// What clients may do.
    pub permission: Permission,
    /// Accepted message types, sorted, never empty.
    pub message_types: Vec<MessageType>,
}

/// Why a topic request was refused.
#[derive(Debug, Error)]
pub enum TopicError {
    /// The name breaks RocketMQ's topic name rule.
    #[error("illegal topic name {0:?}: use 1..=127 characters of [a-zA-Z0-9_%|-]")]
    IllegalName(String),
    /// The name is one of the broker's own topics.
    #[error("topic name {0:?} is reserved for the broker")]
    Reserved(String),
    /// The queue count is out of range.
    #[error("queue count {0} out of range 1..=1024")]
    QueueCount(u32),
    /// No topic of that name exists.
    #[error("topic {0} does not exist")]
    NotFound(String),
    /// The update would remove queues.
    #[error("topic {name} has {current} queues; shrinking to {requested} is refused because the removed queues may hold messages")]
    Shrink {
        /// The topic.
        name: String,
        /// Queues it has.
        current: u32,
        /// Queues asked for.
        requested: u32,
    },
    #[error("writing {}: {err}", path.display())]
    /// The topic file could not be written.
    Io {
        /// The file being written.
        path: PathBuf,
        /// The I/O error.
        err: io::Error,
    },
}

/// Checks a topic name against RocketMQ's rule (`TopicValidator`: `^[%|a-zA-Z0-9_-]+$`, at most
/// 127 characters). Errors: [`TopicError::IllegalName`].
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    if is_legal_name(name, TOPIC_MAX_LEN) {
        Ok(())
    } else {
        Err(TopicError::IllegalName(name.to_string()))
    }
}

/// RocketMQ's rule for topic and consumer group names: 1..=`max_len` characters of
/// `[a-zA-Z0-9_%|-]` (`TopicValidator`, `checkConsumerGroup`).
pub fn is_legal_name(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-'))
}

/// True for names of the broker's own topics, which clients may not create or write.
pub fn is_system(name: &str) -> bool {
    name.starts_with("RMQ_SYS_") || name.starts_with("rmq_sys_") || name == "TBW102"
}

/// The topics of one broker.
pub struct TopicManager {
    topics: Registry<TopicConfig>,
}

impl Named for TopicConfig {
    fn name(&self) -> &str {
        &self.name
    }
}

impl TopicManager {
    /// Loads `path` (absent means no topics). Errors: I/O or malformed JSON, naming the file.
    pub fn load(path: &Path) -> io::Result<TopicManager> {
        Ok(TopicManager { topics: Registry::load(path)? })
    }

    /// The registry underneath (for [`Registry::insert_unpersisted`] and
    /// [`Registry::persist_if_dirty`]).
    pub fn registry(&self) -> &Registry<TopicConfig> {
        &self.topics
    }

    /// The topic, if it exists.
    pub fn get(&self, name: &str) -> Option<TopicConfig> {
        self.topics.get(name)
    }

    /// Every topic, by name.
    pub fn list(&self) -> Vec<TopicConfig> {
        self.topics.list()
    }

    /// Creates the topic or updates it in place (RocketMQ `updateAndCreateTopic`); returns true if
    /// it was created. Persisted before returning. Errors: an illegal or reserved name, a queue
    /// count out of range or smaller than the current one, I/O.
    pub fn upsert(&self, cfg: TopicConfig) -> Result<bool, TopicError> {
        if is_system(&cfg.name) {
            return Err(TopicError::Reserved(cfg.name));
        }
        self.upsert_any(cfg)
    }

    /// As [`TopicManager::upsert`], for the broker's own topics too (DLQ and system topics).
    pub fn upsert_any(&self, mut cfg: TopicConfig) -> Result<bool, TopicError> {
        validate_name(&cfg.name)?;
        if !(1..=MAX_QUEUES).contains(&cfg.queue_count) {
            return Err(TopicError::QueueCount(cfg.queue_count));
        }
        if cfg.message_types.is_empty() {
            cfg.message_types.push(MessageType::Normal);
        }
        cfg.message_types.sort();
        cfg.message_types.dedup();
        self.topics.update(
            |topics| {
                let created = match topics.get(&cfg.name) {
                    Some(cur) if cur.queue_count > cfg.queue_count => {
                        return Err(TopicError::Shrink {
                            name: cfg.name.clone(),
                            current: cur.queue_count,
                            requested: cfg.queue_count,
                        })
                    }
                    Some(_) => false,
                    None => true,
                };
                topics.insert(cfg);
                Ok(created)
            },
            |path, err| TopicError::Io { path, err },
        )
    }
}

impl TopicManager {
    /// Deletes a topic's configuration (any topic: the caller refuses system topics where it
    /// must). Persisted before returning. Errors: [`TopicError::NotFound`], I/O.
    pub fn delete(&self, name: &str) -> Result<(), TopicError> {
        self.topics.update(
            |topics| topics.remove(name).map(|_| ()).ok_or_else(|| TopicError::NotFound(name.to_string())),
            |path, err| TopicError::Io { path, err },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, queues: u32) -> TopicConfig {
        TopicConfig { name: name.into(), queue_count: queues, permission: Permission::ReadWrite, message_types: vec![] }
    }

    #[test]
    fn names_follow_rocketmq_rules() {
        assert!(validate_name("Order_topic-1%|x").is_ok());
        for bad in ["", "a b", "a.b", "ä", &"x".repeat(128)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn upsert_persists_is_idempotent_and_refuses_shrinking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topics.json");
        let m = TopicManager::load(&path).unwrap();
        assert!(m.upsert(topic("a", 4)).unwrap());
        assert!(!m.upsert(topic("a", 4)).unwrap());
        assert!(!m.upsert(topic("a", 6)).unwrap());
        assert!(matches!(m.upsert(topic("a", 2)), Err(TopicError::Shrink { .. })));
        assert!(matches!(m.upsert(topic("RMQ_SYS_X", 2)), Err(TopicError::Reserved(_))));
        let m = TopicManager::load(&path).unwrap();
        assert_eq!(m.get("a").unwrap().queue_count, 6);
        assert_eq!(m.get("a").unwrap().message_types, vec![MessageType::Normal]);
    }
}
