//! `ferrocket.v1.Admin`: topic management for the CLI and the operator. Errors use gRPC status
//! codes (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, INTERNAL) since it is our own service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::acl;
use crate::auth::{self, UserError};
use crate::broker::Broker;
use crate::consume::groups::{self, Backoff, ConsumeType, GroupError};
use crate::proto::admin::{admin_server::Admin, *};
use crate::proto::clients::Nameservers;
use crate::proto::v2::{MessageType as PbType, Permission as PbPerm};
use crate::topics::{MessageType, Permission, TopicError};

/// The service.
pub struct AdminService {
    broker: Arc<Broker>,
    nameservers: Option<Arc<Nameservers>>,
}

impl AdminService {
    /// The Admin service over `broker`; `nameservers` serve ClusterStatus.
    pub fn new(broker: Arc<Broker>, nameservers: Option<Arc<Nameservers>>) -> AdminService {
        AdminService { broker, nameservers }
    }

    /// Configuration changes go to the master; a slave copies them. Errors: FAILED_PRECONDITION
    /// on a slave, naming its master.
    fn require_master(&self) -> Result<(), Status> {
        if !self.broker.is_slave() {
            return Ok(());
        }
        let master = self.broker.role().master().unwrap_or("unknown yet").to_string();
        Err(Status::failed_precondition(format!(
            "this broker is a slave: it copies its master's topics and groups; change them on the master ({master})"
        )))
    }
}

/// Wire -> engine topic config. Errors: INVALID_ARGUMENT for an unknown permission or type.
pub fn from_pb(t: &TopicConfig) -> Result<crate::topics::TopicConfig, Status> {
    let permission = match PbPerm::try_from(t.permission).unwrap_or(PbPerm::Unspecified) {
        PbPerm::Unspecified | PbPerm::ReadWrite => Permission::ReadWrite,
        PbPerm::Read => Permission::Read,
        PbPerm::Write => Permission::Write,
        PbPerm::None => Permission::None,
    };
    let message_types = t
        .accept_message_types
        .iter()
        .map(|m| match PbType::try_from(*m).unwrap_or(PbType::Unspecified) {
            PbType::Normal => Ok(MessageType::Normal),
            PbType::Fifo => Ok(MessageType::Fifo),
            PbType::Delay => Ok(MessageType::Delay),
            PbType::Transaction => Ok(MessageType::Transaction),
            other => Err(Status::invalid_argument(format!("unsupported message type {}", other.as_str_name()))),
        })
        .collect::<Result<_, _>>()?;
    Ok(crate::topics::TopicConfig { name: t.name.clone(), queue_count: t.queue_count, permission, message_types })
}

/// Engine -> wire topic config.
pub fn to_pb(t: &crate::topics::TopicConfig) -> TopicConfig {
    let permission = match t.permission {
        Permission::ReadWrite => PbPerm::ReadWrite,
        Permission::Read => PbPerm::Read,
        Permission::Write => PbPerm::Write,
        Permission::None => PbPerm::None,
    };
    let types = t
        .message_types
        .iter()
        .map(|m| match m {
            MessageType::Normal => PbType::Normal as i32,
            MessageType::Fifo => PbType::Fifo as i32,
            MessageType::Delay => PbType::Delay as i32,
            MessageType::Transaction => PbType::Transaction as i32,
        })
        .collect();
    TopicConfig {
        name: t.name.clone(),
        queue_count: t.queue_count,
        permission: permission as i32,
        accept_message_types: types,
    }
}

