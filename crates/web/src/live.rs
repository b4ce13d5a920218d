//! Live balance: consolidation commits pushed to the page as server-sent events.
//!
//! The consumer invalidates a merchant's cached reports after every commit it makes
//! (`ReportCache::invalidate(merchant, from)`), so that call is exactly "the balance changed".
//! [`Live::wrap`] decorates the cache handed to the consumer: each invalidation is passed on and
//! also broadcast as a [`Change`] with a sequence number. The page's `EventSource` subscribes
//! through [`events`]; each change of its merchant becomes an event whose `id` is that number,
//! and the page refetches its balance fragment. There is no polling loop anywhere.
//!
//! Resuming: a reconnecting `EventSource` sends `Last-Event-ID`. Sequence numbers start at the
//! process's start time in microseconds, so they grow across restarts; an id older than this
//! process, or older than the merchant's latest change, gets one event at once, so a page
//! that was disconnected while something changed catches up. Keep-alive comments keep proxies
//! from closing an idle stream, and every stream ends at shutdown so the server can stop.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::response::sse::{Event, KeepAlive, Sse};
use cashflow_consolidation::cache::Lookup;
use cashflow_consolidation::{CachedReport, ReportCache};
use cashflow_domain::{BusinessDate, MerchantId};
use futures_util::stream::{self, Stream};
use tokio::sync::{broadcast, watch};

/// One committed change of a merchant's books, from `from` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub id: u64,
    pub merchant: MerchantId,
    pub from: BusinessDate,
}

/// The hub between the consumer's commits and the pages' event streams.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

struct Inner {
    changes: broadcast::Sender<Change>,
    /// The next event id; starts at the process start in microseconds.
    next_id: AtomicU64,
    /// The first id of this process: an older `Last-Event-ID` may have missed anything.
    first_id: u64,
    /// Each merchant's latest change id, to answer a resuming page.
    latest: Mutex<HashMap<MerchantId, u64>>,
    /// Turns true at shutdown: every stream ends.
    closed: watch::Sender<bool>,
}

impl Default for Live {
    fn default() -> Self {
        let first_id = u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(1).max(1);
        let (changes, _) = broadcast::channel(1024);
        let (closed, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                changes,
                next_id: AtomicU64::new(first_id),
                first_id,
                latest: Mutex::new(HashMap::new()),
                closed,
            }),
        }
    }
}

impl Live {
    /// `cache`, with every invalidation also broadcast here.
    pub fn wrap(&self, cache: Arc<dyn ReportCache>) -> Arc<dyn ReportCache> {
        Arc::new(BroadcastingCache { inner: cache, live: self.clone() })
    }

    /// Broadcasts a change of `merchant`'s books from `from` on.
    pub fn publish(&self, merchant: MerchantId, from: BusinessDate) -> Change {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut latest) = self.inner.latest.lock() {
            latest.insert(merchant, id);
        }
        let change = Change { id, merchant, from };
        // No subscriber is not an error: nobody is watching.
        let _ = self.inner.changes.send(change);
        change
    }

    /// Ends every event stream (at shutdown).
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// The event a page resuming after `last_id` must get at once, if any.
    fn missed(&self, merchant: MerchantId, last_id: Option<u64>) -> Option<u64> {
        let last_id = last_id?;
        let latest = self.inner.latest.lock().ok().and_then(|l| l.get(&merchant).copied());
        match latest {
            Some(latest) if latest > last_id => Some(latest),
            _ if last_id < self.inner.first_id => Some(self.inner.next_id.load(Ordering::Relaxed)),
            _ => None,
        }
    }

    /// The event stream of `merchant`'s changes, resuming after `last_id`.
    pub fn stream(&self, merchant: MerchantId, last_id: Option<u64>) -> impl Stream<Item = Change> + Send + 'static {
        struct State {
            live: Live,
            changes: broadcast::Receiver<Change>,
            closed: watch::Receiver<bool>,
            merchant: MerchantId,
            pending: Option<Change>,
        }
        let pending = self.missed(merchant, last_id).map(|id| Change { id, merchant, from: BusinessDate::MIN });
        let state = State {
            live: self.clone(),
            changes: self.inner.changes.subscribe(),
            closed: self.inner.closed.subscribe(),
            merchant,
            pending,
        };
        stream::unfold(state, |mut state| async move {
            if let Some(change) = state.pending.take() {
                return Some((change, state));
            }
            loop {
                if *state.closed.borrow() {
                    return None;
                }
                tokio::select! {
                    _ = state.closed.changed() => return None,
                    received = state.changes.recv() => match received {
                        Ok(change) if change.merchant == state.merchant => return Some((change, state)),
                        Ok(_) => {}
                        // Fell behind: something may have changed for this merchant; say so.
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let id = state.live.inner.next_id.load(Ordering::Relaxed).saturating_sub(1);
                            let change = Change { id, merchant: state.merchant, from: BusinessDate::MIN };
                            return Some((change, state));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                }
            }
        })
    }
}

