//! Reading a request's custom header (its `extFields`) the way RocketMQ's
//! `decodeCommandCustomHeader` does: required fields must be present and parse, optional ones
//! may be absent. A bad field is refused with SYSTEM_ERROR naming it (RocketMQ answers a
//! `RemotingCommandException` so).

use std::str::FromStr;

use super::codes::SYSTEM_ERROR;
use super::command::Command;

/// A refused request: response code and remark.
pub type Refusal = (i32, String);

/// The header fields of a request.
pub struct Header<'a> {
    cmd: &'a Command,
    /// SEND_MESSAGE_V2 / SEND_BATCH_MESSAGE name fields by one letter.
    short: bool,
}

/// The one-letter names of `SendMessageRequestHeaderV2`.
const SEND_V2: [(&str, &str); 14] = [
    ("producerGroup", "a"),
    ("topic", "b"),
    ("defaultTopic", "c"),
    ("defaultTopicQueueNums", "d"),
    ("queueId", "e"),
    ("sysFlag", "f"),
    ("bornTimestamp", "g"),
    ("flag", "h"),
    ("properties", "i"),
    ("reconsumeTimes", "j"),
    ("unitMode", "k"),
    ("maxReconsumeTimes", "l"),
    ("batch", "m"),
    ("brokerName", "n"),
];

impl<'a> Header<'a> {
    /// The header of `cmd`, with long field names.
    pub fn of(cmd: &'a Command) -> Header<'a> {
        Header { cmd, short: false }
    }

    /// The header of a SEND_MESSAGE_V2 or SEND_BATCH_MESSAGE request (one-letter names).
    pub fn of_send_v2(cmd: &'a Command) -> Header<'a> {
        Header { cmd, short: true }
    }

    /// A field, if present.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        let key = if self.short { SEND_V2.iter().find(|(l, _)| *l == name).map_or(name, |(_, s)| *s) } else { name };
        self.cmd.ext.get(key).map(String::as_str)
    }

    /// A required text field. Errors: it is missing.
    pub fn text(&self, name: &str) -> Result<&'a str, Refusal> {
        self.get(name).ok_or_else(|| (SYSTEM_ERROR, format!("the custom header field {name} is missing")))
    }

    /// A required numeric field. Errors: it is missing or does not parse.
    pub fn num<T: FromStr>(&self, name: &str) -> Result<T, Refusal> {
        self.text(name)?
            .trim()
            .parse()
            .map_err(|_| (SYSTEM_ERROR, format!("the custom header field {name} is not a valid number")))
    }

    /// An optional numeric field. Errors: present but does not parse.
    pub fn opt_num<T: FromStr>(&self, name: &str) -> Result<Option<T>, Refusal> {
        match self.get(name).map(str::trim).filter(|s| !s.is_empty() && *s != "null") {
            None => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| (SYSTEM_ERROR, format!("the custom header field {name} is not a valid number"))),
        }
    }

    /// An optional boolean field (absent: false).
    pub fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}
