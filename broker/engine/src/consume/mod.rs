//! Consumption: consumer group config, filters (TAG and SQL92), receipt handles, per-group
//! progress (pop state), and dead-lettering.

pub mod filter;
pub mod groups;
pub mod handle;
pub mod sql;
pub mod state;
