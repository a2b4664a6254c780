//! Messages as Remoting carries them (REMOTING.md §3–4, RocketMQ `MessageDecoder`): the store
//! record layout of pull bodies, offset message ids, and the batch body of SEND_BATCH_MESSAGE.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::store::record::{decode_properties, encode_properties, Record};

/// MAGICCODE of a V1 message (`MessageDecoder.MESSAGE_MAGIC_CODE`): every client decodes it (the
/// Go client reads a 1-byte topic length whatever the magic says).
const MAGIC_V1: i32 = -626_843_481;
/// Message sysFlag bits that describe hosts (IPv6 born/store host): set by the encoder itself.
const HOST_V6_BITS: u32 = 0x10 | 0x20;
/// The message sysFlag bits RocketMQ defines; the broker's own bits above them stay inside.
const MESSAGE_SYS_FLAGS: u32 = 0xFFFF;

/// `host:port` as the 4-byte IPv4 address and port RocketMQ writes (0.0.0.0:0 for anything
/// else, such as a name).
fn v4(addr: &str) -> ([u8; 4], u32) {
    match addr.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(a)) => (a.ip().octets(), a.port() as u32),
        Ok(SocketAddr::V6(a)) => match a.ip().to_ipv4_mapped() {
            Some(ip) => (ip.octets(), a.port() as u32),
            None => ([0; 4], a.port() as u32),
        },
        Err(_) => ([0; 4], 0),
    }
}

/// The offset message id of the record at CommitLog offset `offset` on the broker at
/// `store_host` (`MessageDecoder.createMessageId`): 32 uppercase hex digits of IPv4 address,
/// port (4 bytes) and offset (8 bytes).
pub fn offset_msg_id(store_host: &str, offset: u64) -> String {
    let (ip, port) = v4(store_host);
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&ip);
    b.extend_from_slice(&port.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    hex::encode_upper(b)
}

/// Decodes an offset message id into the broker address and CommitLog offset it names
/// (`MessageDecoder.decodeMessageId`); None if it is not 32 (IPv4) or 56 (IPv6) hex digits.
pub fn decode_offset_msg_id(id: &str) -> Option<(SocketAddr, u64)> {
    let b = hex::decode(id).ok()?;
    let (ip, rest): (IpAddr, &[u8]) = match b.len() {
        16 => (IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])), &b[4..]),
        28 => (IpAddr::V6(<[u8; 16]>::try_from(&b[..16]).ok()?.into()), &b[16..]),
        _ => return None,
    };
    let port = u32::from_be_bytes(rest[..4].try_into().ok()?);
    let offset = u64::from_be_bytes(rest[4..12].try_into().ok()?);
    Some((SocketAddr::new(ip, u16::try_from(port).ok()?), offset))
}

/// Appends `rec` to `out` in the layout clients decode (`MessageDecoder.decode`, V1 magic, IPv4
/// hosts), with `store_host` (this broker's Remoting address, so the offset id a client derives
/// names it) as the store host.
pub fn encode_message(rec: &Record, store_host: &str, out: &mut Vec<u8>) {
    // Properties were checked when stored; one that is not encodable now goes without them.
    let props = encode_properties(&rec.properties).unwrap_or_default();
    let props = if props.len() > i16::MAX as usize { String::new() } else { props };
    let topic = if rec.topic.len() > u8::MAX as usize { "" } else { rec.topic.as_str() };
    let total =
        4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 8 + 8 + 8 + 4 + 8 + 4 + rec.body.len() + 1 + topic.len() + 2 + props.len();
    let start = out.len();
    out.reserve(total);
    out.extend_from_slice(&(total as i32).to_be_bytes());
    out.extend_from_slice(&MAGIC_V1.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&rec.body).to_be_bytes());
    out.extend_from_slice(&rec.queue_id.to_be_bytes());
    out.extend_from_slice(&rec.flag.to_be_bytes());
    out.extend_from_slice(&rec.queue_offset.to_be_bytes());
    out.extend_from_slice(&rec.physical_offset.to_be_bytes());
    out.extend_from_slice(&(rec.sys_flag & MESSAGE_SYS_FLAGS & !HOST_V6_BITS).to_be_bytes());
    out.extend_from_slice(&rec.born_timestamp.to_be_bytes());
    for (host, ts) in [(rec.born_host.as_str(), Some(rec.store_timestamp)), (store_host, None)] {
        let (ip, port) = v4(host);
        out.extend_from_slice(&ip);
        out.extend_from_slice(&port.to_be_bytes());
        if let Some(ts) = ts {
            out.extend_from_slice(&ts.to_be_bytes());
        }
    }
    out.extend_from_slice(&rec.reconsume_times.to_be_bytes());
    out.extend_from_slice(&rec.prepared_transaction_offset.to_be_bytes());
    out.extend_from_slice(&(rec.body.len() as i32).to_be_bytes());
    out.extend_from_slice(&rec.body);
    out.push(topic.len() as u8);
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&(props.len() as i16).to_be_bytes());
    out.extend_from_slice(props.as_bytes());
    debug_assert_eq!(out.len() - start, total);
}

