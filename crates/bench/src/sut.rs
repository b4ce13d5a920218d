//! The system under test: the release `cashflow` binary, started fresh for each scenario on
//! the chosen backend, with merchants and API clients created through its own CLI and tokens
//! from its own `/oauth2/token`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::procs;
use crate::prom::Scrape;
use crate::tls::BenchTls;

/// Which backends the system under test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// SQLite files, the SQLite queue, the in-process cache (the default `serve`).
    Embedded,
    /// Postgres (started by `scripts/services.sh start` if needed, a fresh database per run),
    /// and a moto (SQS) and a Redis of the run's own.
    Production,
}

/// Where the production services are.
#[derive(Debug, Clone)]
pub struct Services {
    /// A database to run `CREATE DATABASE` on.
    pub pg_admin_url: String,
    /// Use the embedded queue instead of SQS (to take the emulator out of the measurement).
    pub embedded_queue: bool,
}

impl Services {
    /// The backend's name in tables and result files.
    pub fn label(&self, kind: BackendKind) -> &'static str {
        match (kind, self.embedded_queue) {
            (BackendKind::Embedded, _) => "embedded",
            (BackendKind::Production, false) => "production",
            (BackendKind::Production, true) => "production-embedded-queue",
        }
    }
}

/// A Postgres database created for one run (fresh: no earlier run's rows), dropped after it.
pub struct FreshDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl FreshDatabase {
    pub async fn create(admin_url: &str, name: &str) -> anyhow::Result<Self> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url} (is Postgres up? scripts/services.sh start)"))?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        let prefix = admin_url.rsplit_once('/').map_or(admin_url, |(p, _)| p);
        Ok(Self { admin_url: admin_url.to_owned(), name: name.to_owned(), url: format!("{prefix}/{name}") })
    }

    /// Takes the database away from its clients, or gives it back: while refused, new
    /// connections are turned away and every open session is terminated, which is what a
    /// crash-restart of the server looks like to the processes using it, without touching
    /// anyone else's database on the same server.
    pub async fn refuse_connections(&self, refuse: bool) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await.context("connecting as admin")?;
        sqlx::query(&format!("ALTER DATABASE \"{}\" WITH ALLOW_CONNECTIONS {}", self.name, !refuse))
            .execute(&mut conn)
            .await
            .context("ALTER DATABASE … ALLOW_CONNECTIONS")?;
        if refuse {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(&self.name)
            .execute(&mut conn)
            .await
            .context("terminating the database's sessions")?;
        }
        Ok(())
    }

    /// Best effort: a database left behind only costs disk.
    pub async fn drop_now(&self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
                .execute(&mut conn)
                .await;
        }
    }
}

/// A server of the run's own (moto, redis-server) on a free port: started fresh so no other
/// user's queues or keys slow it down, and stoppable for the `faults` scenario without
/// disturbing anyone else.
pub struct OwnServer {
    name: &'static str,
    argv: Vec<String>,
    pub port: u16,
    child: Option<Child>,
}

impl OwnServer {
    /// Starts `argv` (with `{port}` replaced by a free port) and waits until the port accepts.
    async fn start(name: &'static str, argv: &[&str]) -> anyhow::Result<Self> {
        let port = procs::free_port()?;
        let argv = argv.iter().map(|a| a.replace("{port}", &port.to_string())).collect();
        let mut server = Self { name, argv, port, child: None };
        server.restart().await?;
        Ok(server)
    }

    /// Starts it again on the same port (after [`kill`](Self::kill)).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.argv[0]))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            if Instant::now() > deadline {
                bail!("{} never listened on port {}", self.name, self.port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// SIGKILL: the server is gone until [`restart`](Self::restart).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Sends a signal (`STOP` freezes it, `CONT` resumes it).
    pub async fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.as_ref().and_then(Child::id).with_context(|| format!("{} is not running", self.name))?;
        signal_pid(pid, signal).await
    }
}

/// `kill -<signal> <pid>`.
async fn signal_pid(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().await?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed");
    }
    Ok(())
}

