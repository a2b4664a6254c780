//! Authentication: who may call, as RocketMQ 5.3's "ACL 2.0" decides it (`auth` module,
//! `DefaultAuthenticationProvider`). A caller names a user (its access key) and signs with the
//! user's secret key; the front ends check the signature of their protocol (`ferrocket_proto::
//! signing`) against [`Auth::user`], and gRPC's signed date against [`Auth::check_skew`]. Remoting
//! signatures carry no time, so a captured Remoting request can be replayed, as RocketMQ's can.
//!
//! Users are the cluster's own super user (`auth_access_key` / `auth_secret_key`, never stored,
//! the credentials Ferrocket's processes sign their calls to each other with) and the users
//! stored in `config/users.json` (created over Admin; a slave copies its master's).

use std::io;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::acl::{Acls, Action, Kind};
use crate::config::Config;
use crate::metrics::RefusalLabel;
use crate::registry::{Named, Registry};

/// What a user may do beyond its access rules (RocketMQ `UserType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    /// Everything, Admin included (RocketMQ `SUPER`).
    Super,
    /// Messaging only (RocketMQ `NORMAL`).
    #[default]
    Normal,
}

/// A user: an access key (its name) and the secret key its requests are signed with (RocketMQ
/// `User`: username, password, userType, userStatus).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Access key, 1 to 64 of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// Secret key, 6 to 128 bytes (RocketMQ asks at least 6 of a password).
    pub secret: String,
    /// Super or normal.
    #[serde(default)]
    pub kind: UserKind,
    /// A disabled user is refused as if its signature were wrong, but kept.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl Named for User {
    fn name(&self) -> &str {
        &self.name
    }
}

/// Who a request was verified to come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's access key.
    pub user: String,
    /// Its kind.
    pub kind: UserKind,
}

impl Identity {
    /// Whether this is a super user.
    pub fn is_super(&self) -> bool {
        self.kind == UserKind::Super
    }
}

/// Admits a super user, or anyone while authentication is off (`who` is `None`). Errors:
/// [`Refusal::NotSuper`].
pub fn require_super(who: Option<Identity>) -> Result<(), Refusal> {
    match who {
        Some(who) if !who.is_super() => Err(Refusal::NotSuper(who.user)),
        _ => Ok(()),
    }
}

/// Why a request was refused. Front ends answer UNAUTHORIZED (gRPC 40100) or NO_PERMISSION
/// (Remoting 16) for all but [`Refusal::NotSuper`], which is FORBIDDEN (40300); the message names
/// the user, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// No access key came with the request.
    #[error("no credentials: sign requests with an access key and secret key")]
    NoCredentials,
    /// The credentials could not be read (the message says which part).
    #[error("malformed credentials: {0}")]
    Malformed(String),
    /// No such user.
    #[error("user {0} is not found")]
    UnknownUser(String),
    /// The user exists and is disabled.
    #[error("user {0} is disabled")]
    Disabled(String),
    /// The signature is not the user's over this request.
    #[error("signature of user {0} does not match")]
    BadSignature(String),
    /// The signed date is too far from the broker's clock.
    #[error("x-mq-date-time {date} is {skew_ms} ms from the broker's clock (at most {max_ms} ms allowed)")]
    ClockSkew {
        /// The date as sent.
        date: String,
        /// Its distance from now, ms.
        skew_ms: u64,
        /// `auth_clock_skew_ms`.
        max_ms: u64,
    },
    /// The call needs a super user.
    #[error("user {0} is not a super user")]
    NotSuper(String),
    /// No access rule allows the request, or one denies it ([`crate::acl`]); the message names
    /// the user, action, resource and peer.
    #[error("{0}")]
    Denied(String),
}

impl Refusal {
    /// The `reason` label of `ferrocket_auth_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoCredentials => "no_credentials",
            Refusal::Malformed(_) => "malformed",
            Refusal::UnknownUser(_) => "unknown_user",
            Refusal::Disabled(_) => "disabled",
            Refusal::BadSignature(_) => "bad_signature",
            Refusal::ClockSkew { .. } => "clock_skew",
            Refusal::NotSuper(_) => "not_super",
            Refusal::Denied(_) => "denied",
        }
    }

    /// Whether the caller is known and just may not do this (FORBIDDEN rather than UNAUTHORIZED).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Refusal::NotSuper(_) | Refusal::Denied(_))
    }
}

/// Logs a refusal with the peer, the reason and the user it names (never a secret), and counts it
/// in `refused` (`ferrocket_auth_refused_total{protocol, reason}`).
pub fn record_refusal(
    refused: &Family<RefusalLabel, Counter>,
    protocol: &'static str,
    peer: Option<std::net::SocketAddr>,
    r: &Refusal,
) {
    refused.get_or_create(&RefusalLabel { protocol, reason: r.reason() }).inc();
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    tracing::warn!(protocol, peer, reason = r.reason(), "refused: {r}");
}

