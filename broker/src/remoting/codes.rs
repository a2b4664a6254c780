//! Request and response codes of RocketMQ Remoting (`RequestCode.java`, `ResponseCode.java`,
//! `RemotingSysResponseCode.java`, `LanguageCode.java`; REMOTING.md §1–2).

/// SEND_MESSAGE: long header names.
pub const SEND_MESSAGE: i32 = 10;
/// PULL_MESSAGE.
pub const PULL_MESSAGE: i32 = 11;
/// QUERY_MESSAGE: by key or unique id, through the IndexFile.
pub const QUERY_MESSAGE: i32 = 12;
/// QUERY_CONSUMER_OFFSET.
pub const QUERY_CONSUMER_OFFSET: i32 = 14;
/// UPDATE_CONSUMER_OFFSET (usually oneway).
pub const UPDATE_CONSUMER_OFFSET: i32 = 15;
/// UPDATE_AND_CREATE_TOPIC.
pub const UPDATE_AND_CREATE_TOPIC: i32 = 17;
/// SEARCH_OFFSET_BY_TIMESTAMP.
pub const SEARCH_OFFSET_BY_TIMESTAMP: i32 = 29;
/// GET_MAX_OFFSET.
pub const GET_MAX_OFFSET: i32 = 30;
/// GET_MIN_OFFSET (31, not 29).
pub const GET_MIN_OFFSET: i32 = 31;
/// VIEW_MESSAGE_BY_ID: by CommitLog offset (from an offset message id).
pub const VIEW_MESSAGE_BY_ID: i32 = 33;
/// HEART_BEAT.
pub const HEART_BEAT: i32 = 34;
/// UNREGISTER_CLIENT.
pub const UNREGISTER_CLIENT: i32 = 35;
/// CONSUMER_SEND_MSG_BACK.
pub const CONSUMER_SEND_MSG_BACK: i32 = 36;
/// END_TRANSACTION (usually oneway).
pub const END_TRANSACTION: i32 = 37;
/// GET_CONSUMER_LIST_BY_GROUP.
pub const GET_CONSUMER_LIST_BY_GROUP: i32 = 38;
/// CHECK_TRANSACTION_STATE (broker to client, oneway).
pub const CHECK_TRANSACTION_STATE: i32 = 39;
/// NOTIFY_CONSUMER_IDS_CHANGED (broker to client, oneway).
pub const NOTIFY_CONSUMER_IDS_CHANGED: i32 = 40;
/// LOCK_BATCH_MQ: orderly consumers lock their queues.
pub const LOCK_BATCH_MQ: i32 = 41;
/// UNLOCK_BATCH_MQ.
pub const UNLOCK_BATCH_MQ: i32 = 42;
/// GET_ROUTEINFO_BY_TOPIC (nameserver).
pub const GET_ROUTEINFO_BY_TOPIC: i32 = 105;
/// GET_BROKER_CLUSTER_INFO (nameserver).
pub const GET_BROKER_CLUSTER_INFO: i32 = 106;
/// GET_ALL_TOPIC_LIST_FROM_NAMESERVER (nameserver).
pub const GET_ALL_TOPIC_LIST_FROM_NAMESERVER: i32 = 206;
/// GET_CONSUME_STATS: a group's offsets against the queues' (`mqadmin consumerProgress`).
pub const GET_CONSUME_STATS: i32 = 208;
/// SEND_MESSAGE_V2: one-letter header names.
pub const SEND_MESSAGE_V2: i32 = 310;
/// SEND_BATCH_MESSAGE.
pub const SEND_BATCH_MESSAGE: i32 = 320;
/// GET_TOPIC_CONFIG: one topic's config on this broker (mqadmin).
pub const GET_TOPIC_CONFIG: i32 = 351;
/// LITE_PULL_MESSAGE (5.x DefaultLitePullConsumer).
pub const LITE_PULL_MESSAGE: i32 = 361;
/// QUERY_ASSIGNMENT: a 5.x consumer with `clientRebalance=false` asks the broker for its queues.
pub const QUERY_ASSIGNMENT: i32 = 400;
/// POP_MESSAGE (5.x pop consumers). Above `i16::MAX`: JSON serialization only (REMOTING.md).
pub const POP_MESSAGE: i32 = 200050;
/// ACK_MESSAGE: acks one popped message by its `extraInfo`.
pub const ACK_MESSAGE: i32 = 200051;
/// BATCH_ACK_MESSAGE: acks of several popped messages, per queue a bit set of offsets.
pub const BATCH_ACK_MESSAGE: i32 = 200151;
/// CHANGE_MESSAGE_INVISIBLETIME: a popped message's new invisible time (RECONSUME_LATER).
pub const CHANGE_MESSAGE_INVISIBLETIME: i32 = 200053;

