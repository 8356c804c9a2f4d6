//! When an integration is due, in one place for the orchestrator's tick and the CLI's
//! `run-due` / `schedule`; and the local scheduler's loop, on an injectable clock.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use capsule_core::Result;
use capsule_core::integration::{Integration, IntegrationStatus, RunId};
use capsule_core::observe::Event;
use capsule_core::ports::{DispatchRecord, StartedBy, StateStore};

use crate::due::due_at;

/// Why an integration is not run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotDue {
    /// An operator paused it (`integrations resume` undoes that).
    Paused,
    /// Its frequency has not elapsed since its last run: due at this instant.
    Until(DateTime<Utc>),
}

impl std::fmt::Display for NotDue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotDue::Paused => f.write_str("paused"),
            NotDue::Until(at) => write!(f, "not due until {}", at.to_rfc3339()),
        }
    }
}

/// Why the integration is not to run now (None: run it), given its last run's dispatch.
/// Paused never runs; `force` runs now.
pub fn why_not_due(
    integration: &Integration,
    last: Option<&DispatchRecord>,
    now: DateTime<Utc>,
    force: bool,
) -> Option<NotDue> {
    if integration.status == IntegrationStatus::Paused {
        return Some(NotDue::Paused);
    }
    if force {
        return None;
    }
    due_at(integration, last).filter(|at| now < *at).map(NotDue::Until)
}

/// When the integration is next due, and why, in the words `status` shows.
pub fn due_status(integration: &Integration, last: Option<&DispatchRecord>, now: DateTime<Utc>) -> NextDue {
    if integration.status == IntegrationStatus::Paused {
        return NextDue { at: None, why: "paused (`integrations resume`)".into() };
    }
    let Some(last) = last else { return NextDue { at: Some(now), why: "due now: never run".into() } };
    let at = due_at(integration, Some(last)).unwrap_or(now);
    let (every, by) = (frequency_text(integration.frequency_minutes), last.started_by.as_str());
    let why =
        if at <= now { format!("due now: {every} since the {by} run") } else { format!("{every} after the {by} run") };
    NextDue { at: Some(at.max(now)), why }
}

/// `90m`, `6h`, `1d` — as `--frequency` takes it.
fn frequency_text(minutes: u32) -> String {
    match minutes {
        m if m % 1440 == 0 => format!("{}d", m / 1440),
        m if m % 60 == 0 => format!("{}h", m / 60),
        m => format!("{m}m"),
    }
}

/// When an integration is next due (None: never, it is paused) and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NextDue {
    pub at: Option<DateTime<Utc>>,
    pub why: String,
}

/// Records a run of every table of the integration as its last run, before it starts: the
/// scheduler's own (`run-due`, `schedule`), or a manual sync, so that `run-due`, `schedule` and
/// the orchestrator count the next run from it (a first load done by hand is not repeated by the
/// next tick). The integration is next due a frequency later whatever the run does.
pub async fn record_run_of_every_table(
    state: &dyn StateStore,
    integration: &Integration,
    run_id: &RunId,
    now: DateTime<Utc>,
    started_by: StartedBy,
) -> Result<()> {
    let record = DispatchRecord {
        integration: integration.name.to_string(),
        run_id: run_id.clone(),
        tables: integration.selected_tables()?.iter().map(|t| t.name.to_string()).collect(),
        dispatched_at: now,
        failed: vec![],
        held: vec![],
        started_by,
    };
    state.record_dispatch(&record).await
}

/// The interval of an EventBridge `rate(…)` schedule expression (`rate(5 minutes)`, `rate(1 hour)`);
/// None for `cron(…)` or anything else.
pub(crate) fn rate_interval(expression: &str) -> Option<Duration> {
    let inner = expression.trim().strip_prefix("rate(")?.strip_suffix(')')?;
    let (n, unit) = inner.trim().split_once(' ')?;
    let n: u64 = n.parse().ok()?;
    let seconds = match unit.trim().trim_end_matches('s') {
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(n * seconds))
}

