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
//!
//! # Slow and rude clients
//! A connection costs a file descriptor and a task, so none is held forever ([`ServerConfig`]):
//! - a request's header must arrive within the header-read timeout, counted from the accept
//!   or from the first byte after an idle keep-alive period; a keep-alive connection idle for
//!   the keep-alive timeout is closed; a request body must arrive within the body-read timeout;
//! - past the connection cap, a new connection is closed at once instead of waiting for a
//!   lane (slowloris: thousands of half-sent headers then only hold slots until their timeout);
//! - a response that leaves part of the request unread (the 413 of an oversized body) is
//!   followed by a *lingering close*, as nginx does: the write side is shut and what the client
//!   still sends is read and discarded (within [`LINGER_TIME`] and [`LINGER_BYTES`]) before the
//!   socket closes. Closing with unread data would send a reset, and a client that writes its
//!   whole body before reading would see `Connection reset` instead of the problem.
//!
//! # TLS
//! With a certificate ([`ServerTls`]) every connection is HTTPS. The handshake runs on the
//! lane, like the rest of the connection, so the acceptor never does cryptography and the
//! handshakes spread over the cores; it must finish within the header-read timeout (a client
//! that opens a connection and never completes the handshake is a slowloris too). Each
//! handshake takes the certificate in force when it starts, so a reload reaches new
//! connections and leaves open ones alone.
//!
//! hyper's own `header_read_timeout` is not used: it also runs while a keep-alive connection
//! waits for its next request, so it cannot give a header 10 s and an idle connection 60 s.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::tls::ServerTls;