/// One message of a batch body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    /// RocketMQ per-message flag.
    pub flag: u32,
    /// Properties.
    pub properties: BTreeMap<String, String>,
    /// Body.
    pub body: Vec<u8>,
}

/// Decodes a SEND_BATCH_MESSAGE body (`MessageDecoder.encodeMessages`: per message `int32
/// total, int32 magic, int32 bodyCRC, int32 flag, int32 bodyLen + body, int16 propLen + props`).
/// Errors: the byte offset and what is wrong.
pub fn decode_batch(body: &[u8]) -> Result<Vec<BatchItem>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    let be32 = |p: usize| -> Result<i32, String> {
        body.get(p..p + 4)
            .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| format!("batch body truncated at byte {p}"))
    };
    while pos < body.len() {
        let total = be32(pos)?;
        if total < 22 || pos + total as usize > body.len() {
            return Err(format!("batch message at byte {pos} has size {total}, {} bytes remain", body.len() - pos));
        }
        let end = pos + total as usize;
        let flag = be32(pos + 12)? as u32;
        let body_len = be32(pos + 16)?;
        let body_start = pos + 20;
        if body_len < 0 || body_start + body_len as usize + 2 > end {
            return Err(format!("batch message at byte {pos}: body length {body_len} exceeds its size {total}"));
        }
        let body_end = body_start + body_len as usize;
        let prop_len = i16::from_be_bytes([body[body_end], body[body_end + 1]]);
        if prop_len < 0 || body_end + 2 + prop_len as usize > end {
            return Err(format!("batch message at byte {pos}: properties length {prop_len} exceeds its size {total}"));
        }
        let props = std::str::from_utf8(&body[body_end + 2..body_end + 2 + prop_len as usize])
            .map_err(|_| format!("batch message at byte {pos}: properties are not UTF-8"))?;
        out.push(BatchItem { flag, properties: decode_properties(props), body: body[body_start..body_end].to_vec() });
        pos = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_ids_name_the_broker_and_offset() {
        let id = offset_msg_id("10.0.0.1:10911", 0x1234);
        assert_eq!(id, "0A00000100002A9F0000000000001234");
        assert_eq!(decode_offset_msg_id(&id), Some(("10.0.0.1:10911".parse().unwrap(), 0x1234)));
        assert_eq!(decode_offset_msg_id("XYZ"), None);
        assert_eq!(decode_offset_msg_id("0A000001"), None);
    }

    #[test]
    fn a_message_encodes_as_message_decoder_lays_it_out() {
        let rec = Record {
            queue_id: 2,
            queue_offset: 7,
            physical_offset: 99,
            born_host: "127.0.0.1:5000".into(),
            topic: "orders".into(),
            properties: [("TAGS".to_string(), "a".to_string())].into(),
            body: b"hello".to_vec(),
            sys_flag: 1 << 16,
            ..Default::default()
        };
        let mut out = Vec::new();
        encode_message(&rec, "127.0.0.1:10911", &mut out);
        let total = i32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(total, out.len());
        assert_eq!(i32::from_be_bytes(out[4..8].try_into().unwrap()), MAGIC_V1);
        assert_eq!(u32::from_be_bytes(out[36..40].try_into().unwrap()), 0, "broker-internal flags stay inside");
        // born host at 48..56, store timestamp, store host at 64..72: 127.0.0.1, 10911
        assert_eq!(&out[48..52], &[127, 0, 0, 1]);
        assert_eq!(&out[64..68], &[127, 0, 0, 1]);
        assert_eq!(u32::from_be_bytes(out[68..72].try_into().unwrap()), 10911);
        assert_eq!(&out[84..88], &5i32.to_be_bytes());
        assert_eq!(&out[88..93], b"hello");
        assert_eq!(out[93], 6);
        assert!(out.ends_with("TAGS\u{1}a\u{2}".as_bytes()));
    }

    #[test]
    fn batch_bodies_decode_and_bad_ones_name_the_offset() {
        let mut body = Vec::new();
        for (i, b) in [b"one".as_slice(), b"two!"].iter().enumerate() {
            let props = format!("KEYS\u{1}k{i}\u{2}");
            let total = 20 + b.len() + 2 + props.len();
            body.extend_from_slice(&(total as i32).to_be_bytes());
            body.extend_from_slice(&[0; 8]);
            body.extend_from_slice(&(i as i32).to_be_bytes());
            body.extend_from_slice(&(b.len() as i32).to_be_bytes());
            body.extend_from_slice(b);
            body.extend_from_slice(&(props.len() as i16).to_be_bytes());
            body.extend_from_slice(props.as_bytes());
        }
        let items = decode_batch(&body).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!((items[1].flag, items[1].body.as_slice()), (1, b"two!".as_slice()));
        assert_eq!(items[1].properties["KEYS"], "k1");
        let err = decode_batch(&body[..body.len() - 1]).unwrap_err();
        assert!(err.contains("byte 33"), "{err}");
        body[3] = 0xFF;
        assert!(decode_batch(&body).is_err());
    }
}
