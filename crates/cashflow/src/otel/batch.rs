//! The spans waiting to be exported, and the thread that exports them.
//!
//! A closing span is pushed onto one queue under a mutex, and the exporting thread is woken
//! only when a full batch is waiting, when its schedule delay has passed, or when someone
//! flushes: not for every span, as the SDK's batch processor's channel does, whose wake-ups
//! showed in a traced read's profile. For the OTLP exporter the span is written as protobuf
//! on the thread that ended it, before it is queued: its fields are read where they were
//! written, still in that core's cache, and freed by the thread that allocated them, and the
//! exporting thread only frames and sends bytes. Handing the records over instead made every
//! write's ~10 spans cross cores twice (read there, freed back): a traced write cost
//! 13 µs more CPU than an untraced one, against 24,500 more instructions (BENCHMARKS.md,
//! session 27). Past `max_queue` spans waiting, new ones are dropped and
//! counted (a warning says how many at the next export): a request never waits on the
//! exporter. The export itself (encoding, HTTP) happens on the exporting thread, a plain
//! thread with a blocking HTTP client: no async client on a thread without a runtime, no
//! exporter flushed from the current-thread runtimes that serve HTTP (the traps issue 14
//! names).
//!
//! A flush waits until everything pushed before it has been exported, or until its timeout,
//! whichever comes first: a collector that never answers delays it by the timeout and no more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::span::SpanRecord;

/// Where a batch of finished spans goes.
pub trait SpanExporter: Send + 'static {
    /// Readies the exporter on the exporting thread, before its first batch (the OTLP
    /// exporter builds its HTTP client, which reads the system's root certificates).
    fn start(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Whether it takes its spans written as OTLP ([`Self::export_written`]) rather than as
    /// records ([`Self::export`]).
    fn takes_written(&self) -> bool {
        false
    }
    /// Exports `spans` (at most the batch size), blocking until done or failed.
    fn export(&mut self, spans: &[SpanRecord]) -> Result<(), String>;
    /// Exports spans written as `ScopeSpans.spans` fields (at most the batch size).
    fn export_written(&mut self, spans: &[u8]) -> Result<(), String> {
        let _ = spans;
        Err("this exporter takes records".into())
    }
}

/// The batch settings (`OTEL_BSP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// The longest a span waits before it is exported (`OTEL_BSP_SCHEDULE_DELAY`, 5 s).
    pub schedule_delay: Duration,
    /// Spans waiting beyond which new ones are dropped (`OTEL_BSP_MAX_QUEUE_SIZE`, 2,048).
    pub max_queue: usize,
    /// Spans per export (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, 512).
    pub max_batch: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self { schedule_delay: Duration::from_secs(5), max_queue: 2048, max_batch: 512 }
    }
}

impl BatchSettings {
    /// From the `OTEL_BSP_*` variables, with the defaults above for those unset.
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(|var| std::env::var(var).ok())
    }

    /// From the variables `var` reads.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let number = |name: &str| -> Result<Option<u64>, String> {
            match var(name).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| format!("{name}={v}: expected a whole number")),
            }
        };
        let default = Self::default();
        let settings = Self {
            schedule_delay: number("OTEL_BSP_SCHEDULE_DELAY")?.map_or(default.schedule_delay, Duration::from_millis),
            max_queue: number("OTEL_BSP_MAX_QUEUE_SIZE")?.map_or(default.max_queue, |n| n as usize),
            max_batch: number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")?.map_or(default.max_batch, |n| n as usize),
        };
        if settings.max_queue == 0 || settings.max_batch == 0 {
            return Err("OTEL_BSP_MAX_QUEUE_SIZE and OTEL_BSP_MAX_EXPORT_BATCH_SIZE must be above 0".into());
        }
        // As the specification says: a batch is at most the queue.
        Ok(Self { max_batch: settings.max_batch.min(settings.max_queue), ..settings })
    }
}

/// What the pushers and the exporting thread share.
#[derive(Default)]
struct Queue {
    /// The spans waiting, as records or (for an exporter that takes them so) written.
    spans: Vec<SpanRecord>,
    written: Vec<u8>,
    /// How many spans `written` holds, and where each batch of them ends.
    written_count: usize,
    cuts: Vec<usize>,
    /// Flushes asked for, and how many of them the exporting thread has completed.
    flushes_asked: u64,
    flushes_done: u64,
    stopping: bool,
}

/// The spans waiting for export.
pub struct Batch {
    queue: Mutex<Queue>,
    /// Wakes the exporting thread.
    work: Condvar,
    /// Wakes the flushers.
    flushed: Condvar,
    settings: BatchSettings,
    dropped: AtomicU64,
    /// Whether spans are written before they are queued.
    writes: bool,
}

