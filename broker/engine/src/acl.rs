//! Authorization: what each user may do with which topics and groups (RocketMQ 5.3 "ACL 2.0":
//! an `Acl` of `PolicyEntry`s per subject, evaluated by `AclAuthorizationHandler`). Super users
//! skip it; everyone else needs a rule that allows every resource a request touches.
//!
//! A rule names a resource (`Topic:orders`, a prefix `Topic:orders-*`, `Group:*`, or `*` for
//! any), the actions it covers (PUB, SUB, or ALL), optionally the source addresses it applies to,
//! and a decision. Of the rules that match a resource, an action and the peer, the most specific
//! resource decides: a literal name over a prefix, a longer prefix over a shorter one, a typed
//! resource over `*` (a user has one rule per resource, so there are no ties). No matching rule:
//! denied. (RocketMQ 5.3's comparator sorts shorter prefixes first, against its own intent;
//! Ferrocket lets the longer prefix decide: docs/OPERATIONS.md, Authorization.)
//!
//! Persisted in `config/acls.json`, one entry per user; a slave copies its master's.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::auth::{Refusal, UserError};
use crate::registry::{Named, Registry};

/// What a request does to a resource (RocketMQ `Action`; its admin actions CREATE, UPDATE,
/// DELETE, GET and LIST are Ferrocket's super users' only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Send to a topic, end a transaction, recall.
    Pub,
    /// Receive from a topic, as a group: pull, pop, ack, offsets, retry.
    Sub,
    /// Both.
    All,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Pub => "PUB",
            Action::Sub => "SUB",
            Action::All => "ALL",
        })
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Action, String> {
        match s.to_ascii_lowercase().as_str() {
            "pub" => Ok(Action::Pub),
            "sub" => Ok(Action::Sub),
            "all" => Ok(Action::All),
            _ => Err(format!("action {s:?}: pub, sub or all")),
        }
    }
}

/// Kinds of resources a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
}

/// A rule's resource: `Topic:<name>`, `Group:<name>`, with a trailing `*` a prefix (`Topic:*`
/// every topic), or `*` anything. Serialized as that text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Resource {
    /// `None`: any kind (`*`).
    pub kind: Option<Kind>,
    /// The name, or the prefix without its `*`.
    pub name: String,
    /// Whether `name` is a prefix.
    pub prefix: bool,
}

impl Resource {
    fn matches(&self, kind: Kind, name: &str) -> bool {
        match self.kind {
            None => true,
            Some(k) if k != kind => false,
            Some(_) if self.prefix => name.starts_with(&self.name),
            Some(_) => name == self.name,
        }
    }

    /// Higher is more specific: literal, then longer prefixes, then `*`.
    fn specificity(&self) -> (u8, usize) {
        match (self.kind, self.prefix) {
            (None, _) => (0, 0),
            (Some(_), true) => (1, self.name.len()),
            (Some(_), false) => (2, 0),
        }
    }
}

impl FromStr for Resource {
    type Err = String;
    fn from_str(s: &str) -> Result<Resource, String> {
        if s == "*" {
            return Ok(Resource { kind: None, name: String::new(), prefix: true });
        }
        let (kind, name) =
            s.split_once(':').ok_or_else(|| format!("resource {s:?}: Topic:<name>, Group:<name> or *"))?;
        let kind = match kind.to_ascii_lowercase().as_str() {
            "topic" => Kind::Topic,
            "group" => Kind::Group,
            _ => return Err(format!("resource {s:?}: the kind is Topic or Group")),
        };
        let (name, prefix) = match name.strip_suffix('*') {
            Some(p) => (p, true),
            None => (name, false),
        };
        if name.contains('*') || (!prefix && name.is_empty()) {
            return Err(format!("resource {s:?}: a name, or a prefix ending in one *"));
        }
        Ok(Resource { kind: Some(kind), name: name.to_string(), prefix })
    }
}

impl TryFrom<String> for Resource {
    type Error = String;
    fn try_from(s: String) -> Result<Resource, String> {
        s.parse()
    }
}

impl From<Resource> for String {
    fn from(r: Resource) -> String {
        r.to_string()
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let star = if self.prefix { "*" } else { "" };
        match self.kind {
            None => write!(f, "*"),
            Some(Kind::Topic) => write!(f, "Topic:{}{star}", self.name),
            Some(Kind::Group) => write!(f, "Group:{}{star}", self.name),
        }
    }
}

/// Allow or deny (RocketMQ `Decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The request may go on.
    #[default]
    Allow,
    /// It is refused, whatever less specific rules say.
    Deny,
}

