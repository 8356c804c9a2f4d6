//! The DuckDB CLI as the warehouse tests run it (`duckdb` on PATH, or `CAPSULE_DUCKDB`;
//! `scripts/test.sh` installs it): a kit's script loaded, queries answered as JSON rows.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value};

fn duckdb_binary() -> PathBuf {
    std::env::var_os("CAPSULE_DUCKDB").map_or_else(|| PathBuf::from("duckdb"), PathBuf::from)
}

/// Runs `args` with the DuckDB CLI in `cwd`; the JSON rows of the last statement.
pub fn duckdb(cwd: &Path, db: &Path, args: &[&str]) -> Vec<Map<String, Value>> {
    let output = Command::new(duckdb_binary())
        .current_dir(cwd)
        .arg(db)
        .args(["-bail", "-init", "/dev/null", "-json"])
        .args(args)
        .output()
        .expect("the DuckDB CLI runs (python3 -m pip install duckdb-cli, or set CAPSULE_DUCKDB)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "duckdb {args:?}: {}{stdout}", String::from_utf8_lossy(&output.stderr));
    let last = stdout.trim().rsplit("\n[").next().unwrap_or("");
    if last.is_empty() {
        return Vec::new();
    }
    let text = if last.starts_with('[') { last.to_string() } else { format!("[{last}") };
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("duckdb output is not JSON ({e}): {stdout}"))
}

pub fn query(cwd: &Path, db: &Path, sql: &str) -> Vec<Map<String, Value>> {
    duckdb(cwd, db, &["-c", sql])
}

pub fn count(cwd: &Path, db: &Path, sql: &str) -> u64 {
    query(cwd, db, sql)[0].values().next().and_then(Value::as_u64).unwrap()
}

/// Runs the kit's script from a directory that is not the data directory.
pub fn load(cwd: &Path, db: &Path, script: &Path) {
    duckdb(cwd, db, &["-c", &format!(".read {}", script.display())]);
}
