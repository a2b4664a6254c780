//! One Remoting frame (`RemotingCommand`) and its two header serializations (REMOTING.md §1):
//!
//! ```text
//! int32 total (4 + header + body)  int32 (serType << 24 | headerLen)  header  body
//! ```
//!
//! JSON headers are fastjson's `RemotingCommand` fields; ROCKETMQ headers are
//! `RocketMQSerializable`'s binary layout. A reply uses the serialization of its request.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use thiserror::Error;

use super::codes::{FLAG_ONEWAY, FLAG_RESPONSE, LANGUAGES, SERVER_VERSION};

/// Largest frame accepted or sent, bytes, not counting the 4-byte length
/// (`com.rocketmq.remoting.frameMaxLength`, 16 MiB).
pub const MAX_FRAME: usize = 16 << 20;

/// How a header is serialized (`SerializeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SerializeType {
    /// fastjson text (type 0), what every client sends by default.
    #[default]
    Json,
    /// `RocketMQSerializable` binary (type 1).
    RocketMq,
}

/// One request or response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Command {
    /// Request code, or response code in a response.
    pub code: i32,
    /// The sender's LanguageCode name (`JAVA`, `GO`, `CPP`, ...).
    pub language: String,
    /// The sender's `MQVersion` ordinal.
    pub version: i32,
    /// Request id; a response carries its request's.
    pub opaque: i32,
    /// Bit 0: response; bit 1: oneway.
    pub flag: i32,
    /// Error text of a response (absent when empty).
    pub remark: Option<String>,
    /// The custom header's fields, all as strings.
    pub ext: BTreeMap<String, String>,
    /// The body, bytes.
    pub body: Vec<u8>,
    /// The header serialization it came in (and its reply goes out in).
    pub ser: SerializeType,
}

/// Why bytes are not a frame. The connection that sent them is closed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix is outside 4..=[`MAX_FRAME`].
    #[error("frame length {0} outside 4..={MAX_FRAME}")]
    Length(u64),
    /// The header length is larger than what the frame holds.
    #[error("header length {header} exceeds the frame's {available} bytes")]
    HeaderLength {
        /// Header length from the frame.
        header: usize,
        /// Bytes after the length word.
        available: usize,
    },
    /// Serialization type neither 0 (JSON) nor 1 (ROCKETMQ).
    #[error("unknown header serialization type {0}")]
    SerializeType(u8),
    /// The header does not parse (why).
    #[error("malformed header: {0}")]
    Header(String),
}

impl Command {
    /// A response to `req` with `code` and an optional remark, in `req`'s serialization.
    pub fn response_to(req: &Command, code: i32, remark: impl Into<Option<String>>) -> Command {
        Command {
            code,
            language: "JAVA".into(),
            version: SERVER_VERSION,
            opaque: req.opaque,
            flag: FLAG_RESPONSE,
            remark: remark.into(),
            ser: req.ser,
            ..Default::default()
        }
    }

    /// A request this server sends (broker to client: CHECK_TRANSACTION_STATE,
    /// NOTIFY_CONSUMER_IDS_CHANGED), oneway if `oneway`.
    pub fn request(code: i32, opaque: i32, oneway: bool, ser: SerializeType) -> Command {
        Command {
            code,
            language: "JAVA".into(),
            version: SERVER_VERSION,
            opaque,
            flag: if oneway { FLAG_ONEWAY } else { 0 },
            ser,
            ..Default::default()
        }
    }

    /// True for a response.
    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    /// True for a oneway request (it gets no response).
    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// Sets one header field.
    pub fn put(&mut self, key: &str, value: impl ToString) -> &mut Self {
        self.ext.insert(key.to_string(), value.to_string());
        self
    }

    /// Decodes a frame given without its 4-byte length prefix. Errors: [`FrameError`].
    pub fn decode(frame: &[u8]) -> Result<Command, FrameError> {
        if frame.len() < 4 || frame.len() > MAX_FRAME {
            return Err(FrameError::Length(frame.len() as u64));
        }
        let word = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes"));
        let header_len = (word & 0x00FF_FFFF) as usize;
        let rest = &frame[4..];
        if header_len > rest.len() {
            return Err(FrameError::HeaderLength { header: header_len, available: rest.len() });
        }
        let (header, body) = rest.split_at(header_len);
        let mut cmd = match (word >> 24) as u8 {
            0 => decode_json(header)?,
            1 => decode_binary(header)?,
            t => return Err(FrameError::SerializeType(t)),
        };
        cmd.body = body.to_vec();
        Ok(cmd)
    }

