//! Group commit, written once for both ledger stores: callers queue writes, a writer takes them
//! in batches and answers each caller once its batch is committed.
//!
//! A write's cost is dominated by its commit (an fsync on SQLite, a WAL flush and a round trip
//! on Postgres), so one commit for every write that arrived meanwhile is what makes the write
//! path scale. The mechanism is the same on both backends: a bounded queue (backpressure), a
//! batch of at most `max` pending writes in arrival order, optionally lingering for more, and a
//! fan-out of one answer per write. What differs is how a batch is written (the SQL, binding,
//! conflict detection: [`crate::sqlite`], [`crate::postgres`]) and where the writer runs: the
//! SQLite writer is a thread of its own driving a synchronous connection
//! ([`Intake::next_blocking`]), the Postgres writers are tokio tasks ([`Intake::next`]). Each
//! backend drives its own loop around this module.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};

/// A write waiting for a writer, and where its caller waits for the answer.
type Pending<J, R> = (J, oneshot::Sender<R>);

/// The callers' side: hands a job to the writer and waits for its answer. Cloning it is cheap;
/// when the last clone is dropped the queue closes and the writer's loop ends.
pub(crate) struct GroupCommit<J, R> {
    queue: mpsc::Sender<Pending<J, R>>,
}

impl<J, R> Clone for GroupCommit<J, R> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone() }
    }
}

/// The writer has stopped (its thread or tasks are gone): the job was not written, or its
/// answer was lost with the writer.
#[derive(Debug)]
pub(crate) struct WriterStopped;

impl<J, R> GroupCommit<J, R> {
    /// A queue holding at most `capacity` pending jobs before callers wait to enqueue, and the
    /// writer's end of it.
    pub(crate) fn new(capacity: usize) -> (Self, Intake<J, R>) {
        let (queue, receiver) = mpsc::channel(capacity);
        (Self { queue }, Intake { receiver, arrived: Vec::new() })
    }

    /// Queues `job` and waits for its answer, which comes once its batch is committed (the
    /// span is that wait: the queue, the linger and the shared transaction).
    pub(crate) async fn submit(&self, job: J) -> Result<R, WriterStopped> {
        let span =
            cashflow_http::context::request_span("ledger.group_commit", || tracing::debug_span!("ledger.group_commit"));
        span.run(async {
            let (reply, answer) = oneshot::channel();
            self.queue.send((job, reply)).await.map_err(|_| WriterStopped)?;
            answer.await.map_err(|_| WriterStopped)
        })
        .await
    }
}

/// How long a writer holding a small batch waits for more before it writes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Linger {
    /// The longest wait, counted from the batch's first job.
    pub(crate) up_to: Duration,
    /// The batch size past which the writer stops waiting.
    pub(crate) until: usize,
    /// The longest pause between two arrivals the writer waits through. When nothing arrives
    /// for this long, the callers that were coming have come (a closed loop's callers, answered
    /// by the last commit, are back within a few hundred microseconds), and waiting out `up_to`
    /// would only delay them. Tokio's timer rounds it up to its next millisecond tick.
    pub(crate) gap: Duration,
    /// The batch size past which the writer stops waiting when no other batch is being
    /// written ([`InFlight`]). While one is, it waits for that batch to land (within the
    /// limits above), however many it holds: what arrives meanwhile would wait for that
    /// commit anyway.
    pub(crate) at_least: usize,
}

/// How many batches a backend's writers are writing, and a signal when one lands: what a
/// lingering writer waits on (see [`Linger::at_least`]).
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    batches: AtomicUsize,
    landed: Notify,
}

impl InFlight {
    /// Counts a batch as being written until the returned guard is dropped.
    pub(crate) fn start(&self) -> Flight<'_> {
        self.batches.fetch_add(1, Ordering::AcqRel);
        Flight(self)
    }
}

/// A batch being written (see [`InFlight::start`]).
pub(crate) struct Flight<'a>(&'a InFlight);

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.0.batches.fetch_sub(1, Ordering::AcqRel);
        self.0.landed.notify_waiters();
    }
}

/// The writer's side of the queue.
pub(crate) struct Intake<J, R> {
    receiver: mpsc::Receiver<Pending<J, R>>,
    /// What one receive took, on its way into the batch (kept to reuse its allocation).
    arrived: Vec<Pending<J, R>>,
}

