//! Child processes: finding tools, free ports, stopping what we started (by pid, politely
//! first), and reading a process's memory from `/proc`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::Child;

/// Resolves a tool given as a path or a bare name: the `PATH`, then the usual places a root
/// install or `cargo install` puts things (not always on a CI user's `PATH`).
pub fn find_tool(name: &Path, hint: &str) -> anyhow::Result<PathBuf> {
    if name.components().count() > 1 {
        if name.is_file() {
            return Ok(name.to_path_buf());
        }
        bail!("{} not found ({hint})", name.display());
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from));
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("`{}` not found on PATH, /usr/sbin or ~/.cargo/bin ({hint})", name.display()))
}

/// A port nobody listens on right now (the OS picks it; a tiny race with other processes is
/// acceptable for a benchmark on a quiet machine).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr().context("reading the free port")?.port())
}

/// Stops a child we started: SIGTERM (graceful shutdown; nginx's master also stops its
/// workers), then SIGKILL if it is still there after `grace`.
pub async fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

/// Resident memory of a process, in MiB: now (`VmRSS`) and the peak (`VmHWM`).
pub fn rss_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
