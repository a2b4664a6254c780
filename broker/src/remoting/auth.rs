//! Authentication of Remoting requests: the `AccessKey` and `Signature` ext fields that the
//! clients' `AclClientRPCHook` adds ([`crate::proto::signing`]), checked against the engine's
//! users as RocketMQ 5.3's broker does (`DefaultAuthenticationContextBuilder`, refusals answered
//! NO_PERMISSION by its `AuthenticationPipeline`).

use base64::Engine as _;

use super::command::Command;
use crate::auth::{Auth, Identity, Refusal};
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
        let a = Auth::load(&cfg, Some(&dir.join("users.json"))).unwrap();
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
