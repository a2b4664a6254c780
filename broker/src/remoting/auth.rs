//! Authentication and authorization of Remoting requests: the `AccessKey` and `Signature` ext
//! fields that the clients' `AclClientRPCHook` adds ([`crate::proto::signing`]), checked against
//! the engine's users as RocketMQ 5.3's broker does (`DefaultAuthenticationContextBuilder`,
//! refusals answered NO_PERMISSION by its `AuthenticationPipeline`), and the topics and groups
//! the header names ([`needs`]) against their access rules ([`crate::acl`]).

use base64::Engine as _;

use std::net::IpAddr;

use super::codes::*;
use super::command::Command;
use super::header::Header;
use crate::acl::{Action, Kind};
use crate::auth::{Auth, Identity, Refusal};
use crate::consume::groups::RETRY_PREFIX;
use crate::proto::signing;

/// Ext field that clients up to 4.9.3 added after signing (`MixAll.UNIQUE_MSG_QUERY_FLAG`), so
/// it is not part of what they signed.
const UNIQUE_KEY_QUERY: &str = "_UNIQUE_KEY_QUERY";
/// `MQVersion.Version.V4_9_3`'s ordinal.
const V4_9_3: i32 = 399;

/// Who signed `req`; `None` when authentication is off. The signature covers the values of every
/// other ext field in key order, then the body. Errors: see [`Refusal`].
pub fn identify(auth: &Auth, req: &Command) -> Result<Option<Identity>, Refusal> {
    if !auth.enabled() {
        return Ok(None);
    }
    let name = req.ext.get(signing::ACCESS_KEY).map(String::as_str).unwrap_or("");
    let user = auth.user(name)?;
    let signature = req.ext.get(signing::SIGNATURE).ok_or_else(|| Refusal::Malformed("no Signature".into()))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .map_err(|_| Refusal::Malformed("Signature is not Base64".into()))?;
    // BTreeMap order is byte order: Java's TreeMap order for the ASCII keys headers have.
    let mut parts: Vec<&[u8]> = req
        .ext
        .iter()
        .filter(|(k, _)| k.as_str() != signing::SIGNATURE)
        .filter(|(k, _)| !(req.version <= V4_9_3 && k.as_str() == UNIQUE_KEY_QUERY))
        .map(|(_, v)| v.as_bytes())
        .collect();
    parts.push(&req.body);
    if !signing::verify(&user.secret, &parts, &signature) {
        return Err(Refusal::BadSignature(user.name));
    }
    Ok(Some(Identity { user: user.name, kind: user.kind }))
}

/// What `req` does to which topics and groups, from its header (RocketMQ
/// `DefaultAuthorizationContextBuilder` for Remoting): sends publish to their topic (a send to a
/// `%RETRY%` topic is the group's consumption); pulls, pops, acks, offsets and consumer lists
/// subscribe the group to the topic; a message sent back is the group's. Requests that name their
/// resources only in the body (heartbeats, batch acks, assignments, queue locks) are authenticated
/// and act only on what the calls above were allowed.
pub fn needs(req: &Command) -> Vec<(Kind, String, Action)> {
    let h = if matches!(req.code, SEND_MESSAGE_V2 | SEND_BATCH_MESSAGE) {
        Header::of_send_v2(req)
    } else {
        Header::of(req)
    };
    let field = |name| h.get(name).filter(|v| !v.is_empty()).map(str::to_string);
    let topic = |action| {
        field("topic").map(|t| match t.strip_prefix(RETRY_PREFIX) {
            Some(group) => (Kind::Group, group.to_string(), Action::Sub),
            None => (Kind::Topic, t, action),
        })
    };
    let group = || field("consumerGroup").map(|g| (Kind::Group, g, Action::Sub));
    let found: Vec<Option<(Kind, String, Action)>> = match req.code {
        // END_TRANSACTION names its topic from the 5.x clients on; 4.x ones send none.
        SEND_MESSAGE | SEND_MESSAGE_V2 | SEND_BATCH_MESSAGE | END_TRANSACTION => vec![topic(Action::Pub)],
        PULL_MESSAGE
        | LITE_PULL_MESSAGE
        | POP_MESSAGE
        | ACK_MESSAGE
        | CHANGE_MESSAGE_INVISIBLETIME
        | QUERY_CONSUMER_OFFSET
        | UPDATE_CONSUMER_OFFSET => vec![topic(Action::Sub), group()],
        GET_CONSUMER_LIST_BY_GROUP => vec![group()],
        CONSUMER_SEND_MSG_BACK => vec![field("group").map(|g| (Kind::Group, g, Action::Sub))],
        GET_MAX_OFFSET | GET_MIN_OFFSET | SEARCH_OFFSET_BY_TIMESTAMP | QUERY_MESSAGE => vec![topic(Action::Sub)],
        _ => vec![],
    };
    found.into_iter().flatten().collect()
}

