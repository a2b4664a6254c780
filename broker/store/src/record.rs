//! The CommitLog record codec: one self-describing, checksummed record per message.
//!
//! Layout (big-endian, like RocketMQ's `CommitLog.MessageExtEncoder`, plus a whole-record CRC so a
//! corrupt topic or property is caught, not only a corrupt body):
//!
//! ```text
//! 0  total_size u32     4  magic u32         8  record_crc u32 (CRC32 of bytes 12..total_size)
//! 12 body_crc u32       16 queue_id u32      20 flag u32
//! 24 queue_offset u64   32 physical_offset u64
//! 40 sys_flag u32       44 born_timestamp u64 (ms)   52 store_timestamp u64 (ms)
//! 60 reconsume_times u32                     64 prepared_transaction_offset u64
//! 72 born_host (u8 len + UTF-8)  store_host (u8 len + UTF-8)  topic (u8 len + UTF-8)
//!    properties (u16 len + bytes, RocketMQ's `name\x01value\x02` encoding)  body (u32 len + bytes)
//! ```
//!
//! A BLANK record (magic [`BLANK_MAGIC`], total_size = the rest of the segment) fills the end of a
//! segment when the next record does not fit, as RocketMQ does.

use std::collections::BTreeMap;

use thiserror::Error;

/// Magic code of a message record.
pub const MESSAGE_MAGIC: u32 = 0xDAA3_20A7;
/// Magic code of the filler at the end of a segment (RocketMQ `BLANK_MAGIC_CODE`).
pub const BLANK_MAGIC: u32 = 0xCBD4_3194;
/// Size of the fixed part of a record, bytes.
pub const FIXED_HEADER: usize = 72;
/// Smallest possible message record, bytes (all variable fields empty).
pub const MIN_RECORD: usize = FIXED_HEADER + 1 + 1 + 1 + 2 + 4;
/// Separator between a property name and its value (RocketMQ `NAME_VALUE_SEPARATOR`).
pub const NAME_VALUE_SEPARATOR: char = '\u{1}';
/// Separator between properties (RocketMQ `PROPERTY_SEPARATOR`).
pub const PROPERTY_SEPARATOR: char = '\u{2}';

/// One message as stored in the CommitLog.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Queue of the message in its topic.
    pub queue_id: u32,
    /// RocketMQ's per-message flag (kept as sent; 0 for 5.x clients).
    pub flag: u32,
    /// Position of the message in its ConsumeQueue (0-based, per topic and queue).
    pub queue_offset: u64,
    /// Byte position of this record in the CommitLog.
    pub physical_offset: u64,
    /// Broker flags, such as [`crate::SYS_FLAG_NO_DISPATCH`].
    pub sys_flag: u32,
    /// When the producer created the message, ms since the Unix epoch.
    pub born_timestamp: u64,
    /// When the broker stored it, ms since the Unix epoch.
    pub store_timestamp: u64,
    /// Times the message was sent back for retry (0 for a new message).
    pub reconsume_times: u32,
    /// CommitLog offset of the half message this one commits (transactions; 0 otherwise).
    pub prepared_transaction_offset: u64,
    /// Producer address, `host:port`.
    pub born_host: String,
    /// Broker address, `host:port`.
    pub store_host: String,
    /// Topic the record belongs to.
    pub topic: String,
    /// System and user properties; names and values must not contain `\x01` or `\x02`.
    pub properties: BTreeMap<String, String>,
    /// The message body, as sent.
    pub body: Vec<u8>,
}

/// Why bytes are not a valid record. Positions are relative to the start of the slice given.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated: need {need} bytes, have {have}")]
    /// Fewer bytes than the record needs.
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The magic code is neither a message nor a filler.
    #[error("bad magic code {0:#010x}")]
    BadMagic(u32),
    /// The total size is too small or runs past the segment.
    #[error("implausible total size {0}")]
    BadSize(u32),
    #[error("record CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    /// The whole-record CRC does not match.
    RecordCrc {
        /// CRC32 in the record.
        stored: u32,
        /// CRC32 of the bytes.
        computed: u32,
    },
    /// A length field does not fit the record (names the field).
    #[error("malformed field {0}")]
    Malformed(&'static str),
}

/// Why a record cannot be encoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EncodeError {
    /// A field is longer than its length prefix allows.
    #[error("{field} is {len} bytes, at most {max} allowed")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length, bytes.
        len: usize,
        /// The most allowed, bytes.
        max: usize,
    },
    /// A property name or value contains `\x01` or `\x02` (names the property).
    #[error("property {0:?} contains a reserved separator character")]
    BadProperty(String),
}

