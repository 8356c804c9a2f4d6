//! The live view through the real `capsule-sync` binary under a pseudo-terminal of 120×20 (fewer
//! lines than the 22 tables), the screen rebuilt after every chunk of output by a terminal
//! emulator (vt100): no table is ever on screen twice, the view folds to the height, says which
//! tables wait for the rate-limit window, counts requests against the plan (`--plan`) with an
//! ETA, and is erased before the summary.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use capsule_core::catalog::TABLES;
use capsule_sync_e2e::start_sim;
use portable_pty::{CommandBuilder, PtySize, native_pty_system};

const ROWS: u16 = 20;
const COLS: u16 = 120;

/// What was seen on the emulated screen while the sync ran.
#[derive(Default)]
struct Seen {
    screens: usize,
    /// Screens on which some table's line appeared twice, with that screen.
    doubled: Vec<String>,
    rate_limit_waits: usize,
    folded: usize,
    /// Screens whose header counted requests against the plan, with an ETA.
    planned: usize,
    /// The first screen with a table waiting for the window (printed, for the README's capture).
    waiting_screen: Option<String>,
    final_screen: String,
}

/// The table a screen line is about, if it starts with a table's name.
fn table_of(line: &str) -> Option<&'static str> {
    let first = line.split_whitespace().next()?;
    TABLES.iter().map(|t| t.name).find(|t| *t == first)
}

fn look(screen: &vt100::Screen, seen: &mut Seen) {
    let lines: Vec<String> = screen.rows(0, COLS).collect();
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for table in lines.iter().filter_map(|l| table_of(l)) {
        *count.entry(table).or_default() += 1;
    }
    seen.screens += 1;
    let text = lines.join("\n");
    if count.values().any(|n| *n > 1) && seen.doubled.len() < 3 {
        seen.doubled.push(text.clone());
    }
    if text.contains("rate-limit window until") {
        seen.rate_limit_waits += 1;
        // The README's capture: one with the ETA, when there is one.
        if seen.waiting_screen.as_ref().is_none_or(|s| !s.contains(" ETA ") && lines[0].contains(" ETA ")) {
            seen.waiting_screen = Some(text.clone());
        }
    }
    seen.folded += usize::from(text.contains("finished:") || text.contains("more not shown"));
    seen.planned += usize::from(lines[0].contains(" requests, ETA "));
    seen.final_screen = text;
}

/// Runs `capsule-sync args` under a pty and watches its screen until it exits.
fn watch(dir: &Path, args: &[&str]) -> (bool, Seen) {
    let pty = native_pty_system()
        .openpty(PtySize { rows: ROWS, cols: COLS, pixel_width: 0, pixel_height: 0 })
        .expect("a pseudo-terminal");
    let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_capsule-sync"));
    command.arg("--data-dir");
    command.arg(dir);
    command.args(args);
    command.env("LIVE_TEST_TOKEN", "test-token");
    command.env("TERM", "xterm-256color");
    command.env_remove("NO_COLOR");
    let mut child = pty.slave.spawn_command(command).expect("the binary starts");
    drop(pty.slave);
    let mut reader = pty.master.try_clone_reader().unwrap();
    let mut parser = vt100::Parser::new(ROWS, COLS, 0);
    let mut seen = Seen::default();
    let mut buffer = [0u8; 4096];
    // Until the child has exited and its output is read (EIO or EOF once the slave is gone).
    while let Ok(n) = reader.read(&mut buffer) {
        if n == 0 {
            break;
        }
        parser.process(&buffer[..n]);
        look(parser.screen(), &mut seen);
        if child.try_wait().ok().flatten().is_some() && n < buffer.len() {
            // Drain what is left without blocking on a pty some systems keep open.
            drop(pty.master);
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            parser.process(&rest);
            look(parser.screen(), &mut seen);
            break;
        }
    }
    let ok = child.wait().map(|s| s.success()).unwrap_or(false);
    (ok, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_view_is_drawn_in_place_and_says_why_tables_wait() {
    // A tight rate limit: 22 tables need several windows.
    let sim = start_sim(400, |c| {
        c.rate_limit = 30;
        c.rate_window = std::time::Duration::from_secs(2);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let create = tokio::process::Command::new(env!("CARGO_BIN_EXE_capsule-sync"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["integrations", "create", "acme", "--token", "env:LIVE_TEST_TOKEN", "--api-base-url", sim.base_url()])
        .args(["--no-check", "--rate-reserve", "0"])
        .env("LIVE_TEST_TOKEN", "test-token")
        .output()
        .await
        .unwrap();
    assert!(create.status.success(), "{}", String::from_utf8_lossy(&create.stderr));

    let path = dir.path().to_path_buf();
    let (ok, seen) = tokio::task::spawn_blocking(move || watch(&path, &["sync", "acme", "--plan"])).await.unwrap();
    eprintln!("{}", seen.waiting_screen.as_deref().unwrap_or("no table waited"));
    assert!(ok, "the sync succeeds:\n{}", seen.final_screen);
    assert!(seen.doubled.is_empty(), "a table on screen twice:\n{}", seen.doubled.join("\n-----\n"));
    assert!(seen.screens > 20, "the view was drawn and redrawn ({} screens)", seen.screens);
    assert!(seen.folded > 0, "22 tables on 20 lines fold");
    assert!(seen.rate_limit_waits > 0, "a table was seen waiting for the window");
    assert!(seen.planned > 0, "the header counted requests against the plan with an ETA");
    assert!(
        seen.final_screen.contains("total") && !seen.final_screen.contains("queued"),
        "the view is erased before the summary:\n{}",
        seen.final_screen
    );
    sim.stop().await;
}