/// Authenticates `req` from `peer` and authorizes what it [`needs`]; `None` when authentication
/// is off. Errors: see [`Refusal`].
pub fn admit(auth: &Auth, req: &Command, peer: IpAddr) -> Result<Option<Identity>, Refusal> {
    let Some(who) = identify(auth, req)? else { return Ok(None) };
    for (kind, name, action) in needs(req) {
        auth.authorize(&who, Some(peer), kind, &name, action)?;
    }
    Ok(Some(who))
}

/// Adds `AccessKey` and `Signature` to `cmd` as `AclClientRPCHook` does (for the bench's client
/// and tests).
pub fn sign(cmd: &mut Command, access_key: &str, secret: &str) {
    cmd.ext.insert(signing::ACCESS_KEY.to_string(), access_key.to_string());
    cmd.ext.remove(signing::SIGNATURE);
    let mut parts: Vec<&[u8]> = cmd.ext.values().map(|v| v.as_bytes()).collect();
    parts.push(&cmd.body);
    let signature = base64::engine::general_purpose::STANDARD.encode(signing::hmac_sha1(secret, &parts));
    cmd.ext.insert(signing::SIGNATURE.to_string(), signature);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{User, UserKind};
    use crate::config::Config;

    fn auth(dir: &std::path::Path) -> Auth {
        let cfg = Config {
            auth_enabled: true,
            auth_access_key: Some("rocketmq".into()),
            auth_secret_key: Some("12345678".into()),
            ..Config::default()
        };
        let a = Auth::load(&cfg, Some(dir)).unwrap();
        a.upsert_user(User { name: "bob".into(), secret: "bob-secret".into(), kind: UserKind::Normal, enabled: true })
            .unwrap();
        a
    }

    fn request(version: i32) -> Command {
        let mut c = Command::request(10, 1, false, Default::default());
        c.version = version;
        c.ext.insert("topic".into(), "TopicTest".into());
        c.ext.insert("queueId".into(), "0".into());
        c.body = b"body".to_vec();
        c
    }

    #[test]
    fn the_java_hooks_signature_is_accepted_and_tampering_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(dir.path());
        // What AclClientRPCHook computes for these fields (Python: base64(hmac(b"12345678",
        // b"rocketmq" + b"0" + b"TopicTest" + b"body", sha1))): AccessKey < queueId < topic.
        let mut req = request(479);
        req.ext.insert("AccessKey".into(), "rocketmq".into());
        req.ext.insert("Signature".into(), "fOCDiStzHrNV+ERoSAddOUCUf2E=".into());
        assert!(identify(&a, &req).unwrap().unwrap().is_super());

        let mut tampered = req.clone();
        tampered.body = b"bodY".to_vec();
        assert_eq!(identify(&a, &tampered), Err(Refusal::BadSignature("rocketmq".into())));

        let mut signed = request(479);
        sign(&mut signed, "bob", "bob-secret");
        assert_eq!(identify(&a, &signed).unwrap().unwrap().user, "bob");
        sign(&mut signed, "bob", "guessed");
        assert_eq!(identify(&a, &signed), Err(Refusal::BadSignature("bob".into())));
        assert_eq!(identify(&a, &request(479)), Err(Refusal::NoCredentials));
    }

    #[test]
    fn requests_name_what_they_need_from_their_headers() {
        let req = |code: i32, fields: &[(&str, &str)]| {
            let mut c = Command::request(code, 1, false, Default::default());
            for (k, v) in fields {
                c.put(k, v);
            }
            needs(&c)
        };
        let t = |n: &str, a| (Kind::Topic, n.to_string(), a);
        let g = |n: &str| (Kind::Group, n.to_string(), Action::Sub);
        assert_eq!(req(SEND_MESSAGE_V2, &[("a", "PG"), ("b", "orders")]), [t("orders", Action::Pub)]);
        assert_eq!(req(SEND_MESSAGE_V2, &[("b", "%RETRY%billing")]), [g("billing")], "a message sent back");
        assert_eq!(
            req(PULL_MESSAGE, &[("consumerGroup", "billing"), ("topic", "orders")]),
            [t("orders", Action::Sub), g("billing")]
        );
        assert_eq!(req(END_TRANSACTION, &[("producerGroup", "PG")]), [], "a 4.x client names no topic");
        assert_eq!(req(END_TRANSACTION, &[("topic", "orders")]), [t("orders", Action::Pub)]);
        assert_eq!(req(HEART_BEAT, &[]), []);
    }

    #[test]
    fn old_clients_do_not_sign_the_unique_key_query_flag() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(dir.path());
        for (version, accepted) in [(V4_9_3, true), (V4_9_3 + 2, false)] {
            let mut req = request(version);
            sign(&mut req, "bob", "bob-secret");
            req.ext.insert(UNIQUE_KEY_QUERY.into(), "true".into()); // added after signing
            assert_eq!(identify(&a, &req).is_ok(), accepted, "version {version}");
        }
    }
}
