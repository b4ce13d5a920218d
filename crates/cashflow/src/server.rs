//! The HTTP server: one single-threaded runtime per core ("lane"), each serving the
//! connections the acceptor hands it, round robin.
//!
//! Why not `axum::serve` on the multi-threaded runtime: there, the worker that polls the
//! sockets wakes another worker (a futex) to run the request it just read, which steals it
//! and parks again when done. On a cached report read that hand-over cost ~10% of the CPU of
//! the request. A lane reads, handles and answers a connection's requests on one thread
//! without any hand-over, like nginx's workers. Round robin keeps the lanes' connection counts
//! within one of each other (`SO_REUSEPORT` hashing would not, with tens of connections).
//! The background workers (relay, consumer, gauges) stay on the main runtime.
//!
//! A lane's runtime lives until the process ends, after its connections are drained: a
//! database or Redis connection a handler opened from a lane is registered with that lane's
//! I/O driver, and the background workers may still use it while they finish.

use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How many lanes: one per core the process may use.
fn lane_count() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// Serves `router` on `listener` until `shutdown` turns true, then stops accepting and waits
/// for in-flight requests to finish (idle keep-alive connections are closed).
pub async fn serve(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut lanes = Vec::new();
    let mut drained = Vec::new();
    for i in 0..lane_count() {
        let (connections, incoming) = mpsc::unbounded_channel();
        let (done, finished) = oneshot::channel();
        let (router, shutdown) = (router.clone(), shutdown.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building an HTTP lane's runtime")?;
        std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    lane(incoming, router, shutdown).await;
                    let _ = done.send(());
                    // Keep the runtime (and its I/O driver) for the rest of the process.
                    std::future::pending::<()>().await;
                });
            })
            .context("starting an HTTP lane")?;
        lanes.push(connections);
        drained.push(finished);
    }

    let mut next = 0;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(stream) = stream.into_std() else { continue };
                    // A lane stops only at shutdown, which also ends this loop.
                    let _ = lanes[next % lanes.len()].send(stream);
                    next += 1;
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
    drop(listener);
    drop(lanes);
    for lane in drained {
        let _ = lane.await;
    }
    Ok(())
}

/// One lane: serves every connection it is handed, on the current (single-threaded) runtime.
async fn lane(
    mut incoming: mpsc::UnboundedReceiver<std::net::TcpStream>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let stop = shutdown.clone();
    loop {
        tokio::select! {
            stream = incoming.recv() => match stream {
                Some(stream) => {
                    if let Ok(stream) = TcpStream::from_std(stream) {
                        connections.spawn(connection(stream, router.clone(), stop.clone()));
                    }
                }
                None => break,
            },
            Some(_) = connections.join_next() => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    while connections.join_next().await.is_some() {}
}

/// Serves one connection's requests (HTTP/1.1, keep-alive) until the client closes it, or
/// until shutdown, after its in-flight request.
async fn connection(stream: TcpStream, router: Router, mut shutdown: watch::Receiver<bool>) {
    // Responses go out whole in one write; Nagle would only delay pipelined ones.
    let _ = stream.set_nodelay(true);
    // The peer address, for handlers that need it (the token endpoint's throttle).
    let peer = stream.peer_addr().ok().map(axum::extract::ConnectInfo);
    let service = TowerToHyperService::new(router.map_request(move |req: Request<Incoming>| {
        let mut req = req.map(Body::new);
        if let Some(peer) = peer {
            req.extensions_mut().insert(peer);
        }
        req
    }));
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return log_end(result),
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    connection.as_mut().graceful_shutdown();
    log_end(connection.await);
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Errors of one connection that was reset before it was accepted: not the listener's fault.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}