thread_local! {
    /// Where a span is written before it is queued (reused).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Batch {
    /// A batch exporting to `exporter` on a thread of its own, named `otel-export`.
    pub fn start(exporter: Box<dyn SpanExporter>, settings: BatchSettings) -> std::io::Result<Arc<Self>> {
        let batch = Arc::new(Self {
            queue: Mutex::new(Queue { spans: Vec::with_capacity(settings.max_batch), ..Queue::default() }),
            work: Condvar::new(),
            flushed: Condvar::new(),
            settings,
            dropped: AtomicU64::new(0),
            writes: exporter.takes_written(),
        });
        let exporting = batch.clone();
        std::thread::Builder::new().name("otel-export".into()).spawn(move || exporting.run(exporter))?;
        Ok(batch)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves plain data behind: keep going with it.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a finished span; drops it if the queue is full.
    pub(crate) fn push(&self, span: SpanRecord) {
        if self.writes {
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                scratch.clear();
                super::protobuf::span_field(&mut scratch, &span);
                self.push_written(&scratch);
            });
            return;
        }
        let mut queue = self.lock();
        if queue.stopping || queue.spans.len() >= self.settings.max_queue {
            drop(queue);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.spans.push(span);
        if queue.spans.len() == self.settings.max_batch {
            self.work.notify_one();
        }
    }

    fn push_written(&self, span: &[u8]) {
        let mut queue = self.lock();
        if queue.stopping || queue.written_count >= self.settings.max_queue {
            drop(queue);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.written.extend_from_slice(span);
        queue.written_count += 1;
        if queue.written_count.is_multiple_of(self.settings.max_batch) {
            let end = queue.written.len();
            queue.cuts.push(end);
        }
        if queue.written_count == self.settings.max_batch {
            self.work.notify_one();
        }
    }

    /// Exports what was queued before the call; false if `timeout` passed first.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut queue = self.lock();
        queue.flushes_asked += 1;
        let asked = queue.flushes_asked;
        self.work.notify_one();
        while queue.flushes_done < asked {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
            queue = self.flushed.wait_timeout(queue, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        true
    }

    /// Flushes (up to `timeout`) and stops the exporting thread; spans pushed later are dropped.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        let flushed = self.flush(timeout);
        self.lock().stopping = true;
        self.work.notify_one();
        flushed
    }

    /// The exporting thread.
    fn run(&self, mut exporter: Box<dyn SpanExporter>) {
        if let Err(e) = exporter.start() {
            tracing::warn!(error = %e, "span exporter not ready; each export tries again");
        }
        let mut taken = Vec::with_capacity(self.settings.max_batch);
        let (mut written, mut cuts) = (Vec::new(), Vec::new());
        loop {
            let mut queue = self.lock();
            let wake_at = Instant::now() + self.settings.schedule_delay;
            while queue.spans.len().max(queue.written_count) < self.settings.max_batch
                && queue.flushes_asked == queue.flushes_done
                && !queue.stopping
            {
                let Some(left) = wake_at.checked_duration_since(Instant::now()) else { break };
                queue = self.work.wait_timeout(queue, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
            }
            let (asked, stopping) = (queue.flushes_asked, queue.stopping);
            std::mem::swap(&mut queue.spans, &mut taken);
            std::mem::swap(&mut queue.written, &mut written);
            std::mem::swap(&mut queue.cuts, &mut cuts);
            queue.written_count = 0;
            drop(queue);
            for chunk in taken.chunks(self.settings.max_batch) {
                if let Err(e) = exporter.export(chunk) {
                    tracing::warn!(error = %e, spans = chunk.len(), "spans not exported");
                }
            }
            taken.clear();
            let mut from = 0;
            for to in cuts.iter().copied().chain([written.len()]).filter(|to| *to > 0) {
                if to > from {
                    if let Err(e) = exporter.export_written(&written[from..to]) {
                        tracing::warn!(error = %e, "spans not exported");
                    }
                }
                from = to;
            }
            written.clear();
            cuts.clear();
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 && !stopping {
                tracing::warn!(dropped, "spans dropped: the export queue was full (OTEL_BSP_MAX_QUEUE_SIZE)");
            }
            let mut queue = self.lock();
            queue.flushes_done = queue.flushes_done.max(asked);
            self.flushed.notify_all();
            if stopping {
                return;
            }
        }
    }
}

/// An exporter that keeps every span in memory, for tests: clones share the spans.
#[derive(Clone, Default)]
pub struct InMemory(Arc<Mutex<Vec<SpanRecord>>>);

impl InMemory {
    /// Every span exported so far.
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl SpanExporter for InMemory {
    fn export(&mut self, spans: &[SpanRecord]) -> Result<(), String> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(spans);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::span::Kind;
    use super::*;

    fn span(n: u8) -> SpanRecord {
        SpanRecord::new([1; 16], [n; 8], [0; 8], Kind::Internal, "s".into(), 0)
    }

    struct Stuck;
    impl SpanExporter for Stuck {
        fn export(&mut self, _: &[SpanRecord]) -> Result<(), String> {
            std::thread::sleep(Duration::from_secs(30));
            Ok(())
        }
    }

    #[test]
    fn a_flush_exports_what_was_pushed_before_it_without_waiting_for_the_schedule() {
        let memory = InMemory::default();
        let settings = BatchSettings { schedule_delay: Duration::from_secs(3600), ..BatchSettings::default() };
        let batch = Batch::start(Box::new(memory.clone()), settings).unwrap();
        batch.push(span(1));
        batch.push(span(2));
        assert!(batch.flush(Duration::from_secs(5)));
        let ids: Vec<u8> = memory.spans().iter().map(|s| s.span[0]).collect();
        assert_eq!(ids, [1, 2]);
    }

    #[test]
    fn a_full_batch_is_exported_without_a_flush_and_past_the_queue_spans_are_dropped() {
        let memory = InMemory::default();
        let settings = BatchSettings { schedule_delay: Duration::from_secs(3600), max_queue: 4, max_batch: 2 };
        let batch = Batch::start(Box::new(memory.clone()), settings).unwrap();
        batch.push(span(1));
        batch.push(span(2));
        let deadline = Instant::now() + Duration::from_secs(5);
        while memory.spans().len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(memory.spans().len(), 2, "a full batch is sent at once");

        // A stuck exporter: the queue fills, then spans are dropped, and a flush gives up on time.
        let stuck = Batch::start(Box::new(Stuck), settings).unwrap();
        stuck.push(span(1));
        stuck.push(span(2)); // a full batch: the thread takes it and sticks
        std::thread::sleep(Duration::from_millis(100));
        for n in 3..10 {
            stuck.push(span(n));
        }
        assert_eq!(stuck.lock().spans.len(), 4, "the queue holds max_queue spans");
        assert_eq!(stuck.dropped.load(Ordering::Relaxed), 3);
        let started = Instant::now();
        assert!(!stuck.flush(Duration::from_millis(200)));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    /// Keeps the batches of written spans it is given.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<Vec<u8>>>>);
    impl SpanExporter for Written {
        fn takes_written(&self) -> bool {
            true
        }
        fn export(&mut self, _: &[SpanRecord]) -> Result<(), String> {
            Err("records were handed over".into())
        }
        fn export_written(&mut self, spans: &[u8]) -> Result<(), String> {
            self.0.lock().unwrap().push(spans.to_vec());
            Ok(())
        }
    }

    #[test]
    fn spans_are_written_where_they_end_and_leave_in_batches_of_the_batch_size() {
        let written = Written::default();
        let settings = BatchSettings { schedule_delay: Duration::from_secs(3600), max_queue: 10, max_batch: 2 };
        let batch = Batch::start(Box::new(written.clone()), settings).unwrap();
        let one = |n| {
            let mut one = Vec::new();
            super::super::protobuf::span_field(&mut one, &span(n));
            one
        };
        for n in 1..=5 {
            batch.push(span(n));
        }
        assert!(batch.flush(Duration::from_secs(5)));
        let batches = written.0.lock().unwrap().clone();
        // Every span, in order, written as the encoder writes it, at most two to a batch.
        assert_eq!(batches.concat(), (1..=5).flat_map(one).collect::<Vec<u8>>());
        let span_len = one(1).len();
        assert!(
            batches.iter().all(|b| !b.is_empty() && b.len() <= 2 * span_len),
            "{:?}",
            batches.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_batch_variables_set_the_delay_the_queue_and_the_batch() {
        fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
        }
        assert_eq!(BatchSettings::from_vars(vars(&[])), Ok(BatchSettings::default()));
        let set = [
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "500"),
        ];
        let expected = BatchSettings { schedule_delay: Duration::from_millis(200), max_queue: 100, max_batch: 100 };
        assert_eq!(BatchSettings::from_vars(vars(&set)), Ok(expected), "a batch is at most the queue");
        assert!(BatchSettings::from_vars(vars(&[("OTEL_BSP_SCHEDULE_DELAY", "5s")])).is_err());
        assert!(BatchSettings::from_vars(vars(&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")])).is_err());
    }
}