/// SUCCESS.
pub const SUCCESS: i32 = 0;
/// SYSTEM_ERROR.
pub const SYSTEM_ERROR: i32 = 1;
/// SYSTEM_BUSY.
pub const SYSTEM_BUSY: i32 = 2;
/// REQUEST_CODE_NOT_SUPPORTED.
pub const REQUEST_CODE_NOT_SUPPORTED: i32 = 3;
/// FLUSH_DISK_TIMEOUT.
pub const FLUSH_DISK_TIMEOUT: i32 = 10;
/// SLAVE_NOT_AVAILABLE.
pub const SLAVE_NOT_AVAILABLE: i32 = 11;
/// FLUSH_SLAVE_TIMEOUT.
pub const FLUSH_SLAVE_TIMEOUT: i32 = 12;
/// MESSAGE_ILLEGAL.
pub const MESSAGE_ILLEGAL: i32 = 13;
/// SERVICE_NOT_AVAILABLE (also "disk full" and "slave, read only").
pub const SERVICE_NOT_AVAILABLE: i32 = 14;
/// NO_PERMISSION.
pub const NO_PERMISSION: i32 = 16;
/// TOPIC_NOT_EXIST.
pub const TOPIC_NOT_EXIST: i32 = 17;
/// PULL_NOT_FOUND: no new message (after the long poll).
pub const PULL_NOT_FOUND: i32 = 19;
/// PULL_RETRY_IMMEDIATELY: messages were scanned but none matched.
pub const PULL_RETRY_IMMEDIATELY: i32 = 20;
/// PULL_OFFSET_MOVED: the offset is outside the queue; start again at `nextBeginOffset`.
pub const PULL_OFFSET_MOVED: i32 = 21;
/// QUERY_NOT_FOUND: no consumer offset (the client applies ConsumeFromWhere).
pub const QUERY_NOT_FOUND: i32 = 22;
/// SUBSCRIPTION_PARSE_FAILED.
pub const SUBSCRIPTION_PARSE_FAILED: i32 = 23;
/// SUBSCRIPTION_GROUP_NOT_EXIST.
pub const SUBSCRIPTION_GROUP_NOT_EXIST: i32 = 26;
/// INVALID_PARAMETER.
pub const INVALID_PARAMETER: i32 = 29;
/// NO_MESSAGE: an ack or invisible-time change names no delivery in flight.
pub const NO_MESSAGE: i32 = 208;
/// POLLING_TIMEOUT: a pop's long poll ended with nothing to deliver.
pub const POLLING_TIMEOUT: i32 = 210;

/// `flag` bit 0: the command is a response.
pub const FLAG_RESPONSE: i32 = 1;
/// `flag` bit 1: the request is oneway (no response).
pub const FLAG_ONEWAY: i32 = 2;

/// LanguageCode names by ordinal, as the ROCKETMQ serialization carries them as one byte.
pub const LANGUAGES: [&str; 14] = [
    "JAVA", "CPP", "DOTNET", "PYTHON", "DELPHI", "ERLANG", "RUBY", "OTHER", "HTTP", "GO", "PHP", "OMS", "RUST",
    "NODE_JS",
];

/// The Remoting version this server reports (`MQVersion.Version.V5_3_3`): above V4_1_0 (232), so
/// clients allow SQL92 pulls, and above V4_9_4 (401), the standard-JSON route threshold.
pub const SERVER_VERSION: i32 = 479;
