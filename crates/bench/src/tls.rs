//! `--tls`: `read` and `write` over HTTPS. One certificate, made for the run (self-signed for
//! `127.0.0.1`), is served by cashflow (`--tls-cert`/`--tls-key`) and by nginx, the ceiling;
//! the harness's own client trusts it, oha skips verification (`--insecure`: checking the
//! chain is the client's cost, not the server's).
//!
//! The CPU figures ([`cpu_seconds`]) are what the server processes spent, from `/proc`: on a
//! shared machine a rate is noisy, CPU per request much less so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

/// The run's certificate and key files.
pub struct BenchTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate, PEM: the harness's client trusts it as a root.
    pub pem: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl BenchTls {
    /// A fresh self-signed certificate for `127.0.0.1` and `localhost`.
    pub fn generate() -> anyhow::Result<Self> {
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(names).context("generating the bench certificate")?;
        let dir = tempfile::Builder::new().prefix("cashflow-bench-tls").tempdir().context("TLS temp dir")?;
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).context("writing the certificate")?;
        std::fs::write(&key_path, key_pair.serialize_pem()).context("writing the key")?;
        Ok(Self { cert: cert_path, key: key_path, pem: cert.pem().into_bytes(), _dir: dir })
    }
}

/// The harness's HTTP client: plain, or trusting the run's certificate.
pub fn client(tls: Option<&BenchTls>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(tls) = tls {
        let root = reqwest::Certificate::from_pem(&tls.pem).context("the bench certificate")?;
        builder = builder.use_rustls_tls().add_root_certificate(root);
    }
    builder.build().context("HTTP client")
}

/// `http` or `https`.
pub fn scheme(tls: Option<&BenchTls>) -> &'static str {
    if tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// CPU time (user + system, seconds) of `pid` and of its direct children (nginx's workers).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = own_ticks(&format!("/proc/{pid}/stat"))?;
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let stat = entry.path().join("stat");
            if parent(&stat) == Some(pid) {
                total += own_ticks_path(&stat).unwrap_or(0);
            }
        }
    }
    Some(total as f64 / ticks)
}

/// The fields after the command name (which may contain spaces) of a `/proc/*/stat`.
fn fields(path: &Path) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(path).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn parent(path: &Path) -> Option<u32> {
    fields(path)?.get(1)?.parse().ok()
}

pub(crate) fn own_ticks_path(path: &Path) -> Option<u64> {
    // After the name: state(0) ppid(1) … utime(11) stime(12).
    let f = fields(path)?;
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn own_ticks(path: &str) -> Option<u64> {
    own_ticks_path(Path::new(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_spent_some_cpu_time_and_a_parent() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        assert!(parent(Path::new(&format!("/proc/{pid}/stat"))).is_some());
    }
}
