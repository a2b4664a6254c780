//! Consumption: consumer group config, filters (TAG and SQL92), receipt handles, per-group
//! progress (pop state) and its log on disk, queue locks of orderly consumers, and dead-lettering.

pub mod filter;
pub mod groups;
pub mod handle;
pub mod locks;
pub mod progress_log;
pub mod sql;
pub mod state;
