//! The HTTP server (`cashflow::server::serve`) against slow and rude clients, on real sockets:
//! half-sent headers (slowloris), idle keep-alive connections, stalled bodies, more
//! connections than the cap, and a client that writes an oversized body before it reads.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly, by design

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use cashflow::app::{AppConfig, Application};
use cashflow::server::{self, ServerConfig};
use cashflow_auth::Scopes;

mod common;

/// The application the binary serves, behind the real server, on a port of its own.
struct Served {
    addr: SocketAddr,
    token: String,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn serve(config: ServerConfig) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let app = Application::build(&AppConfig::embedded(dir.path(), "http://cashflow.test", Duration::from_secs(600)))
        .await
        .unwrap();
    let merchant = common::create_merchant(&app).await;
    let token = app.issuer.mint("test-client", merchant, Scopes::all()).unwrap().0;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(server::serve(listener, app.router(), config, None, shutdown));
    Served { addr, token, _stop: stop, _dir: dir }
}

fn config() -> ServerConfig {
    ServerConfig { max_connections: 10_000, ..ServerConfig::default() }
}

/// One `GET /health/live` on a fresh connection; its status line and how long it took.
async fn live(addr: SocketAddr) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    (text.lines().next().unwrap_or_default().to_owned(), started.elapsed())
}

/// Waits until the server closes `stream` (EOF or reset); how long that took, or `None` past
/// `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_are_closed_after_the_header_timeout_while_other_requests_are_answered() {
    // Given a server with a 2 s header-read timeout and 2,000 connections that sent half a header
    const ATTACKERS: usize = 2_000;
    let timeout = Duration::from_secs(2);
    let served = serve(ServerConfig { header_read_timeout: timeout, ..config() }).await;
    let attack_started = Instant::now();
    let mut attackers = Vec::with_capacity(ATTACKERS);
    for _ in 0..ATTACKERS {
        let mut stream = TcpStream::connect(served.addr).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        attackers.push((Instant::now(), stream));
    }
    let opened = attack_started.elapsed();

    // When normal requests arrive on other connections meanwhile
    let addr = served.addr;
    let normal = tokio::spawn(async move {
        let mut latencies = Vec::new();
        while latencies.len() < 40 {
            let (status, took) = live(addr).await;
            assert_eq!(status, "HTTP/1.1 200 OK");
            latencies.push(took);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        latencies
    });

    // Then every half-open connection is closed by the server within the timeout (+ slack)
    let closes = futures_util::future::join_all(attackers.iter_mut().map(|(sent, stream)| async move {
        closed_within(stream, timeout + Duration::from_secs(3)).await.map(|_| sent.elapsed())
    }))
    .await;
    let still_open = closes.iter().filter(|c| c.is_none()).count();
    assert_eq!(still_open, 0, "{still_open} of {ATTACKERS} half-sent headers were still open");
    let mut open_for: Vec<Duration> = closes.into_iter().flatten().collect();
    open_for.sort();
    // And the normal requests were answered, promptly
    let mut latencies = normal.await.unwrap();
    latencies.sort();
    eprintln!(
        "slowloris: {ATTACKERS} half-sent headers (opened in {opened:?}) closed {:?}..{:?} after their header was \
         sent (header timeout {timeout:?}); {} normal requests meanwhile: p50 {:?}, p99 {:?}, max {:?}",
        open_for[0],
        open_for[open_for.len() - 1],
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    assert!(percentile(&latencies, 0.99) < Duration::from_millis(500), "{latencies:?}");
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_after_the_header_timeout() {
    // Given a server with a 1 s header-read timeout
    let served = serve(ServerConfig { header_read_timeout: Duration::from_secs(1), ..config() }).await;
    // When a client connects and sends nothing
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    // Then the server closes it after about a second
    let closed = closed_within(&mut stream, Duration::from_secs(4)).await.expect("still open");
    assert!(closed >= Duration::from_millis(900), "closed too early: {closed:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout_not_the_header_timeout() {
    // Given a server with a 1 s header timeout and a 3 s keep-alive timeout
    let config = ServerConfig {
        header_read_timeout: Duration::from_secs(1),
        keep_alive_timeout: Duration::from_secs(3),
        ..config()
    };
    let served = serve(config).await;
    // When a client makes a request, reads the answer, and then keeps the connection idle
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    stream.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    // Then it stays open past the header timeout and is closed after the keep-alive timeout
    let closed = closed_within(&mut stream, Duration::from_secs(6)).await.expect("still open after 6 s");
    assert!(closed >= Duration::from_millis(2_900), "closed after {closed:?}, before the keep-alive timeout");
}

#[tokio::test]
async fn a_stalled_request_body_is_cut_off_after_the_body_timeout() {
    // Given a server with a 1 s body-read timeout
    let served = serve(ServerConfig { body_read_timeout: Duration::from_secs(1), ..config() }).await;
    // When a client announces 200 bytes of body, sends 10 and stalls
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    let head = format!(
        "POST /v1/entries HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 200\r\n\r\n{{\"type\":\"",
        served.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Then the request ends (answered with a 4xx, then closed) within the timeout and some slack
    let started = Instant::now();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(4), stream.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "the stalled body still held the connection after {:?}", started.elapsed());
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 4"), "{text}");
}

#[tokio::test]
async fn past_the_connection_cap_a_new_connection_is_closed_at_once() {
    // Given a server capped at 3 connections, all 3 open
    let served = serve(ServerConfig { max_connections: 3, ..ServerConfig::default() }).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(served.addr).await.unwrap();
        stream.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 4096];
        assert!(stream.read(&mut buf).await.unwrap() > 0);
        held.push(stream);
    }
    // When a fourth connects
    let mut refused = TcpStream::connect(served.addr).await.unwrap();
    // Then it is closed at once, not queued
    let closed = closed_within(&mut refused, Duration::from_secs(1)).await.expect("the fourth was kept waiting");
    assert!(closed < Duration::from_millis(500), "{closed:?}");
    // And once one of the three leaves, a new connection is served again
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut stream = TcpStream::connect(served.addr).await.unwrap();
        let _ = stream.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        if response.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no slot came free after a connection closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_that_writes_a_5_mib_body_before_reading_gets_the_413_problem() {
    // Given the real application behind the real server
    let served = serve(config()).await;
    // When a client writes a 5 MiB entry in full, and only then reads
    let body = vec![b' '; 5 * 1024 * 1024];
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    let head = format!(
        "POST /v1/entries HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        served.token,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("writing the header");
    stream.write_all(&body).await.expect("writing the body: the server reset the connection");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("reading the answer: the server reset the connection");
    // Then it reads the 413 problem
    let text = String::from_utf8_lossy(&response).to_lowercase();
    assert!(text.starts_with("http/1.1 413"), "{text}");
    assert!(text.contains("content-type: application/problem+json"), "{text}");
}
