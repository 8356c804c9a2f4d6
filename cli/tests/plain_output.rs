//! Output that fits where it goes, through the real `capsule-sync` binary with stdout and stderr
//! captured (not a terminal): no escape byte unless `--color always` asks for one, and the
//! demo's screen is its steps and summaries, its logs left to the run logs.

mod support;

use std::path::Path;

use capsule_sync_e2e::start_sim;
use support::Out;

/// `capsule-sync` with the tests' token in its environment.
async fn capsule_sync(dir: &Path, args: &[&str]) -> Out {
    support::capsule_sync(dir, args, &[("PLAIN_TEST_TOKEN", "test-token")]).await
}

const ESCAPE: char = '\u{1b}';

#[tokio::test]
async fn off_a_terminal_nothing_carries_escape_codes_unless_asked() {
    let sim = start_sim(100, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let create =
        ["integrations", "create", "acme", "--token", "env:PLAIN_TEST_TOKEN", "--api-base-url", sim.base_url()];
    assert!(capsule_sync(dir.path(), &create).await.ok);

    // Debug logs, the summary table and the status table: all plain.
    let sync = capsule_sync(dir.path(), &["-v", "sync", "acme", "--tables", "parties,users"]).await;
    assert!(sync.ok, "{}", sync.stderr);
    assert!(sync.stderr.contains("DEBUG") && sync.stderr.contains("INFO"), "logs are there:\n{}", sync.stderr);
    let status = capsule_sync(dir.path(), &["status", "acme"]).await;
    for (what, text) in [("sync stdout", &sync.stdout), ("sync stderr", &sync.stderr), ("status", &status.stdout)] {
        assert!(!text.contains(ESCAPE), "{what} holds an escape code:\n{text}");
    }

    // The flag wins over the guess.
    let always = capsule_sync(dir.path(), &["-v", "--color", "always", "sync", "acme", "--tables", "users"]).await;
    assert!(always.ok && always.stderr.contains(ESCAPE), "--color always colours the logs:\n{}", always.stderr);
    sim.stop().await;
}

#[tokio::test]
async fn the_demo_shows_its_steps_and_summaries_not_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let demo = capsule_sync(dir.path(), &["demo", "--parties", "60"]).await;
    assert!(demo.ok, "{}\n{}", demo.stdout, demo.stderr);
    for step in ["== Run 1", "== Changing the account ==", "== Run 2", "updated", "cases"] {
        assert!(demo.stdout.contains(step), "`{step}` in:\n{}", demo.stdout);
    }
    assert!(!demo.stdout.contains("Kases"), "users read `cases`:\n{}", demo.stdout);
    let log_lines: Vec<&str> = demo.stderr.lines().filter(|l| l.contains(" INFO ")).collect();
    assert!(log_lines.is_empty(), "INFO lines go to the run logs, not the screen: {log_lines:?}");
    assert!(!demo.stdout.contains(ESCAPE) && !demo.stderr.contains(ESCAPE));

    // `--verbose` shows them.
    let verbose = capsule_sync(dir.path(), &["-v", "demo", "--parties", "60"]).await;
    assert!(verbose.ok && verbose.stderr.contains(" INFO "), "{}", verbose.stderr);
}