/// Wire -> engine group config; zero and empty fields take the broker's defaults.
pub fn group_from_pb(g: &GroupConfig, cfg: &crate::config::Config) -> groups::GroupConfig {
    let mut out = cfg.default_group(&g.name);
    out.consume_type = if g.fifo { ConsumeType::Fifo } else { ConsumeType::Concurrent };
    out.broadcast = g.broadcast;
    if g.max_delivery_attempts > 0 {
        out.max_delivery_attempts = g.max_delivery_attempts;
    }
    if let Some(e) = &g.exponential_backoff {
        out.backoff = Backoff::Exponential { initial_ms: e.initial_ms, max_ms: e.max_ms, multiplier: e.multiplier };
    } else if !g.customized_backoff_ms.is_empty() {
        out.backoff = Backoff::Customized { next_ms: g.customized_backoff_ms.clone() };
    }
    out
}

/// A topic as the nameserver carries it (the Admin service's wire form, renamed).
pub fn topic_route(t: &crate::topics::TopicConfig) -> crate::proto::namesrv::TopicRoute {
    let pb = to_pb(t);
    crate::proto::namesrv::TopicRoute {
        name: pb.name,
        queue_count: pb.queue_count,
        permission: pb.permission,
        message_types: pb.accept_message_types,
    }
}

/// Engine -> wire group config.
pub fn group_to_pb(g: &groups::GroupConfig) -> GroupConfig {
    let (customized_backoff_ms, exponential_backoff) = match &g.backoff {
        Backoff::Customized { next_ms } => (next_ms.clone(), None),
        Backoff::Exponential { initial_ms, max_ms, multiplier } => {
            (vec![], Some(ExponentialBackoff { initial_ms: *initial_ms, max_ms: *max_ms, multiplier: *multiplier }))
        }
    };
    GroupConfig {
        name: g.name.clone(),
        fifo: g.consume_type == ConsumeType::Fifo,
        max_delivery_attempts: g.max_delivery_attempts,
        customized_backoff_ms,
        exponential_backoff,
        broadcast: g.broadcast,
    }
}

fn user_status(e: UserError) -> Status {
    match e {
        UserError::Invalid(_) => Status::invalid_argument(e.to_string()),
        UserError::NotFound(_) => Status::not_found(e.to_string()),
        UserError::Io(..) => Status::internal(e.to_string()),
    }
}

/// Wire -> engine user.
pub fn user_from_pb(u: &User) -> auth::User {
    let kind = if u.super_user { auth::UserKind::Super } else { auth::UserKind::Normal };
    auth::User { name: u.name.clone(), secret: u.secret.clone(), kind, enabled: !u.disabled }
}

fn user_to_pb(u: &auth::User, with_secret: bool) -> User {
    User {
        name: u.name.clone(),
        secret: if with_secret { u.secret.clone() } else { String::new() },
        super_user: u.kind == auth::UserKind::Super,
        disabled: !u.enabled,
    }
}

/// Wire -> engine access rule. Errors: INVALID_ARGUMENT naming the bad resource, action or source.
pub fn rule_from_pb(r: &AclRule) -> Result<acl::Rule, Status> {
    let bad = Status::invalid_argument;
    Ok(acl::Rule {
        resource: r.resource.parse().map_err(bad)?,
        actions: r.actions.iter().map(|a| a.parse()).collect::<Result<_, _>>().map_err(bad)?,
        source_ips: r.source_ips.iter().map(|s| acl::parse_source(s)).collect::<Result<_, _>>().map_err(bad)?,
        decision: if r.deny { acl::Decision::Deny } else { acl::Decision::Allow },
    })
}

/// Engine -> wire access rules of one user.
pub fn acl_to_pb(a: &acl::Acl) -> Acl {
    let rule = |r: &acl::Rule| AclRule {
        resource: r.resource.to_string(),
        actions: r.actions.iter().map(ToString::to_string).collect(),
        source_ips: r.source_ips.iter().map(ToString::to_string).collect(),
        deny: r.decision == acl::Decision::Deny,
    };
    Acl { user: a.user.clone(), rules: a.rules.iter().map(rule).collect() }
}

/// Wire -> engine access rules of one user. Errors: as [`rule_from_pb`].
pub fn acl_from_pb(a: &Acl) -> Result<acl::Acl, Status> {
    Ok(acl::Acl { user: a.user.clone(), rules: a.rules.iter().map(rule_from_pb).collect::<Result<_, _>>()? })
}