/// Default of [`ServerConfig::header_read_timeout`] (nginx's `client_header_timeout` is 60 s;
/// a request header of this API is a few hundred bytes).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ServerConfig::keep_alive_timeout`].
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`ServerConfig::body_read_timeout`]: bodies are at most 16 KiB.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ServerConfig::max_connections`]: below the usual soft limit of 1024 file
/// descriptors times a few, and far above what the benchmarks' load generators open.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Longest a lingering close waits for the client to stop sending (nginx: `lingering_time`).
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes a lingering close reads and discards before it gives up.
pub const LINGER_BYTES: usize = 8 * 1024 * 1024;

/// How long the server waits for slow clients, and how many connections it keeps open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// A request's header must arrive within this, from the accept or from its first byte.
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    pub keep_alive_timeout: Duration,
    /// A request's body must arrive within this, from the first time the handler waits for it.
    pub body_read_timeout: Duration,
    /// Open connections per process; past it, new connections are closed at once.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// How many lanes: one per core the process may use.
fn lane_count() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// A connection handed to a lane, with its slot under the connection cap.
struct Accepted {
    stream: std::net::TcpStream,
    permit: OwnedSemaphorePermit,
}

/// Serves `router` on `listener` until `shutdown` turns true, then stops accepting and waits
/// for in-flight requests to finish (idle keep-alive connections are closed). With `tls`,
/// HTTPS only.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ServerConfig,
    tls: Option<Arc<ServerTls>>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut lanes = Vec::new();
    let mut drained = Vec::new();
    for i in 0..lane_count() {
        let (connections, incoming) = mpsc::unbounded_channel();
        let (done, finished) = oneshot::channel();
        let (router, tls, shutdown) = (router.clone(), tls.clone(), shutdown.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building an HTTP lane's runtime")?;
        std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    lane(incoming, router, config, tls, shutdown).await;
                    let _ = done.send(());
                    // Keep the runtime (and its I/O driver) for the rest of the process.
                    std::future::pending::<()>().await;
                });
            })
            .context("starting an HTTP lane")?;
        lanes.push(connections);
        drained.push(finished);
    }

    // Every open connection holds a permit until its socket is closed (lingering included),
    // so the lanes' channels never hold more than the cap either.
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut next = 0;
    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        metrics::counter!("cashflow_http_connections_refused_total").increment(1);
                        continue; // dropped: closed at once
                    };
                    let Ok(stream) = stream.into_std() else { continue };
                    // A lane stops only at shutdown, which also ends this loop.
                    let _ = lanes[next % lanes.len()].send(Accepted { stream, permit });
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

/// Resolves when `shutdown` turns true (without holding its guard, so `serve` stays `Send`).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// One lane: serves every connection it is handed, on the current (single-threaded) runtime.
async fn lane(
    mut incoming: mpsc::UnboundedReceiver<Accepted>,
    router: Router,
    config: ServerConfig,
    tls: Option<Arc<ServerTls>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let stop = shutdown.clone();
    loop {
        tokio::select! {
            accepted = incoming.recv() => match accepted {
                Some(Accepted { stream, permit }) => {
                    if let Ok(stream) = TcpStream::from_std(stream) {
                        let tls = tls.as_ref().map(|tls| tls.acceptor());
                        connections.spawn(open(stream, tls, permit, router.clone(), config, stop.clone()));
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

/// Opens a connection: the TLS handshake first, if any (within the header-read timeout), then
/// its requests.
async fn open(
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    permit: OwnedSemaphorePermit,
    router: Router,
    config: ServerConfig,
    shutdown: watch::Receiver<bool>,
) {
    // Responses go out whole in one write; Nagle would only delay pipelined ones.
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = tls else {
        return connection(stream, permit, router, config, shutdown).await;
    };
    match tokio::time::timeout(config.header_read_timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => connection(stream, permit, router, config, shutdown).await,
        Ok(Err(e)) => {
            metrics::counter!("cashflow_tls_handshake_failures_total").increment(1);
            tracing::debug!(error = %e, "TLS handshake failed");
        }
        Err(_) => {
            metrics::counter!("cashflow_tls_handshake_failures_total").increment(1);
            tracing::debug!("TLS handshake not completed in time: connection closed");
        }
    }
}

/// A connection's byte stream: plain TCP or TLS over TCP. The socket underneath is what a
/// lingering close reads from.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn into_tcp(self) -> TcpStream;
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr>;
}

impl Transport for TcpStream {
    fn into_tcp(self) -> TcpStream {
        self
    }
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        TcpStream::peer_addr(self)
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    fn into_tcp(self) -> TcpStream {
        self.into_inner().0
    }
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.get_ref().0.peer_addr()
    }
}

/// Serves one connection's requests (HTTP/1.1, keep-alive) until the client closes it, a
/// timeout of [`ServerConfig`] expires, or shutdown (after its in-flight request).
async fn connection<S: Transport>(
    stream: S,
    permit: OwnedSemaphorePermit,
    router: Router,
    config: ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    // The peer address, for handlers that need it (the token endpoint's throttle).
    let peer = Transport::peer_addr(&stream).ok().map(axum::extract::ConnectInfo);
    let io = Guarded { stream: Some(stream), activity: activity.clone(), shut_down: false, permit: Some(permit) };
    let body_timeout = config.body_read_timeout;
    let service = TowerToHyperService::new(Tracked {
        inner: router.map_request(move |req: Request<Incoming>| {
            let mut req = req.map(|body| Body::new(TimedBody { body, timeout: body_timeout, deadline: None }));
            if let Some(peer) = peer {
                req.extensions_mut().insert(peer);
            }
            req
        }),
        activity: activity.clone(),
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let check = tokio::time::sleep(activity.next_check(&config));
    tokio::pin!(check);
    loop {
        tokio::select! {
            result = connection.as_mut() => return log_end(result),
            _ = shutdown.wait_for(|stop| *stop) => break,
            _ = check.as_mut() => match activity.expired(&config) {
                Some(Expired::Header) => {
                    tracing::debug!("request header not received in time: connection closed");
                    return;
                }
                Some(Expired::Idle) => break,
                None => check.as_mut().reset(Instant::now() + activity.next_check(&config)),
            },
        }
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

/// Which timeout of a connection expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    /// A request header started (or the connection was opened) and is still incomplete.
    Header,
    /// No request since the last response.
    Idle,
}

/// Where a connection is between requests, shared by its socket (bytes read) and its service
/// (request started and answered). Times are nanoseconds since `opened`; the connection's
/// task reads them on its own timer, so a request pays two atomic stores and no timer.
struct Activity {
    opened: Instant,
    /// A request is being handled (its body has a timeout of its own).
    busy: AtomicBool,
    /// The last response was handed to hyper; `0` for a connection that never had a request.
    idle_since: AtomicU64,
    /// The first byte read since `idle_since`; [`NOT_YET`] if none.
    header_since: AtomicU64,
}

const NOT_YET: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        // A new connection is in its first header from the start: sending nothing is no better
        // than sending half a header.
        Self {
            opened: Instant::now(),
            busy: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            header_since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(NOT_YET - 1)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.opened + Duration::from_nanos(nanos)
    }

    fn request_started(&self) {
        self.busy.store(true, Ordering::Relaxed);
    }

    fn request_answered(&self) {
        self.header_since.store(NOT_YET, Ordering::Relaxed);
        self.idle_since.store(self.now(), Ordering::Relaxed);
        self.busy.store(false, Ordering::Relaxed);
    }

    fn bytes_read(&self) {
        if !self.busy.load(Ordering::Relaxed) && self.header_since.load(Ordering::Relaxed) == NOT_YET {
            self.header_since.store(self.now(), Ordering::Relaxed);
        }
    }

    /// The timeout that expired, if any.
    fn expired(&self, config: &ServerConfig) -> Option<Expired> {
        let (kind, deadline) = self.deadline(config)?;
        (Instant::now() >= deadline).then_some(kind)
    }

    fn deadline(&self, config: &ServerConfig) -> Option<(Expired, Instant)> {
        if self.busy.load(Ordering::Relaxed) {
            return None;
        }
        match self.header_since.load(Ordering::Relaxed) {
            NOT_YET => {
                Some((Expired::Idle, self.at(self.idle_since.load(Ordering::Relaxed)) + config.keep_alive_timeout))
            }
            since => Some((Expired::Header, self.at(since) + config.header_read_timeout)),
        }
    }

    /// When to look again. A deadline only moves later, except when a phase starts that the
    /// current one does not know of yet (a header after idling, idling after a request); the
    /// shortest timeout such a phase can have bounds the wait, so no deadline is overslept.
    fn next_check(&self, config: &ServerConfig) -> Duration {
        let shortest = config.header_read_timeout.min(config.keep_alive_timeout);
        let wait = match self.deadline(config) {
            Some((Expired::Header, deadline)) => deadline.saturating_duration_since(Instant::now()),
            Some((Expired::Idle, deadline)) => {
                deadline.saturating_duration_since(Instant::now()).min(config.header_read_timeout)
            }
            None => shortest,
        };
        // A little past the deadline, so the check that follows finds it expired.
        wait + Duration::from_millis(1)
    }
}

/// The connection's socket: marks the first byte of each request header, and closes with a
/// lingering close ([`LINGER_TIME`]) after hyper shut it down with a request left unread.
struct Guarded<S: Transport> {
    /// Taken by `Drop` for the lingering close.
    stream: Option<S>,
    activity: Arc<Activity>,
    /// hyper ended the connection normally (after a response), not on an error or a timeout.
    shut_down: bool,
    /// The connection's slot under the cap, released when the socket closes.
    permit: Option<OwnedSemaphorePermit>,
}

fn closed() -> io::Error {
    io::Error::from(io::ErrorKind::NotConnected)
}

impl<S: Transport> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let Some(stream) = self.stream.as_mut() else { return Poll::Ready(Err(closed())) };
        let result = Pin::new(stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl<S: Transport> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.stream.as_mut() {
            Some(stream) => Pin::new(stream).poll_write(cx, buf),
            None => Poll::Ready(Err(closed())),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream.as_mut() {
            Some(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(closed())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream.as_mut() {
            Some(stream) => Pin::new(stream).poll_flush(cx),
            None => Poll::Ready(Err(closed())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut_down = true;
        match self.stream.as_mut() {
            Some(stream) => Pin::new(stream).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<S: Transport> Drop for Guarded<S> {
    fn drop(&mut self) {
        let (Some(stream), Some(permit)) = (self.stream.take(), self.permit.take()) else { return };
        if !self.shut_down {
            return; // an error or a timeout: nothing owed to the client
        }
        // Under TLS the close_notify went out with the shutdown; what the client still sends
        // is discarded unread, so the raw socket is enough.
        let stream = stream.into_tcp();
        // The usual case: the client has closed its side already, nothing to linger for.
        let mut probe = [0u8; 1];
        if matches!(stream.try_read(&mut probe), Ok(0)) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(stream, permit));
        }
    }
}

/// Reads and discards what the client still sends after the response (its write side is shut
/// already), until it closes, [`LINGER_TIME`] passes or [`LINGER_BYTES`] were read.
async fn linger(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    use tokio::io::AsyncReadExt;
    let deadline = Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 64 * 1024];
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => discarded += n,
            _ => return,
        }
    }
}

/// The router, telling the connection's [`Activity`] when a request starts and is answered.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> tower::Service<Request<Incoming>> for Tracked<S>
where
    S: tower::Service<Request<Incoming>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        self.activity.request_started();
        let answered = Answered(self.activity.clone());
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await;
            drop(answered);
            response
        })
    }
}

/// Marks the request answered when dropped: also when hyper drops the request unanswered.
struct Answered(Arc<Activity>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.request_answered();
    }
}

/// A request body that fails once it has been awaited for longer than the body-read timeout.
/// The timer starts only when the body is not already there, so a request whose body came
/// with its header never arms one.
struct TimedBody {
    body: Incoming,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

/// The request body did not arrive within the body-read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub struct BodyTimeout(Duration);

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let timeout = self.timeout;
                let deadline = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(timeout).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