    /// Encodes the command as a whole frame, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let header = match self.ser {
            SerializeType::Json => encode_json(self),
            SerializeType::RocketMq => encode_binary(self),
        };
        let ser_bits: u32 = if self.ser == SerializeType::RocketMq { 1 << 24 } else { 0 };
        let mut out = Vec::with_capacity(8 + header.len() + self.body.len());
        out.extend_from_slice(&((4 + header.len() + self.body.len()) as u32).to_be_bytes());
        out.extend_from_slice(&(ser_bits | header.len() as u32).to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.body);
        out
    }
}

/// A JSON scalar as the string a Java header field's `toString()` gives (C++ clients send
/// numbers and booleans unquoted).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn int_field(m: &Map<String, Value>, key: &str) -> Result<i32, FrameError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| FrameError::Header(format!("{key} is not a 32-bit integer"))),
        Some(Value::String(s)) => s.parse().map_err(|_| FrameError::Header(format!("{key} is not an integer"))),
        Some(_) => Err(FrameError::Header(format!("{key} is not an integer"))),
    }
}

fn decode_json(header: &[u8]) -> Result<Command, FrameError> {
    let v: Value = serde_json::from_slice(header).map_err(|e| FrameError::Header(e.to_string()))?;
    let Value::Object(m) = v else { return Err(FrameError::Header("the header is not a JSON object".into())) };
    let language = match m.get("language") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.as_u64().and_then(|i| LANGUAGES.get(i as usize)).unwrap_or(&"OTHER").to_string(),
        _ => "OTHER".into(),
    };
    let mut ext = BTreeMap::new();
    match m.get("extFields") {
        None | Some(Value::Null) => {}
        Some(Value::Object(fields)) => {
            for (k, v) in fields {
                if let Some(s) = scalar(v) {
                    ext.insert(k.clone(), s);
                }
            }
        }
        Some(_) => return Err(FrameError::Header("extFields is not an object".into())),
    }
    Ok(Command {
        code: int_field(&m, "code")?,
        language,
        version: int_field(&m, "version")?,
        opaque: int_field(&m, "opaque")?,
        flag: int_field(&m, "flag")?,
        remark: m.get("remark").and_then(scalar),
        ext,
        body: Vec::new(),
        ser: SerializeType::Json,
    })
}

fn encode_json(c: &Command) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("code".into(), c.code.into());
    m.insert("language".into(), c.language.clone().into());
    m.insert("version".into(), c.version.into());
    m.insert("opaque".into(), c.opaque.into());
    m.insert("flag".into(), c.flag.into());
    if let Some(r) = &c.remark {
        m.insert("remark".into(), r.clone().into());
    }
    // Go decodes extFields into map[string]string: only strings, and always the object.
    let ext: Map<String, Value> = c.ext.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    m.insert("extFields".into(), Value::Object(ext));
    m.insert("serializeTypeCurrentRPC".into(), "JSON".into());
    serde_json::to_vec(&Value::Object(m)).expect("a JSON value serialises")
}