fn group_status(e: GroupError) -> Status {
    match e {
        GroupError::Invalid(_) => Status::invalid_argument(e.to_string()),
        GroupError::NotFound(_) => Status::not_found(e.to_string()),
        GroupError::Io { .. } => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn upsert_user(&self, req: Request<UpsertUserRequest>) -> Result<Response<UpsertUserResponse>, Status> {
        self.require_master()?;
        let u = req.into_inner().user.ok_or_else(|| Status::invalid_argument("user missing"))?;
        self.broker.auth().upsert_user(user_from_pb(&u)).map_err(user_status)?;
        tracing::info!(user = %u.name, super_user = u.super_user, disabled = u.disabled, "user configured");
        Ok(Response::new(UpsertUserResponse {}))
    }

    async fn delete_user(&self, req: Request<DeleteUserRequest>) -> Result<Response<DeleteUserResponse>, Status> {
        self.require_master()?;
        let name = req.into_inner().name;
        self.broker.auth().delete_user(&name).map_err(user_status)?;
        tracing::info!(user = %name, "user deleted");
        Ok(Response::new(DeleteUserResponse {}))
    }

    async fn put_acl_rule(&self, req: Request<PutAclRuleRequest>) -> Result<Response<PutAclRuleResponse>, Status> {
        self.require_master()?;
        let r = req.into_inner();
        let rule = rule_from_pb(&r.rule.ok_or_else(|| Status::invalid_argument("rule missing"))?)?;
        if !self.broker.auth().users().iter().any(|u| u.name == r.user) {
            return Err(Status::not_found(format!("user {} is not found: create it first", r.user)));
        }
        let acls = self.broker.auth().acls().map_err(user_status)?;
        tracing::info!(user = %r.user, resource = %rule.resource, decision = ?rule.decision, "access rule configured");
        acls.put(&r.user, rule).map_err(user_status)?;
        Ok(Response::new(PutAclRuleResponse {}))
    }

    async fn delete_acl_rule(
        &self,
        req: Request<DeleteAclRuleRequest>,
    ) -> Result<Response<DeleteAclRuleResponse>, Status> {
        self.require_master()?;
        let r = req.into_inner();
        let resource: Option<acl::Resource> = match r.resource.as_str() {
            "" => None,
            s => Some(s.parse().map_err(Status::invalid_argument)?),
        };
        self.broker.auth().acls().map_err(user_status)?.delete(&r.user, resource.as_ref()).map_err(user_status)?;
        tracing::info!(user = %r.user, resource = %r.resource, "access rule deleted");
        Ok(Response::new(DeleteAclRuleResponse {}))
    }

    async fn list_acls(&self, req: Request<ListAclsRequest>) -> Result<Response<ListAclsResponse>, Status> {
        let user = req.into_inner().user;
        let acls = self.broker.auth().acls().map_err(user_status)?.list();
        let acls = acls.iter().filter(|a| user.is_empty() || a.user == user).map(acl_to_pb).collect();
        Ok(Response::new(ListAclsResponse { acls }))
    }

    async fn list_users(&self, req: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        let with = req.into_inner().with_secrets;
        let users = self.broker.auth().users().iter().map(|u| user_to_pb(u, with)).collect();
        Ok(Response::new(ListUsersResponse { users }))
    }

    async fn upsert_group(&self, req: Request<UpsertGroupRequest>) -> Result<Response<UpsertGroupResponse>, Status> {
        self.require_master()?;
        let g = req.into_inner().group.ok_or_else(|| Status::invalid_argument("group missing"))?;
        let cfg = group_from_pb(&g, self.broker.config());
        let created = self.broker.groups().upsert(cfg.clone()).map_err(group_status)?;
        tracing::info!(group = %cfg.name, created, "consumer group configured");
        Ok(Response::new(UpsertGroupResponse { group: Some(group_to_pb(&cfg)), created }))
    }

    async fn delete_group(&self, req: Request<DeleteGroupRequest>) -> Result<Response<DeleteGroupResponse>, Status> {
        self.require_master()?;
        self.broker.groups().delete(&req.into_inner().name).map_err(group_status)?;
        Ok(Response::new(DeleteGroupResponse {}))
    }

    async fn list_groups(&self, _req: Request<ListGroupsRequest>) -> Result<Response<ListGroupsResponse>, Status> {
        Ok(Response::new(ListGroupsResponse { groups: self.broker.groups().list().iter().map(group_to_pb).collect() }))
    }

    async fn describe_group(
        &self,
        req: Request<DescribeGroupRequest>,
    ) -> Result<Response<DescribeGroupResponse>, Status> {
        let name = req.into_inner().name;
        let topics = self.broker.group_topics(&name);
        let g = match self.broker.groups().get(&name) {
            Some(g) => g,
            None if !topics.is_empty() => self.broker.config().default_group(&name),
            None => return Err(Status::not_found(format!("consumer group {name} does not exist"))),
        };
        let mut queues = Vec::new();
        for topic in topics.iter().filter(|t| !t.starts_with(groups::DLQ_PREFIX)) {
            for (queue_id, ack_offset, max_offset, lag) in self.broker.group_progress(&name, topic) {
                queues.push(QueueLag { topic: topic.clone(), queue_id, ack_offset, max_offset, lag });
            }
        }
        Ok(Response::new(DescribeGroupResponse {
            retry_topic: g.retry_topic(),
            dlq_topic: g.dlq_topic(),
            total_lag: queues.iter().map(|q| q.lag).sum(),
            group: Some(group_to_pb(&g)),
            queues,
            broadcast_clients: self.broker.broadcast_clients(&name),
        }))
    }

    async fn query_message(&self, req: Request<QueryMessageRequest>) -> Result<Response<QueryMessageResponse>, Status> {
        let r = req.into_inner();
        let limit = if r.limit == 0 { 32 } else { r.limit.min(1000) as usize };
        let key = match (r.message_id.is_empty(), r.topic.is_empty() || r.key.is_empty()) {
            (false, _) => format!("#id#{}", r.message_id),
            (true, false) => format!("{}#{}", r.topic, r.key),
            (true, true) => return Err(Status::invalid_argument("give message_id, or topic and key")),
        };
        let messages = self
            .broker
            .store()
            .query_index(&key, limit)
            .into_iter()
            .map(|rec| StoredMessage {
                states: self
                    .broker
                    .delivery_states(&rec.topic, rec.queue_id, rec.queue_offset)
                    .into_iter()
                    .map(|(group, state)| DeliveryState { group, state })
                    .collect(),
                topic: rec.topic.clone(),
                queue_id: rec.queue_id,
                queue_offset: rec.queue_offset,
                message_id: rec.properties.get(crate::store::PROP_MSG_ID).cloned().unwrap_or_default(),
                store_timestamp_ms: rec.store_timestamp,
                born_timestamp_ms: rec.born_timestamp,
                commitlog_offset: rec.physical_offset,
                properties: rec.properties.into_iter().collect(),
                body: rec.body,
            })
            .collect();
        Ok(Response::new(QueryMessageResponse { messages }))
    }

    async fn create_topic(&self, req: Request<CreateTopicRequest>) -> Result<Response<CreateTopicResponse>, Status> {
        self.require_master()?;
        let t = req.into_inner().topic.ok_or_else(|| Status::invalid_argument("topic missing"))?;
        let cfg = from_pb(&t)?;
        let created = self.broker.topics().upsert(cfg).map_err(|e| match e {
            TopicError::Shrink { .. } => Status::failed_precondition(e.to_string()),
            TopicError::Io { .. } => Status::internal(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        })?;
        let stored = self.broker.topics().get(&t.name).ok_or_else(|| Status::internal("topic vanished"))?;
        if created {
            tracing::info!(topic = %t.name, queues = stored.queue_count, "topic created");
        }
        Ok(Response::new(CreateTopicResponse { topic: Some(to_pb(&stored)), created }))
    }

    async fn delete_topic(&self, req: Request<DeleteTopicRequest>) -> Result<Response<DeleteTopicResponse>, Status> {
        self.require_master()?;
        let name = req.into_inner().name;
        let b = self.broker.clone();
        let deleted = tokio::task::spawn_blocking(move || b.delete_topic(&name, false))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        deleted.map_err(|e| match e {
            crate::broker::BrokerError::Topic(TopicError::NotFound(_)) => Status::not_found(e.to_string()),
            crate::broker::BrokerError::Topic(TopicError::Reserved(_)) => Status::invalid_argument(e.to_string()),
            _ => Status::internal(e.to_string()),
        })?;
        Ok(Response::new(DeleteTopicResponse {}))
    }

    async fn replica_status(&self, _req: Request<ReplicaStatusRequest>) -> Result<Response<ReplicaStatus>, Status> {
        Ok(Response::new(super::cluster::replica_status(&self.broker)))
    }

    async fn cluster_status(
        &self,
        _req: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let ns = self
            .nameservers
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("this broker has no nameservers (namesrv_addrs is empty)"))?;
        let status = crate::proto::clients::cluster_status(ns).await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(status))
    }

    async fn list_topics(&self, _req: Request<ListTopicsRequest>) -> Result<Response<ListTopicsResponse>, Status> {
        Ok(Response::new(ListTopicsResponse { topics: self.broker.topics().list().iter().map(to_pb).collect() }))
    }

    async fn list_transactions(
        &self,
        req: Request<ListTransactionsRequest>,
    ) -> Result<Response<ListTransactionsResponse>, Status> {
        let r = req.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        let now = crate::store::now_ms();
        let open: Vec<_> = self
            .broker
            .open_transactions()
            .into_iter()
            .filter(|(_, p)| r.topic.is_empty() || p.topic == r.topic)
            .collect();
        let oldest_age_ms = open.iter().map(|(_, p)| now.saturating_sub(p.store_ms)).max().unwrap_or(0);
        let transactions = open
            .iter()
            .take(limit)
            .map(|(half, p)| OpenTransaction {
                transaction_id: crate::txn::transaction_id(*half),
                topic: p.topic.clone(),
                client_id: p.client_id.clone(),
                age_ms: now.saturating_sub(p.store_ms),
                checks: p.checks,
            })
            .collect();
        let c = &self.broker.metrics().tx;
        let counters = TransactionCounters {
            commits: c.commits.get(),
            rollbacks: c.rollbacks.get(),
            checks_sent: c.checks_sent.get(),
            check_timeouts: c.check_timeouts.get(),
            check_max_rollbacks: c.check_max_rollbacks.get(),
        };
        Ok(Response::new(ListTransactionsResponse {
            open: open.len() as u64,
            oldest_age_ms,
            transactions,
            counters: Some(counters),
        }))
    }

    async fn describe_topic(
        &self,
        req: Request<DescribeTopicRequest>,
    ) -> Result<Response<DescribeTopicResponse>, Status> {
        let name = req.into_inner().name;
        let t =
            self.broker.topics().get(&name).ok_or_else(|| Status::not_found(format!("topic {name} does not exist")))?;
        let store = self.broker.store();
        let queues = (0..t.queue_count)
            .map(|q| QueueStatus {
                queue_id: q,
                min_offset: store.min_queue_offset(&name, q),
                max_offset: store.max_queue_offset(&name, q),
            })
            .collect();
        Ok(Response::new(DescribeTopicResponse { topic: Some(to_pb(&t)), queues }))
    }
}
