//! Helpers for the end-to-end tests: a simulator on loopback, a temporary data directory with
//! the local adapters, and readers for what a sync wrote.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use capsule_client::{CapsuleClient, ClientOptions, RetryPolicy};
use capsule_core::integration::{Integration, RunId, TokenSource};
use capsule_core::ports::RunState;
use capsule_engine::engine::{self, RunOptions, RunPorts, TableRunOutcome};
use capsule_engine::lifecycle::Invocation;
use capsule_local::{LocalSink, StateFile};
use capsule_sim::{SimConfig, SimHandle};
use chrono::Utc;
use secrecy::SecretString;
use serde_json::Value;

pub mod aws;
pub mod duckdb;
pub mod faults;
pub mod fleet;
pub mod function_url;
pub mod hooks;
pub mod iam;
pub mod loader;
pub mod runtime;
pub mod serverless;

pub use capsule_sim;

/// A simulator with `parties` parties and a fast rate-limit window for tests.
pub async fn start_sim(parties: usize, tweak: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut config = SimConfig { parties, token: "test-token".into(), ..SimConfig::default() };
    tweak(&mut config);
    capsule_sim::start(config).await.expect("simulator starts on loopback")
}

/// A fault that makes every request to `path` take `millis` (a run still paging when a test acts).
pub fn slow_pages(path: &str, millis: u64) -> capsule_sim::FaultRule {
    capsule_sim::FaultRule {
        path: Some(path.to_string()),
        fault: capsule_sim::Fault::Slow { millis },
        after: 0,
        times: None,
        probability: None,
    }
}

/// Client options with short waits, so retry tests take milliseconds, not minutes.
pub fn fast_client_options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_retries: 6,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        },
        // The local backend's rules: the simulator is on loopback.
        access: capsule_client::access::AccessPolicy::local_allowing(&[]).unwrap(),
        ..ClientOptions::default()
    }
}

pub fn client_for(sim: &SimHandle, token: &str) -> CapsuleClient {
    CapsuleClient::new(sim.base_url(), SecretString::from(token.to_string()), fast_client_options()).unwrap()
}

/// A data directory with the local adapters.
pub struct Local {
    pub dir: tempfile::TempDir,
    pub state: StateFile,
    pub sink: LocalSink,
}

impl Local {
    pub fn new() -> Local {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::new(dir.path());
        let sink = LocalSink::new(dir.path().join("output"));
        Local { dir, state, sink }
    }

    pub fn deps(&self) -> RunPorts<'_> {
        RunPorts { state: &self.state, sink: &self.sink }
    }

    pub fn output(&self) -> PathBuf {
        self.dir.path().join("output")
    }

    /// Runs `tables` (the integration's selection when empty) of `integration` under a new run id.
    pub async fn sync(
        &self,
        client: &CapsuleClient,
        integration: &Integration,
        tables: &[&str],
        options: RunOptions,
    ) -> (RunId, Vec<TableRunOutcome>) {
        let run_id = RunId::new(Utc::now());
        let outcomes = self.sync_as(client, integration, tables, options, &run_id).await;
        (run_id, outcomes)
    }

    pub async fn sync_as(
        &self,
        client: &CapsuleClient,
        integration: &Integration,
        tables: &[&str],
        options: RunOptions,
        run_id: &RunId,
    ) -> Vec<TableRunOutcome> {
        // No tables named: the integration's selection, as `capsule-sync sync NAME` runs.
        let names: Vec<String> = tables.iter().map(|s| s.to_string()).collect();
        let specs = match names.is_empty() {
            true => integration.selected_tables().unwrap(),
            false => capsule_core::catalog::resolve_tables(&names).unwrap(),
        };
        engine::run_tables(
            client,
            self.deps(),
            integration,
            &specs,
            run_id,
            options,
            engine::LocalDispatch { concurrency: 4, progress: None, redo: true },
        )
        .await
    }

    /// Runs one table as a run whose every invocation is already past its deadline: each reads
    /// one page (or batch of parents), checkpoints and stops, and the next continues it, until
    /// the run succeeds. Returns the invocations it took.
    pub async fn run_in_slices(
        &self,
        client: &CapsuleClient,
        integration: &Integration,
        table: &str,
        run_id: &RunId,
    ) -> usize {
        let (mut invocation, mut invocations) = (Invocation::First, 0);
        loop {
            let outcome = engine::TableRun {
                client,
                deps: self.deps(),
                integration,
                table: capsule_core::catalog::table(table).unwrap(),
                run_id,
                options: RunOptions::default(),
                progress: None,
                deadline: Some(std::time::Instant::now()),
                kill_at: None,
                invocation,
            }
            .run()
            .await;
            invocations += 1;
            match outcome.record.state {
                RunState::Continued => invocation = Invocation::Continue { seq: None },
                RunState::Succeeded => return invocations,
                other => panic!("{other:?}: {:?}", outcome.error),
            }
            assert!(invocations < 1000, "the run makes progress");
        }
    }

    /// Every data file of one table run, sorted.
    pub fn run_files(&self, integration: &str, table: &str, run_id: &RunId) -> Vec<PathBuf> {
        let dir = self
            .output()
            .join(integration)
            .join(table)
            .join(format!("dt={}", run_id.partition_date()))
            .join(format!("run={run_id}"));
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files
    }

    /// Every row of one table run, decoded (gzip or plain) — one JSON object per line, checked.
    pub fn rows(&self, integration: &str, table: &str, run_id: &RunId) -> Vec<serde_json::Map<String, Value>> {
        self.run_files(integration, table, run_id).iter().flat_map(|p| read_ndjson(p)).collect()
    }

    pub fn manifest(&self, integration: &str, table: &str, run_id: &RunId) -> Value {
        let path = self.output().join(format!("_meta/{integration}/runs/{run_id}/{table}.json"));
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
    }
}

impl Default for Local {
    fn default() -> Self {
        Local::new()
    }
}

/// Reads an NDJSON file (gzip when it ends in .gz), asserting every line is one JSON object.
/// The rows of an NDJSON object's bytes (gzip undone when `gzipped`).
pub fn ndjson_rows(bytes: &[u8], gzipped: bool) -> Vec<serde_json::Map<String, Value>> {
    let reader: Box<dyn BufRead + '_> = if gzipped {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(bytes)))
    } else {
        Box::new(BufReader::new(bytes))
    };
    reader.lines().map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect()
}

pub fn read_ndjson(path: &Path) -> Vec<serde_json::Map<String, Value>> {
    let file = std::fs::File::open(path).unwrap();
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    reader
        .lines()
        .map(|line| {
            let line = line.unwrap();
            match serde_json::from_str::<Value>(&line) {
                Ok(Value::Object(map)) => map,
                other => panic!("{}: line is not one JSON object: {other:?}", path.display()),
            }
        })
        .collect()
}

/// An integration named `name` pointed at the simulator, token read from `var`.
pub fn integration_for(sim: &SimHandle, name: &str, var: &str) -> Integration {
    let mut i = Integration::new(name.parse().unwrap(), TokenSource::Env { var: var.into() }, Utc::now());
    i.api_base_url = sim.base_url().to_string();
    i
}

/// Rows per table as the simulator counts them.
pub fn expected_counts(sim: &SimHandle) -> BTreeMap<String, usize> {
    sim.table_counts(None).0
}