/// A cursor over a binary header; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FrameError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or_else(|| {
            FrameError::Header(format!("{what} runs past the header end ({} bytes) at {}", self.buf.len(), self.pos))
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, FrameError> {
        Ok(self.take(1, what)?[0])
    }
    fn i16(&mut self, what: &str) -> Result<i16, FrameError> {
        Ok(i16::from_be_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    fn i32(&mut self, what: &str) -> Result<i32, FrameError> {
        Ok(i32::from_be_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn string(&mut self, len: usize, what: &str) -> Result<String, FrameError> {
        String::from_utf8(self.take(len, what)?.to_vec())
            .map_err(|_| FrameError::Header(format!("{what} is not UTF-8")))
    }
    fn len(&mut self, n: i64, what: &str) -> Result<usize, FrameError> {
        usize::try_from(n).map_err(|_| FrameError::Header(format!("negative {what} length {n}")))
    }
}

fn decode_binary(header: &[u8]) -> Result<Command, FrameError> {
    let mut r = Reader { buf: header, pos: 0 };
    let code = r.i16("code")? as i32;
    let language = LANGUAGES.get(r.u8("language")? as usize).unwrap_or(&"OTHER").to_string();
    let version = r.i16("version")? as i32;
    let opaque = r.i32("opaque")?;
    let flag = r.i32("flag")?;
    let remark_len = r.i32("remark length")?;
    let remark_len = r.len(remark_len as i64, "remark")?;
    let remark = if remark_len > 0 { Some(r.string(remark_len, "remark")?) } else { None };
    let ext_len = r.i32("extFields length")?;
    let ext_len = r.len(ext_len as i64, "extFields")?;
    let fields = r.take(ext_len, "extFields")?;
    let mut f = Reader { buf: fields, pos: 0 };
    let mut ext = BTreeMap::new();
    while f.pos < fields.len() {
        let kl = f.i16("key length")? as u16 as usize;
        let k = f.string(kl, "key")?;
        let vl = f.i32("value length")?;
        let vl = f.len(vl as i64, "value")?;
        let v = f.string(vl, "value")?;
        ext.insert(k, v);
    }
    Ok(Command { code, language, version, opaque, flag, remark, ext, body: Vec::new(), ser: SerializeType::RocketMq })
}

fn encode_binary(c: &Command) -> Vec<u8> {
    let mut fields = Vec::new();
    for (k, v) in &c.ext {
        fields.extend_from_slice(&(k.len() as u16).to_be_bytes());
        fields.extend_from_slice(k.as_bytes());
        fields.extend_from_slice(&(v.len() as u32).to_be_bytes());
        fields.extend_from_slice(v.as_bytes());
    }
    let remark = c.remark.as_deref().unwrap_or("");
    let lang = LANGUAGES.iter().position(|l| *l == c.language).unwrap_or(0) as u8;
    let mut b = Vec::with_capacity(21 + remark.len() + fields.len());
    b.extend_from_slice(&(c.code as i16).to_be_bytes());
    b.push(lang);
    b.extend_from_slice(&(c.version as i16).to_be_bytes());
    b.extend_from_slice(&c.opaque.to_be_bytes());
    b.extend_from_slice(&c.flag.to_be_bytes());
    b.extend_from_slice(&(remark.len() as u32).to_be_bytes());
    b.extend_from_slice(remark.as_bytes());
    b.extend_from_slice(&(fields.len() as u32).to_be_bytes());
    b.extend_from_slice(&fields);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ser: SerializeType) -> Command {
        let mut c = Command {
            code: 310,
            language: "GO".into(),
            version: 317,
            opaque: 42,
            flag: 0,
            remark: Some("hé".into()),
            body: b"payload".to_vec(),
            ser,
            ..Default::default()
        };
        c.put("b", "orders").put("e", 3);
        c
    }

    #[test]
    fn both_serializations_round_trip() {
        for ser in [SerializeType::Json, SerializeType::RocketMq] {
            let c = sample(ser);
            let frame = c.encode();
            assert_eq!(u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize, frame.len() - 4);
            assert_eq!(Command::decode(&frame[4..]).unwrap(), c);
        }
    }

    #[test]
    fn a_java_json_header_decodes_with_numbers_in_ext_fields() {
        // As fastjson writes it; a C++ client sends some extFields values unquoted.
        let header = br#"{"code":105,"extFields":{"topic":"t","queueId":3,"x":true},"flag":0,"language":"CPP","opaque":7,"serializeTypeCurrentRPC":"JSON","version":401}"#;
        let mut frame = (header.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(header);
        let c = Command::decode(&frame).unwrap();
        assert_eq!((c.code, c.opaque, c.version, c.language.as_str()), (105, 7, 401, "CPP"));
        assert_eq!(c.ext["queueId"], "3");
        assert_eq!(c.ext["x"], "true");
        assert!(c.body.is_empty());
    }

    #[test]
    fn bad_frames_are_errors_naming_the_problem() {
        assert!(matches!(Command::decode(&[0, 0]), Err(FrameError::Length(2))));
        assert!(matches!(Command::decode(&[0, 0, 0, 9, 1]), Err(FrameError::HeaderLength { header: 9, available: 1 })));
        assert!(matches!(Command::decode(&[2, 0, 0, 0]), Err(FrameError::SerializeType(2))));
        assert!(matches!(Command::decode(&[0, 0, 0, 2, b'{', b'x']), Err(FrameError::Header(_))));
        // A binary header whose remark length points past its end.
        let mut h = vec![1, 0, 0, 21];
        h.extend_from_slice(&[0, 10, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 99, 0, 0, 0, 0]);
        assert!(matches!(Command::decode(&h), Err(FrameError::Header(_))));
    }
}
