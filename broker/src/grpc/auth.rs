//! Authentication and authorization of gRPC calls: the `authorization` and `x-mq-date-time`
//! headers ([`crate::proto::signing`]) checked against the engine's users ([`crate::auth`]), and
//! the topics and groups a request touches ([`Guarded`]) against their access rules
//! ([`crate::acl`]).
//!
//! MessagingService refusals go in the response body as RocketMQ's proxy answers them
//! (`GrpcMessagingApplication`: UNAUTHORIZED 40100, FORBIDDEN 40300); Ferrocket's own services
//! (Admin, replication, nameserver, controller) take only super users and refuse with the gRPC
//! status UNAUTHENTICATED or PERMISSION_DENIED, through [`SuperOnly`].

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tonic::metadata::MetadataMap;

use crate::acl::{Action, Kind};
use crate::auth::{record_refusal, require_super, Auth, Identity, Refusal};
use crate::proto::signing;
use crate::proto::v2::{self, Code};
use ferrocket_engine::metrics::RefusalLabel;

/// What a request does to which topics and groups, for authorization (RocketMQ
/// `DefaultAuthorizationContextBuilder`): sends and transactions publish to their topics;
/// receiving, acking, pulling and offsets subscribe the group to the topic; a route query does
/// either. Topic and group names as sent (an empty name asks nothing; validation refuses it later).
pub trait Guarded {
    /// (kind, name, action) for every resource the request touches.
    fn needs(&self) -> Vec<(Kind, String, Action)>;
}

fn named(kind: Kind, r: &Option<v2::Resource>, action: Action) -> Option<(Kind, String, Action)> {
    r.as_ref().filter(|r| !r.name.is_empty()).map(|r| (kind, r.name.clone(), action))
}

/// The topic and group a consumer's request subscribes.
fn subscribes(topic: &Option<v2::Resource>, group: &Option<v2::Resource>) -> Vec<(Kind, String, Action)> {
    [named(Kind::Topic, topic, Action::Sub), named(Kind::Group, group, Action::Sub)].into_iter().flatten().collect()
}

macro_rules! guarded {
    ($($ty:ty => |$r:ident| $needs:expr;)*) => {
        $(impl Guarded for $ty {
            fn needs(&self) -> Vec<(Kind, String, Action)> {
                let $r = self;
                $needs
            }
        })*
    };
}

guarded! {
    v2::QueryRouteRequest => |r| named(Kind::Topic, &r.topic, Action::All).into_iter().collect();
    v2::HeartbeatRequest => |r| named(Kind::Group, &r.group, Action::Sub).into_iter().collect();
    v2::SendMessageRequest => |r| r.messages.iter().filter_map(|m| named(Kind::Topic, &m.topic, Action::Pub)).collect();
    v2::QueryAssignmentRequest => |r| subscribes(&r.topic, &r.group);
    v2::ReceiveMessageRequest => |r| subscribes(&r.message_queue.as_ref().and_then(|q| q.topic.clone()), &r.group);
    v2::AckMessageRequest => |r| subscribes(&r.topic, &r.group);
    v2::ForwardMessageToDeadLetterQueueRequest => |r| subscribes(&r.topic, &r.group);
    v2::PullMessageRequest => |r| subscribes(&r.message_queue.as_ref().and_then(|q| q.topic.clone()), &r.group);
    v2::UpdateOffsetRequest => |r| subscribes(&r.message_queue.as_ref().and_then(|q| q.topic.clone()), &r.group);
    v2::GetOffsetRequest => |r| subscribes(&r.message_queue.as_ref().and_then(|q| q.topic.clone()), &r.group);
    v2::QueryOffsetRequest => |r| subscribes(&r.message_queue.as_ref().and_then(|q| q.topic.clone()), &None);
    v2::EndTransactionRequest => |r| named(Kind::Topic, &r.topic, Action::Pub).into_iter().collect();
    v2::NotifyClientTerminationRequest => |r| named(Kind::Group, &r.group, Action::Sub).into_iter().collect();
    v2::ChangeInvisibleDurationRequest => |r| subscribes(&r.topic, &r.group);
    v2::RecallMessageRequest => |r| named(Kind::Topic, &r.topic, Action::Pub).into_iter().collect();
    // A Telemetry stream's settings name its topics and group; what it is then used for (check-backs
    // to a producer, settings) is authorized by the calls that act on them.
    tonic::Streaming<v2::TelemetryCommand> => |_r| Vec::new();
}

/// Authenticates a call and authorizes everything it [`Guarded::needs`]; with authentication off
/// it admits at once (no clock read, no allocation: this is every call's path). Errors: see
/// [`Refusal`].
pub fn admit<T: Guarded>(auth: &Auth, req: &tonic::Request<T>) -> Result<(), Refusal> {
    if !auth.enabled() {
        return Ok(());
    }
    let Some(who) = identify(auth, req.metadata(), crate::store::now_ms())? else { return Ok(()) };
    let peer = req.remote_addr().map(|a| a.ip());
    for (kind, name, action) in req.get_ref().needs() {
        auth.authorize(&who, peer, kind, &name, action)?;
    }
    Ok(())
}