/// One rule of a user (RocketMQ `PolicyEntry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// What it applies to.
    pub resource: Resource,
    /// Which actions it covers, at least one.
    pub actions: Vec<Action>,
    /// Peers it applies to (addresses or CIDR ranges); empty: every peer.
    #[serde(default)]
    pub source_ips: Vec<IpNet>,
    /// Allow or deny.
    #[serde(default)]
    pub decision: Decision,
}

impl Rule {
    fn applies(&self, kind: Kind, name: &str, action: Action, peer: Option<IpAddr>) -> bool {
        let covers = |a: &Action| *a == Action::All || action == Action::All || *a == action;
        self.resource.matches(kind, name)
            && self.actions.iter().any(covers)
            && (self.source_ips.is_empty() || peer.is_some_and(|ip| self.source_ips.iter().any(|n| n.contains(&ip))))
    }
}

/// Parses a source address: an IP (a /32 or /128) or a CIDR range. Errors: neither.
pub fn parse_source(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("source {s:?}: an IP address or a CIDR range"))
}

/// A user's rules (RocketMQ `Acl` of one subject).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    /// The user.
    pub user: String,
    /// Its rules, at most one per resource.
    pub rules: Vec<Rule>,
}

impl Named for Acl {
    fn name(&self) -> &str {
        &self.user
    }
}

/// Every user's rules, persisted.
pub struct Acls {
    registry: Registry<Acl>,
}

impl Acls {
    /// The rules stored at `path` (absent: none). Errors: unreadable or malformed, naming it.
    pub fn load(path: &Path) -> io::Result<Acls> {
        Ok(Acls { registry: Registry::load(path)? })
    }

    /// Every user's rules, by user.
    pub fn list(&self) -> Vec<Acl> {
        self.registry.list()
    }

    /// Adds `rule` to `user`'s rules, replacing one for the same resource. Errors:
    /// [`UserError::Invalid`] for a rule without actions; I/O.
    pub fn put(&self, user: &str, rule: Rule) -> Result<(), UserError> {
        if rule.actions.is_empty() {
            return Err(UserError::Invalid(format!("the rule on {} names no action", rule.resource)));
        }
        self.registry.update(
            |all| {
                let acl = all.get_or_insert_with(user, || Acl { user: user.to_string(), rules: Vec::new() });
                acl.rules.retain(|r| r.resource != rule.resource);
                acl.rules.push(rule);
                Ok(())
            },
            UserError::Io,
        )
    }

    /// Deletes `user`'s rule on `resource`, or all its rules. Errors: [`UserError::NotFound`] when
    /// there is no such rule; I/O.
    pub fn delete(&self, user: &str, resource: Option<&Resource>) -> Result<(), UserError> {
        let missing = || {
            UserError::NotFound(format!("a rule of {user}{}", resource.map(|r| format!(" on {r}")).unwrap_or_default()))
        };
        self.registry.update(
            |all| {
                let acl = all.get_mut(user).ok_or_else(missing)?;
                match resource {
                    None => acl.rules.clear(),
                    Some(r) => {
                        let before = acl.rules.len();
                        acl.rules.retain(|x| &x.resource != r);
                        if acl.rules.len() == before {
                            return Err(missing());
                        }
                    }
                }
                if acl.rules.is_empty() {
                    all.remove(user);
                }
                Ok(())
            },
            UserError::Io,
        )
    }

    /// Makes the rules exactly `acls` (a slave copying its master). Errors: I/O.
    pub fn replace(&self, acls: Vec<Acl>) -> Result<(), UserError> {
        self.registry.update(
            |all| {
                all.replace_all(acls);
                Ok(())
            },
            UserError::Io,
        )
    }

