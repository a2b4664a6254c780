//! How requests are signed: the wire half of authentication (RocketMQ 5.3, "ACL 2.0"). Both
//! schemes are HMAC-SHA1 keyed by the user's secret key (RocketMQ `AclSigner`).
//!
//! - gRPC (rocketmq-clients, `docs/transport.md`): header `x-mq-date-time` (`yyyyMMdd'T'HHmmss'Z'`,
//!   UTC) and header `authorization` = `MQv2-HMAC-SHA1 Credential=<access key>,
//!   SignedHeaders=x-mq-date-time, Signature=<hex of HMAC-SHA1(secret, x-mq-date-time)>`.
//! - Remoting (`AclClientRPCHook`): ext fields `AccessKey` and `Signature` = Base64 of
//!   HMAC-SHA1(secret, the values of every other ext field in key order, then the body).
//!
//! [`Signer`] signs the gRPC calls Ferrocket's own processes, its CLI and its operator make.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha1::Sha1;
use tonic::metadata::MetadataValue;

/// gRPC header carrying the signature.
pub const AUTHORIZATION: &str = "authorization";
/// gRPC header carrying the signed time.
pub const DATE_TIME: &str = "x-mq-date-time";
/// Remoting ext field naming the user.
pub const ACCESS_KEY: &str = "AccessKey";
/// Remoting ext field carrying the signature.
pub const SIGNATURE: &str = "Signature";

/// HMAC-SHA1 of the concatenated `parts`, keyed by `secret`.
pub fn hmac_sha1(secret: &str, parts: &[&[u8]]) -> [u8; 20] {
    mac(secret, parts).finalize().into_bytes().into()
}

/// Whether `signature` is [`hmac_sha1`] of `parts`, compared in constant time.
pub fn verify(secret: &str, parts: &[&[u8]], signature: &[u8]) -> bool {
    mac(secret, parts).verify_slice(signature).is_ok()
}

fn mac(secret: &str, parts: &[&[u8]]) -> Hmac<Sha1> {
    let mut m = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    for p in parts {
        m.update(p);
    }
    m
}

/// `x-mq-date-time` of `at` (`20261206T221500Z`).
pub fn format_date(at: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(at).to_string(); // 2026-12-06T22:15:00Z
    s.chars().filter(|c| *c != '-' && *c != ':').collect()
}

/// `x-mq-date-time` as ms since the epoch: the shape [`format_date`] writes (the Java, Go, Python
/// and Node clients), or RFC 3339 with fractional seconds and an offset, which the Rust client
/// 5.0.0 sends (`2026-12-06T23:15:00.123456+01:00`). `None` for anything else.
pub fn parse_date(date: &str) -> Option<u64> {
    let b = date.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' || !digits(0..8) || !digits(9..15) {
        return parse_rfc3339_with_offset(date);
    }
    let d = |r: std::ops::Range<usize>| &date[r];
    let rfc3339 = format!("{}-{}-{}T{}:{}:{}Z", d(0..4), d(4..6), d(6..8), d(9..11), d(11..13), d(13..15));
    let at = humantime::parse_rfc3339(&rfc3339).ok()?;
    Some(at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64)
}

/// RFC 3339 with an optional fraction and a `Z` or `±HH:MM` offset, as ms since the epoch.
fn parse_rfc3339_with_offset(date: &str) -> Option<u64> {
    if date.len() < 20 || !date.is_ascii() {
        return None;
    }
    let (local, offset_ms) = match date.as_bytes()[date.len() - 6] {
        sign @ (b'+' | b'-') => {
            let (h, m) = date[date.len() - 5..].split_once(':')?;
            let ms = (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?) * 60_000;
            (&date[..date.len() - 6], if sign == b'+' { ms } else { -ms })
        }
        _ => (date.strip_suffix('Z')?, 0),
    };
    let at = humantime::parse_rfc3339_weak(&format!("{local}Z")).ok()?;
    let utc = at.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64 - offset_ms;
    u64::try_from(utc).ok()
}

/// The signature scheme of the `authorization` header (RocketMQ's `Sign.HMAC_SHA1` v2 form).
pub const SCHEME: &str = "MQv2-HMAC-SHA1";

/// The `authorization` header value for `access_key` signing `date` with `secret`.
pub fn authorization(access_key: &str, secret: &str, date: &str) -> String {
    let signature = hex::encode_upper(hmac_sha1(secret, &[date.as_bytes()]));
    format!("{SCHEME} Credential={access_key}, SignedHeaders={DATE_TIME}, Signature={signature}")
}

