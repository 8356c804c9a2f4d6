//! The operator workflow through the real `capsule-sync` binary, on the local backend and on the
//! AWS backend (moto_server), against the Capsule simulator over HTTP.

use std::collections::BTreeMap;
use std::path::Path;

use capsule_sync_e2e::aws::{AwsStack, create_secret_named, unique};
use capsule_sync_e2e::capsule_sim::{MutationKind, MutationOp, SimHandle};
use capsule_sync_e2e::{expected_counts, start_sim};
use serde_json::{Value, json};

/// How the CLI is pointed at a backend.
struct Cli {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn local(dir: &Path) -> Cli {
        Cli {
            args: vec!["--data-dir".into(), dir.display().to_string()],
            env: vec![("CAPSULE_TEST_TOKEN".into(), "test-token".into())],
        }
    }

    /// The AWS backend as deployed: its own secret prefix, the simulator as its allowed API host.
    fn aws(stack: &AwsStack, secret_prefix: &str, api_url: &str) -> Cli {
        Cli {
            args: vec![
                "--backend".into(),
                "aws".into(),
                "--state-table".into(),
                stack.table.clone(),
                "--bucket".into(),
                stack.bucket.clone(),
                "--prefix".into(),
                "wh".into(),
            ],
            env: vec![
                ("CAPSULE_SECRET_PREFIX".into(), secret_prefix.into()),
                ("CAPSULE_ALLOWED_API_URLS".into(), api_url.into()),
                // The deployment's tick: frequencies below it are refused.
                ("CAPSULE_SCHEDULE_EXPRESSION".into(), "rate(15 minutes)".into()),
            ],
        }
    }

    async fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, &[]).await
    }

    async fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_capsule-sync"))
            .args(&self.args)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(out.ok, "capsule-sync {args:?} failed:\n{}\n{}", out.stdout, out.stderr);
        out.stdout
    }

    async fn fails(&self, args: &[&str], needle: &str) {
        let out = self.run(args).await;
        assert!(!out.ok, "capsule-sync {args:?} should fail");
        assert!(out.stderr.contains(needle), "capsule-sync {args:?}: expected `{needle}` in:\n{}", out.stderr);
    }

    async fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args).await).unwrap()
    }

    async fn show(&self, name: &str) -> Value {
        self.json(&["integrations", "show", name]).await
    }

    /// Rows of the newest run record of each table.
    async fn last_rows(&self, name: &str) -> BTreeMap<String, (String, u64)> {
        let runs = self.json(&["runs", name, "--json", "--last", "200"]).await;
        let mut last = BTreeMap::new();
        for r in runs.as_array().unwrap().iter().rev() {
            last.insert(
                r["table"].as_str().unwrap().to_string(),
                (r["state"].as_str().unwrap().to_string(), r["rows"].as_u64().unwrap()),
            );
        }
        last
    }
}

