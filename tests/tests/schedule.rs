//! The local scheduler on an injected clock: an integration due now is synced, then again when
//! its frequency has elapsed (less the tick slack), and not in between; a paused one never.

use std::sync::Mutex;
use std::time::Duration;

use capsule_core::integration::{Integration, IntegrationStatus, RunId};
use capsule_core::ports::{RunState, StateStore};
use capsule_engine::engine::{self, LocalDispatch, RunOptions};
use capsule_engine::schedule::{self, Clock, PassOutcome};
use capsule_sync_e2e::*;
use chrono::{DateTime, Utc};

/// A clock whose sleeps return at once, having moved time to their end.
struct FakeClock(Mutex<DateTime<Utc>>);

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        let mut now = self.0.lock().unwrap();
        *now = (*now).max(at);
    }
}

#[tokio::test]
async fn an_integration_is_synced_when_due_and_only_then() {
    let sim = start_sim(50, |_| {}).await;
    let local = Local::new();
    let client = client_for(&sim, "test-token");
    let mut acme = integration_for(&sim, "acme", "UNUSED");
    acme.tables = vec!["users".into()].into();
    acme.frequency_minutes = 10;
    local.state.create_integration(&acme).await.unwrap();
    let mut paused = Integration { name: "paused".parse().unwrap(), status: IntegrationStatus::Paused, ..acme.clone() };
    paused.frequency_minutes = 5;
    local.state.create_integration(&paused).await.unwrap();

    let start = Utc::now();
    let clock = FakeClock(Mutex::new(start));
    let synced_at: Mutex<Vec<DateTime<Utc>>> = Mutex::default();
    let mut sync = async |integration: &Integration, run_id: &RunId| {
        synced_at.lock().unwrap().push(clock.now());
        let tables = integration.selected_tables().unwrap();
        let dispatch = LocalDispatch { concurrency: 1, progress: None, redo: false };
        let outcomes =
            engine::run_tables(&client, local.deps(), integration, &tables, run_id, RunOptions::default(), dispatch)
                .await;
        outcomes.iter().all(|o| o.record.state == RunState::Succeeded)
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut stop_tx = Some(stop_tx);
    let mut passes: Vec<Vec<PassOutcome>> = Vec::new();
    let mut on_pass = |outcomes: &[PassOutcome]| {
        passes.push(outcomes.to_vec());
        let synced = passes.iter().flatten().filter(|o| matches!(o, PassOutcome::Synced { .. })).count();
        if synced == 2 {
            stop_tx.take().map(|tx| tx.send(()));
        }
    };
    let stop = async {
        let _ = stop_rx.await;
    };
    let tick = Duration::from_secs(60);
    schedule::run_schedule(&local.state, &clock, tick, stop, &mut sync, &mut on_pass).await.unwrap();

    let times = synced_at.lock().unwrap().clone();
    assert_eq!(times.len(), 2, "synced twice: {passes:?}");
    assert_eq!(times[0], start, "due at once (never dispatched)");
    let frequency_less_slack = chrono::Duration::minutes(10) - capsule_engine::due::SLACK;
    assert_eq!(times[1] - times[0], frequency_less_slack, "again as soon as its frequency has elapsed");
    let looks = passes.len();
    assert!(looks >= 8, "looked every tick in between ({looks} passes), syncing nothing");
    let skipped_paused =
        passes.iter().flatten().filter(|o| matches!(o, PassOutcome::Skipped { reason, .. } if reason == "paused"));
    // Looked at once (it was due when paused), then out of the due index: never read again.
    assert_eq!(skipped_paused.count(), 1, "the paused integration never runs");
    let runs = local.state.runs(Some("acme"), 10).await.unwrap();
    assert_eq!(runs.iter().filter(|r| r.state == RunState::Succeeded).count(), 2);
    assert!(local.state.runs(Some("paused"), 10).await.unwrap().is_empty());
}
