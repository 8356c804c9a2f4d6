//! Every observable event, one variant each (vector's `internal_events`): what structured logs,
//! run logs (`capsule-sync logs`) and CloudWatch call it. The README lists them all; a test
//! checks that it does, and that no code names an event with a string literal.

use std::fmt;

/// An observable event. Its name ([`Event::as_str`]) is the `event` field of every log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    CapsuleRateLimited,
    CapsuleRequest,
    CapsuleRetry,
    CapsuleThrottled,
    CapsuleTokenReread,
    CommitConfirmed,
    CommitOutcomeUnknown,
    ContinuationNotDispatched,
    DispatchFailed,
    DueIndexBuilt,
    DuplicateRefused,
    FrequencyBelowTick,
    FullRefresh,
    IntegrationDispatched,
    IntegrationNotRegistered,
    IntegrationSkipped,
    IntegrationTickFailed,
    LeaseRenewalFailed,
    LeaseSelfFenced,
    LeaseTakenOver,
    HookLanded,
    HookLandingFailed,
    HookRejected,
    ListingShared,
    ManifestNotPublished,
    ManifestPublishedLate,
    MultipartAbortFailed,
    OauthTokenRefreshed,
    PagingShiftPersisted,
    PagingShiftReread,
    ParentGone,
    ParentsDiscovered,
    ParentsNotRemoved,
    PartCleanupFailed,
    PartWritten,
    PendingTablesDispatched,
    PublishedRunKept,
    RateBudgetFileReset,
    RateBudgetNotUpdated,
    RecentWindowDisorder,
    RecentWindowRead,
    RunCleanupFailed,
    RunLogNotSaved,
    RunOverdue,
    RunRecordFailed,
    RunResumed,
    RunStalled,
    RunTakenOver,
    ScheduleStopping,
    StalePartRemoved,
    StatusUpdateFailed,
    StrandedRun,
    SyncStarted,
    TableRunContinued,
    TableRunFailed,
    TableRunNotStarted,
    TableRunStarted,
    TableRunSucceeded,
    TableSyncDispatched,
    TablesHeld,
    TickLeftDueWork,
    TypeMismatch,
    UnknownFields,
    WakeNotRecorded,
}

