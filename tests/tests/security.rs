//! Where a token may go and where it may not be found. A next-page link to another host is not
//! followed (the host never sees a request); a full serverless sync with an OAuth secret, logged
//! at trace level, leaves the access token, the client secret and the refresh tokens nowhere:
//! not in the logs, the bucket, the state table or the functions' answers.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use capsule_core::ports::{RunState, StateStore};
use capsule_engine::engine::RunOptions;
use capsule_sync_e2e::aws::TokenEndpoint;
use capsule_sync_e2e::serverless::{Setup, world_with};
use capsule_sync_e2e::*;
use serde_json::json;

/// A TCP listener that counts the connections it accepts (and answers none).
async fn recording_listener() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/v2", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (base, accepted)
}

#[tokio::test]
async fn a_next_page_link_to_another_host_fails_the_run_and_sends_nothing_there() {
    let sim = start_sim(250, |_| {}).await;
    let (elsewhere, accepted) = recording_listener().await;
    sim.set_link_base(Some(&elsewhere));
    let local = Local::new();
    let integration = integration_for(&sim, "acme", "UNUSED");
    let client = client_for(&sim, "test-token");
    let (run_id, outcomes) = local.sync(&client, &integration, &["parties"], RunOptions::default()).await;

    let outcome = &outcomes[0];
    assert_eq!(outcome.record.state, RunState::Failed);
    let message = outcome.error.as_ref().unwrap().to_string();
    assert!(message.contains(&elsewhere) && message.contains("not followed"), "{message}");
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection reached the other host");
    assert_eq!(sim.stats().count("GET /parties"), 1, "only the first page was fetched");
    assert!(local.state.bookmark("acme", "parties").await.unwrap().is_none(), "no bookmark moved");
    assert!(local.run_files("acme", "parties", &run_id).is_empty(), "no file published");
}

/// Everything the process logs, at every level.
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .init();
        logs
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serverless_sync_at_trace_level_leaves_no_oauth_secret_anywhere() {
    let logs = captured_logs();
    const ACCESS: &str = "at-8c1f4e2a9b7d5036";
    const CLIENT_SECRET: &str = "cs-3e9b1d7f5a2c8064";
    const REFRESH: &str = "rt-6a2d8f0c4e1b9357";
    let endpoint = TokenEndpoint::start(ACCESS, REFRESH).await;
    let mut setup = Setup::new(200);
    setup.capsule_token = ACCESS.into();
    setup.secret = json!({"client_id": "capsule-sync-app", "client_secret": CLIENT_SECRET, "refresh_token": REFRESH});
    setup.oauth_token_url = Some(endpoint.url());
    let w = world_with(setup).await;

    let summary = w.invoke("orchestrator", json!({"integration": "acme", "force": true})).await;
    w.lambda.wait_idle().await;
    let runs = w.stack.state.runs(Some("acme"), 100).await.unwrap();
    let succeeded = runs.iter().filter(|r| r.state == RunState::Succeeded).count();
    assert_eq!(succeeded, 22, "every table loaded with the refreshed token: {runs:#?}");
    let refreshes = endpoint.calls.load(Ordering::SeqCst);
    assert!(refreshes >= 1, "the OAuth token was refreshed");

    // Every place a secret could end up.
    let mut places: Vec<(String, String)> = vec![("orchestrator answer".into(), summary.to_string())];
    places.push(("logs".into(), String::from_utf8_lossy(&logs.lock().unwrap()).into_owned()));
    places.push(("Lambda errors".into(), w.lambda.errors().join("\n")));
    for key in w.stack.keys().await {
        let bytes = w.stack.object(&key).await;
        let text = if key.ends_with(".gz") {
            let mut text = String::new();
            flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut text).unwrap();
            text
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        places.push((format!("s3://{}", key), text));
    }
    let items = w.stack.clients.dynamodb.scan().table_name(&w.stack.table).send().await.unwrap();
    places.push(("the state table".into(), format!("{:?}", items.items())));

    let log = &places[1].1;
    assert!(log.contains("capsule_request") && log.contains("TRACE"), "trace logging was on");
    assert!(places.len() > 22, "the bucket holds the run's files");
    let mut secrets = vec![ACCESS.to_string(), CLIENT_SECRET.to_string(), REFRESH.to_string()];
    secrets.extend((1..=refreshes).map(|n| format!("refresh-{n}")));
    for (place, text) in &places {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "a secret ({}…) is in {place}", &secret[..4]);
        }
    }
}

/// Whoever can write an integration item cannot make table-sync read the function's environment,
/// a file, or another integration's secret, nor send a token to a host the deployment did not
/// allow: each is refused before any request, and the refusal is recorded for the operator.
#[tokio::test]
async fn table_sync_refuses_token_sources_and_hosts_the_deployment_does_not_allow() {
    use capsule_core::integration::{Integration, RunId, TokenSource};
    use capsule_sync_e2e::aws::create_secret_named;

    let w = capsule_sync_e2e::serverless::world(50).await;
    let other_secret = format!("{}other", w.secret_prefix);
    create_secret_named(&w.stack.clients, &other_secret, json!({"token": "test-token"})).await;
    let own_secret = format!("{}evil", w.secret_prefix);
    create_secret_named(&w.stack.clients, &own_secret, json!({"token": "test-token"})).await;
    let cases = [
        (
            TokenSource::Env { var: "AWS_SECRET_ACCESS_KEY".into() },
            w.sim.base_url().to_string(),
            "not allowed on the AWS backend",
        ),
        (
            TokenSource::File { path: "/proc/self/environ".into() },
            w.sim.base_url().to_string(),
            "not allowed on the AWS backend",
        ),
        (
            TokenSource::SecretsManager { secret_id: other_secret },
            w.sim.base_url().to_string(),
            "not integration `evil`'s own secret",
        ),
        (
            TokenSource::SecretsManager { secret_id: own_secret },
            "https://collector.example/api/v2".into(),
            "not allowed by this deployment",
        ),
    ];
    let before = w.sim.stats().total;
    for (token, url, why) in cases {
        let _ = w.stack.state.delete_integration("evil").await;
        let mut evil = Integration::new("evil".parse().unwrap(), token.clone(), chrono::Utc::now());
        evil.api_base_url = url;
        w.stack.state.create_integration(&evil).await.unwrap();
        let event = json!({"integration": "evil", "table": "users", "run_id": RunId::new(chrono::Utc::now())});
        assert_eq!(w.send_event("table-sync", &event).await, 202);
        w.lambda.wait_idle().await;
        let runs = w.stack.state.runs(Some("evil"), 1).await.unwrap();
        assert_eq!(runs.len(), 1, "{token}: one record, no retry");
        let error = runs[0].error.as_ref().expect("the refusal is recorded");
        assert!(error.message.contains(why), "{token}: {}", error.message);
        assert_eq!(error.fault, capsule_core::Fault::User, "the operator must act");
    }
    assert_eq!(w.sim.stats().total, before, "no request was sent anywhere");
    assert!(w.lambda.errors().is_empty(), "a refusal is not retried: {:?}", w.lambda.errors());
}
