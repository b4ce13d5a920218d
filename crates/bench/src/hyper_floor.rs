//! The HTTP library's floor: hyper alone, laid out as `cashflow serve` lays out its HTTP lanes
//! (one single-threaded runtime per core, each accepted connection handed to the next lane),
//! answering every request with a fixed response of the same size as nginx's.
//!
//! Why: nginx is the ceiling of the rates; what it costs per request is the cost of the
//! fastest server there is, not of the one we build on. This floor is what hyper and tokio
//! spend before any of our code runs, so a request's server CPU splits into the library's
//! share and ours (routing, middleware, the handler), in the same run. The target of a cached
//! read's CPU is judged against both (BENCHMARKS.md, session 33).
//!
//! It runs inside the bench's process, on threads of its own, whose CPU ([`HyperFloor::cpu_seconds`])
//! is read from `/proc/self/task`: the bench itself only waits for oha meanwhile.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, watch};

/// Every thread of the floor has a name starting with this (at most 15 bytes in all).
const THREAD_PREFIX: &str = "hyper-floor";

/// A running floor; stopped when dropped.
pub struct HyperFloor {
    pub base: String,
    stop: watch::Sender<bool>,
}

impl HyperFloor {
    /// Starts the floor on a free port of 127.0.0.1, answering every request with `status`
    /// and `body` (as JSON).
    pub fn start(status: u16, body: &str) -> anyhow::Result<Self> {
        let status = StatusCode::from_u16(status).context("the floor's status")?;
        let body = Bytes::copy_from_slice(body.as_bytes());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the floor's port")?;
        listener.set_nonblocking(true).context("the floor's listener")?;
        let addr: SocketAddr = listener.local_addr().context("the floor's port")?;
        let (stop, stopped) = watch::channel(false);
        let lanes = std::thread::available_parallelism().map_or(2, usize::from);
        let mut handed = Vec::with_capacity(lanes);
        for i in 0..lanes {
            let (hand, incoming) = mpsc::unbounded_channel();
            handed.push(hand);
            let (body, stopped) = (body.clone(), stopped.clone());
            on_thread(format!("{THREAD_PREFIX}-{i}"), lane(incoming, status, body, stopped))?;
        }
        on_thread(format!("{THREAD_PREFIX}-a"), accept(listener, handed, stopped))?;
        Ok(Self { base: format!("http://{addr}"), stop })
    }

    /// CPU time (user + system, seconds) the floor's threads have spent so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let tasks = std::fs::read_dir("/proc/self/task").ok()?;
        let mut ticks = 0;
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.starts_with(THREAD_PREFIX) {
                ticks += crate::tls::own_ticks_path(&task.path().join("stat")).unwrap_or(0);
            }
        }
        Some(ticks as f64 / 100.0) // USER_HZ
    }
}

impl Drop for HyperFloor {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Runs `task` on a single-threaded runtime of a thread named `name`, until it ends.
fn on_thread(name: String, task: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("a floor runtime")?;
    std::thread::Builder::new().name(name).spawn(move || runtime.block_on(task)).context("a floor thread")?;
    Ok(())
}

/// Hands each accepted connection to the next lane, until stopped.
async fn accept(
    listener: std::net::TcpListener,
    lanes: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    mut stopped: watch::Receiver<bool>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
    let mut next = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok(stream) = accepted.and_then(|(stream, _)| stream.into_std()) else { continue };
                if let Some(lane) = lanes.get(next % lanes.len()) {
                    let _ = lane.send(stream);
                }
                next += 1;
            }
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// Serves the connections handed to it, each on a task of its own, until stopped.
async fn lane(
    mut incoming: mpsc::UnboundedReceiver<std::net::TcpStream>,
    status: StatusCode,
    body: Bytes,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            handed = incoming.recv() => {
                let Some(stream) = handed else { return };
                let Ok(stream) = tokio::net::TcpStream::from_std(stream) else { continue };
                let _ = stream.set_nodelay(true);
                let body = body.clone();
                let respond = hyper::service::service_fn(move |_: Request<Incoming>| {
                    let mut response = Response::new(Full::new(body.clone()));
                    *response.status_mut() = status;
                    response
                        .headers_mut()
                        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
                    async move { Ok::<_, Infallible>(response) }
                });
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), respond).await;
                });
            }
            Some(_) = connections.join_next() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// Whether a thread of the floor still runs (for the test that it stops).
#[cfg(test)]
fn running() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| {
        tasks
            .flatten()
            .any(|task| std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.starts_with(THREAD_PREFIX)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_floor_answers_every_request_with_its_fixed_response_and_stops_when_dropped() {
        // Given a floor answering 201 with a JSON body
        let floor = HyperFloor::start(201, r#"{"id":"x"}"#).unwrap();

        // When it is asked on keep-alive connections
        let client = reqwest::Client::new();
        for path in ["/", "/v1/entries", "/anything?at=all"] {
            let response = client.post(format!("{}{path}", floor.base)).body("{}").send().await.unwrap();

            // Then each answer is the fixed one
            assert_eq!(response.status(), 201);
            assert_eq!(response.headers()["content-type"], "application/json");
            assert_eq!(response.text().await.unwrap(), r#"{"id":"x"}"#);
        }
        // And its threads run, their CPU readable
        assert!(running());
        assert!(floor.cpu_seconds().is_some());

        // And dropping it stops its threads
        drop(floor);
        for _ in 0..100 {
            if !running() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the floor's threads still run");
    }
}