/// What [`peek`] found at a position.
#[derive(Debug, PartialEq, Eq)]
pub enum Peek {
    /// A message record of this total size, bytes.
    Message(u32),
    /// A segment filler of this size, bytes.
    Blank(u32),
    /// Zero bytes: nothing was ever written here.
    Empty,
}

/// Encodes the properties map in RocketMQ's `name\x01value\x02` form.
pub fn encode_properties(props: &BTreeMap<String, String>) -> Result<String, EncodeError> {
    let mut out = String::new();
    for (k, v) in props {
        let bad = |s: &str| s.contains([NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR]);
        if bad(k) || bad(v) {
            return Err(EncodeError::BadProperty(k.clone()));
        }
        out.push_str(k);
        out.push(NAME_VALUE_SEPARATOR);
        out.push_str(v);
        out.push(PROPERTY_SEPARATOR);
    }
    Ok(out)
}

/// Decodes RocketMQ's `name\x01value\x02` properties; entries without a separator are skipped.
pub fn decode_properties(s: &str) -> BTreeMap<String, String> {
    s.split(PROPERTY_SEPARATOR)
        .filter_map(|kv| kv.split_once(NAME_VALUE_SEPARATOR))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Record {
    /// Encodes the record. Errors: a host or topic over 255 bytes, properties over 65,535 bytes,
    /// a property with a separator character.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let props = encode_properties(&self.properties)?;
        let short = |field: &'static str, s: &str| {
            if s.len() > u8::MAX as usize {
                Err(EncodeError::TooLong { field, len: s.len(), max: u8::MAX as usize })
            } else {
                Ok(())
            }
        };
        short("born_host", &self.born_host)?;
        short("store_host", &self.store_host)?;
        short("topic", &self.topic)?;
        if props.len() > u16::MAX as usize {
            return Err(EncodeError::TooLong { field: "properties", len: props.len(), max: u16::MAX as usize });
        }
        if self.body.len() > (i32::MAX as usize) / 2 {
            return Err(EncodeError::TooLong { field: "body", len: self.body.len(), max: (i32::MAX as usize) / 2 });
        }
        let total = MIN_RECORD
            + self.born_host.len()
            + self.store_host.len()
            + self.topic.len()
            + props.len()
            + self.body.len();
        let mut b = Vec::with_capacity(total);
        b.extend_from_slice(&(total as u32).to_be_bytes());
        b.extend_from_slice(&MESSAGE_MAGIC.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes()); // record CRC, filled in below
        b.extend_from_slice(&crc32fast::hash(&self.body).to_be_bytes());
        b.extend_from_slice(&self.queue_id.to_be_bytes());
        b.extend_from_slice(&self.flag.to_be_bytes());
        b.extend_from_slice(&self.queue_offset.to_be_bytes());
        b.extend_from_slice(&self.physical_offset.to_be_bytes());
        b.extend_from_slice(&self.sys_flag.to_be_bytes());
        b.extend_from_slice(&self.born_timestamp.to_be_bytes());
        b.extend_from_slice(&self.store_timestamp.to_be_bytes());
        b.extend_from_slice(&self.reconsume_times.to_be_bytes());
        b.extend_from_slice(&self.prepared_transaction_offset.to_be_bytes());
        for s in [&self.born_host, &self.store_host, &self.topic] {
            b.push(s.len() as u8);
            b.extend_from_slice(s.as_bytes());
        }
        b.extend_from_slice(&(props.len() as u16).to_be_bytes());
        b.extend_from_slice(props.as_bytes());
        b.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        b.extend_from_slice(&self.body);
        debug_assert_eq!(b.len(), total);
        let crc = crc32fast::hash(&b[12..]);
        b[8..12].copy_from_slice(&crc.to_be_bytes());
        Ok(b)
    }

    /// Decodes and verifies one message record at the start of `buf` (which may hold more): a
    /// [`RecordView`] copied into owned fields. Errors: as [`RecordView::parse`].
    pub fn decode(buf: &[u8]) -> Result<Record, DecodeError> {
        RecordView::parse(buf).map(|v| v.to_record())
    }
}

