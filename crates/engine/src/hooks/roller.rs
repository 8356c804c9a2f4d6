//! Grouping deliveries into hook runs where one process receives them all (`capsule-sync hooks
//! serve`): each delivery waits until its rows are durable — a group commit — so nothing
//! answered 2xx is ever lost, and the deliveries of a short window land as one file per table
//! instead of a file each. A run is rolled when [`RollPolicy::every`] has passed since its
//! first delivery or it holds [`RollPolicy::max_bytes`] of records, whichever comes first.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use capsule_core::integration::Integration;
use capsule_core::ports::ObjectSink;
use capsule_core::{Result, SyncError};

use super::{Delivery, landing};

/// When a group of deliveries is landed.
#[derive(Debug, Clone, Copy)]
pub struct RollPolicy {
    pub every: Duration,
    pub max_bytes: usize,
}

impl Default for RollPolicy {
    fn default() -> RollPolicy {
        RollPolicy { every: Duration::from_secs(1), max_bytes: 8 << 20 }
    }
}

struct Waiting {
    integration: Integration,
    delivery: Delivery,
    landed: oneshot::Sender<Result<()>>,
}

/// The handle deliveries are landed through; the rolling task stops (landing what waits) when
/// every handle is dropped.
#[derive(Clone)]
pub struct Roller {
    queue: mpsc::Sender<Waiting>,
}

impl Roller {
    /// Starts the rolling task; await the handle after dropping every [`Roller`] to see the
    /// last group landed.
    pub fn start(sink: Arc<dyn ObjectSink>, policy: RollPolicy) -> (Roller, tokio::task::JoinHandle<()>) {
        let (queue, waiting) = mpsc::channel(1024);
        let task = tokio::spawn(roll(sink, policy, waiting));
        (Roller { queue }, task)
    }

    /// Lands a delivery with the others of its window; returns once its rows are durable.
    pub async fn land(&self, integration: Integration, delivery: Delivery) -> Result<()> {
        let (landed, done) = oneshot::channel();
        let stopped = || SyncError::Internal("the hook roller stopped".into());
        self.queue.send(Waiting { integration, delivery, landed }).await.map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

async fn roll(sink: Arc<dyn ObjectSink>, policy: RollPolicy, mut waiting: mpsc::Receiver<Waiting>) {
    let mut group: Vec<Waiting> = Vec::new();
    let mut bytes = 0;
    let mut due = Instant::now() + policy.every;
    loop {
        let next = if group.is_empty() {
            waiting.recv().await
        } else {
            tokio::select! {
                next = waiting.recv() => next,
                () = tokio::time::sleep_until(due) => { land_group(&*sink, std::mem::take(&mut group)).await; bytes = 0; continue; }
            }
        };
        let Some(next) = next else { break };
        if group.is_empty() {
            due = Instant::now() + policy.every;
        }
        bytes += next.delivery.bytes();
        group.push(next);
        if bytes >= policy.max_bytes {
            land_group(&*sink, std::mem::take(&mut group)).await;
            bytes = 0;
        }
    }
    land_group(&*sink, group).await;
}

/// Lands a group, per integration, and tells each delivery how it went.
async fn land_group(sink: &dyn ObjectSink, group: Vec<Waiting>) {
    let mut by_integration: Vec<(Integration, Vec<Waiting>)> = Vec::new();
    for w in group {
        match by_integration.iter_mut().find(|(i, _)| i.name == w.integration.name) {
            Some((_, ws)) => ws.push(w),
            None => by_integration.push((w.integration.clone(), vec![w])),
        }
    }
    for (integration, ws) in by_integration {
        let (deliveries, answers): (Vec<Delivery>, Vec<_>) = ws.into_iter().map(|w| (w.delivery, w.landed)).unzip();
        let outcome = landing::land(sink, &integration, &deliveries).await;
        for landed in answers {
            let _ = landed.send(outcome.as_ref().map(|_| ()).map_err(|e| SyncError::Output(e.to_string())));
        }
    }
}
