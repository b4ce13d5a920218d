//! The split deployment across real processes: nginx (the API front) → `cashflow ledger`
//! (relay inside) → queue → `cashflow consolidator` → report, with real HTTP calls, on the
//! embedded backends and, where the servers are available, on Postgres + SQS (moto) + Redis.
//!
//! Needs nginx: set `CASHFLOW_TEST_NGINX` to its path (`.ci/run` does); otherwise these tests
//! are reported as ignored.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly, by design

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_cashflow");

/// A child process killed (SIGKILL) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx, stopped with SIGTERM: its master stops the workers (a SIGKILLed master would leave
/// them running, holding the port).
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Environment of every cashflow process of one deployment.
#[derive(Clone)]
struct Backends {
    env: Vec<(String, String)>,
}

impl Backends {
    fn embedded(data_dir: &Path) -> Self {
        Self { env: vec![("CASHFLOW_DATA_DIR".into(), data_dir.display().to_string())] }
    }
}

/// One running split deployment.
struct Split {
    _dir: TempDir,
    backends: Backends,
    front: String,
    consolidator_port: u16,
    consolidator: Option<Proc>,
    _ledger: Proc,
    _nginx: Nginx,
}

fn command(backends: &Backends, public_url: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env("RUST_LOG", "warn").env("CASHFLOW_PUBLIC_URL", public_url).stdout(Stdio::null()).stderr(Stdio::inherit());
    for (k, v) in &backends.env {
        c.env(k, v);
    }
    c
}