/// The deployment's scheduler tick (`CAPSULE_SCHEDULE_EXPRESSION`, the stack's
/// `ScheduleExpression`), if known.
pub fn deployment_tick() -> Option<Duration> {
    std::env::var("CAPSULE_SCHEDULE_EXPRESSION").ok().and_then(|e| rate_interval(&e))
}

/// Refuses a frequency the scheduler cannot honour: shorter than its tick, the integration
/// would simply run once per tick.
pub fn check_frequency(integration: &Integration, tick: Option<Duration>) -> Result<()> {
    let Some(tick) = tick else { return Ok(()) };
    let frequency = Duration::from_secs(u64::from(integration.frequency_minutes) * 60);
    if frequency < tick {
        return Err(capsule_core::SyncError::Config(format!(
            "frequency {}m of `{}` is shorter than the scheduler's tick ({} minutes): it could only run once per \
             tick. Use a frequency of at least {}m, or a shorter ScheduleExpression",
            integration.frequency_minutes,
            integration.name,
            tick.as_secs() / 60,
            tick.as_secs().div_ceil(60)
        )));
    }
    Ok(())
}

/// Time for the local scheduler (tests inject one that does not sleep).
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    fn sleep_until(&self, at: DateTime<Utc>) -> impl Future<Output = ()> + Send;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await
    }
}

/// What one pass of the local scheduler did with an integration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassOutcome {
    Synced { integration: String, run_id: RunId, ok: bool },
    Skipped { integration: String, reason: String },
}

/// One pass: every integration the due index names at `now` is looked at, and synced if it is
/// due (`sync` runs all its tables under the run id and says whether every table succeeded).
/// The dispatch is recorded before the sync, so the integration is next due a frequency later
/// whatever the sync does. Each looked-at entry is settled to the integration's next run (the
/// local scheduler runs syncs to their end: no lease or parked run is left for it to watch).
pub async fn run_due(
    state: &dyn StateStore,
    now: DateTime<Utc>,
    sync: &mut impl AsyncFnMut(&Integration, &RunId) -> bool,
) -> Result<Vec<PassOutcome>> {
    let mut out = Vec::new();
    for wake in state.due(now, usize::MAX).await? {
        let Some(integration) = state.get_integration(&wake.integration).await? else {
            crate::due::settle(state, &wake, None).await?;
            continue;
        };
        let last = state.last_dispatch(&integration.name).await?;
        if let Some(reason) = why_not_due(&integration, last.as_ref(), now, false) {
            crate::due::settle(state, &wake, next_run(&integration, last.as_ref(), now)).await?;
            out.push(PassOutcome::Skipped { integration: integration.name.to_string(), reason: reason.to_string() });
            continue;
        }
        let run_id = RunId::new(now);
        record_run_of_every_table(state, &integration, &run_id, now, StartedBy::Schedule).await?;
        let ok = sync(&integration, &run_id).await;
        // Read again after the sync: its own leases brought the entry forward, and an edit made
        // meanwhile in another process must not be undone.
        if let Some(wake) = state.wake(&integration.name).await?
            && let Some(integration) = state.get_integration(&integration.name).await?
        {
            let last = state.last_dispatch(&integration.name).await?;
            crate::due::settle(state, &wake, next_run(&integration, last.as_ref(), now)).await?;
        }
        out.push(PassOutcome::Synced { integration: integration.name.to_string(), run_id, ok });
    }
    Ok(out)
}

