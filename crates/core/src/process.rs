//! Whether a local process that holds a lease is still alive: leases record `host:pid`, so a
//! lease whose process is gone from this host (kill -9, OOM, a closed laptop) is free at once
//! instead of after it expires, and `status` can say such a run stopped.

use std::path::Path;

/// This process, as leases record it: `host:pid`.
pub fn this_process() -> String {
    format!("{}:{}", this_host(), std::process::id())
}

/// This host's name, as leases record it.
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string()
}

/// Whether a lease's process is known to be gone: it ran on this host and its pid no longer
/// names a live process (Linux `/proc`; elsewhere nothing is known and the lease runs to its
/// expiry).
pub fn gone(process: &str) -> bool {
    let Some((host, pid)) = process.rsplit_once(':') else { return false };
    host == this_host() && Path::new("/proc/self").exists() && !alive(pid)
}

/// Whether `pid` is a live process. A killed process that its parent has not reaped yet (a
/// zombie, state `Z`) still holds its pid but will never renew a lease, so it is not alive.
/// Anything unreadable other than a missing pid counts as alive: the lease then runs to expiry.
fn alive(pid: &str) -> bool {
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
        let lease_of = |pid: u32| format!("{host}:{pid}");
        assert!(!gone(&lease_of(child.id())), "a running process holds its lease");
        child.kill().unwrap(); // SIGKILL, not reaped: a zombie until `wait`
        let zombie = || std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        let started = std::time::Instant::now();
        while !zombie().contains(") Z") && started.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(Path::new(&format!("/proc/{}", child.id())).exists(), "still a zombie: not reaped");
        assert!(gone(&lease_of(child.id())), "a zombie will never renew its lease");
        child.wait().unwrap();
        assert!(gone(&lease_of(child.id())), "a reaped process is gone");
        assert!(!gone(&format!("another-host:{}", child.id())), "another host's process is not known");
    }
}
