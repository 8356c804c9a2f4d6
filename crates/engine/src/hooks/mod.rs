//! REST hooks: Capsule POSTs each change as it happens; the receiver checks the delivery
//! ([`receiver`]), lands its records as rows of the event's table in hook runs ([`landing`],
//! grouped over a short window by [`roller`] where one process serves many deliveries), and
//! the warehouse views merge those rows with the batch sync's. [`subscriptions`] asks Capsule
//! for the events; [`activity`] is what `status` and `jobs` show of them.
//!
//! A hook run is a run like a batch run for loaders (its files, then its published manifest,
//! under the same layout) but it reads nothing and moves no bookmark: the batch sync keeps
//! running and heals any delivery that never came.

pub mod activity;
mod delivery;
pub mod landing;
pub mod receiver;
pub mod roller;
pub mod subscriptions;

pub use delivery::Delivery;
pub use receiver::{Limits, RateLimiter, Rejection};
