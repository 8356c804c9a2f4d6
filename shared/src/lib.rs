//! capsule-sync's engine, shared by the CLI and the Lambda functions.
//!
//! - [`access`]: which API hosts and token sources a deployment allows.
//! - [`catalog`]: the 22 tables as data.
//! - [`capsule`]: the Capsule API v2 client.
//! - [`engine`]: runs one table of one integration, the same way for every table.
//! - [`output`]: NDJSON part files, run manifests (and their Redshift twins), key layout.
//! - [`warehouse`]: the warehouse kits (tables, loads, current-state views) for five engines.
//! - [`plan`]: the quota plan (requests and hours of quota a first load and each run take).
//! - [`progress`]: what each table of a sync is doing, for a live view.
//! - [`ports`]: the traits the engine needs (state, object sink, credentials) and
//!   [`local`]: their local adapters (state file, files, env var / file tokens).

pub mod access;
pub mod aws;
pub mod capsule;
pub mod catalog;
pub mod due;
pub mod engine;
mod error;
pub mod events;
pub mod health;
pub mod integration;
pub mod jobs;
pub mod lifecycle;
pub mod local;
pub mod observe;
pub mod output;
pub mod plan;
pub mod ports;
pub mod progress;
pub mod runlog;
pub mod schedule;
pub mod tls;
pub mod warehouse;

pub use error::{Fault, Result, SyncError};

/// The instant `d` from now (leases, pauses). Durations too large for a timestamp count as a year.
pub fn from_now(d: std::time::Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::days(365))
}
