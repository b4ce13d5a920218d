//! The HTTP ceiling: nginx answering the same requests with a fixed response of the same
//! status and body (`return 201 '<body>'`), with its own minimal configuration in a temporary
//! directory. What the same load generator gets from it, on the same machine and in the same
//! run, is as fast as any HTTP server could answer these requests here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::Child;

use crate::procs;
use crate::tls::BenchTls;

/// A running nginx; stopped (SIGTERM to the master, by pid) when [`Nginx::stop`] is called.
pub struct Nginx {
    child: Child,
    /// `http://127.0.0.1:PORT` (`https://` with TLS).
    pub base: String,
    /// Holds the configuration, the pid file and the logs.
    dir: tempfile::TempDir,
}

/// The nginx binary and its version.
#[derive(Debug, Clone)]
pub struct NginxBin {
    pub path: PathBuf,
    pub version: String,
}

impl NginxBin {
    pub async fn locate(name: &Path) -> anyhow::Result<Self> {
        let path = procs::find_tool(name, "install nginx (apt-get install nginx), or pass --nginx PATH")?;
        let out = tokio::process::Command::new(&path)
            .arg("-v")
            .output()
            .await
            .with_context(|| format!("running {} -v", path.display()))?;
        let version = String::from_utf8_lossy(&out.stderr).trim().trim_start_matches("nginx version: ").to_owned();
        Ok(Self { path, version })
    }
}

/// The body in nginx's single-quoted string syntax.
fn quote(body: &str) -> String {
    body.replace('\\', "\\\\").replace('\'', "\\'")
}

/// The configuration: as lean as the template in `deploy/`, every path under `dir`; with
/// `tls`, HTTPS on the same certificate as cashflow, TLS 1.2 and 1.3, a session cache.
pub fn config(dir: &Path, port: u16, status: u16, body: &str, tls: Option<&BenchTls>) -> String {
    let d = dir.display();
    let listen = match tls {
        None => format!("listen 127.0.0.1:{port};"),
        Some(tls) => format!(
            "listen 127.0.0.1:{port} ssl;
        ssl_certificate {};
        ssl_certificate_key {};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:1m;",
            tls.cert.display(),
            tls.key.display()
        ),
    };
    format!(
        "worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # hyper keeps a connection for any number of requests; so must the ceiling.
    keepalive_requests 100000000;
    server {{
        {listen}
        client_max_body_size 16k;
        location / {{
            default_type application/json;
            return {status} '{body}';
        }}
    }}
}}
",
        body = quote(body)
    )
}

impl Nginx {
    /// Starts nginx answering every request with `status` and `body`.
    pub async fn start(bin: &NginxBin, status: u16, body: &str, tls: Option<&BenchTls>) -> anyhow::Result<Self> {
        if body.contains('$') {
            // `return` would expand it as a variable; our JSON bodies never contain one.
            bail!("a fixed nginx response cannot contain `$`");
        }
        let dir = tempfile::Builder::new().prefix("cashflow-bench-nginx").tempdir().context("nginx temp dir")?;
        let port = procs::free_port()?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), port, status, body, tls)).context("writing nginx.conf")?;
        let child = tokio::process::Command::new(&bin.path)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.path.display()))?;
        let mut nginx = Self { child, base: format!("{}://127.0.0.1:{port}", crate::tls::scheme(tls)), dir };
        let client = crate::tls::client(tls)?;
        for _ in 0..100 {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                bail!("nginx exited ({status}): {}", procs::tail(&nginx.dir.path().join("error.log"), 10));
            }
            if client.get(format!("{}/", nginx.base)).send().await.is_ok() {
                return Ok(nginx);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        nginx.stop().await;
        bail!("nginx never answered on {}", nginx.base)
    }

    /// The master's pid (its workers are its children).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn stop(&mut self) {
        procs::terminate(&mut self.child, Duration::from_secs(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_body_is_quoted_for_nginx() {
        let conf = config(Path::new("/tmp/x"), 8088, 201, r#"{"a":"it's \ here"}"#, None);
        assert!(conf.contains(r#"return 201 '{"a":"it\'s \\ here"}';"#));
        assert!(conf.contains("pid /tmp/x/nginx.pid;"));
        assert!(conf.contains("listen 127.0.0.1:8088;"));
    }
}
