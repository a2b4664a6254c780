//! One Remoting frame (`RemotingCommand`) and its two header serializations (REMOTING.md §1):
//!
//! ```text
//! int32 total (4 + header + body)  int32 (serType << 24 | headerLen)  header  body
//! ```
//!
//! JSON headers are fastjson's `RemotingCommand` fields; ROCKETMQ headers are
//! `RocketMQSerializable`'s binary layout. A reply uses the serialization of its request.

use std::collections::BTreeMap;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
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

/// One value of a JSON header, as far as a header cares: deserialized straight from the text,
/// without building a `serde_json::Value` tree (that tree and its copy into `ext` were a fifth of
/// the broker's CPU per Remoting send).
#[derive(Debug, Default)]
enum Scalar {
    #[default]
    Null,
    Int(i64),
    /// A number that is no i64 (a fraction, or above `i64::MAX`), as JSON writes it.
    Number(String),
    Bool(bool),
    Text(String),
    /// An object or array.
    Compound,
}

impl Scalar {
    /// The string a Java header field's `toString()` gives (C++ clients send numbers and
    /// booleans unquoted); None for null and compounds.
    fn into_text(self) -> Option<String> {
        match self {
            Scalar::Int(i) => Some(i.to_string()),
            Scalar::Bool(b) => Some(b.to_string()),
            Scalar::Number(s) | Scalar::Text(s) => Some(s),
            Scalar::Null | Scalar::Compound => None,
        }
    }

    /// An int field of the header (absent or null: 0). Errors: it is no 32-bit integer.
    fn int(&self, key: &str) -> Result<i32, FrameError> {
        match self {
            Scalar::Null => Ok(0),
            Scalar::Int(i) => {
                i32::try_from(*i).map_err(|_| FrameError::Header(format!("{key} is not a 32-bit integer")))
            }
            Scalar::Number(_) => Err(FrameError::Header(format!("{key} is not a 32-bit integer"))),
            Scalar::Text(s) => s.parse().map_err(|_| FrameError::Header(format!("{key} is not an integer"))),
            Scalar::Bool(_) | Scalar::Compound => Err(FrameError::Header(format!("{key} is not an integer"))),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
                Scalar::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(i))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Scalar, E> {
                Ok(i64::try_from(u).map_or_else(|_| Scalar::Number(u.to_string()), Scalar::Int))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Scalar, E> {
                Ok(Scalar::Number(serde_json::Number::from_f64(f).map(|n| n.to_string()).unwrap_or_default()))
            }
            fn visit_str<E>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Scalar, E> {
                Ok(Scalar::Text(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Scalar, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Compound)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Scalar, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Compound)
            }
        }
        d.deserialize_any(V)
    }
}

/// `extFields`: an object whose scalar values become strings (other values are dropped), or
/// null. Errors: any other JSON value.
#[derive(Debug, Default)]
struct ExtFields(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for ExtFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExtFields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("extFields as an object")
            }
            fn visit_unit<E>(self) -> Result<ExtFields, E> {
                Ok(ExtFields::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<ExtFields, A::Error> {
                let mut ext = BTreeMap::new();
                while let Some((k, v)) = a.next_entry::<String, Scalar>()? {
                    if let Some(v) = v.into_text() {
                        ext.insert(k, v);
                    }
                }
                Ok(ExtFields(ext))
            }
        }
        d.deserialize_any(V)
    }
}

/// The fields of fastjson's `RemotingCommand` a request or response carries; others are ignored.
#[derive(Deserialize)]
struct JsonHeader {
    #[serde(default)]
    code: Scalar,
    #[serde(default)]
    language: Scalar,
    #[serde(default)]
    version: Scalar,
    #[serde(default)]
    opaque: Scalar,
    #[serde(default)]
    flag: Scalar,
    #[serde(default)]
    remark: Scalar,
    #[serde(default, rename = "extFields")]
    ext: ExtFields,
}

fn decode_json(header: &[u8]) -> Result<Command, FrameError> {
    // serde would also take an array for the struct.
    if header.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(FrameError::Header("the header is not a JSON object".into()));
    }
    let h: JsonHeader = serde_json::from_slice(header).map_err(|e| FrameError::Header(e.to_string()))?;
    let language = match h.language {
        Scalar::Text(s) => s,
        Scalar::Int(i) => usize::try_from(i).ok().and_then(|i| LANGUAGES.get(i)).unwrap_or(&"OTHER").to_string(),
        _ => "OTHER".into(),
    };
    Ok(Command {
        code: h.code.int("code")?,
        language,
        version: h.version.int("version")?,
        opaque: h.opaque.int("opaque")?,
        flag: h.flag.int("flag")?,
        remark: h.remark.into_text(),
        ext: h.ext.0,
        body: Vec::new(),
        ser: SerializeType::Json,
    })
}

/// The header as fastjson writes it: fields in alphabetical order, `extFields` always present
/// with string values only (Go decodes it into `map[string]string`).
#[derive(Serialize)]
struct JsonHeaderOut<'a> {
    code: i32,
    #[serde(rename = "extFields")]
    ext: &'a BTreeMap<String, String>,
    flag: i32,
    language: &'a str,
    opaque: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    remark: Option<&'a str>,
    #[serde(rename = "serializeTypeCurrentRPC")]
    ser: &'static str,
    version: i32,
}

fn encode_json(c: &Command) -> Vec<u8> {
    let h = JsonHeaderOut {
        code: c.code,
        ext: &c.ext,
        flag: c.flag,
        language: &c.language,
        opaque: c.opaque,
        remark: c.remark.as_deref(),
        ser: "JSON",
        version: c.version,
    };
    serde_json::to_vec(&h).expect("strings and numbers serialise")
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
    fn a_json_header_is_written_as_fastjson_writes_it() {
        let mut c = sample(SerializeType::Json);
        c.remark = None;
        let frame = c.encode();
        let header_len = u32::from_be_bytes(frame[4..8].try_into().unwrap()) as usize;
        assert_eq!(
            std::str::from_utf8(&frame[8..8 + header_len]).unwrap(),
            r#"{"code":310,"extFields":{"b":"orders","e":"3"},"flag":0,"language":"GO","opaque":42,"serializeTypeCurrentRPC":"JSON","version":317}"#
        );
    }

    #[test]
    fn json_headers_drop_compound_ext_values_and_take_null_as_absent() {
        let header = br#"{"code":"11","extFields":{"a":[1],"b":{"c":1},"d":null,"e":1.5,"f":18446744073709551615},"language":2,"remark":null}"#;
        let mut frame = (header.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(header);
        let c = Command::decode(&frame).unwrap();
        assert_eq!((c.code, c.opaque, c.language.as_str(), c.remark), (11, 0, LANGUAGES[2], None));
        assert_eq!(
            c.ext.into_iter().collect::<Vec<_>>(),
            [("e".into(), "1.5".into()), ("f".into(), "18446744073709551615".into())]
        );
        for (header, why) in [
            (&br#"[1]"#[..], "not a JSON object"),
            (br#"{"extFields":[1]}"#, "extFields"),
            (br#"{"opaque":4294967296}"#, "opaque is not a 32-bit integer"),
            (br#"{"flag":true}"#, "flag is not an integer"),
        ] {
            let mut frame = (header.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(header);
            let err = Command::decode(&frame).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
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