async fn wait_ready(url: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Split {
    async fn start(dir: TempDir, backends: Backends) -> Split {
        let (front_port, ledger_port, consolidator_port) = (free_port(), free_port(), free_port());
        let front = format!("http://127.0.0.1:{front_port}");
        let status = command(&backends, &front).arg("migrate").status().unwrap();
        assert!(status.success());
        let ledger = Proc(
            command(&backends, &front)
                .args(["ledger", "--listen", &format!("127.0.0.1:{ledger_port}")])
                .spawn()
                .unwrap(),
        );
        let run_dir = dir.path().join("nginx");
        let rendered = Command::new(repo_root().join("scripts/render-nginx.sh"))
            .arg(&run_dir)
            .arg(format!("127.0.0.1:{front_port}"))
            .arg(format!("127.0.0.1:{ledger_port}"))
            .arg(format!("127.0.0.1:{consolidator_port}"))
            .output()
            .unwrap();
        assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
        let conf = String::from_utf8(rendered.stdout).unwrap().trim().to_owned();
        let nginx_bin = std::env::var("CASHFLOW_TEST_NGINX").unwrap_or_else(|_| "nginx".into());
        let nginx = Nginx(Command::new(nginx_bin).args(["-c", &conf]).stderr(Stdio::inherit()).spawn().unwrap());
        let mut split =
            Split { _dir: dir, backends, front, consolidator_port, consolidator: None, _ledger: ledger, _nginx: nginx };
        split.start_consolidator().await;
        wait_ready(&format!("{}/health/ready", split.front)).await;
        split
    }

    async fn start_consolidator(&mut self) {
        let listen = format!("127.0.0.1:{}", self.consolidator_port);
        self.consolidator = Some(Proc(
            command(&self.backends, &self.front).args(["consolidator", "--listen", &listen]).spawn().unwrap(),
        ));
        wait_ready(&format!("http://{listen}/health/ready")).await;
    }

    fn kill_consolidator(&mut self) {
        self.consolidator = None; // SIGKILL in Drop
    }

    fn cli(&self, args: &[&str]) -> Value {
        let out = command(&self.backends, &self.front).args(args).stdout(Stdio::piped()).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A new merchant and a token for it, obtained through the front.
    async fn merchant_token(&self) -> String {
        let merchant = self.cli(&["merchant", "create", "--name", "Split", "--json"]);
        let client = self.cli(&["client", "create", "--merchant", merchant["merchant_id"].as_str().unwrap(), "--json"]);
        let r = reqwest::Client::new()
            .post(format!("{}/oauth2/token", self.front))
            .basic_auth(client["client_id"].as_str().unwrap(), client["client_secret"].as_str())
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    }
}

/// Posts an entry through the front; returns the amount in cents when it was acknowledged.
async fn post(client: &reqwest::Client, front: &str, token: &str, cents: i64, day: u32) -> Option<i64> {
    let r = client
        .post(format!("{front}/v1/entries"))
        .bearer_auth(token)
        .json(&json!({
            "type": "credit", "amount": format!("{}.{:02}", cents / 100, cents % 100),
            "description": "split", "occurred_at": format!("2026-11-{day:02}T12:00:00-03:00")
        }))
        .send()
        .await
        .ok()?;
    (r.status() == 201).then_some(cents)
}

/// Waits until the day's report shows exactly `count` entries summing to `cents`; fails on
/// any over-count (an entry counted twice).
async fn assert_converges(front: &str, token: &str, date: &str, count: u64, cents: i64) {
    let client = reqwest::Client::new();
    let expected = format!("{}.{:02}", cents / 100, cents % 100);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client.get(format!("{front}/v1/balances/daily/{date}")).bearer_auth(token).send().await.unwrap();
        if r.status() == 200 {
            let day: Value = r.json().await.unwrap();
            let n = day["entry_count"].as_u64().unwrap();
            assert!(n <= count, "double-counted on {date}: {day}");
            if n == count {
                assert_eq!(day["total_credits"], expected, "{date}: {day}");
                return;
            }
        }
        assert!(Instant::now() < deadline, "{date} never converged to {count} entries");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn one_api_through_the_front(backends: fn(&Path) -> Backends) {
    let dir = tempfile::tempdir().unwrap();
    let b = backends(dir.path());
    let split = Split::start(dir, b).await;
    let token = split.merchant_token().await;
    let client = reqwest::Client::new();
    let mut cents = 0;
    for i in 1..=20 {
        cents += post(&client, &split.front, &token, 100 * i, 21).await.expect("write through the front");
    }
    assert_converges(&split.front, &token, "2026-11-21", 20, cents).await;
    let csv = client
        .get(format!("{}/v1/balances/daily?from=2026-11-21&to=2026-11-22", split.front))
        .bearer_auth(&token)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert_eq!(csv.text().await.unwrap().lines().count(), 3);

    // The front answers with problems too.
    let missing = client.get(format!("{}/nowhere", split.front)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
    let huge = client
        .post(format!("{}/v1/entries", split.front))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(vec![b' '; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let unauthenticated = client.get(format!("{}/v1/balances/daily/2026-11-21", split.front)).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

async fn ledger_survives_consolidator_sigkill(backends: fn(&Path) -> Backends) {
    let dir = tempfile::tempdir().unwrap();
    let b = backends(dir.path());
    let mut split = Split::start(dir, b).await;
    let token = split.merchant_token().await;
    let front = split.front.clone();
    // A steady write load: 4 writers, one entry every 10 ms each, for 4 seconds.
    let stop_at = Instant::now() + Duration::from_secs(4);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (front, token) = (front.clone(), token.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let (mut sent, mut acked) = (0u64, Vec::new());
                let mut i = 0;
                while Instant::now() < stop_at {
                    i += 1;
                    sent += 1;
                    if let Some(c) = post(&client, &front, &token, 100 + w * 10_000 + i, 22).await {
                        acked.push(c);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (sent, acked)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    split.kill_consolidator();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    split.start_consolidator().await;
    let (mut sent, mut acked) = (0, Vec::new());
    for w in writers {
        let (s, a) = w.await.unwrap();
        sent += s;
        acked.extend(a);
    }
    assert!(sent > 100, "the load ran: {sent} writes");
    assert_eq!(acked.len() as u64, sent, "every write succeeded while the consolidator was down");
    assert_converges(&front, &token, "2026-11-22", acked.len() as u64, acked.iter().sum()).await;
}

#[tokio::test]
#[cfg_attr(not(nginx_tests), ignore = "set CASHFLOW_TEST_NGINX to the nginx binary to run the split deployment")]
async fn embedded_split_serves_one_api_through_the_front() {
    one_api_through_the_front(Backends::embedded).await;
}

#[tokio::test]
#[cfg_attr(not(nginx_tests), ignore = "set CASHFLOW_TEST_NGINX to the nginx binary to run the split deployment")]
async fn embedded_ledger_keeps_serving_when_consolidator_is_killed() {
    ledger_survives_consolidator_sigkill(Backends::embedded).await;
}
