//! The scheduled tick: the integrations the due index names, earliest due first, looked at by a
//! few workers at once; each look settles the integration's entry to its next look
//! ([`capsule_engine::due`]). A cap on the table-sync invocations started and a time budget
//! bound one tick: looks read at once, but take their invocations from the cap in due-time
//! order, so the tick dispatches the earliest due and everything after the first that does not
//! fit stays due, first in line for the next tick. So a tick reads what is due, whatever the
//! number registered, and one integration's error stops no other.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use capsule_core::events::ManualRun;
use capsule_core::observe::Event;
use capsule_core::ports::Wake;
use capsule_core::{Result, SyncError};
use capsule_engine::due;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::{Allowance, Looked, OrchestratorDeps, Summary, Tick, integration_failed};

/// How much one scheduled tick takes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickLimits {
    /// Table-sync invocations one tick may start (None: no cap but the time budget). An
    /// integration's sends are taken whole or left for the next tick.
    pub max_invocations: Option<usize>,
    /// The tick takes up no new integration after this long (the function's timeout is 60 s).
    pub budget: Duration,
    /// Integrations looked at at once.
    pub workers: usize,
    /// Due entries read per tick at most.
    pub max_due: usize,
}

impl Default for TickLimits {
    fn default() -> Self {
        TickLimits { max_invocations: None, budget: Duration::from_secs(40), workers: 16, max_due: 20_000 }
    }
}

/// With a reserved concurrency of N, a tick starts at most N × this many invocations: about what
/// N slots run in a 5-minute tick at ~25 s an invocation, so queued events do not pile up.
pub const INVOCATIONS_PER_RESERVED_SLOT: usize = 12;

/// The limits the stack configures: `CAPSULE_MAX_INVOCATIONS_PER_TICK` (a positive number; 0 or
/// unset derives it from `CAPSULE_TABLE_SYNC_CONCURRENCY`, table-sync's reserved concurrency,
/// -1 for none).
pub fn limits_from_env() -> Result<TickLimits> {
    let number = |name: &str| -> Result<Option<i64>> {
        let Some(text) = std::env::var(name).ok().filter(|v| !v.trim().is_empty()) else { return Ok(None) };
        text.trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| SyncError::Config(format!("{name} must be a whole number, not `{text}`")))
    };
    let explicit = number("CAPSULE_MAX_INVOCATIONS_PER_TICK")?.filter(|n| *n > 0);
    let reserved = number("CAPSULE_TABLE_SYNC_CONCURRENCY")?.filter(|n| *n > 0);
    let max_invocations = explicit.map(|n| n as usize).or(reserved.map(|n| n as usize * INVOCATIONS_PER_RESERVED_SLOT));
    Ok(TickLimits { max_invocations, ..TickLimits::default() })
}

/// The tick's cap, shared by its workers, taken from in due-time order: the look of the `i`th
/// due integration takes its invocations only after every earlier one took or gave up.
struct Cap {
    limit: Option<usize>,
    /// (invocations taken, the turn that may take next)
    state: Mutex<(usize, usize)>,
    turn_passed: tokio::sync::Notify,
    /// A look did not fit: every later one is left for the next tick (due-time order).
    full: AtomicBool,
}

impl Cap {
    fn new(limit: Option<usize>) -> Cap {
        Cap { limit, state: Mutex::new((0, 0)), turn_passed: tokio::sync::Notify::new(), full: AtomicBool::new(false) }
    }

    fn full(&self) -> bool {
        self.full.load(Ordering::SeqCst)
    }

    async fn wait_for(&self, turn: usize) {
        loop {
            let passed = self.turn_passed.notified();
            if self.state.lock().expect("cap lock").1 >= turn {
                return;
            }
            passed.await;
        }
    }

    fn pass(&self, turn: usize) {
        let mut state = self.state.lock().expect("cap lock");
        state.1 = state.1.max(turn + 1);
        drop(state);
        self.turn_passed.notify_waiters();
    }
}