/// Errors of user management.
#[derive(Debug, Error)]
pub enum UserError {
    /// The name or secret breaks the rules of [`User`], or the user is the cluster's own.
    #[error("{0}")]
    Invalid(String),
    /// No such user.
    #[error("user {0} is not found")]
    NotFound(String),
    /// Writing `config/users.json` failed.
    #[error("writing {0}: {1}")]
    Io(std::path::PathBuf, io::Error),
}

/// The users and how requests are verified against them. Cheap to share behind an `Arc`.
pub struct Auth {
    enabled: bool,
    /// The cluster's own super user, from config.
    cluster: Option<User>,
    users: Option<Registry<User>>,
    acls: Option<Acls>,
    max_skew_ms: u64,
}

impl Auth {
    /// Authentication as `cfg` sets it, with the users stored in `config_dir` (`users.json`, and
    /// their access rules in `acls.json`; none for a process that only checks the cluster's own
    /// credentials: a nameserver, a controller).
    /// Errors: `auth_enabled` without `auth_access_key` and `auth_secret_key`; an unreadable or
    /// malformed users file (the message names it).
    pub fn load(cfg: &Config, config_dir: Option<&Path>) -> anyhow::Result<Auth> {
        let cluster = match (&cfg.auth_access_key, &cfg.auth_secret_key) {
            (Some(ak), Some(sk)) => {
                check_user(ak, sk)?;
                Some(User { name: ak.clone(), secret: sk.clone(), kind: UserKind::Super, enabled: true })
            }
            (None, None) => None,
            _ => anyhow::bail!("auth_access_key and auth_secret_key go together"),
        };
        if cfg.auth_enabled && cluster.is_none() {
            anyhow::bail!("auth_enabled needs auth_access_key and auth_secret_key (the cluster's own super user)");
        }
        let users = config_dir.map(|d| Registry::load_private(&d.join("users.json"))).transpose()?;
        let acls = config_dir.map(|d| Acls::load(&d.join("acls.json"))).transpose()?;
        Ok(Auth { enabled: cfg.auth_enabled, cluster, users, acls, max_skew_ms: cfg.auth_clock_skew_ms })
    }

    /// Whether requests are verified at all (`auth_enabled`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The credentials this process signs its own calls with (the cluster's super user), if set.
    pub fn own_credentials(&self) -> Option<(&str, &str)> {
        self.cluster.as_ref().map(|u| (u.name.as_str(), u.secret.as_str()))
    }

    /// The enabled user named `name` (the cluster's own or a stored one). Errors:
    /// [`Refusal::NoCredentials`] for an empty name, [`Refusal::UnknownUser`],
    /// [`Refusal::Disabled`].
    pub fn user(&self, name: &str) -> Result<User, Refusal> {
        if name.is_empty() {
            return Err(Refusal::NoCredentials);
        }
        let user = match &self.cluster {
            Some(c) if c.name == name => Some(c.clone()),
            _ => self.users.as_ref().and_then(|u| u.get(name)),
        };
        let user = user.ok_or_else(|| Refusal::UnknownUser(name.to_string()))?;
        if !user.enabled {
            return Err(Refusal::Disabled(user.name));
        }
        Ok(user)
    }

    /// Checks that `date_ms` (a signed `x-mq-date-time`, as sent in `date`) is within
    /// `auth_clock_skew_ms` of `now_ms`; 0 turns the check off. Errors: [`Refusal::ClockSkew`].
    pub fn check_skew(&self, date: &str, date_ms: u64, now_ms: u64) -> Result<(), Refusal> {
        let skew_ms = date_ms.abs_diff(now_ms);
        if self.max_skew_ms > 0 && skew_ms > self.max_skew_ms {
            return Err(Refusal::ClockSkew { date: date.to_string(), skew_ms, max_ms: self.max_skew_ms });
        }
        Ok(())
    }

    /// Whether `who`, calling from `peer`, may do `action` on the resource `kind` `name`: a super
    /// user may do anything, anyone else as its rules say ([`Acls::check`]). Errors:
    /// [`Refusal::Denied`].
    pub fn authorize(
        &self,
        who: &Identity,
        peer: Option<IpAddr>,
        kind: Kind,
        name: &str,
        action: Action,
    ) -> Result<(), Refusal> {
        if who.is_super() {
            return Ok(());
        }
        match &self.acls {
            Some(acls) => acls.check(&who.user, peer, kind, name, action),
            None => Err(Refusal::Denied(format!("user {} may not use this process", who.user))),
        }
    }

    /// The access rules (none in a process that stores no users).
    pub fn acls(&self) -> Result<&Acls, UserError> {
        self.acls.as_ref().ok_or_else(|| UserError::Invalid("this process stores no access rules".into()))
    }

    /// Every stored user, by name (the cluster's own is not among them).
    pub fn users(&self) -> Vec<User> {
        self.users.as_ref().map(Registry::list).unwrap_or_default()
    }

