//! Consumption: TAG filters, receipt handles, and per-group progress (pop state).

pub mod filter;
pub mod handle;
pub mod state;
