//! Whether a local process that holds a lease is still alive: leases record `host:pid`, so a
//! lease whose process is gone from this host (kill -9, OOM, a closed laptop) is free at once
//! instead of after it expires, and `status` can say such a run stopped.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A process as a lease records it: its host and pid, stored as `host:pid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProcessId {
    pub host: String,
    pub pid: u32,
}

impl ProcessId {
    /// This process.
    pub fn this() -> ProcessId {
        ProcessId { host: this_host(), pid: std::process::id() }
    }

    /// Whether the process is known to be gone: it ran on this host and its pid no longer names
    /// a live process (Linux `/proc`; elsewhere nothing is known and the lease runs to its
    /// expiry).
    pub fn gone(&self) -> bool {
        self.host == this_host() && Path::new("/proc/self").exists() && !alive(self.pid)
    }
}

impl std::fmt::Display for ProcessId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.pid)
    }
}

impl From<ProcessId> for String {
    fn from(process: ProcessId) -> String {
        process.to_string()
    }
}

impl TryFrom<String> for ProcessId {
    type Error = String;

    fn try_from(text: String) -> Result<ProcessId, String> {
        let (host, pid) = text.rsplit_once(':').ok_or_else(|| format!("process `{text}` is not `host:pid`"))?;
        let pid = pid.parse().map_err(|_| format!("process `{text}` has no pid after the last `:`"))?;
        Ok(ProcessId { host: host.to_string(), pid })
    }
}

/// This host's name, as leases record it.
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string()
}

/// Whether `pid` is a live process. A killed process that its parent has not reaped yet (a
/// zombie, state `Z`) still holds its pid but will never renew a lease, so it is not alive.
/// Anything unreadable other than a missing pid counts as alive: the lease then runs to expiry.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) state …`; comm may hold spaces and parentheses, so read after the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| !matches!(state, "Z" | "X")),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_unreaped_process_is_gone_and_a_running_one_is_not() {
        let host = this_host();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let lease_of = |pid: u32| ProcessId { host: host.clone(), pid };
        assert!(!lease_of(child.id()).gone(), "a running process holds its lease");
        child.kill().unwrap(); // SIGKILL, not reaped: a zombie until `wait`
        let zombie = || std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        let started = std::time::Instant::now();
        while !zombie().contains(") Z") && started.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(Path::new(&format!("/proc/{}", child.id())).exists(), "still a zombie: not reaped");
        assert!(lease_of(child.id()).gone(), "a zombie will never renew its lease");
        child.wait().unwrap();
        assert!(lease_of(child.id()).gone(), "a reaped process is gone");
        let elsewhere = ProcessId::try_from(format!("another-host:{}", child.id())).unwrap();
        assert!(!elsewhere.gone(), "another host's process is not known");
        assert_eq!(String::from(elsewhere.clone()), format!("another-host:{}", child.id()), "stored as it was");
        assert!(ProcessId::try_from("no-pid".to_string()).unwrap_err().contains("host:pid"));
    }
}
