//! Many integrations on one stack, as an agency registers them: the real orchestrator's tick
//! against moto's DynamoDB through the recording proxy (so every state-store call it makes is
//! counted), dispatching to the local Invoke endpoint. Table-sync there only records each event
//! it is sent: the tick is what these tests and the fleet benchmark measure; what table-sync does
//! with an event is proven by the serverless tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capsule_aws::{DynamoState, LambdaDispatcher};
use capsule_core::integration::{Integration, TokenSource};
use capsule_core::ports::StateStore;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::aws::{AwsStack, Function, LocalLambda};
use crate::iam::Recorder;
use crate::serverless::{clients_signed_as, moto_endpoint};

pub struct Fleet {
    pub stack: AwsStack,
    pub lambda: LocalLambda,
    pub recorder: Recorder,
    pub deps: orchestrator::OrchestratorDeps,
    /// Every event table-sync was sent, in order.
    pub events: Arc<Mutex<Vec<Value>>>,
}

/// One tick: its answer, how long it took, and the state-store calls it made by operation.
pub struct TickReport {
    pub summary: Value,
    pub took: Duration,
    pub calls: BTreeMap<String, usize>,
}

impl TickReport {
    pub fn state_calls(&self) -> usize {
        self.calls.values().sum()
    }
}

impl Fleet {
    pub async fn new(limits: orchestrator::TickLimits) -> Fleet {
        let stack = AwsStack::new().await;
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let seen = events.clone();
        let table_sync: Function = Arc::new(move |event: Value| {
            seen.lock().unwrap().push(event);
            Box::pin(async { Ok(json!({})) })
        });
        let lambda = LocalLambda::start(HashMap::from([("table-sync".to_string(), table_sync)])).await;
        let recorder = Recorder::start(&moto_endpoint(), &lambda.url).await;
        let clients = clients_signed_as("orchestrator", &recorder.url).await;
        let deps = orchestrator::OrchestratorDeps {
            state: Arc::new(DynamoState::new(clients.dynamodb.clone(), &stack.table)),
            dispatcher: Arc::new(LambdaDispatcher::new(clients.lambda.clone(), "table-sync")),
            lease_ttl: capsule_engine::engine::DEFAULT_LEASE_TTL,
            overdue_after: capsule_engine::lifecycle::DEFAULT_OVERDUE_AFTER,
            limits,
        };
        Fleet { stack, lambda, recorder, deps, events }
    }

    /// The name of the fleet's integration number `i`.
    pub fn name(i: usize) -> String {
        format!("acct-{i:05}")
    }

    /// Registers `count` integrations (numbered from `from`); each is due at once, as a new one is.
    pub async fn register(&self, from: usize, count: usize) {
        self.register_with(from, count, None).await
    }

    /// Registers integrations that run every minute: always due by their schedule (a minute is
    /// less than the schedule's slack), so which are due is the due index's doing alone.
    pub async fn register_every_minute(&self, from: usize, count: usize) {
        self.register_with(from, count, Some(1)).await
    }

    async fn register_with(&self, from: usize, count: usize, frequency_minutes: Option<u32>) {
        futures::stream::iter(from..from + count)
            .map(|i| async move {
                let token = TokenSource::SecretsManager { secret_id: format!("capsule-sync/{}", Fleet::name(i)) };
                let mut integration = Integration::new(Fleet::name(i).parse().unwrap(), token, Utc::now());
                if let Some(minutes) = frequency_minutes {
                    integration.frequency_minutes = minutes;
                }
                self.stack.state.create_integration(&integration).await.unwrap();
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        // A first query of the due index builds it for integrations registered before it
        // existed, once per table (none here): done now, so no tick measured pays for it.
        self.stack.state.due(Utc::now(), 1).await.unwrap();
    }

    /// Settles an integration's entry in the due index to `at` (None: nothing due), as a tick
    /// that looked at it would.
    pub async fn settle(&self, name: &str, at: Option<DateTime<Utc>>) {
        let wake = self.stack.state.wake(name).await.unwrap().expect("registered");
        assert!(self.stack.state.settle_wake(name, at, wake.version).await.unwrap());
    }

    /// Settles integrations `range` as looked at: not due for an hour.
    pub async fn not_due(&self, range: std::ops::Range<usize>) {
        let later = Utc::now() + chrono::Duration::hours(1);
        futures::stream::iter(range)
            .map(|i| async move { self.settle(&Fleet::name(i), Some(later)).await })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
    }

    /// One scheduled tick of the real orchestrator handler.
    pub async fn tick(&self) -> TickReport {
        let before = self.recorder.log.calls().len();
        let started = Instant::now();
        let event = json!({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
        let summary = orchestrator::handler(event, &self.deps).await.expect("the tick");
        let took = started.elapsed();
        self.lambda.wait_idle().await;
        let mut calls = BTreeMap::new();
        for call in &self.recorder.log.calls()[before..] {
            if call.service == "dynamodb" {
                let op = call.header("x-amz-target").and_then(|t| t.rsplit('.').next()).unwrap_or("?").to_string();
                *calls.entry(op).or_insert(0) += 1;
            }
        }
        TickReport { summary: serde_json::to_value(summary).unwrap(), took, calls }
    }

    /// Events sent so far, by integration: (table, run id) of each.
    pub fn sent(&self) -> BTreeMap<String, Vec<(String, String)>> {
        let mut by = BTreeMap::<String, Vec<(String, String)>>::new();
        for e in self.events.lock().unwrap().iter() {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            by.entry(field("integration")).or_default().push((field("table"), field("run_id")));
        }
        by
    }
}
