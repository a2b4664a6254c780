//! Filters of a subscription: TAG expressions (`*` or empty for every message, else tags joined
//! by `||`; RocketMQ `SubscriptionData`, `FilterAPI.buildSubscriptionData`) and SQL92.

use std::collections::{BTreeMap, HashSet};

use super::sql::SqlFilter;
use crate::store::consume_queue::tag_hash;
use crate::store::PROP_TAGS;

/// A subscription's filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// By tag.
    Tag(TagFilter),
    /// By SQL92 expression on properties.
    Sql(SqlFilter),
}

impl Filter {
    /// Every message.
    pub const ALL: Filter = Filter::Tag(TagFilter::All);

    /// First check, on the ConsumeQueue's tag hash (SQL filters pass everything here).
    pub fn matches_hash(&self, hash: u64) -> bool {
        match self {
            Filter::Tag(t) => t.matches_hash(hash),
            Filter::Sql(_) => true,
        }
    }

    /// Exact check on the stored message's properties.
    pub fn matches(&self, props: &BTreeMap<String, String>) -> bool {
        match self {
            Filter::Tag(t) => t.matches(props.get(PROP_TAGS).map(String::as_str)),
            Filter::Sql(s) => s.matches(props),
        }
    }
}

/// A parsed TAG expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    /// Every message, with or without a tag.
    All,
    /// Messages whose tag is one of these.
    Tags {
        /// The tags, exactly.
        tags: HashSet<String>,
        /// Their ConsumeQueue tag hashes.
        hashes: HashSet<u64>,
    },
}

impl TagFilter {
    /// Parses `*`, `""` or `a || b || c` (blanks around tags are ignored).
    /// Errors: an expression with no tag in it (such as `||`), as a message.
    pub fn parse(expr: &str) -> Result<TagFilter, String> {
        let expr = expr.trim();
        if expr.is_empty() || expr == "*" {
            return Ok(TagFilter::All);
        }
        let tags: HashSet<String> =
            expr.split("||").map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect();
        if tags.is_empty() {
            return Err(format!("tag expression {expr:?} names no tag"));
        }
        let hashes = tags.iter().map(|t| tag_hash(t)).collect();
        Ok(TagFilter::Tags { tags, hashes })
    }

    /// First check, on the ConsumeQueue's tag hash (may pass a message whose tag only collides).
    pub fn matches_hash(&self, hash: u64) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Tags { hashes, .. } => hashes.contains(&hash),
        }
    }

    /// Exact check on the message's tag.
    pub fn matches(&self, tag: Option<&str>) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Tags { tags, .. } => tag.is_some_and(|t| tags.contains(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rocketmq_tag_expressions() {
        assert_eq!(TagFilter::parse("*").unwrap(), TagFilter::All);
        assert_eq!(TagFilter::parse("").unwrap(), TagFilter::All);
        let f = TagFilter::parse("TagA || TagB").unwrap();
        assert!(f.matches(Some("TagA")) && f.matches(Some("TagB")));
        assert!(!f.matches(Some("TagC")) && !f.matches(None));
        assert!(f.matches_hash(tag_hash("TagB")) && !f.matches_hash(tag_hash("TagC")));
        assert!(TagFilter::parse("||").is_err());
    }
}
