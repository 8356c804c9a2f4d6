//! capsule-sync's engine: everything that decides, over the model (`capsule-core`) and the
//! Capsule client (`capsule-client`), through the ports alone — no adapter is known here.
//!
//! - [`engine`]: runs one table of one integration, the same way for every table.
//! - [`output`]: NDJSON part files and the key layout; [`warehouse`]: the warehouse kits.
//! - [`hooks`]: REST hook deliveries received, landed as hook runs, and their subscriptions.
//! - [`lifecycle`]: leases, heartbeats, takeovers, parking and recovery of stranded runs.
//! - [`schedule`], [`due`]: when an integration runs, and the index a tick reads.
//! - [`jobs`], [`health`], [`plan`]: what operators read: jobs, health, the quota plan.

pub mod due;
pub mod engine;
pub mod health;
pub mod hooks;
pub mod integrations;
pub mod jobs;
pub mod lifecycle;
pub mod output;
pub mod plan;
pub mod schedule;
pub mod warehouse;