impl<J, R> Intake<J, R> {
    /// Blocks the (non-async) writer thread until a job arrives, then fills `batch` with it and
    /// whatever else is already queued, up to `batch`'s maximum. `false` once the queue is
    /// closed and empty. Whatever queued while the previous commit was on its way to disk is the
    /// next batch: no lingering, the fsync already made the writes wait.
    pub(crate) fn next_blocking(&mut self, batch: &mut Batch<J, R>) -> bool {
        let Some(first) = self.receiver.blocking_recv() else { return false };
        batch.push(first);
        while !batch.is_full() {
            match self.receiver.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        batch.formed();
        true
    }

    /// Waits for jobs and fills `batch` with what is queued, up to its maximum; while it holds
    /// fewer than `linger.until`, waits up to `linger.up_to` for more, as long as they keep
    /// coming (no pause longer than `linger.gap`) and either another batch is being written
    /// (`others`) or it holds fewer than `linger.at_least`; the landing of the batches being
    /// written ends the wait for a batch that big. `false` once the queue is closed and empty.
    pub(crate) async fn next(&mut self, batch: &mut Batch<J, R>, linger: Linger, others: &InFlight) -> bool {
        if !self.take(batch).await {
            return false;
        }
        let deadline = tokio::time::Instant::now() + linger.up_to;
        while batch.len() < linger.until && !batch.is_full() {
            // Registered before the count is read, so a landing between the two is not missed.
            let landed = others.landed.notified();
            tokio::pin!(landed);
            landed.as_mut().enable();
            let flying = others.batches.load(Ordering::Acquire) > 0;
            if !flying && batch.len() >= linger.at_least {
                break;
            }
            let pause_ends = (tokio::time::Instant::now() + linger.gap).min(deadline);
            tokio::select! {
                took = tokio::time::timeout_at(pause_ends, self.take(batch)) => match took {
                    Ok(true) => {}
                    Ok(false) | Err(_) => break,
                },
                () = &mut landed, if flying => {}
            }
        }
        batch.formed();
        true
    }

    /// Waits for at least one job and moves every queued one into `batch` (up to its room).
    async fn take(&mut self, batch: &mut Batch<J, R>) -> bool {
        let room = batch.max - batch.len();
        if self.receiver.recv_many(&mut self.arrived, room).await == 0 {
            return false;
        }
        self.arrived.drain(..).for_each(|p| batch.push(p));
        true
    }
}

/// Up to `max` jobs in arrival order, and their callers. Reused from one batch to the next.
pub(crate) struct Batch<J, R> {
    jobs: Vec<J>,
    /// `replies[i]` waits for the answer to `jobs[i]`.
    replies: Vec<oneshot::Sender<R>>,
    max: usize,
}

impl<J, R> Batch<J, R> {
    /// An empty batch of at most `max` jobs.
    pub(crate) fn with_max(max: usize) -> Self {
        Self { jobs: Vec::with_capacity(max), replies: Vec::with_capacity(max), max: max.max(1) }
    }

    fn push(&mut self, (job, reply): Pending<J, R>) {
        self.jobs.push(job);
        self.replies.push(reply);
    }

    fn is_full(&self) -> bool {
        self.jobs.len() >= self.max
    }

    fn formed(&self) {
        metrics::histogram!("cashflow_ledger_write_batch_entries").record(self.jobs.len() as f64);
    }

    /// The jobs, in arrival order.
    pub(crate) fn jobs(&self) -> &[J] {
        &self.jobs
    }

    pub(crate) fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Sends `answers[i]` to the caller of job `i` and empties the batch. A job without an
    /// answer (too few given) has its caller told the writer stopped.
    pub(crate) fn answer(&mut self, answers: impl IntoIterator<Item = R>) {
        for (reply, answer) in self.replies.drain(..).zip(answers) {
            // A caller that stopped waiting (a dropped request) no longer needs the answer.
            let _ = reply.send(answer);
        }
        self.clear();
    }

    /// Answers each job with `f(job)` as soon as it is computed, in order, and empties the
    /// batch (for replaying a batch one job at a time: an early job's caller does not wait for
    /// the later ones).
    pub(crate) fn answer_each(&mut self, mut f: impl FnMut(&J) -> R) {
        for (job, reply) in self.jobs.iter().zip(self.replies.drain(..)) {
            let _ = reply.send(f(job));
        }
        self.clear();
    }

    fn clear(&mut self) {
        self.jobs.clear();
        self.replies.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_in_arrival_order_up_to_its_maximum() {
        // Given five jobs queued before the writer looks
        let (commit, mut intake) = GroupCommit::<u32, u32>::new(16);
        let callers: Vec<_> = (0..5)
            .map(|i| {
                let commit = commit.clone();
                tokio::spawn(async move { commit.submit(i).await.unwrap() })
            })
            .collect();
        while intake.receiver.len() < 5 {
            tokio::task::yield_now().await;
        }

        // When the writer forms batches of at most three and answers each job with its double
        let mut batch = Batch::with_max(3);
        let linger = Linger { up_to: Duration::ZERO, until: 0, gap: Duration::ZERO, at_least: 0 };
        assert!(intake.next(&mut batch, linger, &InFlight::default()).await);
        assert_eq!(batch.len(), 3);
        let mut seen: Vec<u32> = batch.jobs().to_vec();
        batch.answer(seen.clone().into_iter().map(|j| j * 2));
        assert!(intake.next(&mut batch, linger, &InFlight::default()).await);
        seen.extend(batch.jobs());
        batch.answer_each(|j| j * 2);

        // Then every job was taken once, and every caller got its own answer
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        for (i, caller) in callers.into_iter().enumerate() {
            assert_eq!(caller.await.unwrap(), 2 * i as u32);
        }
    }

    #[tokio::test]
    async fn a_small_batch_lingers_for_more_until_its_deadline() {
        // Given a first job, and a second one arriving 10 ms later
        let (commit, mut intake) = GroupCommit::<u32, u32>::new(16);
        let first = commit.clone();
        tokio::spawn(async move { first.submit(1).await });
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            commit.submit(2).await
        });