/// The backends of one run: the environment every cashflow process gets.
pub struct Backend {
    pub env: Vec<(String, String)>,
    database: Option<FreshDatabase>,
    /// The run's own SQS emulator (production, unless `--embedded-queue`).
    pub moto: Option<OwnServer>,
    /// The run's own Redis (production).
    pub redis: Option<OwnServer>,
}

impl Backend {
    /// The run's own Postgres database (production).
    pub fn database(&self) -> Option<&FreshDatabase> {
        self.database.as_ref()
    }
}

/// A name unique to this run, usable as a database or queue name.
pub fn run_name(label: &str) -> String {
    format!("cfbench_{}_{}", label, &uuid::Uuid::new_v4().simple().to_string()[..8])
}

impl Backend {
    /// Embedded: nothing to prepare (the data directory is per process group). Production:
    /// Postgres is started if needed and gets a fresh database; moto and Redis are started
    /// for this run alone, on free ports, and the queue is created on that moto.
    pub async fn prepare(kind: BackendKind, root: &Path, services: &Services, label: &str) -> anyhow::Result<Self> {
        if kind == BackendKind::Embedded {
            return Ok(Self { env: Vec::new(), database: None, moto: None, redis: None });
        }
        let status = Command::new(root.join("scripts/services.sh"))
            .arg("start")
            .status()
            .await
            .context("running scripts/services.sh start")?;
        if !status.success() {
            bail!("scripts/services.sh start failed ({status})");
        }
        let name = run_name(label);
        let database = FreshDatabase::create(&services.pg_admin_url, &name).await?;
        let redis = OwnServer::start(
            "redis-server",
            &["redis-server", "--bind", "127.0.0.1", "--port", "{port}", "--save", "", "--appendonly", "no"],
        )
        .await?;
        let redis_url = format!("redis://127.0.0.1:{}", redis.port);
        if services.embedded_queue {
            let env = [
                ("CASHFLOW_DATABASE_URL", database.url.as_str()),
                ("CASHFLOW_QUEUE_URL", "embedded"),
                ("CASHFLOW_CACHE_URL", redis_url.as_str()),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec();
            return Ok(Self { env, database: Some(database), moto: None, redis: Some(redis) });
        }
        // moto through our launcher, which fixes a race that loses messages (see the script).
        let launcher = root.join("scripts/moto-server.py").display().to_string();
        let moto = OwnServer::start("moto", &["python3", &launcher, "-H", "127.0.0.1", "-p", "{port}"]).await?;
        let endpoint = format!("http://127.0.0.1:{}", moto.port);
        let out = Command::new("python3")
            .arg(root.join("scripts/create-queue.py"))
            .arg(&endpoint)
            .arg(&name)
            .output()
            .await
            .context("running scripts/create-queue.py")?;
        if !out.status.success() {
            bail!("create-queue.py failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let queue_url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let env = [
            ("CASHFLOW_DATABASE_URL", database.url.as_str()),
            ("CASHFLOW_QUEUE_URL", queue_url.as_str()),
            ("CASHFLOW_CACHE_URL", redis_url.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec();
        Ok(Self { env, database: Some(database), moto: Some(moto), redis: Some(redis) })
    }

    pub async fn cleanup(&mut self) {
        if let Some(db) = &self.database {
            db.drop_now().await;
        }
        for server in [&mut self.moto, &mut self.redis].into_iter().flatten() {
            server.kill().await;
        }
    }
}

/// Which cashflow process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `cashflow serve`: everything in one process.
    Serve,
    /// `cashflow ledger`: the API, token issuer and relay, no consolidation.
    Ledger,
    /// `cashflow relay`: the outbox relay alone (with `ledger --no-relay`).
    Relay,
    /// `cashflow consolidator`: the consumer and the reports API.
    Consolidator,
    /// `cashflow consolidator --no-consumer`: the reports API alone.
    Reports,
}

impl Role {
    fn args(self) -> &'static [&'static str] {
        match self {
            Role::Serve => &["serve", "--no-demo"],
            Role::Ledger => &["ledger"],
            Role::Relay => &["relay"],
            Role::Consolidator => &["consolidator"],
            Role::Reports => &["consolidator", "--no-consumer"],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Ledger => "ledger",
            Role::Relay => "relay",
            Role::Consolidator => "consolidator",
            Role::Reports => "reports",
        }
    }
}

/// One running process.
struct Proc {
    role: Role,
    child: Child,
}

/// A merchant the load runs as.
#[derive(Debug, Clone)]
pub struct Merchant {
    pub token: String,
}

/// The system under test: its processes share one data directory and one backend.
pub struct Sut {
    bin: PathBuf,
    pub backend: Backend,
    data_dir: tempfile::TempDir,
    /// The issuer URL every process is told (the tokens' `iss`).
    public_url: Option<String>,
    processes: Vec<Proc>,
    http: reqwest::Client,
    /// `--tls`: every process serves HTTPS with this certificate.
    tls: Option<Arc<BenchTls>>,
}

impl Sut {
    pub fn new(bin: &Path, backend: Backend, tls: Option<Arc<BenchTls>>) -> anyhow::Result<Self> {
        let data_dir = tempfile::Builder::new().prefix("cashflow-bench-data").tempdir().context("data dir")?;
        Ok(Self {
            bin: bin.to_path_buf(),
            backend,
            data_dir,
            public_url: None,
            processes: Vec::new(),
            http: crate::tls::client(tls.as_deref())?,
            tls,
        })
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("CASHFLOW_DATA_DIR", self.data_dir.path()).envs(self.backend.env.iter().map(|(k, v)| (k, v)));
        if let Some(url) = &self.public_url {
            cmd.env("CASHFLOW_PUBLIC_URL", url);
        }
        if let Some(tls) = &self.tls {
            cmd.env("CASHFLOW_TLS_CERT", &tls.cert).env("CASHFLOW_TLS_KEY", &tls.key);
        }
        cmd
    }

    fn log_path(&self, role: Role) -> PathBuf {
        self.data_dir.path().join(format!("{}.log", role.name()))
    }

    /// Starts a process and waits until `/health/ready` answers 200. Returns its base URL.
    pub async fn start(&mut self, role: Role) -> anyhow::Result<String> {
        self.start_with(role, &[]).await
    }

    /// Sets an environment variable for every process started from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.backend.env.push((key.to_owned(), value.to_owned()));
    }

    /// Like [`start`](Self::start), with extra arguments.
    pub async fn start_with(&mut self, role: Role, extra: &[&str]) -> anyhow::Result<String> {
        let port = procs::free_port()?;
        let base = format!("{}://127.0.0.1:{port}", crate::tls::scheme(self.tls.as_deref()));
        if self.public_url.is_none() {
            // The first process (serve or ledger) issues the tokens; the consolidator trusts
            // the same issuer URL.
            self.public_url = Some(base.clone());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(role))
            .context("opening the log file")?;
        let mut cmd = self.command();
        cmd.args(role.args()).args(extra).args(["--listen", &format!("127.0.0.1:{port}")]);
        let child =
            cmd.stdout(log.try_clone().context("log file")?).stderr(log).kill_on_drop(true).spawn().with_context(
                || format!("starting {} (build it: cargo build --release -p cashflow)", self.bin.display()),
            )?;
        self.processes.push(Proc { role, child });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(p) = self.processes.iter_mut().find(|p| p.role == role) {
                if let Ok(Some(status)) = p.child.try_wait() {
                    bail!("cashflow {} exited ({status}):\n{}", role.name(), procs::tail(&self.log_path(role), 20));
                }
            }
            if let Ok(r) = self.http.get(format!("{base}/health/ready")).send().await {
                if r.status().is_success() {
                    return Ok(base);
                }
            }
            if Instant::now() > deadline {
                bail!("cashflow {} never became ready:\n{}", role.name(), procs::tail(&self.log_path(role), 20));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs a process (no graceful shutdown: a crash); start it again with `start`.
    pub async fn kill(&mut self, role: Role) {
        if let Some(i) = self.processes.iter().position(|p| p.role == role) {
            let mut p = self.processes.remove(i);
            let _ = p.child.kill().await;
        }
    }

    /// The pid of a running process.
    /// The data directory every process of the run shares (the embedded databases).
    pub fn data_path(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn pid(&self, role: Role) -> Option<u32> {
        self.processes.iter().find(|p| p.role == role).and_then(|p| p.child.id())
    }

    /// The pid of every running process of the run.
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().filter_map(|p| p.child.id()).collect()
    }

    /// Peak and current resident memory of a process, in MiB.
    pub fn rss(&self, role: Role) -> Option<(f64, f64)> {
        self.pid(role).and_then(procs::rss_mib)
    }

    /// Runs a CLI command with the same backend and data directory, expecting JSON.
    async fn cli_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let out = self.command().args(args).output().await.with_context(|| format!("cashflow {}", args.join(" ")))?;
        if !out.status.success() {
            bail!("cashflow {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("cashflow {} printed no JSON", args.join(" ")))
    }

    /// Creates `n` merchants, each with an API client, and gets a token for each from `issuer`.
    pub async fn merchants(&self, n: usize, issuer: &str) -> anyhow::Result<Vec<Merchant>> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let merchant = self.cli_json(&["merchant", "create", "--name", &format!("bench-{i}"), "--json"]).await?;
            let id = str_field(&merchant, "merchant_id")?;
            let client = self
                .cli_json(&[
                    "client",
                    "create",
                    "--merchant",
                    &id,
                    "--scopes",
                    "entries:write,entries:read,reports:read",
                    "--json",
                ])
                .await?;
            let (client_id, secret) = (str_field(&client, "client_id")?, str_field(&client, "client_secret")?);
            let response = self
                .http
                .post(format!("{issuer}/oauth2/token"))
                .basic_auth(&client_id, Some(&secret))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("grant_type=client_credentials")
                .send()
                .await
                .context("requesting a token")?;
            if !response.status().is_success() {
                bail!("token request failed: {}", response.status());
            }
            let token: serde_json::Value = response.json().await.context("reading the token response")?;
            out.push(Merchant { token: str_field(&token, "access_token")? });
        }
        Ok(out)
    }

    /// Records one entry; returns the response body (the 201's JSON).
    pub async fn post_entry(&self, base: &str, token: &str, body: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .post(format!("{base}/v1/entries"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .context("POST /v1/entries")?;
        let status = response.status();
        let text = response.text().await.context("reading the entry")?;
        if status.as_u16() != 201 {
            bail!("POST /v1/entries: {status} {text}");
        }
        Ok(text)
    }

    /// One day's consolidated balance: status and raw body.
    pub async fn balance(&self, base: &str, token: &str, date: &str) -> anyhow::Result<(u16, String)> {
        let response = self
            .http
            .get(format!("{base}/v1/balances/daily/{date}"))
            .bearer_auth(token)
            .send()
            .await
            .context("GET /v1/balances/daily")?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.context("reading the balance")?))
    }

    pub async fn scrape(&self, base: &str) -> anyhow::Result<Scrape> {
        let text = self
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .context("GET /metrics")?
            .text()
            .await
            .context("reading /metrics")?;
        Ok(Scrape::parse(&text))
    }

    /// Waits until `cashflow_events_applied_total` on `base` reaches `expected`; returns how
    /// long that took.
    pub async fn wait_applied(&self, base: &str, expected: u64, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let applied = self.scrape(base).await?.total("cashflow_events_applied_total");
            if applied >= expected as f64 {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!("consolidation applied {applied} of {expected} events after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every process (SIGTERM by pid, then SIGKILL), the consolidator first.
    pub async fn stop(&mut self) {
        while let Some(mut p) = self.processes.pop() {
            procs::terminate(&mut p.child, Duration::from_secs(10)).await;
        }
    }

    /// Stops the processes and drops the run's database.
    /// With `CASHFLOW_BENCH_KEEP_DATA` set, the data directory (databases and every process's
    /// log) is kept and its path printed, to see why a run failed.
    pub async fn shutdown(mut self) {
        self.stop().await;
        self.backend.cleanup().await;
        if std::env::var_os("CASHFLOW_BENCH_KEEP_DATA").is_some() {
            eprintln!("data and logs kept in {}", self.data_dir.keep().display());
        }
    }
}

fn str_field(value: &serde_json::Value, field: &str) -> anyhow::Result<String> {
    value.get(field).and_then(|v| v.as_str()).map(str::to_owned).with_context(|| format!("no `{field}` in {value}"))
}