/// The integrations a pass did not look at (the due index did not name them), each with why it
/// is not due: for a one-shot report (`run-due`), which reads every integration to say so; the
/// passes themselves read only what is due.
pub async fn not_looked_at(
    state: &dyn StateStore,
    looked: &[PassOutcome],
    now: DateTime<Utc>,
) -> Result<Vec<PassOutcome>> {
    let seen = |name: &str| {
        looked.iter().any(|o| match o {
            PassOutcome::Synced { integration, .. } | PassOutcome::Skipped { integration, .. } => integration == name,
        })
    };
    let mut out = Vec::new();
    for integration in state.list_integrations().await?.into_iter().filter(|i| !seen(&i.name)) {
        let last = state.last_dispatch(&integration.name).await?;
        let reason = why_not_due(&integration, last.as_ref(), now, false)
            .map_or_else(|| "due: the next pass runs it".to_string(), |not_due| not_due.to_string());
        out.push(PassOutcome::Skipped { integration: integration.name.into(), reason });
    }
    Ok(out)
}

/// When the local scheduler next runs the integration (None: paused).
fn next_run(integration: &Integration, last: Option<&DispatchRecord>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (integration.status != IntegrationStatus::Paused).then(|| due_at(integration, last).unwrap_or(now))
}

/// The next instant the due index names (None: nothing is waiting): the earliest entry, one
/// read of the index.
pub async fn next_due(state: &dyn StateStore) -> Result<Option<DateTime<Utc>>> {
    let far = Utc::now() + chrono::Duration::days(36_500);
    Ok(state.due(far, 1).await?.first().and_then(|w| w.at))
}

/// The local scheduler: passes of [`run_due`] as integrations come due (looking at least every
/// `tick`, so new and edited integrations are noticed), until `stop` resolves. A stop during a
/// pass lets the pass finish (its syncs end normally and release their leases); between passes
/// it ends the loop at once. `on_pass` sees each pass.
pub async fn run_schedule(
    state: &dyn StateStore,
    clock: &impl Clock,
    tick: Duration,
    stop: impl Future<Output = ()>,
    sync: &mut impl AsyncFnMut(&Integration, &RunId) -> bool,
    on_pass: &mut impl FnMut(&[PassOutcome]),
) -> Result<()> {
    let mut stop = std::pin::pin!(stop);
    let mut stopping = false;
    loop {
        let outcomes = {
            let mut pass = std::pin::pin!(run_due(state, clock.now(), sync));
            loop {
                tokio::select! {
                    outcomes = &mut pass => break outcomes?,
                    () = &mut stop, if !stopping => {
                        stopping = true;
                        tracing::warn!(event = Event::ScheduleStopping.as_str(), "finishing the syncs in progress, then stopping");
                    }
                }
            }
        };
        on_pass(&outcomes);
        if stopping {
            return Ok(());
        }
        let tick = chrono::Duration::from_std(tick).unwrap_or(chrono::Duration::minutes(1));
        let wake = next_due(state).await?.map_or(clock.now() + tick, |at| at.min(clock.now() + tick));
        tokio::select! {
            () = clock.sleep_until(wake) => {}
            () = &mut stop => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_expressions_give_their_interval() {
        assert_eq!(rate_interval("rate(5 minutes)"), Some(Duration::from_secs(300)));
        assert_eq!(rate_interval("rate(1 hour)"), Some(Duration::from_secs(3600)));
        assert_eq!(rate_interval(" rate(2 days) "), Some(Duration::from_secs(172_800)));
        assert_eq!(rate_interval("cron(0 * * * ? *)"), None);
        assert_eq!(rate_interval("rate(often)"), None);
    }

    #[test]
    fn a_frequency_shorter_than_the_tick_is_refused_with_the_reason() {
        let mut i = Integration::new("acme".parse().unwrap(), "env:X".parse().unwrap(), Utc::now());
        i.frequency_minutes = 5;
        assert!(check_frequency(&i, None).is_ok());
        assert!(check_frequency(&i, Some(Duration::from_secs(300))).is_ok());
        let err = check_frequency(&i, Some(Duration::from_secs(900))).unwrap_err().to_string();
        assert!(
            err.contains("shorter than the scheduler's tick (15 minutes)") && err.contains("at least 15m"),
            "{err}"
        );
    }
}