/// One verified message record, borrowed from the bytes it was parsed from: what the dispatcher
/// and recovery read for every record, without allocating the topic, properties and body.
/// Fields as in [`Record`]; `properties` is still in RocketMQ's `name\x01value\x02` encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Total size of the record, bytes.
    pub size: u32,
    /// Queue of the message in its topic.
    pub queue_id: u32,
    /// RocketMQ's per-message flag.
    pub flag: u32,
    /// Position of the message in its ConsumeQueue.
    pub queue_offset: u64,
    /// Byte position of this record in the CommitLog.
    pub physical_offset: u64,
    /// Broker flags.
    pub sys_flag: u32,
    /// When the producer created the message, ms since the Unix epoch.
    pub born_timestamp: u64,
    /// When the broker stored it, ms since the Unix epoch.
    pub store_timestamp: u64,
    /// Times the message was sent back for retry.
    pub reconsume_times: u32,
    /// CommitLog offset of the half message this one commits (0 otherwise).
    pub prepared_transaction_offset: u64,
    /// Producer address, `host:port`.
    pub born_host: &'a str,
    /// Broker address, `host:port`.
    pub store_host: &'a str,
    /// Topic the record belongs to.
    pub topic: &'a str,
    /// The encoded properties (see [`decode_properties`]).
    pub properties: &'a str,
    /// The message body.
    pub body: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// Parses and verifies one message record at the start of `buf` (which may hold more).
    /// The record CRC covers every byte after it, the stored body CRC included, so a body CRC
    /// that disagrees with the body cannot pass it and is not computed again. Errors:
    /// [`DecodeError`] for anything that is not a complete, checksummed message record.
    pub fn parse(buf: &'a [u8]) -> Result<RecordView<'a>, DecodeError> {
        let size = match peek(buf)? {
            Peek::Message(size) => size as usize,
            Peek::Blank(_) => return Err(DecodeError::BadMagic(BLANK_MAGIC)),
            Peek::Empty => return Err(DecodeError::BadMagic(0)),
        };
        if buf.len() < size {
            return Err(DecodeError::Truncated { need: size, have: buf.len() });
        }
        let rec = &buf[..size];
        let stored = be32(rec, 8);
        let computed = crc32fast::hash(&rec[12..]);
        if stored != computed {
            return Err(DecodeError::RecordCrc { stored, computed });
        }
        let mut r = Reader { buf: rec, pos: FIXED_HEADER };
        let born_host = r.str8("born_host")?;
        let store_host = r.str8("store_host")?;
        let topic = r.str8("topic")?;
        let plen = r.u16("properties")? as usize;
        let properties =
            std::str::from_utf8(r.take(plen, "properties")?).map_err(|_| DecodeError::Malformed("properties"))?;
        let blen = r.u32("body")? as usize;
        let body = r.take(blen, "body")?;
        if r.pos != size {
            return Err(DecodeError::Malformed("total_size"));
        }
        Ok(RecordView {
            size: size as u32,
            queue_id: be32(rec, 16),
            flag: be32(rec, 20),
            queue_offset: be64(rec, 24),
            physical_offset: be64(rec, 32),
            sys_flag: be32(rec, 40),
            born_timestamp: be64(rec, 44),
            store_timestamp: be64(rec, 52),
            reconsume_times: be32(rec, 60),
            prepared_transaction_offset: be64(rec, 64),
            born_host,
            store_host,
            topic,
            properties,
            body,
        })
    }

    /// The properties as `(name, value)` pairs, in stored order, read from the encoded string;
    /// entries without a separator are skipped (as [`decode_properties`] does).
    pub fn properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.properties.split(PROPERTY_SEPARATOR).filter_map(|kv| kv.split_once(NAME_VALUE_SEPARATOR))
    }

    /// The value of property `name`. A scan of the encoded properties: to read several, walk
    /// [`Self::properties`] once.
    pub fn property(&self, name: &str) -> Option<&'a str> {
        self.properties().find_map(|(k, v)| (k == name).then_some(v))
    }

    /// The record with owned fields.
    pub fn to_record(&self) -> Record {
        Record {
            queue_id: self.queue_id,
            flag: self.flag,
            queue_offset: self.queue_offset,
            physical_offset: self.physical_offset,
            sys_flag: self.sys_flag,
            born_timestamp: self.born_timestamp,
            store_timestamp: self.store_timestamp,
            reconsume_times: self.reconsume_times,
            prepared_transaction_offset: self.prepared_transaction_offset,
            born_host: self.born_host.to_string(),
            store_host: self.store_host.to_string(),
            topic: self.topic.to_string(),
            properties: decode_properties(self.properties),
            body: self.body.to_vec(),
        }
    }
}