    /// Whether `user`, calling from `peer`, may do `action` on the resource `kind` `name`; a
    /// request asking [`Action::All`] needs a rule covering either action (a route query serves
    /// senders and receivers alike). Errors: [`Refusal::Denied`] naming the resource and why.
    pub fn check(
        &self,
        user: &str,
        peer: Option<IpAddr>,
        kind: Kind,
        name: &str,
        action: Action,
    ) -> Result<(), Refusal> {
        let acl = self.registry.get(user);
        let decided = acl
            .iter()
            .flat_map(|a| &a.rules)
            .filter(|r| r.applies(kind, name, action, peer))
            .max_by_key(|r| r.resource.specificity());
        let resource = match kind {
            Kind::Topic => format!("Topic:{name}"),
            Kind::Group => format!("Group:{name}"),
        };
        let why = match decided.map(|r| r.decision) {
            Some(Decision::Allow) => return Ok(()),
            Some(Decision::Deny) => "a rule denies it",
            None => "no rule allows it",
        };
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        Err(Refusal::Denied(format!("user {user} may not {action} {resource} from {peer}: {why}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(resource: &str, actions: &[Action], decision: Decision) -> Rule {
        Rule { resource: resource.parse().unwrap(), actions: actions.to_vec(), source_ips: vec![], decision }
    }

    #[test]
    fn resources_parse_and_print_as_rocketmq_writes_them() {
        for s in ["Topic:orders", "Topic:orders-*", "Group:*", "*", "Group:billing"] {
            assert_eq!(s.parse::<Resource>().unwrap().to_string(), s);
        }
        assert_eq!("topic:orders".parse::<Resource>().unwrap().to_string(), "Topic:orders");
        for bad in ["orders", "Queue:x", "Topic:", "Topic:a*b*"] {
            assert!(bad.parse::<Resource>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_most_specific_rule_decides_and_deny_wins_a_tie() {
        let dir = tempfile::tempdir().unwrap();
        let acls = Acls::load(&dir.path().join("acls.json")).unwrap();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        acls.put("alice", rule("Topic:orders-*", &[Action::Pub], Decision::Allow)).unwrap();
        acls.put("alice", rule("Topic:orders-secret", &[Action::All], Decision::Deny)).unwrap();
        acls.put("alice", rule("Group:billing", &[Action::Sub], Decision::Allow)).unwrap();

        let check = |kind, name, action| acls.check("alice", Some(ip), kind, name, action);
        assert!(check(Kind::Topic, "orders-eu", Action::Pub).is_ok());
        assert!(check(Kind::Topic, "orders-eu", Action::Sub).is_err(), "PUB does not cover SUB");
        let denied = check(Kind::Topic, "orders-secret", Action::Pub).unwrap_err();
        assert_eq!(denied.to_string(), "user alice may not PUB Topic:orders-secret from 10.1.2.3: a rule denies it");
        assert!(check(Kind::Group, "billing", Action::Sub).is_ok());
        assert_eq!(
            check(Kind::Group, "other", Action::Sub).unwrap_err().to_string(),
            "user alice may not SUB Group:other from 10.1.2.3: no rule allows it"
        );
        assert!(acls.check("bob", Some(ip), Kind::Topic, "orders-eu", Action::Pub).is_err(), "no rules at all");

        // A longer prefix overrides a shorter one; a deny on * loses to a literal allow.
        acls.put("carol", rule("*", &[Action::All], Decision::Deny)).unwrap();
        acls.put("carol", rule("Topic:a*", &[Action::Pub], Decision::Allow)).unwrap();
        acls.put("carol", rule("Topic:ab*", &[Action::Pub], Decision::Deny)).unwrap();
        acls.put("carol", rule("Topic:abc", &[Action::Pub], Decision::Allow)).unwrap();
        let carol = |name| acls.check("carol", None, Kind::Topic, name, Action::Pub).is_ok();
        assert_eq!([carol("a1"), carol("ab1"), carol("abc"), carol("x")], [true, false, true, false]);
        // A route query (either action) is allowed by a PUB rule.
        assert!(acls.check("carol", None, Kind::Topic, "a1", Action::All).is_ok());
    }

    #[test]
    fn source_ranges_limit_a_rule_and_rules_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acls.json");
        let acls = Acls::load(&path).unwrap();
        let mut r = rule("Topic:t", &[Action::Pub], Decision::Allow);
        r.source_ips = vec![parse_source("10.0.0.0/8").unwrap(), parse_source("192.168.1.7").unwrap()];
        acls.put("alice", r.clone()).unwrap();
        let from = |ip: &str| acls.check("alice", Some(ip.parse().unwrap()), Kind::Topic, "t", Action::Pub).is_ok();
        assert_eq!([from("10.9.9.9"), from("192.168.1.7"), from("192.168.1.8")], [true, true, false]);
        assert!(acls.check("alice", None, Kind::Topic, "t", Action::Pub).is_err(), "an unknown peer is outside");
        assert!(parse_source("10.0.0.0/33").is_err());

        assert_eq!(Acls::load(&path).unwrap().list(), vec![Acl { user: "alice".into(), rules: vec![r] }]);
        acls.delete("alice", Some(&"Topic:t".parse().unwrap())).unwrap();
        assert!(acls.list().is_empty());
        assert!(matches!(acls.delete("alice", None), Err(UserError::NotFound(_))));
        assert!(matches!(acls.put("alice", rule("Topic:t", &[], Decision::Allow)), Err(UserError::Invalid(_))));
    }
}
