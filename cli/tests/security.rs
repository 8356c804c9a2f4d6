//! What the local backend leaves behind, read as an attacker with the operator's files would:
//! a sync at trace level writes the token nowhere (stderr, stdout, state, output, manifests,
//! logs), and everything it writes is private to the operator unless they widen it.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use capsule_sync_e2e::start_sim;

/// A token no other string in the output could contain by chance.
const TOKEN: &str = "tok-5f1e9a7c3b2d8e60";

struct Run {
    ok: bool,
    output: String,
}

/// Runs the binary under umask 022 (the common default, under which files come out 0644
/// unless the program asks for less), at trace level.
async fn capsule_sync(data_dir: &Path, args: &[&str]) -> Run {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("umask 022 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_capsule-sync"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("CAPSULE_TOKEN", TOKEN)
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Run { ok: out.status.success(), output }
}

fn walk(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            let (f, d) = walk(&path);
            files.extend(f);
            dirs.push(path);
            dirs.extend(d);
        } else {
            files.push(path);
        }
    }
    (files, dirs)
}

/// A file's text, gzip undone.
fn contents(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut text).unwrap();
        text
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_trace_level_sync_writes_the_token_nowhere_and_only_private_files() {
    let sim = start_sim(300, |c| c.token = TOKEN.into()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = sim.base_url();
    let mut outputs = Vec::new();
    for args in [
        vec!["integrations", "create", "acme", "--token", "env:CAPSULE_TOKEN", "--api-base-url", base],
        vec!["sync", "acme"],
        vec!["status", "acme"],
        vec!["check", "acme"],
        vec!["runs", "acme", "--json"],
        vec!["integrations", "show", "acme"],
    ] {
        let run = capsule_sync(&data, &args).await;
        assert!(run.ok, "capsule-sync {args:?} failed:\n{}", run.output);
        outputs.push(run.output);
    }
    let runs: serde_json::Value = serde_json::from_str(
        outputs[4].lines().skip_while(|l| !l.starts_with('[')).collect::<Vec<_>>().join("\n").as_str(),
    )
    .unwrap_or_default();
    if let Some(run_id) = runs[0]["run_id"].as_str() {
        outputs.push(capsule_sync(&data, &["logs", run_id]).await.output);
    }

    // The token was really used (every table loaded), and logged at trace level it appears nowhere.
    assert!(sim.stats().total > 22, "the sync made its requests");
    let everything = outputs.join("\n");
    assert!(everything.contains("capsule_request"), "debug events were on");
    assert!(everything.contains("TRACE"), "trace events were on");
    assert!(!everything.contains(TOKEN), "the token is in stdout/stderr");
    let (files, dirs) = walk(&data);
    assert!(files.iter().any(|f| f.to_string_lossy().ends_with(".ndjson.gz")), "data files were written");
    assert!(files.iter().any(|f| f.to_string_lossy().contains("/logs/")), "run logs were written");
    for file in &files {
        assert!(!contents(file).contains(TOKEN), "the token is in {}", file.display());
        assert_eq!(mode(file), 0o600, "{} is not private", file.display());
    }
    for d in dirs.iter().chain([&data]) {
        assert_eq!(mode(d), 0o700, "{} is not private", d.display());
    }

    // An operator who shares the output with a loader's group widens it; the state stays 0600.
    let shared = dir.path().join("shared");
    let create = ["integrations", "create", "acme", "--token", "env:CAPSULE_TOKEN", "--api-base-url", base];
    for args in [&create[..], &["sync", "acme", "--tables", "users"]] {
        let widened: Vec<&str> = ["--file-mode", "640", "--dir-mode", "750"].iter().chain(args).copied().collect();
        let run = capsule_sync(&shared, &widened).await;
        assert!(run.ok, "{}", run.output);
    }
    let (files, dirs) = walk(&shared);
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy();
        let private = name.starts_with("state.") || name.starts_with("rate-budgets.");
        assert_eq!(mode(file), if private { 0o600 } else { 0o640 }, "{}", file.display());
    }
    for d in dirs.iter().chain([&shared]) {
        assert_eq!(mode(d), 0o750, "{}", d.display());
    }
    let bad = capsule_sync(&shared, &["--file-mode", "rw-r--r--", "status"]).await;
    assert!(!bad.ok && bad.output.contains("file mode `rw-r--r--`"), "{}", bad.output);
}