/// Who signed a call with these headers; `None` when authentication is off. Errors: see
/// [`Refusal`] (no `authorization` header is [`Refusal::NoCredentials`]).
pub fn identify(auth: &Auth, headers: &MetadataMap, now_ms: u64) -> Result<Option<Identity>, Refusal> {
    if !auth.enabled() {
        return Ok(None);
    }
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let authorization = text(signing::AUTHORIZATION);
    if authorization.is_empty() {
        return Err(Refusal::NoCredentials);
    }
    let (name, signature_hex) = signing::parse_authorization(authorization).map_err(Refusal::Malformed)?;
    let user = auth.user(name)?;
    let date = text(signing::DATE_TIME);
    let signature = hex::decode(signature_hex).map_err(|_| Refusal::Malformed("Signature is not hex".into()))?;
    if !signing::verify(&user.secret, &[date.as_bytes()], &signature) {
        return Err(Refusal::BadSignature(user.name));
    }
    let date_ms =
        signing::parse_date(date).ok_or_else(|| Refusal::Malformed(format!("{} {date:?}", signing::DATE_TIME)))?;
    auth.check_skew(date, date_ms, now_ms)?;
    Ok(Some(Identity { user: user.name, kind: user.kind }))
}

/// The MessagingService status of a refusal: FORBIDDEN for a known user who may not, otherwise
/// UNAUTHORIZED.
pub fn status(r: &Refusal) -> v2::Status {
    let code = if r.is_forbidden() { Code::Forbidden } else { Code::Unauthorized };
    super::status::status(code, r.to_string())
}

/// Admits only super users to a service, when authentication is on; refusals are logged and
/// counted under protocol `grpc`.
#[derive(Clone)]
pub struct SuperOnly {
    auth: Arc<Auth>,
    refused: Family<RefusalLabel, Counter>,
}

impl SuperOnly {
    /// Checks calls against `auth`, counting refusals in `refused`
    /// (`ferrocket_auth_refused_total`).
    pub fn new(auth: Arc<Auth>, refused: Family<RefusalLabel, Counter>) -> SuperOnly {
        SuperOnly { auth, refused }
    }
}

impl tonic::service::Interceptor for SuperOnly {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let checked = identify(&self.auth, req.metadata(), crate::store::now_ms()).and_then(require_super);
        match checked {
            Ok(()) => Ok(req),
            Err(r) => {
                record_refusal(&self.refused, "grpc", req.remote_addr(), &r);
                Err(if r.is_forbidden() {
                    tonic::Status::permission_denied(r.to_string())
                } else {
                    tonic::Status::unauthenticated(r.to_string())
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{User, UserKind};
    use crate::config::Config;
    use std::time::{Duration, UNIX_EPOCH};

    fn headers(user: &str, secret: &str, date: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert(signing::AUTHORIZATION, signing::authorization(user, secret, date).parse().unwrap());
        m.insert(signing::DATE_TIME, date.parse().unwrap());
        m
    }

    #[test]
    fn calls_are_identified_by_signature_and_date() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            auth_enabled: true,
            auth_access_key: Some("cluster".into()),
            auth_secret_key: Some("cluster-secret".into()),
            ..Config::default()
        };
        let auth = Auth::load(&cfg, Some(dir.path())).unwrap();
        let alice = User { name: "alice".into(), secret: "alice-secret".into(), kind: UserKind::Normal, enabled: true };
        auth.upsert_user(alice).unwrap();
        let now = 1_796_595_300_000;
        let date = signing::format_date(UNIX_EPOCH + Duration::from_millis(now - 60_000));

        let id = identify(&auth, &headers("alice", "alice-secret", &date), now).unwrap().unwrap();
        assert_eq!((id.user.as_str(), id.kind), ("alice", UserKind::Normal));
        assert!(identify(&auth, &headers("cluster", "cluster-secret", &date), now).unwrap().unwrap().is_super());

        let refused = |h: &MetadataMap| identify(&auth, h, now).unwrap_err();
        assert_eq!(refused(&MetadataMap::new()), Refusal::NoCredentials);
        assert_eq!(refused(&headers("alice", "guessed", &date)), Refusal::BadSignature("alice".into()));
        assert_eq!(refused(&headers("mallory", "guessed", &date)), Refusal::UnknownUser("mallory".into()));
        // A signature replayed an hour later.
        assert_eq!(
            identify(&auth, &headers("alice", "alice-secret", &date), now + 3_600_000).unwrap_err().reason(),
            "clock_skew"
        );
        // A signed date of another shape.
        assert!(matches!(refused(&headers("alice", "alice-secret", "yesterday")), Refusal::Malformed(_)));
        assert_eq!(status(&Refusal::NoCredentials).code, Code::Unauthorized as i32);
        assert_eq!(status(&Refusal::NotSuper("alice".into())).code, Code::Forbidden as i32);

        let off = Auth::load(&Config::default(), None).unwrap();
        assert_eq!(identify(&off, &MetadataMap::new(), now), Ok(None));
    }
}
