//! capsule-sync's model, the bottom layer: what an integration and a table are, the one error
//! type, the events, the stored state and the ports (traits) the layers above implement (the
//! adapters) or use (the engine). It knows no HTTP client, no AWS and no file layout of its own.
//!
//! - [`catalog`]: the 22 tables as data; [`integration`]: what is synced, where from, how often.
//! - [`ports`]: the traits (state, objects, tokens, dispatch) and the state they store.
//! - [`budget`], [`ratelimit`]: the shared rate-limit budget's model and store trait.
//! - [`manifest`]: what a table run wrote, as its manifest records it.
//! - [`hooks`]: an integration's REST hook subscription and its secret's digest.
//! - [`events`] (the functions' payloads), [`observe`] (the log events), [`runlog`], [`progress`].
//! - [`process`]: which local process holds a lease; [`tls`]: the one TLS provider.

pub mod budget;
pub mod catalog;
mod error;
pub mod events;
pub mod hooks;
pub mod integration;
pub mod manifest;
pub mod observe;
pub mod ports;
pub mod process;
pub mod progress;
pub mod ratelimit;
pub mod runlog;
pub mod stored;
pub mod tls;

pub use error::{Fault, Result, SyncError};

/// The instant `d` from now (leases, pauses). Durations too large for a timestamp count as a year.
pub fn from_now(d: std::time::Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::days(365))
}
