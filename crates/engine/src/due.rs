//! The due index: when the scheduler must next look at each integration, kept where one query
//! returns exactly the integrations due now (a sparse DynamoDB index, a map in the state file),
//! so a tick reads what is due, not everything registered.
//!
//! The rule that keeps it correct: an entry may be *earlier* than needed, never later. Every
//! write that gives the scheduler something to do brings the entry forward itself (registering
//! or editing an integration: now; taking a lease: its expiry, when it would be stranded;
//! parking one: its `not_before`; recording a manual run's dispatch with tables still to send:
//! now). The
//! scheduler, having looked, settles the entry to the exact [`next_look`] — only if no write
//! brought it forward since it read the entry (its version): otherwise the earlier time stands
//! and the next tick looks again. A look that finds nothing to do costs three reads, never a
//! missed run.

use std::time::Duration;

use chrono::{DateTime, Utc};

use capsule_core::Result;
use capsule_core::integration::{Integration, IntegrationStatus};
use capsule_core::ports::{DispatchRecord, StateStore, TableState, Wake};

/// Scheduler ticks are not exact: an integration counts as due this much before its time.
pub const SLACK: chrono::Duration = chrono::Duration::minutes(2);

/// When an integration is next due after its last run, scheduled or a complete manual sync
/// (None: due now).
pub(crate) fn due_at(integration: &Integration, last: Option<&DispatchRecord>) -> Option<DateTime<Utc>> {
    last.map(|d| d.dispatched_at + chrono::Duration::minutes(i64::from(integration.frequency_minutes)) - SLACK)
}

/// When the scheduler must next look at the integration (None: not until something changes):
/// the earliest of its next scheduled run (now if it never ran), now while its last dispatch has
/// tables to send, each parked run's `not_before`, each running invocation's lease expiry (when
/// it would be stranded), and each run's overdue time. Paused: None.
pub fn next_look(
    integration: &Integration,
    last: Option<&DispatchRecord>,
    states: &[TableState],
    overdue_after: Duration,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if integration.status == IntegrationStatus::Paused {
        return None;
    }
    let scheduled = due_at(integration, last).unwrap_or(now);
    let pending = last.filter(|d| d.has_pending()).map(|_| now);
    let overdue = chrono::Duration::from_std(overdue_after).unwrap_or(chrono::Duration::MAX);
    let runs = states.iter().flat_map(|s| {
        let parked = s
            .lease
            .as_ref()
            .filter(|l| l.invocation == 0)
            .map(|_| s.checkpoint.as_ref().and_then(|c| c.not_before).unwrap_or(now));
        let stranded = s.lease.as_ref().filter(|l| l.invocation > 0).map(|l| l.expires_at);
        let since = s.checkpoint.as_ref().map(|c| c.started_at).or_else(|| s.lease.as_ref().and_then(|l| l.started_at));
        [parked, stranded, since.and_then(|t| t.checked_add_signed(overdue))]
    });
    std::iter::once(Some(scheduled)).chain([pending]).chain(runs).flatten().min()
}

/// Settles the entry the scheduler read (`seen`) to `at`, reporting whether it applied; a
/// write in between keeps its earlier time (see the module's rule).
pub async fn settle(state: &dyn StateStore, seen: &Wake, at: Option<DateTime<Utc>>) -> Result<bool> {
    state.settle_wake(&seen.integration, at, seen.version).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use capsule_core::integration::RunId;
    use capsule_core::ports::{Lease, LeaseOwner, StartedBy};

    fn integration() -> Integration {
        let mut i = Integration::new("acme".parse().unwrap(), "env:X".parse().unwrap(), Utc::now());
        i.frequency_minutes = 60;
        i
    }

    fn dispatched(at: DateTime<Utc>) -> DispatchRecord {
        DispatchRecord {
            integration: "acme".into(),
            run_id: RunId::new(at),
            tables: vec!["parties".into()],
            dispatched_at: at,
            failed: vec![],
            held: vec![],
            started_by: StartedBy::Schedule,
        }
    }

    #[test]
    fn a_new_integration_is_due_now_and_a_paused_one_never() {
        let now = Utc::now();
        assert_eq!(next_look(&integration(), None, &[], Duration::from_secs(3600), now), Some(now));
        let mut paused = integration();
        paused.status = IntegrationStatus::Paused;
        assert_eq!(next_look(&paused, None, &[], Duration::from_secs(3600), now), None);
    }

    #[test]
    fn the_earliest_of_schedule_pending_tables_and_leases() {
        let now = Utc::now();
        let last = dispatched(now);
        let scheduled = due_at(&integration(), Some(&last)).unwrap();
        assert_eq!(next_look(&integration(), Some(&last), &[], Duration::from_secs(86_400), now), Some(scheduled));
        let pending =
            DispatchRecord { failed: vec![("tasks".to_string(), "throttled".to_string()).into()], ..last.clone() };
        assert_eq!(next_look(&integration(), Some(&pending), &[], Duration::from_secs(86_400), now), Some(now));
        let lease = Lease::first("acme", "parties", LeaseOwner::draw(&last.run_id), now, Duration::from_secs(300));
        let expiry = lease.expires_at;
        let running = TableState { table: "parties".into(), lease: Some(lease), checkpoint: None };
        let look =
            next_look(&integration(), Some(&last), std::slice::from_ref(&running), Duration::from_secs(86_400), now);
        assert_eq!(look, Some(expiry), "a running lease is looked at when it would be stranded");
        let look = next_look(&integration(), Some(&last), &[running], Duration::from_secs(60), now);
        assert_eq!(look, Some(now + chrono::Duration::seconds(60)), "and an overdue run when it becomes overdue");
    }
}