/// The workflow both backends must support. `token` is the token-source flag value.
async fn operator_workflow(cli: &Cli, sim: &SimHandle, token: &str) {
    let base = sim.base_url();
    // Invalid input: rejected, named, nothing stored.
    cli.fails(&["integrations", "create", "Acme Corp", "--token", token, "--api-base-url", base], "invalid").await;
    let create = ["integrations", "create", "acme", "--token", token, "--api-base-url", base];
    let with = |extra: &[&'static str]| -> Vec<&str> { create.iter().copied().chain(extra.iter().copied()).collect() };
    cli.fails(&with(&["--tables", "partys"]), "unknown table `partys`").await;
    cli.fails(&with(&["--columns", "parties=nope"]), "unknown column `nope`").await;
    cli.fails(&with(&["--frequency", "often"]), "frequency").await;
    cli.fails(&with(&["--history-start", "last year"]), "history start").await;
    cli.fails(&with(&["--recent-window", "weekly"]), "recent window `weekly` is not `off` or a number of days").await;
    cli.fails(&with(&["--recent-window", "0"]), "full_refresh_days 0 must be between 1 and 90").await;
    assert!(cli.ok(&["integrations", "list"]).await.trim().is_empty(), "no state change");

    // Create: pending until the first load, then active.
    cli.ok(&with(&["--tables", "parties,users", "--frequency", "6h"])).await;
    assert_eq!(cli.show("acme").await["status"], "pending");
    // The quota plan, before the first load.
    let plan = cli.ok(&["plan", "acme"]).await;
    assert!(plan.contains("First load:") && plan.contains("4.0 runs a day"), "{plan}");
    let plan = cli.json(&["plan", "acme", "--json"]).await;
    let parties = expected_counts(sim)["parties"] as u64;
    assert_eq!(plan["tables"][0]["rows"], parties);
    assert_eq!(plan["first_load_requests"], parties.div_ceil(100) + 2 + 1, "parties pages, the guard, users");
    cli.fails(&with(&[]), "already exists").await;
    let out = cli.run(&["sync", "acme"]).await;
    assert!(out.ok && out.stdout.contains("parties") && out.stdout.contains("succeeded"), "{}", out.stderr);
    assert!(out.stderr.contains("table_run_succeeded"), "plain log lines off a terminal: {}", out.stderr);
    assert_eq!(cli.show("acme").await["status"], "active");
    let counts = expected_counts(sim);
    assert_eq!(cli.last_rows("acme").await["parties"], ("succeeded".into(), counts["parties"] as u64));

    // Pause: no sync; resume continues from the bookmark (only the changes).
    cli.ok(&["integrations", "pause", "acme"]).await;
    assert_eq!(cli.show("acme").await["status"], "paused");
    cli.fails(&["sync", "acme"], "paused").await;
    cli.ok(&["integrations", "resume", "acme"]).await;
    assert_eq!(cli.show("acme").await["status"], "active");
    sim.mutate_n(MutationKind::Parties, MutationOp::Update, 3).unwrap();
    cli.ok(&["sync", "acme"]).await;
    assert_eq!(cli.last_rows("acme").await["parties"].1, 3, "resumed from the bookmark");

    // Edit: an added table backfills; a bad edit changes nothing; every change is recorded.
    let before = cli.show("acme").await;
    cli.fails(&["integrations", "edit", "acme", "--add-tables", "nope"], "unknown table `nope`").await;
    cli.fails(&["integrations", "edit", "acme", "--columns", "users=nope"], "unknown column `nope`").await;
    assert_eq!(cli.show("acme").await, before, "no state change");
    let out =
        cli.ok(&["integrations", "edit", "acme", "--add-tables", "opportunities", "--columns", "users=id,name"]).await;
    assert!(out.contains("backfill on the next run: opportunities"), "{out}");
    cli.ok(&["sync", "acme"]).await;
    let records = cli.json(&["sync", "acme", "--tables", "users", "--json"]).await;
    assert_eq!(records[0]["table"], "users");
    assert_eq!(records[0]["state"], "succeeded");
    let last = cli.last_rows("acme").await;
    assert_eq!(last["opportunities"].1, counts["opportunities"] as u64, "the added table loads its history");
    assert_eq!(last["parties"].1, 3, "the others stay incremental (re-reading the lookback window)");
    // Removing a table then adding it back backfills it too.
    cli.ok(&["integrations", "edit", "acme", "--remove-tables", "parties"]).await;
    cli.ok(&["integrations", "edit", "acme", "--add-tables", "parties"]).await;
    cli.ok(&["sync", "acme", "--tables", "parties"]).await;
    assert_eq!(cli.last_rows("acme").await["parties"].1, counts["parties"] as u64);
    // Entries' recent-window mode is a setting like the others, shown in the words of its flag.
    let out = cli.ok(&["integrations", "edit", "acme", "--recent-window", "7"]).await;
    assert!(out.contains("recent_window: off → full refresh every 7 days"), "{out}");
    assert_eq!(cli.show("acme").await["recent_window"]["full_refresh_days"], 7);
    cli.ok(&["integrations", "edit", "acme", "--recent-window", "off"]).await;
    assert!(cli.show("acme").await.get("recent_window").is_none());
    let changes = cli.show("acme").await["changes"].as_array().unwrap().len();
    assert!(changes >= 8, "created, paused, resumed and five edits: {changes}");

    // A failed run: status, runs and logs say what happened.
    sim.mutate_n(MutationKind::Parties, MutationOp::Update, 1).unwrap();
    let broken = ["integrations", "edit", "acme", "--no-check", "--api-base-url"];
    let wrong_base = format!("{}/wrong", base);
    cli.ok(&broken.iter().copied().chain([wrong_base.as_str()]).collect::<Vec<_>>()).await;
    let failed = cli.run(&["sync", "acme", "--tables", "parties"]).await;
    assert!(!failed.ok && failed.stderr.contains("CapsuleRequestRejected"), "{}", failed.stderr);
    let status = cli.ok(&["status", "acme"]).await;
    assert!(status.contains("CapsuleRequestRejected") && status.contains("failed"), "{status}");
    let health = cli.json(&["status", "acme", "--json"]).await;
    assert_eq!(health["parties"]["consecutive_failures"], 1);
    assert_eq!(health["users"]["consecutive_failures"], 0);
    let overview = cli.ok(&["status"]).await;
    assert!(overview.contains("acme") && overview.contains("parties (1×)"), "{overview}");
    let runs = cli.json(&["runs", "acme", "--json", "--last", "1"]).await;
    let failed_run = runs[0]["run_id"].as_str().unwrap().to_string();
    assert_eq!(runs[0]["state"], "failed");
    assert_eq!(runs[0]["error"]["fault"], "internal");
    let logs = cli.ok(&["logs", &failed_run, "--table", "parties"]).await;
    assert!(logs.contains("table_run_started") && logs.contains("table_run_failed"), "{logs}");
    cli.ok(&["integrations", "edit", "acme", "--api-base-url", base]).await;
    let ok_run = cli.json(&["runs", "acme", "--json", "--last", "50"]).await;
    let succeeded = ok_run.as_array().unwrap().iter().find(|r| r["state"] == "succeeded").unwrap();
    let logs = cli.ok(&["logs", succeeded["run_id"].as_str().unwrap()]).await;
    assert!(logs.contains("table_run_succeeded"), "{logs}");

    // jobs: one line per run id across its tables; logs and runs without looking up a run id.
    let jobs = cli.json(&["jobs", "acme", "--json"]).await;
    let jobs = jobs.as_array().unwrap();
    assert!(jobs.len() >= 3, "{jobs:?}");
    assert_eq!(jobs[0]["started_by"], "manual");
    let started: Vec<&str> = jobs.iter().map(|j| j["started_at"].as_str().unwrap()).collect();
    assert!(started.windows(2).all(|w| w[0] >= w[1]), "newest first: {started:?}");
    assert!(jobs.iter().any(|j| j["tables"]["parties"] == "failed"), "the failed run is a job too");
    let table = cli.ok(&["jobs", "acme"]).await;
    assert!(table.contains("succeeded") && table.contains("manual"), "{table}");
    let parties_runs = cli.json(&["runs", "acme", "--table", "parties", "--json"]).await;
    assert!(parties_runs.as_array().unwrap().iter().all(|r| r["table"] == "parties"));
    let newest = cli.ok(&["logs", "--integration", "acme", "--table", "parties"]).await;
    let newest_run = parties_runs[0]["run_id"].as_str().unwrap();
    assert!(newest.starts_with(&format!("run {newest_run} of acme")) && newest.contains("parties-001"), "{newest}");

    // check: token, rate limit, readable tables.
    let check = cli.ok(&["check", "acme"]).await;
    assert!(
        check.contains("token:") && check.contains("rate limit:") && check.contains("all 3 tables readable"),
        "{check}"
    );

    // warehouse: the kit for the integration's selection and its real layout.
    let kits = tempfile::tempdir().unwrap();
    let out_dir = kits.path().join("snowflake");
    let out_dir = out_dir.to_str().unwrap();
    cli.fails(&["warehouse", "acme", "--engine", "oracle"], "unknown warehouse engine `oracle`").await;
    cli.fails(&["warehouse", "acme", "--engine", "redshift", "--load", "x.duckdb"], "--load runs the DuckDB kit").await;
    let written = cli.ok(&["warehouse", "acme", "--engine", "snowflake", "--out", out_dir]).await;
    assert_eq!(written.lines().count(), 3, "setup, load and views: {written}");
    let load = std::fs::read_to_string(kits.path().join("snowflake/load.sql")).unwrap();
    assert!(load.contains("COPY INTO \"acme_parties\"") && load.contains("COPY INTO \"acme_opportunities\""), "{load}");
    assert!(!load.contains("acme_cases"), "only the selected tables");
    let setup = std::fs::read_to_string(kits.path().join("snowflake/setup.sql")).unwrap();
    assert!(setup.contains("\"name\" VARCHAR") && !setup.contains("\"username\""), "users=id,name only: {setup}");
    if cli.args[0] == "--data-dir" {
        // Locally the DuckDB kit can run at once; its view holds the account's parties.
        let db = kits.path().join("acme.duckdb");
        let duckdb_dir = kits.path().join("duckdb");
        let args = ["warehouse", "acme", "--engine", "duckdb", "--out", duckdb_dir.to_str().unwrap()];
        let out = cli.ok(&args.iter().copied().chain(["--load", db.to_str().unwrap()]).collect::<Vec<_>>()).await;
        assert!(out.contains("Loaded into"), "{out}");
        let duckdb = std::env::var("CAPSULE_DUCKDB").unwrap_or_else(|_| "duckdb".into());
        let parties = std::process::Command::new(duckdb)
            .args([db.to_str().unwrap(), "-noheader", "-csv", "-c", "SELECT count(*) FROM acme_parties_current"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&parties.stdout).trim(), counts["parties"].to_string());
    }

    // delete: asks first (no terminal here → refuse), then removes state and files.
    cli.fails(&["integrations", "delete", "acme", "--purge-data"], "--yes").await;
    assert!(cli.run(&["integrations", "show", "acme"]).await.ok, "not deleted without confirmation");
    let out = cli.ok(&["integrations", "delete", "acme", "--purge-data", "--yes"]).await;
    assert!(out.contains("deleted"), "{out}");
    cli.fails(&["integrations", "show", "acme"], "no integration named `acme`").await;
    cli.fails(&["sync", "acme"], "no integration").await;
}

#[tokio::test]
async fn operator_workflow_on_the_local_backend() {
    let sim = start_sim(200, |c| c.token = "test-token".into()).await;
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::local(dir.path());
    // A wrong token is caught when creating (unless --no-check).
    let base = sim.base_url();
    let wrong = cli
        .run_with(
            &["integrations", "create", "x", "--token", "env:WRONG", "--api-base-url", base],
            &[("WRONG", "nope")],
        )
        .await;
    assert!(!wrong.ok && wrong.stderr.contains("401"), "{}", wrong.stderr);
    operator_workflow(&cli, &sim, "env:CAPSULE_TEST_TOKEN").await;
    let output = dir.path().join("output");
    let leftovers: Vec<_> = walk(&output).into_iter().filter(|p| p.contains("/acme")).collect();
    assert!(leftovers.is_empty(), "purged: {leftovers:?}");
}

#[tokio::test]
async fn operator_workflow_on_the_aws_backend() {
    let sim = start_sim(200, |c| c.token = "test-token".into()).await;
    let stack = AwsStack::new().await;
    let prefix = format!("{}/", unique("capsule-sync/cli"));
    let secret = create_secret_named(&stack.clients, &format!("{prefix}acme"), json!({"token": "test-token"})).await;
    let other = create_secret_named(&stack.clients, &format!("{prefix}other"), json!({"token": "test-token"})).await;
    // The workflow points the integration at a wrong path once (a failing run): allowed too.
    let cli = Cli::aws(&stack, &prefix, &format!("{0},{0}/wrong", sim.base_url()));
    let base = sim.base_url();

    // What an AWS deployment refuses, before anything is read or sent.
    let before = sim.stats().total;
    let create = |token: &str, url: &str| {
        let args = ["integrations", "create", "acme", "--token", token, "--api-base-url", url];
        args.map(str::to_string)
    };
    let refused = [
        (create("env:AWS_SECRET_ACCESS_KEY", base), "not allowed on the AWS backend"),
        (create("file:/proc/self/environ", base), "not allowed on the AWS backend"),
        (create(&format!("secretsmanager:{other}"), base), "not integration `acme`'s own secret"),
        (
            create(&format!("secretsmanager:{secret}"), "https://collector.example/api/v2"),
            "not allowed by this deployment",
        ),
        (create(&format!("secretsmanager:{secret}"), "http://10.1.2.3/api/v2"), "plain http"),
    ];
    let too_often: Vec<String> = create(&format!("secretsmanager:{secret}"), base)
        .into_iter()
        .chain(["--frequency".into(), "5m".into()])
        .collect();
    let too_often: Vec<&str> = too_often.iter().map(String::as_str).collect();
    cli.fails(&too_often, "shorter than the scheduler's tick (15 minutes)").await;
    for (args, why) in &refused {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli.fails(&args, why).await;
    }
    assert_eq!(sim.stats().total, before, "no request reached any API");
    assert!(!cli.ok(&["integrations", "list"]).await.contains("acme"), "nothing stored");

    operator_workflow(&cli, &sim, &format!("secretsmanager:{secret}")).await;
    let keys = stack.keys().await;
    assert!(keys.iter().all(|k| !k.contains("acme")), "purged from S3: {keys:?}");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// `kill -9` in the middle of a sync: the next sync takes the table over at once (the dead
/// process's lease is not waited out), removes the killed run's files and loads everything.
/// A table skipped because a live process holds it makes `sync` exit non-zero.
#[tokio::test]
async fn a_sync_killed_with_sigkill_is_taken_over_at_once() {
    use capsule_core::integration::RunId;
    use capsule_core::ports::{Lease, LeaseOwner, StateStore};
    use capsule_local::StateFile;
    use capsule_sync_e2e::slow_pages;

    let sim = start_sim(1500, |c| c.token = "test-token".into()).await;
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::local(dir.path());
    let base = sim.base_url();
    cli.ok(&["integrations", "create", "acme", "--token", "env:CAPSULE_TEST_TOKEN", "--api-base-url", base]).await;
    cli.ok(&["integrations", "edit", "acme", "--tables", "parties"]).await;
    sim.add_fault(slow_pages("/parties", 300));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_capsule-sync"))
        .args(&cli.args)
        .args(["sync", "acme", "--part-size-mb", "1"])
        .envs(cli.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while sim.stats().count("GET /parties") < 4 {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "the sync never got going");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child.kill().await.unwrap(); // SIGKILL: no cleanup at all
    let state = StateFile::new(dir.path());
    assert_eq!(state.table_states("acme").await.unwrap().len(), 1, "the dead process's lease is left behind");
    let status = cli.ok(&["status", "acme"]).await;
    assert!(status.contains("stranded (the next sync takes it over)"), "{status}");
    assert_eq!(cli.json(&["status", "acme", "--json"]).await["parties"]["stranded"], true);

    sim.clear_faults();
    let started = std::time::Instant::now();
    let out = cli.run(&["sync", "acme"]).await;
    assert!(out.ok, "no skip, no wait for the lease to expire: {}", out.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert!(out.stderr.contains("lease_taken_over"), "{}", out.stderr);
    let runs = state.runs(Some("acme"), 10).await.unwrap();
    let killed = runs.iter().find(|r| r.state == capsule_core::ports::RunState::Failed).expect("killed run");
    assert!(killed.error.as_ref().unwrap().message.contains("abandoned"), "{killed:?}");
    let data = walk(&dir.path().join("output").join("acme").join("parties"));
    assert!(data.iter().all(|p| !p.contains(&format!("run={}", killed.run_id))), "{data:?}");
    assert_eq!(cli.last_rows("acme").await["parties"].1 as usize, expected_counts(&sim)["parties"]);
    assert_eq!(cli.json(&["status", "acme", "--json"]).await["parties"]["stranded"], false);

    // A live holder (this test process): the table is skipped and sync says so with a failure.
    let now = chrono::Utc::now();
    let holder =
        Lease::first("acme", "parties", LeaseOwner::draw(&RunId::new(now)), now, std::time::Duration::from_secs(600));
    state.acquire_lease(&holder).await.unwrap();
    let out = cli.run(&["sync", "acme"]).await;
    assert!(!out.ok, "a skipped table is not a success");
    let names_the_holder = out.stderr.contains(&holder.owner.to_string());
    assert!(out.stderr.contains("skipped") && names_the_holder, "{}", out.stderr);
}

/// A table stopped by a spent rate-limit window shows in `status` as waiting, with when it
/// resumes.
#[tokio::test]
async fn status_shows_a_table_waiting_for_its_rate_limit_window() {
    use capsule_client::{CapsuleClient, ClientOptions};
    use capsule_core::integration::RunId;
    use capsule_core::ports::{RunState, StateStore};
    use capsule_engine::engine::{RunOptions, RunPorts, TableRun};
    use capsule_engine::lifecycle::Invocation;
    use capsule_local::{LocalSink, StateFile};

    // Two requests per minute: the third has to wait for the window.
    let sim = start_sim(300, |c| {
        c.token = "test-token".into();
        c.rate_limit = 2;
        c.rate_window = std::time::Duration::from_secs(60);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::local(dir.path());
    let base = sim.base_url();
    cli.ok(&[
        "integrations",
        "create",
        "acme",
        "--token",
        "env:CAPSULE_TEST_TOKEN",
        "--api-base-url",
        base,
        "--no-check",
    ])
    .await;
    let state = StateFile::new(dir.path());
    let sink = LocalSink::new(dir.path().join("output"));
    let integration = state.get_integration("acme").await.unwrap().unwrap();
    // A client that never waits in place (as on Lambda, scaled down).
    let options = ClientOptions {
        max_inline_wait: std::time::Duration::ZERO,
        access: capsule_client::access::AccessPolicy::local_allowing(&[]).unwrap(),
        ..ClientOptions::default()
    };
    let client = CapsuleClient::new(base, "test-token".to_string().into(), options).unwrap();
    let run_id = RunId::new(chrono::Utc::now());
    let run = TableRun {
        client: &client,
        deps: RunPorts { state: &state, sink: &sink },
        integration: &integration,
        table: capsule_core::catalog::table("entries").unwrap(),
        run_id: &run_id,
        options: RunOptions::default(),
        progress: None,
        deadline: None,
        kill_at: None,
        invocation: Invocation::First,
    };
    let outcome = run.run().await;
    assert_eq!(outcome.record.state, RunState::Continued, "{:?}", outcome.error);
    let resumes = outcome.record.resumes_at.expect("a waiting run says when it resumes");

    let status = cli.ok(&["status", "acme"]).await;
    let line = status.lines().find(|l| l.contains("entries")).unwrap_or_default().to_string();
    let expected = format!("parked until {}", resumes.format("%Y-%m-%d %H:%M:%S"));
    assert!(line.contains(&expected), "{status}");
    assert!(!line.contains("overdue"), "{status}");

    // In progress for longer than the deployment allows (scaled down: 0.36 s): overdue.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let impatient =
        Cli { env: [cli.env.clone(), vec![("CAPSULE_RUN_OVERDUE_HOURS".into(), "0.0001".into())]].concat(), ..cli };
    let status = impatient.ok(&["status", "acme"]).await;
    let line = status.lines().find(|l| l.contains("entries")).unwrap_or_default().to_string();
    assert!(line.contains("overdue: in progress since"), "{status}");
    let invalid = Cli { env: vec![("CAPSULE_RUN_OVERDUE_HOURS".into(), "soon".into())], ..impatient };
    invalid
        .fails(&["status", "acme"], "CAPSULE_RUN_OVERDUE_HOURS must be a positive number of hours, not `soon`")
        .await;
}

/// Small things an operator would trip on, each fixed: a changed token is checked before it is
/// stored; `sync --tables` refuses a table the integration does not select; an email/password
/// token gets its own explanation; a token that cannot be read still leaves failed run records;
/// resuming after a backfill keeps an integration that loaded data `active`; the demo's hints
/// name the binary as it was started.
#[tokio::test]
async fn operator_paper_cuts_are_fixed() {
    let sim = start_sim(100, |c| c.token = "test-token".into()).await;
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::local(dir.path());
    let base = sim.base_url();
    cli.ok(&["integrations", "create", "acme", "--token", "env:CAPSULE_TEST_TOKEN", "--api-base-url", base]).await;
    cli.ok(&["integrations", "edit", "acme", "--tables", "users,teams"]).await;

    let bad = cli.run_with(&["integrations", "edit", "acme", "--token", "env:WRONG"], &[("WRONG", "nope")]).await;
    assert!(!bad.ok && bad.stderr.contains("401"), "{}", bad.stderr);
    assert_eq!(cli.show("acme").await["token"]["var"], "CAPSULE_TEST_TOKEN", "the unchecked token was not stored");

    cli.fails(&["sync", "acme", "--tables", "cases"], "does not sync cases").await;
    cli.fails(
        &["integrations", "create", "x", "--token", "me@example.com:hunter2", "--api-base-url", base],
        "looks like an email",
    )
    .await;
    let out = cli.run(&["integrations", "create", "x", "--token", "me@example.com:hunter2"]).await;
    assert!(!out.stderr.contains("hunter2"), "the password is never echoed: {}", out.stderr);

    // The token cannot be read: the sync fails, and the run history says why.
    let unreadable = cli.run_with(&["sync", "acme"], &[("CAPSULE_TEST_TOKEN", "")]).await;
    assert!(!unreadable.ok && unreadable.stderr.contains("CAPSULE_TEST_TOKEN"), "{}", unreadable.stderr);
    let runs = cli.json(&["runs", "acme", "--json"]).await;
    let failed: Vec<&Value> = runs.as_array().unwrap().iter().filter(|r| r["state"] == "failed").collect();
    assert_eq!(failed.len(), 2, "one failed record per table: {runs}");
    assert!(failed.iter().all(|r| r["error"]["error_type"] == "CredentialsError"), "{runs}");
    assert!(cli.ok(&["status", "acme"]).await.contains("CredentialsError"));

    // Loaded once, then a backfill drops every bookmark: resume says active, not pending.
    cli.ok(&["sync", "acme"]).await;
    cli.ok(&["integrations", "edit", "acme", "--history-start", "2001-01-01"]).await;
    cli.ok(&["integrations", "pause", "acme"]).await;
    assert!(cli.ok(&["integrations", "resume", "acme"]).await.contains("now active"));

    let demo = cli.run(&["demo", "--parties", "30"]).await;
    assert!(demo.ok, "{}", demo.stderr);
    let hint = format!("{} --data-dir", env!("CARGO_BIN_EXE_capsule-sync"));
    assert!(demo.stdout.contains(&hint), "the hint runs on this machine: {}", demo.stdout);
}

/// `run-due` syncs the integrations whose frequency has elapsed, and only those: a second pass
/// right after finds nothing due, a paused integration never runs.
#[tokio::test]
async fn run_due_syncs_only_due_integrations() {
    let sim = start_sim(50, |c| c.token = "test-token".into()).await;
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::local(dir.path());
    let base = sim.base_url();
    for (name, table) in [("acme", "users"), ("beta", "teams"), ("gamma", "users")] {
        let create = ["integrations", "create", name, "--token", "env:CAPSULE_TEST_TOKEN", "--api-base-url", base];
        cli.ok(&create).await;
        cli.ok(&["integrations", "edit", name, "--tables", table, "--frequency", "1h"]).await;
    }
    cli.ok(&["integrations", "pause", "gamma"]).await;
    let first = cli.ok(&["run-due"]).await;
    assert!(first.contains("acme: synced") && first.contains("beta: synced"), "{first}");
    assert!(first.contains("gamma: paused"), "{first}");
    let second = cli.ok(&["run-due"]).await;
    assert!(second.contains("acme: not due until") && second.contains("beta: not due until"), "{second}");
    let jobs = cli.json(&["jobs", "acme", "--json"]).await;
    assert_eq!(jobs.as_array().unwrap().len(), 1, "one sync of acme: {jobs}");
    assert_eq!(jobs[0]["started_by"], "schedule");
    assert!(cli.json(&["runs", "gamma", "--json"]).await.as_array().unwrap().is_empty());
}

/// A sync of every table by hand is the integration's last run for `run-due` (the schedule
/// counts from it); a sync of some tables, or one with `--no-schedule`, is not. `status` shows
/// every integration with its last job, its next due time and why.
async fn manual_syncs_count_for_the_schedule(cli: &Cli, base: &str, token: impl Fn(&str) -> String) {
    for name in ["whole", "part", "unscheduled"] {
        let token = token(name);
        let create = ["integrations", "create", name, "--token", &token, "--api-base-url", base];
        cli.ok(&create).await;
        cli.ok(&["integrations", "edit", name, "--tables", "users,teams", "--frequency", "1d"]).await;
    }
    cli.ok(&["sync", "whole"]).await;
    cli.ok(&["sync", "part", "--tables", "users"]).await;
    cli.ok(&["sync", "unscheduled", "--no-schedule"]).await;

    let due = cli.ok(&["run-due"]).await;
    assert!(due.contains("whole: not due until"), "the manual sync counts:\n{due}");
    assert!(due.contains("part: synced"), "a partial sync does not:\n{due}");
    assert!(due.contains("unscheduled: synced"), "--no-schedule does not:\n{due}");
    let jobs = cli.json(&["jobs", "whole", "--json"]).await;
    assert_eq!(jobs.as_array().unwrap().len(), 1, "one sync of `whole`: {jobs}");
    assert_eq!(jobs[0]["started_by"], "manual");
    let jobs = cli.json(&["jobs", "part", "--json"]).await;
    let started: Vec<&str> = jobs.as_array().unwrap().iter().map(|j| j["started_by"].as_str().unwrap()).collect();
    assert_eq!(started, ["schedule", "manual"], "{jobs}");

    let status = cli.json(&["status", "--json"]).await;
    let whole = status.as_array().unwrap().iter().find(|l| l["integration"] == "whole").unwrap();
    assert_eq!(whole["last_job"]["started_by"], "manual", "{whole}");
    assert_eq!(whole["last_job"]["result"], "2 succeeded", "{whole}");
    let why = whole["next_due"]["why"].as_str().unwrap();
    assert_eq!(why, "1d after the manual run");
    let next = whole["next_due"]["at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    let hours = (next - chrono::Utc::now()).num_hours();
    assert!((22..24).contains(&hours), "due a day (less the slack) after the manual sync: {next}");
    let screen = cli.ok(&["status"]).await;
    for expected in ["whole", "(manual)", "2 succeeded", "1d after the manual run", "status NAME"] {
        assert!(screen.contains(expected), "`{expected}` in:\n{screen}");
    }
}

#[tokio::test]
async fn manual_syncs_count_for_the_schedule_on_the_local_backend() {
    let sim = start_sim(50, |c| c.token = "test-token".into()).await;
    let dir = tempfile::tempdir().unwrap();
    manual_syncs_count_for_the_schedule(&Cli::local(dir.path()), sim.base_url(), |_| "env:CAPSULE_TEST_TOKEN".into())
        .await;
}

#[tokio::test]
async fn manual_syncs_count_for_the_schedule_on_the_aws_backend() {
    let sim = start_sim(50, |c| c.token = "test-token".into()).await;
    let stack = AwsStack::new().await;
    let prefix = format!("{}/", unique("capsule-sync/manual"));
    let mut secrets = BTreeMap::new();
    for name in ["whole", "part", "unscheduled"] {
        let arn = create_secret_named(&stack.clients, &format!("{prefix}{name}"), json!({"token": "test-token"})).await;
        secrets.insert(name, format!("secretsmanager:{arn}"));
    }
    let cli = Cli::aws(&stack, &prefix, sim.base_url());
    manual_syncs_count_for_the_schedule(&cli, sim.base_url(), |name| secrets[name].clone()).await;
}

/// `schedule` stays up and syncs what is due; Ctrl-C while a sync is running lets it finish
/// (no lease left behind, nothing half-written) and exits cleanly.
#[tokio::test]
async fn schedule_stops_cleanly_on_ctrl_c() {
    use capsule_core::ports::StateStore;
    use capsule_local::StateFile;

    let sim = start_sim(50, |c| c.token = "test-token".into()).await;
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::local(dir.path());
    let create =
        ["integrations", "create", "acme", "--token", "env:CAPSULE_TEST_TOKEN", "--api-base-url", sim.base_url()];
    cli.ok(&create).await;
    cli.ok(&["integrations", "edit", "acme", "--tables", "users"]).await;
    sim.add_fault(capsule_sync_e2e::slow_pages("/users", 1500));
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_capsule-sync"))
        .args(&cli.args)
        .args(["schedule", "--tick", "1"])
        .envs(cli.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let state = StateFile::new(dir.path());
    let started = std::time::Instant::now();
    while state.table_states("acme").await.unwrap().is_empty() {
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "the sync never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let out =
        tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("acme: synced") && stdout.trim_end().ends_with("stopped"), "{stdout}");
    assert!(state.table_states("acme").await.unwrap().is_empty(), "no lease left behind");
    let runs = state.runs(Some("acme"), 10).await.unwrap();
    assert_eq!(runs[0].state, capsule_core::ports::RunState::Succeeded, "the sync in progress finished: {runs:?}");
}

/// The original spec's column names: misspellings select their column, names Capsule does not
/// provide are refused with the reason, and `catalog --spec` prints the mapping.
#[tokio::test]
async fn the_spec_mapping_is_printed_and_spec_columns_get_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::local(dir.path());
    let mapping = cli.json(&["catalog", "--spec", "--json"]).await;
    let find = |table: &str, column: &str| {
        mapping.as_array().unwrap().iter().find(|m| m["table"] == table && m["spec_column"] == column).cloned()
    };
    assert_eq!(find("users", "taskRemainder").unwrap()["column"], "taskReminder");
    assert_eq!(find("parties", "lastContactAt").unwrap()["column"], "lastContactedAt");
    let description = find("teams", "description").unwrap();
    assert!(description["column"].is_null() && description["not_provided"].as_str().unwrap().contains("not in"));
    assert!(find("teams", "memberships").is_none(), "memberships is a column of the same name");
    let team = find("parties", "team").unwrap();
    assert_eq!(team["column"], "team");
    assert!(team["type_differs"].as_str().unwrap().contains("NUMERIC in the spec, a RECORD here"), "{team}");
    let create = ["integrations", "create", "acme", "--token", "env:CAPSULE_TEST_TOKEN", "--no-check"];
    let with = |columns: &'static str| create.iter().copied().chain(["--columns", columns]).collect::<Vec<_>>();
    cli.fails(&with("entries=id,firstname"), "not provided by Capsule API v2").await;
    cli.ok(&with("users=id,taskRemainder,clickToCallPrefrence")).await;
    let show = cli.show("acme").await;
    assert_eq!(show["columns"]["users"], serde_json::json!(["id", "taskRemainder", "clickToCallPrefrence"]));
}