/// One look's turn at the cap; passed on when the look ends however it ends.
struct Turn<'a> {
    cap: &'a Cap,
    turn: usize,
}

impl Allowance for Turn<'_> {
    async fn take(&self, n: usize) -> bool {
        let cap = self.cap;
        cap.wait_for(self.turn).await;
        let fits = {
            let mut state = cap.state.lock().expect("cap lock");
            // The first look always proceeds, so an integration larger than the cap is not stuck.
            let fits = !cap.full() && cap.limit.is_none_or(|limit| state.0 == 0 || state.0 + n <= limit);
            if fits {
                state.0 += n;
            }
            fits
        };
        if !fits {
            cap.full.store(true, Ordering::SeqCst);
        }
        cap.pass(self.turn);
        fits
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.cap.pass(self.turn);
    }
}

pub(crate) async fn run(deps: &OrchestratorDeps) -> Result<Summary> {
    let started = Instant::now();
    let now = Utc::now();
    let due = deps.state.due(now, deps.limits.max_due).await?;
    let cap = Cap::new(deps.limits.max_invocations);
    let request = ManualRun::default();
    let tick = Tick { deps, request: &request, tables_asked: None, scheduled: true, now };
    let mut summary = Summary { due: due.len(), ..Summary::default() };
    let parts: Vec<Summary> = futures::stream::iter(due.into_iter().enumerate())
        .map(|(turn, wake)| look(&tick, wake, Turn { cap: &cap, turn }, started))
        .buffered(deps.limits.workers.max(1))
        .collect()
        .await;
    for part in parts {
        summary.dispatched.extend(part.dispatched);
        summary.skipped.extend(part.skipped);
        summary.resumed.extend(part.resumed);
        summary.failed.extend(part.failed);
        summary.overdue.extend(part.overdue);
        summary.deferred.extend(part.deferred);
    }
    if !summary.deferred.is_empty() {
        tracing::warn!(
            event = Event::TickLeftDueWork.as_str(),
            due = summary.due,
            deferred = summary.deferred.len(),
            seconds = started.elapsed().as_secs_f64(),
            "the next tick takes them first"
        );
    }
    Ok(summary)
}

/// One due integration: looked at (unless the tick is out of time or invocations), then its
/// entry settled.
async fn look(tick: &Tick<'_>, wake: Wake, turn: Turn<'_>, started: Instant) -> Summary {
    let deps = tick.deps;
    let mut part = Summary::default();
    if turn.cap.full() || started.elapsed() >= deps.limits.budget {
        // Out of invocations or time: this and every later look waits for the next tick.
        turn.cap.full.store(true, Ordering::SeqCst);
        part.deferred.push(wake.integration);
        return part;
    }
    let result = async {
        let Some(integration) = deps.state.get_integration(&wake.integration).await? else {
            // Deleted since: nothing to look at.
            due::settle(deps.state.as_ref(), &wake, None).await?;
            return Ok(());
        };
        match tick.integration(&integration, &mut part, &turn).await? {
            Looked::Deferred => part.deferred.push(integration.name.to_string()),
            Looked::Done { sent, last, states } => {
                let at = due::next_look(&integration, last.as_ref(), &states, deps.overdue_after, tick.now);
                due::settle(deps.state.as_ref(), &wake, watched(at, sent, deps, tick.now)).await?;
            }
        }
        Ok::<(), SyncError>(())
    }
    .await;
    if let Err(error) = result {
        integration_failed(&wake.integration, &error, &mut part);
    }
    part
}

/// After sending invocations, the tick looks again within a lease TTL even if none has taken
/// its lease yet: one killed between taking it and recording its wake is still found stranded.
fn watched(
    at: Option<DateTime<Utc>>,
    sent: usize,
    deps: &OrchestratorDeps,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if sent == 0 {
        return at;
    }
    let watch = now + chrono::Duration::from_std(deps.lease_ttl).unwrap_or_default();
    Some(at.map_or(watch, |at| at.min(watch)))
}