/// Looks at the 8-byte prefix at the start of `buf` without verifying the record.
/// Errors: fewer than 8 bytes, an unknown magic, or a size below the minimum record.
pub fn peek(buf: &[u8]) -> Result<Peek, DecodeError> {
    if buf.len() < 8 {
        return Err(DecodeError::Truncated { need: 8, have: buf.len() });
    }
    let size = be32(buf, 0);
    match be32(buf, 4) {
        0 if size == 0 => Ok(Peek::Empty),
        BLANK_MAGIC if size >= 8 => Ok(Peek::Blank(size)),
        MESSAGE_MAGIC if size as usize >= MIN_RECORD => Ok(Peek::Message(size)),
        MESSAGE_MAGIC | BLANK_MAGIC => Err(DecodeError::BadSize(size)),
        magic => Err(DecodeError::BadMagic(magic)),
    }
}

/// Encodes a BLANK filler of `size` bytes (at least 8).
pub fn blank(size: usize) -> Vec<u8> {
    let mut b = vec![0u8; size];
    b[0..4].copy_from_slice(&(size as u32).to_be_bytes());
    b[4..8].copy_from_slice(&BLANK_MAGIC.to_be_bytes());
    b
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or(DecodeError::Malformed(field))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn str8(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let n = self.take(1, field)?[0] as usize;
        std::str::from_utf8(self.take(n, field)?).map_err(|_| DecodeError::Malformed(field))
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2, field)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(be32(self.take(4, field)?, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Record {
        Record {
            queue_id: 3,
            queue_offset: 42,
            physical_offset: 1 << 33,
            born_timestamp: 1_700_000_000_000,
            store_timestamp: 1_700_000_000_001,
            born_host: "127.0.0.1:5000".into(),
            store_host: "127.0.0.1:8081".into(),
            topic: "orders".into(),
            properties: [("TAGS".to_string(), "a".to_string()), ("k".to_string(), "v".to_string())].into(),
            body: b"hello".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let bytes = sample().encode().unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(Record::decode(&b).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn truncation_is_detected() {
        let bytes = sample().encode().unwrap();
        for n in 0..bytes.len() {
            assert!(Record::decode(&bytes[..n]).is_err(), "truncated to {n} bytes decoded");
        }
    }

    #[test]
    fn properties_with_separators_are_refused() {
        let mut r = sample();
        r.properties.insert("bad\u{1}key".into(), "v".into());
        assert!(matches!(r.encode(), Err(EncodeError::BadProperty(_))));
    }

    #[test]
    fn blank_and_empty_are_recognised() {
        assert_eq!(peek(&blank(100)).unwrap(), Peek::Blank(100));
        assert_eq!(peek(&[0u8; 16]).unwrap(), Peek::Empty);
        assert!(peek(&[1u8; 16]).is_err());
    }

    fn prop_text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_%|.: -]{0,40}"
    }

    proptest! {
        #[test]
        fn round_trips(
            queue_id in any::<u32>(), flag in any::<u32>(), queue_offset in any::<u64>(),
            physical_offset in any::<u64>(), born in any::<u64>(), stored in any::<u64>(),
            topic in "[a-zA-Z0-9_%|-]{1,127}", host in prop_text(),
            props in proptest::collection::btree_map(prop_text(), prop_text(), 0..8),
            body in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let r = Record {
                queue_id, flag, queue_offset, physical_offset, born_timestamp: born, store_timestamp: stored,
                born_host: host.clone(), store_host: host, topic,
                // An empty name would be indistinguishable from a missing entry.
                properties: props.into_iter().filter(|(k, _)| !k.is_empty()).collect(),
                body, ..Default::default()
            };
            let bytes = r.encode().unwrap();
            prop_assert_eq!(peek(&bytes).unwrap(), Peek::Message(bytes.len() as u32));
            let mut with_tail = bytes.clone();
            with_tail.extend_from_slice(&[7u8; 9]);
            prop_assert_eq!(Record::decode(&with_tail).unwrap(), r.clone());
            let view = RecordView::parse(&with_tail).unwrap();
            prop_assert_eq!(view.size as usize, bytes.len());
            for (k, v) in &r.properties {
                prop_assert_eq!(view.property(k), Some(v.as_str()));
            }
            prop_assert_eq!(view.property("\u{3}absent"), None);
        }
    }
}
