//! A wrong setup is found on the first request, through the real `capsule-sync` binary: a
//! refused connection, a failed TLS handshake or a refused token fails each table at once (one
//! request, no retries) with a one-line diagnosis and its fix, in `sync` and in `check`. Once
//! Capsule has answered, the same failures are an outage and keep the retry policy. (An unknown
//! host is classified in `capsule::retry`'s tests, with a resolver that asks no DNS server.)

mod support;

use std::path::Path;

use capsule_core::SyncError;
use capsule_sync_e2e::{client_for, start_sim};
use serde_json::Value;
use support::Out;

/// `capsule-sync` with the tests' token in its environment.
async fn capsule_sync(dir: &Path, args: &[&str]) -> Out {
    support::capsule_sync(dir, args, &[("SETUP_TEST_TOKEN", "test-token")]).await
}

/// Creates `acme` against `url` (unchecked), syncs two tables and checks it: both fail with
/// `diagnosis` and `fix`, each table after one request and no retry.
async fn fails_at_once(url: &str, token: &str, diagnosis: &str, fix: &str) {
    let dir = tempfile::tempdir().unwrap();
    let create = ["integrations", "create", "acme", "--token", token, "--api-base-url", url, "--no-check"];
    let created = capsule_sync(dir.path(), &create).await;
    assert!(created.ok, "{}", created.stderr);

    let sync = capsule_sync(dir.path(), &["sync", "acme", "--tables", "parties,users"]).await;
    assert!(!sync.ok, "the sync fails");
    for table in ["parties", "users"] {
        let line = sync.stderr.lines().find(|l| l.contains(&format!("{table} failed"))).unwrap_or_else(|| {
            panic!("a line for {table} in:\n{}", sync.stderr);
        });
        assert!(line.contains(diagnosis) && line.contains(fix), "{line}");
    }
    let runs = capsule_sync(dir.path(), &["runs", "acme", "--json"]).await;
    let runs: Value = serde_json::from_str(&runs.stdout).unwrap();
    for run in runs.as_array().unwrap() {
        assert_eq!(run["state"], "failed", "{run}");
        assert_eq!(run["retries"], 0, "a wrong setup is not retried: {run}");
        assert!(run["requests"].as_u64().unwrap() <= 2, "one request (and one after re-reading the token): {run}");
        assert_eq!(run["error"]["fault"], "user", "{run}");
    }

    let check = capsule_sync(dir.path(), &["check", "acme"]).await;
    assert!(!check.ok && check.stderr.contains(diagnosis) && check.stderr.contains(fix), "{}", check.stderr);
}

#[tokio::test]
async fn a_refused_connection_fails_each_table_at_once_with_the_fix() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    fails_at_once(&url, "env:SETUP_TEST_TOKEN", "connection refused", "check the host and port of --api-base-url")
        .await;
}

#[tokio::test]
async fn a_failed_tls_handshake_fails_each_table_at_once_with_the_fix() {
    // Plain HTTP where the URL says https.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
        }
    });
    let url = format!("https://127.0.0.1:{port}");
    fails_at_once(&url, "env:SETUP_TEST_TOKEN", "TLS handshake failed", "check the scheme of --api-base-url").await;
}

#[tokio::test]
async fn a_refused_token_fails_each_table_at_once_with_the_fix() {
    let sim = start_sim(50, |c| c.token = "another-token".into()).await;
    fails_at_once(sim.base_url(), "env:SETUP_TEST_TOKEN", "Capsule rejected the API token (HTTP 401)", "token").await;
    sim.stop().await;
}

#[tokio::test]
async fn once_capsule_has_answered_a_refused_connection_is_retried() {
    let sim = start_sim(50, |_| {}).await;
    let client = client_for(&sim, "test-token");
    let users = client.url("/users", &[]).unwrap();
    client.get_json(&users).await.expect("Capsule answers the first request");
    sim.stop().await;
    let error = client.get_json(&users).await.unwrap_err();
    assert!(matches!(error, SyncError::Unavailable { .. }), "an outage after every retry: {error}");
    let retries = client.stats().retries;
    assert_eq!(retries, 6, "the retry policy's six retries");
}
