//! RocketMQ 5 status codes in response bodies (the gRPC status stays OK; DESIGN.md §4).

use crate::broker::BrokerError;
use crate::consume::groups::GroupError;
use crate::proto::v2::{Code, Status};
use crate::store::StoreError;
use crate::topics::TopicError;

/// A response status with a message.
pub fn status(code: Code, message: impl Into<String>) -> Status {
    Status { code: code as i32, message: message.into() }
}

/// `OK`.
pub fn ok() -> Status {
    status(Code::Ok, "OK")
}

/// The status code and message for an engine error.
pub fn from_broker(e: &BrokerError) -> Status {
    let code = match e {
        BrokerError::TopicNotFound(_) => Code::TopicNotFound,
        BrokerError::Topic(TopicError::IllegalName(_) | TopicError::Reserved(_)) => Code::IllegalTopic,
        BrokerError::Topic(TopicError::Io { .. }) => Code::InternalError,
        BrokerError::Topic(_) => Code::BadRequest,
        BrokerError::Permission(..) => Code::Forbidden,
        BrokerError::QueueOutOfRange { .. } => Code::BadRequest,
        BrokerError::TypeNotAccepted { .. } => Code::MessagePropertyConflictWithType,
        BrokerError::InvalidHandle(_) => Code::InvalidReceiptHandle,
        BrokerError::InvalidTransaction(_) => Code::InvalidTransactionId,
        BrokerError::TransactionConflict(_) => Code::PreconditionFailed,
        BrokerError::GroupNotFound(_) | BrokerError::Group(GroupError::NotFound(_)) => Code::ConsumerGroupNotFound,
        BrokerError::Group(GroupError::Invalid(_)) => Code::IllegalConsumerGroup,
        BrokerError::Group(GroupError::Io { .. }) => Code::InternalError,
        BrokerError::ClientIdRequired => Code::ClientIdRequired,
        BrokerError::IllegalOffset(_) => Code::IllegalOffset,
        BrokerError::IllegalDeliveryTime(_) => Code::IllegalDeliveryTime,
        BrokerError::InvalidRecallHandle(_) => Code::InvalidReceiptHandle,
        BrokerError::Store(StoreError::ShutDown) => Code::InternalServerError,
        // RocketMQ answers a full disk with SERVICE_NOT_AVAILABLE, which clients retry elsewhere.
        BrokerError::DiskFull { .. } | BrokerError::Store(StoreError::NoSpace(_)) => Code::InternalServerError,
        // Retried elsewhere as well: another group, or this one once its master is known again.
        BrokerError::Fenced => Code::InternalServerError,
        BrokerError::PropertiesTooLarge { .. } | BrokerError::Store(StoreError::Encode(_)) => {
            Code::MessagePropertiesTooLarge
        }
        BrokerError::Store(StoreError::TooLarge { .. }) => Code::MessageBodyTooLarge,
        BrokerError::Store(StoreError::ReadOnly) => Code::Forbidden,
        BrokerError::Store(_) => Code::InternalError,
        BrokerError::FlushTimeout { .. } => Code::MasterPersistenceTimeout,
        BrokerError::NotReplicated(_) => Code::SlavePersistenceTimeout,
        BrokerError::NotDurable(e) => return from_broker(e),
    };
    status(code, e.to_string())
}

/// True if the status is OK.
pub fn is_ok(s: &Status) -> bool {
    s.code == Code::Ok as i32
}