impl Event {
    pub const ALL: &[Event] = &[
        Event::CapsuleRateLimited,
        Event::CapsuleRequest,
        Event::CapsuleRetry,
        Event::CapsuleThrottled,
        Event::CapsuleTokenReread,
        Event::CommitConfirmed,
        Event::CommitOutcomeUnknown,
        Event::ContinuationNotDispatched,
        Event::DispatchFailed,
        Event::DueIndexBuilt,
        Event::DuplicateRefused,
        Event::FrequencyBelowTick,
        Event::FullRefresh,
        Event::IntegrationDispatched,
        Event::IntegrationNotRegistered,
        Event::IntegrationSkipped,
        Event::IntegrationTickFailed,
        Event::LeaseRenewalFailed,
        Event::LeaseSelfFenced,
        Event::LeaseTakenOver,
        Event::HookLanded,
        Event::HookLandingFailed,
        Event::HookRejected,
        Event::ListingShared,
        Event::ManifestNotPublished,
        Event::ManifestPublishedLate,
        Event::MultipartAbortFailed,
        Event::OauthTokenRefreshed,
        Event::PagingShiftPersisted,
        Event::PagingShiftReread,
        Event::ParentGone,
        Event::ParentsDiscovered,
        Event::ParentsNotRemoved,
        Event::PartCleanupFailed,
        Event::PartWritten,
        Event::PendingTablesDispatched,
        Event::PublishedRunKept,
        Event::RateBudgetFileReset,
        Event::RateBudgetNotUpdated,
        Event::RecentWindowDisorder,
        Event::RecentWindowRead,
        Event::RunCleanupFailed,
        Event::RunLogNotSaved,
        Event::RunOverdue,
        Event::RunRecordFailed,
        Event::RunResumed,
        Event::RunStalled,
        Event::RunTakenOver,
        Event::ScheduleStopping,
        Event::StalePartRemoved,
        Event::StatusUpdateFailed,
        Event::StrandedRun,
        Event::SyncStarted,
        Event::TableRunContinued,
        Event::TableRunFailed,
        Event::TableRunNotStarted,
        Event::TableRunStarted,
        Event::TableRunSucceeded,
        Event::TableSyncDispatched,
        Event::TablesHeld,
        Event::TickLeftDueWork,
        Event::TypeMismatch,
        Event::UnknownFields,
        Event::WakeNotRecorded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::CapsuleRateLimited => "capsule_rate_limited",
            Event::CapsuleRequest => "capsule_request",
            Event::CapsuleRetry => "capsule_retry",
            Event::CapsuleThrottled => "capsule_throttled",
            Event::CapsuleTokenReread => "capsule_token_reread",
            Event::CommitConfirmed => "commit_confirmed",
            Event::CommitOutcomeUnknown => "commit_outcome_unknown",
            Event::ContinuationNotDispatched => "continuation_not_dispatched",
            Event::DispatchFailed => "dispatch_failed",
            Event::DueIndexBuilt => "due_index_built",
            Event::DuplicateRefused => "duplicate_refused",
            Event::FrequencyBelowTick => "frequency_below_tick",
            Event::FullRefresh => "full_refresh",
            Event::IntegrationDispatched => "integration_dispatched",
            Event::IntegrationNotRegistered => "integration_not_registered",
            Event::IntegrationSkipped => "integration_skipped",
            Event::IntegrationTickFailed => "integration_tick_failed",
            Event::LeaseRenewalFailed => "lease_renewal_failed",
            Event::LeaseSelfFenced => "lease_self_fenced",
            Event::LeaseTakenOver => "lease_taken_over",
            Event::HookLanded => "hook_landed",
            Event::HookLandingFailed => "hook_landing_failed",
            Event::HookRejected => "hook_rejected",
            Event::ListingShared => "listing_shared",
            Event::ManifestNotPublished => "manifest_not_published",
            Event::ManifestPublishedLate => "manifest_published_late",
            Event::MultipartAbortFailed => "multipart_abort_failed",
            Event::OauthTokenRefreshed => "oauth_token_refreshed",
            Event::PagingShiftPersisted => "paging_shift_persisted",
            Event::PagingShiftReread => "paging_shift_reread",
            Event::ParentGone => "parent_gone",
            Event::ParentsDiscovered => "parents_discovered",
            Event::ParentsNotRemoved => "parents_not_removed",
            Event::PartCleanupFailed => "part_cleanup_failed",
            Event::PartWritten => "part_written",
            Event::PendingTablesDispatched => "pending_tables_dispatched",
            Event::PublishedRunKept => "published_run_kept",
            Event::RateBudgetFileReset => "rate_budget_file_reset",
            Event::RateBudgetNotUpdated => "rate_budget_not_updated",
            Event::RecentWindowDisorder => "recent_window_disorder",
            Event::RecentWindowRead => "recent_window_read",
            Event::RunCleanupFailed => "run_cleanup_failed",
            Event::RunLogNotSaved => "run_log_not_saved",
            Event::RunOverdue => "run_overdue",
            Event::RunRecordFailed => "run_record_failed",
            Event::RunResumed => "run_resumed",
            Event::RunStalled => "run_stalled",
            Event::RunTakenOver => "run_taken_over",
            Event::ScheduleStopping => "schedule_stopping",
            Event::StalePartRemoved => "stale_part_removed",
            Event::StatusUpdateFailed => "status_update_failed",
            Event::StrandedRun => "stranded_run",
            Event::SyncStarted => "sync_started",
            Event::TableRunContinued => "table_run_continued",
            Event::TableRunFailed => "table_run_failed",
            Event::TableRunNotStarted => "table_run_not_started",
            Event::TableRunStarted => "table_run_started",
            Event::TableRunSucceeded => "table_run_succeeded",
            Event::TableSyncDispatched => "table_sync_dispatched",
            Event::TablesHeld => "tables_held",
            Event::TickLeftDueWork => "tick_left_due_work",
            Event::TypeMismatch => "type_mismatch",
            Event::UnknownFields => "unknown_fields",
            Event::WakeNotRecorded => "wake_not_recorded",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_operations_lists_every_event_and_no_code_spells_one_out() {
        let operations = include_str!("../../../docs/operations.md");
        let missing: Vec<&str> =
            Event::ALL.iter().map(|e| e.as_str()).filter(|name| !operations.contains(&format!("`{name}`"))).collect();
        assert!(missing.is_empty(), "docs/operations.md does not list these events: {missing:?}");
        let mut names: Vec<&str> = Event::ALL.iter().map(|e| e.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Event::ALL.len(), "two variants share a name");
    }

    #[test]
    fn no_code_names_an_event_with_a_string_literal() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut dirs = vec![root.join("crates"), root.join("cli/src"), root.join("functions")];
        let mut offenders = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let spelled = ["event = \"", "log.info(\"", "log.warn(\"", "log.error(\"", "self.warn(\""];
                    for (n, line) in text.lines().enumerate() {
                        if spelled.iter().any(|s| line.contains(s)) && !path.ends_with("observe.rs") {
                            offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                        }
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "use an `Event` variant:\n{}", offenders.join("\n"));
    }
}
