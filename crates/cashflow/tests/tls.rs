//! TLS on every hop, on real sockets, with a CA and certificates made by the test (rcgen):
//! - the HTTP server: HTTPS to a client that trusts the CA; a plaintext client and a client
//!   with another CA are refused; a handshake must finish within the header timeout; a reload
//!   (and `SIGHUP` to the real binary) serves the new certificate to new connections while an
//!   open connection keeps working; the built-in issuer advertises `https://` URLs;
//! - Postgres with `sslmode=verify-full` against a throwaway cluster with `ssl=on` and its own
//!   certificate (`CASHFLOW_TEST_PG_BIN`: the directory of `initdb` and `pg_ctl`);
//! - Redis over TLS (`rediss://` and a CA file) against a `redis-server --tls-port` started here
//!   (`CASHFLOW_TEST_REDIS_SERVER`: the `redis-server` binary, built with TLS);
//! - `serve`'s application over both, answering HTTPS.
//!
//! Without those variables the backend tests show as ignored; the server tests always run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly, by design

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use cashflow::app::{AppConfig, Application};
use cashflow::backends::BackendArgs;
use cashflow::cli::{Cli, Command as Subcommand};
use cashflow::server::ServerConfig;
use cashflow::tls::ServerTls;
use cashflow_auth::Scopes;
use cashflow_domain::{Currency, MerchantName, MerchantTimeZone};

const BIN: &str = env!("CARGO_BIN_EXE_cashflow");

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses): (certificate, key), PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a server certificate for `localhost` and `127.0.0.1` into `dir`: (cert, key) paths.
    fn write_server_files(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = self.issue(&["localhost", "127.0.0.1"]);
        let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (cert_path, key_path)
    }

    /// A client that trusts this CA only.
    fn client(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(cashflow::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut config = config;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

async fn connect(addr: SocketAddr, client: &TlsConnector) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    client.connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

/// One request on an open (keep-alive) connection: its status and body.
async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(body.unwrap_or(""));
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let header_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response header");
        buf.extend_from_slice(&chunk[..n]);
    };
    let header = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let status = header[9..12].parse().unwrap();
    let length: usize = header
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside a response body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (status, String::from_utf8_lossy(&buf[header_end..header_end + length]).to_string())
}