    /// Creates or replaces a stored user. Errors: [`UserError::Invalid`] for a bad name or secret
    /// or the cluster user's name; I/O.
    pub fn upsert_user(&self, user: User) -> Result<(), UserError> {
        check_user(&user.name, &user.secret).map_err(|e| UserError::Invalid(e.to_string()))?;
        if self.cluster.as_ref().is_some_and(|c| c.name == user.name) {
            return Err(UserError::Invalid(format!("{} is the cluster's own user, set in config", user.name)));
        }
        let users = self.registry()?;
        users.update(
            |all| {
                all.insert(user);
                Ok(())
            },
            UserError::Io,
        )
    }

    /// Deletes a stored user. Errors: [`UserError::NotFound`]; I/O.
    pub fn delete_user(&self, name: &str) -> Result<(), UserError> {
        self.registry()?.update(
            |all| all.remove(name).map(|_| ()).ok_or_else(|| UserError::NotFound(name.to_string())),
            UserError::Io,
        )
    }

    /// Makes the stored users exactly `users` (a slave copying its master). Errors: I/O.
    pub fn replace_users(&self, users: Vec<User>) -> Result<(), UserError> {
        self.registry()?.update(
            |all| {
                all.replace_all(users);
                Ok(())
            },
            UserError::Io,
        )
    }

    fn registry(&self) -> Result<&Registry<User>, UserError> {
        self.users.as_ref().ok_or_else(|| UserError::Invalid("this process stores no users".into()))
    }
}

/// The rules of a user's name and secret. Errors: which rule is broken.
fn check_user(name: &str, secret: &str) -> anyhow::Result<()> {
    let legal = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(legal) {
        anyhow::bail!("user name {name:?}: 1 to 64 of [A-Za-z0-9_.-]");
    }
    if secret.len() < 6 || secret.len() > 128 {
        anyhow::bail!("the secret key of {name} must be 6 to 128 bytes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(dir: &Path) -> Auth {
        let cfg = Config {
            auth_enabled: true,
            auth_access_key: Some("cluster".into()),
            auth_secret_key: Some("cluster-secret".into()),
            ..Config::default()
        };
        Auth::load(&cfg, Some(dir)).unwrap()
    }

    fn user(name: &str, kind: UserKind) -> User {
        User { name: name.into(), secret: format!("{name}-secret"), kind, enabled: true }
    }

    #[test]
    fn users_are_found_by_name_unless_disabled_and_dates_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(dir.path());
        a.upsert_user(user("bob", UserKind::Normal)).unwrap();
        assert_eq!(a.user("bob").unwrap(), user("bob", UserKind::Normal));
        assert_eq!(a.user("cluster").unwrap().kind, UserKind::Super);
        assert_eq!(a.user("alice"), Err(Refusal::UnknownUser("alice".into())));
        assert_eq!(a.user(""), Err(Refusal::NoCredentials));
        a.upsert_user(User { enabled: false, ..user("bob", UserKind::Normal) }).unwrap();
        assert_eq!(a.user("bob"), Err(Refusal::Disabled("bob".into())));

        let now = 1_796_595_300_000;
        assert!(a.check_skew("d", now - 14 * 60_000, now).is_ok());
        let refused = a.check_skew("d", now - 3_600_000, now).unwrap_err();
        assert_eq!(refused.reason(), "clock_skew");
        assert!(refused.to_string().contains("3600000 ms"), "{refused}");
    }

    #[test]
    fn users_persist_and_the_cluster_user_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(dir.path());
        a.upsert_user(user("carol", UserKind::Super)).unwrap();
        a.upsert_user(user("dave", UserKind::Normal)).unwrap();
        assert!(matches!(a.upsert_user(user("cluster", UserKind::Normal)), Err(UserError::Invalid(_))));
        assert!(matches!(
            a.upsert_user(User { secret: "short".into(), ..user("erin", UserKind::Normal) }),
            Err(UserError::Invalid(_))
        ));
        assert!(matches!(a.upsert_user(user("no spaces", UserKind::Normal)), Err(UserError::Invalid(_))));
        a.delete_user("dave").unwrap();
        assert!(matches!(a.delete_user("dave"), Err(UserError::NotFound(_))));

        let again = auth(dir.path());
        assert_eq!(again.users(), vec![user("carol", UserKind::Super)]);
        use std::os::unix::fs::PermissionsExt;
        // Changes go to the journal first; the file is written whole once the journal outgrows it.
        let mode = std::fs::metadata(dir.path().join("users.json.journal")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "secrets are readable by the broker's user only");
    }

    #[test]
    fn enabled_auth_needs_the_cluster_credentials() {
        let cfg = Config { auth_enabled: true, ..Config::default() };
        assert!(Auth::load(&cfg, None).err().unwrap().to_string().contains("auth_access_key"));
        let half = Config { auth_access_key: Some("cluster".into()), ..Config::default() };
        assert!(Auth::load(&half, None).is_err());
    }
}
