//! Running the real `capsule-sync` binary from a test, with its output captured (not a terminal).

use std::path::Path;

/// What a run printed, and whether it succeeded.
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `capsule-sync --data-dir DIR args` with `env` added and NO_COLOR unset, as a plain shell
/// would.
pub async fn capsule_sync(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_capsule-sync"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
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
