//! The lease: the right to write one table, held by one invocation at a time and fenced, and
//! the errors of a write that lost it or an invocation it is not waiting for.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::SyncError;
use crate::integration::RunId;

use super::*;

/// What taking a lease found.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseGrant {
    pub lease: Lease,
    /// Another run's lease that was taken over (its holder had stopped).
    pub displaced: Option<Lease>,
}

/// Who holds a lease: a run, and a random number drawn by the first invocation that took it
/// (an earlier attempt of the same run's first invocation drew another). Stored as
/// `<run id>/<8 hex digits>`; continuations of the run keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LeaseOwner {
    pub run: RunId,
    pub nonce: u32,
}

impl LeaseOwner {
    /// A new holder for `run`'s first invocation.
    pub fn draw(run: &RunId) -> LeaseOwner {
        LeaseOwner { run: run.clone(), nonce: rand::rng().random() }
    }
}

impl fmt::Display for LeaseOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:08x}", self.run, self.nonce)
    }
}

impl std::str::FromStr for LeaseOwner {
    type Err = SyncError;
    fn from_str(s: &str) -> crate::Result<LeaseOwner> {
        let invalid = || SyncError::State(format!("lease owner `{s}` is not of the form <run id>/<8 hex digits>"));
        let (run, nonce) = s.split_once('/').ok_or_else(invalid)?;
        let nonce = u32::from_str_radix(nonce, 16).map_err(|_| invalid())?;
        Ok(LeaseOwner { run: run.parse().map_err(|_| invalid())?, nonce })
    }
}

impl TryFrom<String> for LeaseOwner {
    type Error = SyncError;
    fn try_from(s: String) -> crate::Result<LeaseOwner> {
        s.parse()
    }
}

impl From<LeaseOwner> for String {
    fn from(owner: LeaseOwner) -> String {
        owner.to_string()
    }
}

/// A lease on (integration, table): held by one run, and by one invocation of it at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub integration: String,
    pub table: String,
    /// The run holding it.
    pub owner: LeaseOwner,
    pub expires_at: DateTime<Utc>,
    /// T0 of the holding run (the key of its `running` record).
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// The invocation working under it; 0 while parked between invocations.
    #[serde(default)]
    pub invocation: u32,
    /// The invocation allowed to take it next (while parked), or the holder's own number.
    #[serde(default)]
    pub next: u32,
    /// `host:pid` of a local process holding it: once that process is gone, the lease is free.
    #[serde(default)]
    pub process: Option<crate::process::ProcessId>,
    /// The fencing number: set when a run takes the lease (the instant, in microseconds) and
    /// one higher at every park, resume and recovery, so no two holdings ever share one. Every
    /// write of a run is conditioned on it (with `owner`): an invocation that was presumed dead
    /// and replaced can write nothing, even when it carries the same invocation number.
    #[serde(default)]
    pub fence: u64,
    /// Attempts of this run's first invocation so far: a Lambda retry or the tick's redo of a
    /// killed first invocation takes the lease over as attempt + 1.
    #[serde(default)]
    pub attempt: u32,
}

impl Lease {
    /// The lease a run's first invocation asks for.
    pub fn first(integration: &str, table: &str, owner: LeaseOwner, started_at: DateTime<Utc>, ttl: Duration) -> Lease {
        Lease {
            integration: integration.to_string(),
            table: table.to_string(),
            owner,
            expires_at: crate::from_now(ttl),
            started_at: Some(started_at),
            invocation: 1,
            next: 1,
            process: None,
            fence: Utc::now().timestamp_micros().max(1) as u64,
            attempt: 1,
        }
    }

    /// Whether `other` is this same holding (run, invocation and fencing number).
    pub fn same_holder(&self, other: &Lease) -> bool {
        self.owner == other.owner && self.fence == other.fence
    }

    /// Whether `other` is a holding of the same run (an earlier attempt of its first invocation).
    pub fn same_run(&self, other: &Lease) -> bool {
        self.owner.run == other.owner.run
    }

    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now
    }

    /// Whether its holder has stopped: the lease expired, or the local process that held it is
    /// gone from this host. Such a lease can be taken over, and its run is no longer running.
    pub fn can_be_taken_over(&self, now: DateTime<Utc>) -> bool {
        self.expired(now) || self.process.as_ref().is_some_and(crate::process::ProcessId::gone)
    }

    /// The lease a parking leaves: no invocation, waiting for the checkpoint's next one.
    pub fn parked(&self, parking: &Parking) -> Lease {
        Lease {
            invocation: 0,
            next: parking.checkpoint.next_invocation(),
            expires_at: parking.hold_until,
            fence: self.fence + 1,
            ..self.clone()
        }
    }

    /// The lease taken for invocation `seq` from a parked (or stranded) one: a new fencing number.
    pub fn resumed(&self, seq: u32, expires_at: DateTime<Utc>) -> Lease {
        Lease { invocation: seq, expires_at, fence: self.fence + 1, ..self.clone() }
    }

    /// The error of a write fenced on this lease after it was lost.
    pub fn lost(&self) -> SyncError {
        SyncError::LeaseLost(format!(
            "the lease on {}/{} is no longer held by {} (fence {}; it expired and another invocation took it); \
             nothing was committed",
            self.integration, self.table, self.owner, self.fence
        ))
    }
}

/// The attempt number of a first invocation taking `previous` over: one more than an earlier
/// attempt of the same run, else 1.
pub fn attempt_after(previous: Option<&Lease>, wanted: &Lease) -> u32 {
    match previous {
        Some(p) if p.same_run(wanted) && p.owner != wanted.owner => p.attempt.max(1) + 1,
        _ => 1,
    }
}

/// Whether `error` is [`Lease::lost`]'s (or a self-fenced heartbeat's): the run may no longer write.
pub fn is_lease_lost(error: &SyncError) -> bool {
    matches!(error, SyncError::LeaseLost(_))
}

/// The refusal of a continuation the lease is not waiting for (a duplicate or stale invocation).
pub fn not_waiting_for(integration: &str, table: &str, owner: &LeaseOwner, seq: u32) -> SyncError {
    SyncError::Superseded(format!(
        "invocation {seq} of {owner} on {integration}/{table} is a duplicate or out of date: the lease is not waiting for it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_owner_is_stored_as_run_slash_nonce_and_read_back() {
        let run: RunId = "20261128T081100Z-abc123".parse().unwrap();
        let owner = LeaseOwner { run: run.clone(), nonce: 0x00c0ffee };
        assert_eq!(serde_json::to_value(&owner).unwrap(), "20261128T081100Z-abc123/00c0ffee");
        let back: LeaseOwner = serde_json::from_str("\"20261128T081100Z-abc123/00c0ffee\"").unwrap();
        assert_eq!(back, owner);
        assert_ne!(LeaseOwner::draw(&run).run, "20261128T081100Z-def456".parse().unwrap());
        for bad in ["slow/1x", "20261128T081100Z-abc123", "not-a-run/00c0ffee"] {
            let err = bad.parse::<LeaseOwner>().unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("<run id>/<8 hex digits>"), "{bad}: {err}");
        }
    }
}
