//! What the sync commands show at the end: a summary table (or JSON), the failures. (While they
//! run: [`crate::live`].)

use capsule_core::catalog;
use capsule_core::ports::RunState;
use capsule_engine::engine::TableRunOutcome;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};

/// The summary table: table, mode, state, rows, files, requests, seconds.
pub fn summary_table(outcomes: &[TableRunOutcome]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["table", "mode", "state", "rows", "files", "requests", "retries", "429s", "seconds"]);
    let (mut rows, mut files, mut requests) = (0, 0, 0);
    for o in outcomes {
        let r = &o.record;
        let mode = catalog::table(&r.table).map(|s| s.replication.as_str()).unwrap_or_default();
        rows += r.rows;
        files += r.files;
        requests += r.requests.requests;
        t.add_row(vec![
            Cell::new(&r.table),
            Cell::new(mode),
            Cell::new(r.state.as_str()),
            Cell::new(r.rows).set_alignment(CellAlignment::Right),
            Cell::new(r.files).set_alignment(CellAlignment::Right),
            Cell::new(r.requests.requests).set_alignment(CellAlignment::Right),
            Cell::new(r.requests.retries).set_alignment(CellAlignment::Right),
            Cell::new(r.requests.rate_limited).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.2}", r.seconds())).set_alignment(CellAlignment::Right),
        ]);
    }
    t.add_row(vec![
        Cell::new("total"),
        Cell::new(""),
        Cell::new(""),
        Cell::new(rows).set_alignment(CellAlignment::Right),
        Cell::new(files).set_alignment(CellAlignment::Right),
        Cell::new(requests).set_alignment(CellAlignment::Right),
        Cell::new(""),
        Cell::new(""),
        Cell::new(""),
    ]);
    t.to_string()
}

/// The tables that did not sync, one line each with why, or None when every table succeeded.
/// A skipped table (another run holds it) counts: its data did not move this time.
pub fn failures(outcomes: &[TableRunOutcome]) -> Option<String> {
    let lines: Vec<String> = outcomes
        .iter()
        .filter(|o| o.record.state != RunState::Succeeded)
        .map(|o| {
            let error = o.error.as_ref().map(|e| format!("{} ({} fault): {e}", e.error_type(), e.fault()));
            format!("  {} {}: {}", o.record.table, o.record.state, error.unwrap_or_default())
        })
        .collect();
    (!lines.is_empty()).then(|| format!("{} table(s) did not sync:\n{}", lines.len(), lines.join("\n")))
}

/// How to run this binary again from here, for the hints it prints: the path it was started by
/// (a fresh machine has no `capsule-sync` on its PATH; `cargo run` starts `target/…/capsule-sync`).
pub fn this_command() -> String {
    std::env::args().next().filter(|arg0| !arg0.is_empty()).unwrap_or_else(|| "capsule-sync".into())
}