/// The access key and the hex signature of an `authorization` header, read as RocketMQ's
/// `DefaultAuthenticationContextBuilder` does (`Credential` may carry `/`-separated scope after
/// the key). The scheme must be `MQv2-HMAC-SHA1`, the only one every official client signs with
/// (RocketMQ does not look at it; a signature claiming another algorithm is refused here rather
/// than checked as SHA-1). Errors: what is missing or malformed.
pub fn parse_authorization(value: &str) -> Result<(&str, &str), String> {
    let (scheme, rest) = value.split_once(' ').ok_or("authorization header has no credentials")?;
    if scheme != SCHEME {
        let shown: String = scheme.chars().take(32).collect();
        return Err(format!("authorization scheme {shown:?} is not {SCHEME}"));
    }
    let (mut user, mut signature) = (None, None);
    for item in rest.split(',') {
        let (k, v) = item
            .trim()
            .split_once('=')
            .ok_or_else(|| format!("authorization item {:?} is not key=value", item.trim()))?;
        match k {
            "Credential" => user = v.split('/').next(),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    match (user, signature) {
        (Some(u), Some(s)) => Ok((u, s)),
        (None, _) => Err("authorization header has no Credential".into()),
        (_, None) => Err("authorization header has no Signature".into()),
    }
}

/// A tonic interceptor that signs every call with one user's credentials (none: calls go as they
/// are, for a cluster without authentication).
#[derive(Clone, Default)]
pub struct Signer {
    credentials: Option<(String, String)>,
}

impl Signer {
    /// Signs as `access_key` with `secret`.
    pub fn new(access_key: &str, secret: &str) -> Signer {
        Signer { credentials: Some((access_key.to_string(), secret.to_string())) }
    }

    /// Signs with `credentials` (access key, secret key) if there are any.
    pub fn from(credentials: Option<(&str, &str)>) -> Signer {
        credentials.map(|(ak, sk)| Signer::new(ak, sk)).unwrap_or_default()
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Signer").field("access_key", &self.credentials.as_ref().map(|c| &c.0)).finish()
    }
}

impl tonic::service::Interceptor for Signer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some((ak, sk)) = &self.credentials {
            let date = format_date(SystemTime::now());
            let header = |v: String| {
                MetadataValue::try_from(v).map_err(|_| tonic::Status::invalid_argument("access key is not ASCII"))
            };
            req.metadata_mut().insert(AUTHORIZATION, header(authorization(ak, sk, &date))?);
            req.metadata_mut().insert(DATE_TIME, header(date)?);
        }
        Ok(req)
    }
}

/// A channel whose calls [`Signer`] signs: what every client of Ferrocket's own services holds.
pub type SignedChannel = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Signer>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_odd_shapes_are_refused() {
        let ms = 1_796_595_300_000; // 2026-12-06T22:15:00Z
        assert_eq!(format_date(UNIX_EPOCH + Duration::from_millis(ms)), "20261206T221500Z");
        assert_eq!(parse_date("20261206T221500Z"), Some(ms));
        for bad in ["", "20261206T221500", "20261306T221500Z", "2026120xT221500Z", "2026-12-06T22:15:00+1:00"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn authorization_headers_round_trip_as_the_clients_write_them() {
        let date = "20261206T221500Z";
        let header = authorization("alice", "alice-secret", date);
        let (user, sig) = parse_authorization(&header).unwrap();
        assert_eq!(user, "alice");
        assert!(verify("alice-secret", &[date.as_bytes()], &hex::decode(sig).unwrap()));
        assert!(!verify("other-secret", &[date.as_bytes()], &hex::decode(sig).unwrap()));
        // The Java client's shape: a credential scope after the key, lower-case hex.
        let java = "MQv2-HMAC-SHA1 Credential=alice/x, SignedHeaders=x-mq-date-time, Signature=0a1b";
        assert_eq!(parse_authorization(java), Ok(("alice", "0a1b")));
        assert!(parse_authorization("MQv2-HMAC-SHA1").is_err());
        // The Rust client's dates: RFC 3339, local offset, nanoseconds.
        let compact = parse_date("20261206T221500Z").unwrap();
        assert_eq!(parse_date("2026-12-06T23:15:00.5+01:00"), Some(compact + 500));
        assert_eq!(parse_date("2026-12-06T22:15:00Z"), Some(compact));
        assert_eq!(parse_date("2026-12-06T17:15:00.000000001-05:00"), Some(compact));
        assert_eq!(parse_date("2026-12-06 22:15:00"), None);
        assert!(parse_authorization("MQv2-HMAC-SHA256 Credential=alice, Signature=00").unwrap_err().contains("scheme"));
        assert!(parse_authorization("MQv2-HMAC-SHA1 Credential=alice").unwrap_err().contains("Signature"));
        assert!(parse_authorization("MQv2-HMAC-SHA1 Credential").unwrap_err().contains("key=value"));
    }

    #[test]
    fn signatures_match_pythons_hmac() {
        // hmac.new(b"12345678", b"20261206T221500Z", hashlib.sha1).hexdigest()
        let sig = hex::encode(hmac_sha1("12345678", &[b"20261206T221500Z"]));
        assert_eq!(sig, "7f1d3aae2b3740fb9ba731aa32585900c506cd94");
        // The same over parts: what a Remoting signature covers, split anywhere.
        let whole = hmac_sha1("12345678", &[b"rocketmq0TopicTestbody"]);
        assert_eq!(whole, hmac_sha1("12345678", &[b"rocketmq", b"0", b"TopicTest", b"body"]));
    }
}
