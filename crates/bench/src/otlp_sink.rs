//! `--otel-sampling`: an OTLP/HTTP sink the traced runs export to. It reads each export
//! request whole and answers 200 with an empty body (an empty `ExportTraceServiceResponse`),
//! counting requests and bytes; nothing is decoded or stored, so the sink costs the machine
//! little beside the server it measures (the Python receiver, scripts/otlp-receiver.py, decodes
//! and writes every span: right for checking a trace, wrong for measuring the exporter's cost).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A running sink; stops when dropped.
pub struct Sink {
    pub endpoint: String,
    received: Arc<(AtomicU64, AtomicU64)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let received = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let counts = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, counts.clone()));
            }
        });
        Ok(Self { endpoint, received, task })
    }

    /// Export requests and their body bytes received so far.
    pub fn received(&self) -> (u64, u64) {
        (self.received.0.load(Ordering::Relaxed), self.received.1.load(Ordering::Relaxed))
    }
}

/// Answers the requests of one keep-alive connection.
async fn serve(stream: TcpStream, counts: Arc<(AtomicU64, AtomicU64)>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    loop {
        let mut length = 0usize;
        loop {
            line.clear();
            match read.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if read.read_exact(&mut body).await.is_err() {
            return;
        }
        counts.0.fetch_add(1, Ordering::Relaxed);
        counts.1.fetch_add(length as u64, Ordering::Relaxed);
        let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
