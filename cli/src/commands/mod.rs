//! One module per subcommand.

pub mod catalog;
pub mod demo;
pub mod doctor;
pub mod hooks;
pub mod integrations;
pub mod ops;
pub mod plan;
pub mod schedule;
pub mod sync;
pub mod warehouse;