        // When the writer lingers up to a second while it holds fewer than 64, through pauses
        // of up to 100 ms
        let mut batch = Batch::with_max(256);
        let linger = Linger { up_to: Duration::from_secs(1), until: 64, gap: Duration::from_millis(100), at_least: 64 };
        assert!(intake.next(&mut batch, linger, &InFlight::default()).await);

        // Then both are in the batch
        assert_eq!(batch.jobs(), [1, 2]);
    }

    /// Jobs 1 to `queued` queued before the writer looks, and job `queued + 1` submitted
    /// `later` after that; `None`: no later job.
    async fn jobs(queued: u32, later: Option<Duration>) -> Intake<u32, u32> {
        let (commit, intake) = GroupCommit::<u32, u32>::new(16);
        for job in 1..=queued {
            let commit = commit.clone();
            tokio::spawn(async move { commit.submit(job).await });
        }
        if let Some(later) = later {
            tokio::spawn(async move {
                tokio::time::sleep(later).await;
                commit.submit(queued + 1).await
            });
        }
        while intake.receiver.len() < queued as usize {
            tokio::task::yield_now().await;
        }
        intake
    }

    #[tokio::test]
    async fn lingering_ends_when_arrivals_pause() {
        // Given three jobs, and a fourth only 2 s later
        let mut intake = jobs(3, Some(Duration::from_secs(2))).await;

        // When the writer may linger up to 5 s for 64, but through pauses of 20 ms only
        let started = std::time::Instant::now();
        let mut batch = Batch::with_max(256);
        let linger = Linger { up_to: Duration::from_secs(5), until: 64, gap: Duration::from_millis(20), at_least: 64 };
        assert!(intake.next(&mut batch, linger, &InFlight::default()).await);

        // Then it writes the three after the pause, without waiting for the fourth
        assert_eq!(batch.jobs(), [1, 2, 3]);
        assert!(started.elapsed() < Duration::from_secs(1), "lingered {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn with_no_other_batch_being_written_a_batch_big_enough_goes_at_once() {
        // Given three jobs queued and no other batch being written
        let others = InFlight::default();
        let mut intake = jobs(3, None).await;

        // When the writer would linger up to 5 s for 64, but stops at 2 with nothing in flight
        let started = std::time::Instant::now();
        let mut batch = Batch::with_max(256);
        let linger = Linger { up_to: Duration::from_secs(5), until: 64, gap: Duration::from_secs(1), at_least: 2 };
        assert!(intake.next(&mut batch, linger, &others).await);

        // Then it takes the three and does not wait
        assert_eq!(batch.jobs(), [1, 2, 3]);
        assert!(started.elapsed() < Duration::from_millis(500), "lingered {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn while_another_batch_is_written_a_writer_lingers_until_it_lands() {
        // Given three jobs queued, a fourth 30 ms later, and another writer's batch being
        // written, which lands after 200 ms
        let others = Arc::new(InFlight::default());
        let mut intake = jobs(3, Some(Duration::from_millis(30))).await;
        let (on_its_way, started_writing) = oneshot::channel();
        let writing = others.clone();
        tokio::spawn(async move {
            let _flight = writing.start();
            let _ = on_its_way.send(());
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        started_writing.await.unwrap();

        // When the writer would linger up to 5 s for 64, through pauses of up to a second, and
        // stop at 2 with nothing in flight
        let started = std::time::Instant::now();
        let mut batch = Batch::with_max(256);
        let linger = Linger { up_to: Duration::from_secs(5), until: 64, gap: Duration::from_secs(1), at_least: 2 };
        assert!(intake.next(&mut batch, linger, &others).await);
        let took = started.elapsed();

        // Then it waited for the other batch (past the 2 it needed alone), took the fourth,
        // and went when that batch landed, not at its 5 s deadline
        assert_eq!(batch.jobs(), [1, 2, 3, 4]);
        assert!(took >= Duration::from_millis(150), "went before the other batch landed: {took:?}");
        assert!(took < Duration::from_secs(2), "lingered past the landing: {took:?}");
    }

    #[tokio::test]
    async fn a_caller_whose_writer_is_gone_is_told_so() {
        // Given a writer that took a job and stopped without answering
        let (commit, mut intake) = GroupCommit::<u32, u32>::new(1);
        let caller = tokio::spawn({
            let commit = commit.clone();
            async move { commit.submit(1).await }
        });
        let mut batch = Batch::with_max(1);
        let linger = Linger { up_to: Duration::ZERO, until: 0, gap: Duration::ZERO, at_least: 0 };
        assert!(intake.next(&mut batch, linger, &InFlight::default()).await);
        batch.answer(std::iter::empty());
        drop(intake);

        // Then that caller, and any later one, hears the writer stopped
        assert!(matches!(caller.await.unwrap(), Err(WriterStopped)));
        assert!(matches!(commit.submit(2).await, Err(WriterStopped)));
    }
}