/// The application `serve` runs, behind the real server with `tls`, on a port of its own.
struct Served {
    addr: SocketAddr,
    token: String,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn serve_tls(backends: Option<BackendArgs>, tls: Arc<ServerTls>, config: ServerConfig) -> Served {
    let dir = tempfile::tempdir().unwrap();
    // The settings `serve` gets from its command line (and the defaults of every other flag).
    let cli = Cli::try_parse_from(["cashflow", "serve", "--public-url", "https://localhost"]).unwrap();
    let Subcommand::Serve(args) = cli.command else { unreachable!("parsed `serve`") };
    let backends = backends.unwrap_or_else(|| BackendArgs::embedded(dir.path()));
    let app = Application::build(&AppConfig::from_args(&args.auth, &backends, String::new()).unwrap()).await.unwrap();
    let name = MerchantName::parse("Padaria").unwrap();
    let merchant = app.ledger.create_merchant(name, Currency::BRL, MerchantTimeZone::DEFAULT).await.unwrap();
    let token = app.issuer.mint("test-client", merchant.id, Scopes::all()).unwrap().0;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = watch::channel(false);
    // The whole process: the server and the relay and consumer behind it.
    tokio::spawn(app.into_process().run(listener, config, Some(tls), shutdown));
    Served { addr, token, _stop: stop, _dir: dir }
}

/// A server with a certificate from `ca`, its files in `dir`.
async fn https(ca: &Ca, dir: &Path) -> (Served, Arc<ServerTls>) {
    let (cert, key) = ca.write_server_files(dir);
    let tls = Arc::new(ServerTls::load(cert, key).unwrap());
    (serve_tls(None, tls.clone(), ServerConfig::default()).await, tls)
}

#[tokio::test]
async fn https_serves_the_api_over_tls_1_2_or_later_with_http_1_1() {
    // Given a server with a certificate from our CA
    let (ca, dir) = (Ca::new("test CA"), tempfile::tempdir().unwrap());
    let (served, _) = https(&ca, dir.path()).await;

    // When a client that trusts the CA records an entry and reads it back on one connection
    let mut stream = connect(served.addr, &ca.client()).await.unwrap();
    let entry = r#"{"type":"credit","amount":"10.00","description":"Venda"}"#;
    let (created, body) = request(&mut stream, "POST", "/v1/entries", Some(&served.token), Some(entry)).await;
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"].as_str().unwrap().to_owned();
    let (read, _) = request(&mut stream, "GET", &format!("/v1/entries/{id}"), Some(&served.token), None).await;

    // Then both are answered, over TLS 1.2+ with HTTP/1.1 negotiated by ALPN
    assert_eq!((created, read), (201, 200));
    let (_, session) = stream.get_ref();
    assert!(matches!(
        session.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3 | rustls::ProtocolVersion::TLSv1_2)
    ));
    assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn a_plaintext_client_gets_no_http_answer() {
    // Given an HTTPS server
    let (ca, dir) = (Ca::new("test CA"), tempfile::tempdir().unwrap());
    let (served, _) = https(&ca, dir.path()).await;

    // When a client speaks plain HTTP to it
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    stream.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;

    // Then the connection is closed without an HTTP response
    assert!(read.is_ok(), "the connection was left open");
    assert!(!answer.starts_with(b"HTTP/"), "answered in plaintext: {:?}", String::from_utf8_lossy(&answer));
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused() {
    // Given an HTTPS server with a certificate from one CA
    let (ca, dir) = (Ca::new("test CA"), tempfile::tempdir().unwrap());
    let (served, _) = https(&ca, dir.path()).await;

    // When a client that trusts only another CA connects
    let result = connect(served.addr, &Ca::new("other CA").client()).await;

    // Then the handshake fails
    let Err(error) = result else { panic!("the handshake succeeded with an untrusted certificate") };
    assert!(error.to_string().contains("certificate"), "unexpected error: {error}");
}

#[tokio::test]
async fn a_connection_that_does_not_complete_the_handshake_in_time_is_closed() {
    // Given an HTTPS server with a 1 s header timeout
    let (ca, dir) = (Ca::new("test CA"), tempfile::tempdir().unwrap());
    let (cert, key) = ca.write_server_files(dir.path());
    let tls = Arc::new(ServerTls::load(cert, key).unwrap());
    let config = ServerConfig { header_read_timeout: Duration::from_secs(1), ..ServerConfig::default() };
    let served = serve_tls(None, tls, config).await;

    // When a client connects and sends nothing
    let started = Instant::now();
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;

    // Then the server closes it after about the header timeout
    assert!(closed.is_ok(), "the connection is still open after 10 s");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed too early: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_and_keeps_open_connections() {
    // Given an HTTPS server with a certificate from the old CA, and a connection open on it
    let (old, new, dir) = (Ca::new("old CA"), Ca::new("new CA"), tempfile::tempdir().unwrap());
    let (served, tls) = https(&old, dir.path()).await;
    let mut open = connect(served.addr, &old.client()).await.unwrap();
    assert_eq!(request(&mut open, "GET", "/health/live", None, None).await.0, 200);

    // When the files are replaced by a certificate from the new CA and reloaded
    new.write_server_files(dir.path());
    tls.reload().unwrap();

    // Then new connections get the new certificate, and the open one still answers
    let mut fresh = connect(served.addr, &new.client()).await.unwrap();
    assert_eq!(request(&mut fresh, "GET", "/health/live", None, None).await.0, 200);
    assert!(connect(served.addr, &old.client()).await.is_err(), "the old certificate is still served");
    assert_eq!(request(&mut open, "GET", "/health/live", None, None).await.0, 200);
}

#[tokio::test]
async fn a_reload_from_broken_files_keeps_the_certificate_in_force() {
    // Given an HTTPS server
    let (ca, dir) = (Ca::new("test CA"), tempfile::tempdir().unwrap());
    let (served, tls) = https(&ca, dir.path()).await;

    // When the key file is truncated (a rotation half done) and a reload is asked for
    std::fs::write(dir.path().join("server.key"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
    let reloaded = tls.reload();

    // Then the reload fails and the server still serves its certificate
    assert!(reloaded.is_err());
    let mut stream = connect(served.addr, &ca.client()).await.unwrap();
    assert_eq!(request(&mut stream, "GET", "/health/live", None, None).await.0, 200);
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Retries `connect` until it succeeds or `within` passes.
async fn connect_within(addr: SocketAddr, client: &TlsConnector, within: Duration) -> TlsStream<TcpStream> {
    let deadline = Instant::now() + within;
    loop {
        match connect(addr, client).await {
            Ok(stream) => return stream,
            Err(e) => assert!(Instant::now() < deadline, "no TLS connection within {within:?}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serve_with_a_certificate_advertises_https_and_reloads_it_on_sighup() {
    // Given `cashflow serve --tls-cert … --tls-key …` (no public URL given)
    let (old, new, dir) = (Ca::new("old CA"), Ca::new("new CA"), tempfile::tempdir().unwrap());
    let (cert, key) = old.write_server_files(dir.path());
    let port = common::free_port();
    let child = Command::new(BIN)
        .args(["serve", "--no-demo", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Killed(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut open = connect_within(addr, &old.client(), Duration::from_secs(30)).await;

    // Then the issuer's discovery names https:// URLs
    let (status, body) = request(&mut open, "GET", "/.well-known/openid-configuration", None, None).await;
    assert_eq!(status, 200);
    let discovery: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(discovery["issuer"], format!("https://127.0.0.1:{port}"));
    assert!(discovery["jwks_uri"].as_str().unwrap().starts_with("https://"), "{discovery}");

    // When the files are rotated and the process gets SIGHUP
    new.write_server_files(dir.path());
    let pid = server.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());

    // Then new connections get the new certificate and the open one keeps working
    let mut fresh = connect_within(addr, &new.client(), Duration::from_secs(10)).await;
    assert_eq!(request(&mut fresh, "GET", "/health/live", None, None).await.0, 200);
    assert_eq!(request(&mut open, "GET", "/health/live", None, None).await.0, 200);
}

// ---- backends over TLS -------------------------------------------------------------------

/// Whether this process runs as root (then Postgres runs as the `postgres` user).
fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// A command run as the owner of the cluster: `postgres` under root, else ourselves.
fn as_cluster_owner(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// A throwaway PostgreSQL cluster with `ssl=on` and a certificate from `ca` for `names`,
/// accepting TLS connections only (`hostssl`); stopped when dropped.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Holds the data directory, the certificate and the log; removed after the stop.
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(ca: &Ca, names: &[&str]) -> Self {
        let bin = PathBuf::from(std::env::var("CASHFLOW_TEST_PG_BIN").expect("CASHFLOW_TEST_PG_BIN"));
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (cert, key) = ca.issue(names);
        std::fs::write(dir.path().join("server.crt"), cert).unwrap();
        std::fs::write(dir.path().join("server.key"), key).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let key = dir.path().join("server.key");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown to postgres failed");
        }
        let init = as_cluster_owner(&bin.join("initdb"))
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(init.success(), "initdb failed");
        std::fs::write(data.join("pg_hba.conf"), "hostssl all all 127.0.0.1/32 trust\n").unwrap();
        let port = common::free_port();
        let d = dir.path().display();
        let options = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={d} -c ssl=on \
             -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key -c fsync=off"
        );
        let started = as_cluster_owner(&bin.join("pg_ctl"))
            .args(["-w", "-t", "120", "-l"])
            .arg(dir.path().join("log"))
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "start"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(
            started.success(),
            "pg_ctl start failed: {}",
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        );
        Self { bin, data, port, _dir: dir }
    }

    /// The URL of its `postgres` database through `host`, with `params`.
    fn url(&self, host: &str, params: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{params}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_cluster_owner(&self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .stdout(Stdio::null())
            .status();
    }
}

fn write_ca(dir: &Path, name: &str, ca: &Ca) -> String {
    let path = dir.join(name);
    std::fs::write(&path, ca.pem()).unwrap();
    path.display().to_string()
}

#[tokio::test]
#[cfg_attr(not(pg_tls_tests), ignore = "set CASHFLOW_TEST_PG_BIN to the directory of initdb and pg_ctl")]
async fn postgres_verify_full_accepts_only_the_certificate_of_the_configured_ca_and_host() {
    // Given a cluster that takes TLS connections only, with a certificate for `localhost`
    let (ca, other, dir) = (Ca::new("db CA"), Ca::new("other CA"), tempfile::tempdir().unwrap());
    let cluster = Cluster::start(&ca, &["localhost"]);
    let (root, wrong_root) = (write_ca(dir.path(), "ca.pem", &ca), write_ca(dir.path(), "other.pem", &other));
    let open = |url: String| async move { cashflow_db::open_postgres(&url, 1, "tls_probe").await };

    // Then verify-full with the cluster's CA and host name connects
    let verified = open(cluster.url("localhost", &format!("sslmode=verify-full&sslrootcert={root}"))).await;
    assert!(verified.is_ok(), "verify-full refused: {:?}", verified.err());

    // And another CA, another host name (the certificate names only localhost) or no TLS are refused
    let wrong_ca = open(cluster.url("localhost", &format!("sslmode=verify-full&sslrootcert={wrong_root}"))).await;
    assert!(wrong_ca.is_err(), "a certificate from an untrusted CA was accepted");
    let wrong_host = open(cluster.url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={root}"))).await;
    assert!(wrong_host.is_err(), "a certificate for another host name was accepted");
    let plaintext = open(cluster.url("localhost", "sslmode=disable")).await;
    assert!(plaintext.is_err(), "the cluster took a plaintext connection: hostssl is not in force");
}

/// A `redis-server` listening on TLS only, with a certificate from `ca`; killed when dropped.
fn start_redis(ca: &Ca, dir: &Path) -> (Killed, u16) {
    let server = std::env::var("CASHFLOW_TEST_REDIS_SERVER").expect("CASHFLOW_TEST_REDIS_SERVER");
    let (cert, key) = ca.write_server_files(dir);
    let ca_file = write_ca(dir, "redis-ca.pem", ca);
    let port = common::free_port();
    let child = Command::new(server)
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--tls-cert-file")
        .arg(cert)
        .arg("--tls-key-file")
        .arg(key)
        .args(["--tls-ca-cert-file", &ca_file, "--tls-auth-clients", "no", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (Killed(child), port)
}

#[tokio::test]
#[cfg_attr(
    not(all(pg_tls_tests, redis_tls_tests)),
    ignore = "set CASHFLOW_TEST_PG_BIN and CASHFLOW_TEST_REDIS_SERVER to run against TLS servers"
)]
async fn serve_answers_https_over_postgres_verify_full_and_redis_tls() {
    // Given Postgres and Redis that speak TLS only, each with a certificate from its own CA
    let (db_ca, cache_ca, web_ca) = (Ca::new("db CA"), Ca::new("cache CA"), Ca::new("web CA"));
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&db_ca, &["localhost"]);
    let redis_dir = dir.path().join("redis");
    std::fs::create_dir(&redis_dir).unwrap();
    let (_redis, redis_port) = start_redis(&cache_ca, &redis_dir);
    let db_root = write_ca(dir.path(), "db-ca.pem", &db_ca);
    let mut backends = BackendArgs::embedded(dir.path().join("data"));
    backends.database_url = Some(cluster.url("localhost", &format!("sslmode=verify-full&sslrootcert={db_root}")));
    backends.cache_url = format!("rediss://localhost:{redis_port}");
    backends.cache_ca_file = Some(PathBuf::from(write_ca(dir.path(), "cache-ca.pem", &cache_ca)));

    // When `serve`'s application runs on them behind HTTPS
    let web_dir = dir.path().join("web");
    std::fs::create_dir(&web_dir).unwrap();
    let (cert, key) = web_ca.write_server_files(&web_dir);
    let tls = Arc::new(ServerTls::load(cert, key).unwrap());
    let served = serve_tls(Some(backends.clone()), tls, ServerConfig::default()).await;
    let mut stream = connect(served.addr, &web_ca.client()).await.unwrap();

    // Then an entry is recorded and its day's report read, twice (the second from Redis)
    let entry = r#"{"type":"credit","amount":"25.00","description":"Venda"}"#;
    assert_eq!(request(&mut stream, "POST", "/v1/entries", Some(&served.token), Some(entry)).await.0, 201);
    let today = chrono::Utc::now().with_timezone(&chrono_tz::America::Sao_Paulo).date_naive();
    let path = format!("/v1/balances/daily/{today}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = request(&mut stream, "GET", &path, Some(&served.token), None).await;
        if status == 200 && body.contains(r#""closing_balance":"25.00""#) {
            break;
        }
        assert!(Instant::now() < deadline, "the entry was never consolidated: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(request(&mut stream, "GET", &path, Some(&served.token), None).await.0, 200);

    // And readiness sees both the database and the cache up (over TLS: they take nothing else)
    let (status, body) = request(&mut stream, "GET", "/health/ready", None, None).await;
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")), "{ready}");

    // And a Redis client that trusts another CA never gets an answer
    let wrong =
        BackendArgs { cache_ca_file: Some(PathBuf::from(write_ca(dir.path(), "wrong.pem", &web_ca))), ..backends };
    let cache = wrong.cache().await.unwrap();
    assert!(cache.ping().await.is_err(), "Redis answered a client that does not trust its CA");
}
