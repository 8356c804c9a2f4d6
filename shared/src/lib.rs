//! capsule-sync's layers under one name, for the binaries (the CLI, the two Lambda functions)
//! and the end-to-end tests. Nothing is defined here; each module is a layer's, and the crate
//! graph keeps the layers one-way (ARCHITECTURE.md):
//!
//! - `capsule-core`: [`catalog`], [`integration`], the error type, [`events`], [`observe`],
//!   [`ports`] (the traits and the stored state), [`budget`], [`manifest`], [`progress`].
//! - `capsule-client`: [`capsule`] (the Capsule API v2 client) and [`access`].
//! - `capsule-engine`: [`engine`] (one table run), [`output`], [`warehouse`], [`lifecycle`],
//!   [`schedule`], [`due`], [`jobs`], [`plan`], [`health`].
//! - `capsule-local`: [`local`], the adapters with no AWS at all.
//! - `capsule-aws`: [`aws`], DynamoDB, S3, Secrets Manager and Lambda.

pub use capsule_aws as aws;
pub use capsule_client as capsule;
pub use capsule_client::access;
pub use capsule_core::{
    Fault, Result, SyncError, budget, catalog, events, from_now, integration, manifest, observe, ports, process,
    progress, ratelimit, runlog, tls,
};
pub use capsule_engine::{due, engine, health, integrations, jobs, lifecycle, output, plan, schedule, warehouse};
pub use capsule_local as local;