/// The SSE response for `merchant`: `event: balance`, `id: <change id>`, `data: <from date>`.
pub fn events(
    live: &Live,
    merchant: MerchantId,
    last_id: Option<u64>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    use futures_util::StreamExt;
    let hello = stream::once(async { Ok(Event::default().retry(Duration::from_secs(2)).comment("live")) });
    let changes = live
        .stream(merchant, last_id)
        .map(|change| Ok(Event::default().event("balance").id(change.id.to_string()).data(change.from.to_string())));
    Sse::new(hello.chain(changes)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("keep-alive"))
}

/// The consumer's cache, unchanged, except that every invalidation is also published.
struct BroadcastingCache {
    inner: Arc<dyn ReportCache>,
    live: Live,
}

#[async_trait]
impl ReportCache for BroadcastingCache {
    async fn get(&self, merchant: MerchantId, date: BusinessDate) -> Lookup {
        self.inner.get(merchant, date).await
    }

    async fn put(&self, merchant: MerchantId, date: BusinessDate, generation: u64, report: CachedReport) {
        self.inner.put(merchant, date, generation, report).await;
    }

    async fn invalidate(&self, merchant: MerchantId, from: BusinessDate) {
        self.inner.invalidate(merchant, from).await;
        self.live.publish(merchant, from);
    }

    async fn ping(&self) -> Result<(), String> {
        self.inner.ping().await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    fn day(text: &str) -> BusinessDate {
        BusinessDate::parse(text).unwrap()
    }

    #[tokio::test]
    async fn an_invalidation_of_the_wrapped_cache_reaches_only_that_merchants_stream() {
        let live = Live::default();
        let cache = live.wrap(Arc::new(cashflow_consolidation::NoCache));
        let (mine, other) = (MerchantId::new(), MerchantId::new());
        let mut stream = Box::pin(live.stream(mine, None));

        cache.invalidate(other, day("2026-12-01")).await;
        cache.invalidate(mine, day("2026-12-02")).await;

        let change = tokio::time::timeout(Duration::from_secs(1), stream.next()).await.unwrap().unwrap();
        assert_eq!((change.merchant, change.from), (mine, day("2026-12-02")));
    }

    #[tokio::test]
    async fn a_page_resuming_after_a_missed_change_gets_one_event_at_once() {
        let live = Live::default();
        let merchant = MerchantId::new();
        let seen = live.publish(merchant, day("2026-12-01"));
        let missed = live.publish(merchant, day("2026-12-01"));

        let mut resumed = Box::pin(live.stream(merchant, Some(seen.id)));
        let first = tokio::time::timeout(Duration::from_secs(1), resumed.next()).await.unwrap().unwrap();
        assert_eq!(first.id, missed.id);

        let mut up_to_date = Box::pin(live.stream(merchant, Some(missed.id)));
        assert!(tokio::time::timeout(Duration::from_millis(100), up_to_date.next()).await.is_err(), "nothing missed");

        let mut from_before_a_restart = Box::pin(live.stream(MerchantId::new(), Some(1)));
        assert!(tokio::time::timeout(Duration::from_secs(1), from_before_a_restart.next()).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn every_stream_ends_at_shutdown() {
        let live = Live::default();
        let mut stream = Box::pin(live.stream(MerchantId::new(), None));
        live.close();
        assert!(tokio::time::timeout(Duration::from_secs(1), stream.next()).await.unwrap().is_none());
    }
}
