#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The outbox read as the queue ([`OutboxSource`]), on both ledger backends with the real
//! embedded queue behind it: what it delivers, leases, forgets and sets aside is what the
//! embedded queue would have done with the same events.

#[macro_use]
mod fixtures;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use cashflow_events::{Delivery, EventPublisher, EventSource, OutboundMessage};
use cashflow_ledger::{LedgerStore, OutboxSource, OutboxSourceConfig};
use cashflow_queue::{EmbeddedQueue, EmbeddedQueueConfig};
use fixtures::*;

contract! {
    store: [
        an_event_is_delivered_from_the_outbox_and_gone_once_acknowledged,
        a_delivery_is_not_delivered_again_while_leased_and_is_after_its_lease,
        a_released_delivery_comes_back_at_once_with_its_receive_count,
        a_stale_receipt_acknowledges_nothing,
        an_event_never_acknowledged_is_set_aside_into_the_queue_which_dead_letters_it,
        what_the_queue_already_holds_is_delivered_and_acknowledged_there,
        a_waiting_receive_is_woken_by_the_commit_signal,
        an_entry_committed_after_the_source_started_is_delivered_without_reading_it_back,
    ],
    harness: [],
}

/// A source over `store`'s outbox with a fresh embedded queue behind it.
struct Setup {
    source: OutboxSource,
    queue: Arc<EmbeddedQueue>,
    wake: Arc<Notify>,
    _dir: tempfile::TempDir,
}

async fn setup(store: &Arc<dyn LedgerStore>, config: OutboxSourceConfig) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("queue.db").display());
    let queue_config = EmbeddedQueueConfig {
        visibility_timeout: config.visibility_timeout,
        max_receives: config.max_receives,
        ..EmbeddedQueueConfig::default()
    };
    let queue = Arc::new(EmbeddedQueue::open(&url, queue_config).await.unwrap());
    let wake = Arc::new(Notify::new());
    let source = OutboxSource::new(store.clone(), queue.clone(), queue.clone(), wake.clone(), config);
    Setup { source, queue, wake, _dir: dir }
}

fn config() -> OutboxSourceConfig {
    OutboxSourceConfig { visibility_timeout: Duration::from_secs(30), max_receives: 3, ..OutboxSourceConfig::default() }
}

/// Registers a merchant, which commits its `MerchantRegistered` event to the outbox.
async fn an_event(store: &Arc<dyn LedgerStore>) -> Event {
    let merchant = new_merchant();
    let event = registration(&merchant);
    store.create_merchant(&merchant, &event).await.unwrap();
    event
}

fn ids(deliveries: &[Delivery]) -> Vec<cashflow_domain::EventId> {
    deliveries.iter().map(|d| Event::from_json(&d.body).unwrap().event_id).collect()
}

fn receipts(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| d.receipt.clone()).collect()
}

async fn outbox_len(store: &Arc<dyn LedgerStore>) -> u64 {
    store.outbox_backlog().await.unwrap().count
}

async fn an_event_is_delivered_from_the_outbox_and_gone_once_acknowledged(store: Arc<dyn LedgerStore>) {
    // Given two events committed to the outbox
    let s = setup(&store, config()).await;
    let (first, second) = (an_event(&store).await, an_event(&store).await);

    // When the source is asked for up to ten
    let delivered = s.source.receive(10, Duration::ZERO).await.unwrap();

    // Then both come, in commit order, received once, and nothing went through the queue
    assert_eq!(ids(&delivered), vec![first.event_id, second.event_id]);
    assert!(delivered.iter().all(|d| d.receive_count == 1));
    assert_eq!(s.queue.depth().await.unwrap(), Some(0));
    assert_eq!(s.source.depth().await.unwrap(), Some(2), "leased events are still waiting");

    // And once acknowledged they are gone from the outbox and never delivered again
    s.source.ack(&receipts(&delivered)).await.unwrap();
    assert_eq!(outbox_len(&store).await, 0);
    assert_eq!(s.source.depth().await.unwrap(), Some(0));
    assert!(s.source.receive(10, Duration::ZERO).await.unwrap().is_empty());
}

async fn a_delivery_is_not_delivered_again_while_leased_and_is_after_its_lease(store: Arc<dyn LedgerStore>) {
    // Given a source whose leases last 300 ms, and an event delivered and not acknowledged
    let s = setup(&store, OutboxSourceConfig { visibility_timeout: Duration::from_millis(300), ..config() }).await;
    let event = an_event(&store).await;
    assert_eq!(ids(&s.source.receive(10, Duration::ZERO).await.unwrap()), vec![event.event_id]);

    // When it is asked again at once, then it has nothing (a later event would still come)
    let later = an_event(&store).await;
    assert_eq!(ids(&s.source.receive(10, Duration::ZERO).await.unwrap()), vec![later.event_id]);

    // And once the lease ran out the first event comes again, received twice
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = s.source.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(ids(&again), vec![event.event_id, later.event_id]);
    assert_eq!(again.iter().map(|d| d.receive_count).collect::<Vec<_>>(), vec![2, 2]);
}

async fn a_released_delivery_comes_back_at_once_with_its_receive_count(store: Arc<dyn LedgerStore>) {
    // Given an event delivered under a 30 s lease
    let s = setup(&store, config()).await;
    let event = an_event(&store).await;
    let first = s.source.receive(10, Duration::ZERO).await.unwrap();

    // When the consumer hands it back (its store was down)
    s.source.release(&receipts(&first)).await.unwrap();

    // Then it is delivered again at once, its receives counted on
    let again = s.source.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(ids(&again), vec![event.event_id]);
    assert_eq!(again[0].receive_count, 2);
}

async fn a_stale_receipt_acknowledges_nothing(store: Arc<dyn LedgerStore>) {
    // Given an event delivered, released and delivered again
    let s = setup(&store, config()).await;
    an_event(&store).await;
    let first = s.source.receive(10, Duration::ZERO).await.unwrap();
    s.source.release(&receipts(&first)).await.unwrap();
    let second = s.source.receive(10, Duration::ZERO).await.unwrap();

    // When the first delivery's receipt is acknowledged, or released
    s.source.ack(&receipts(&first)).await.unwrap();
    s.source.release(&receipts(&first)).await.unwrap();

    // Then the event is still in the outbox and still leased to the second delivery
    assert_eq!(outbox_len(&store).await, 1);
    assert!(s.source.receive(10, Duration::ZERO).await.unwrap().is_empty());
    // And the current receipt acknowledges it
    s.source.ack(&receipts(&second)).await.unwrap();
    assert_eq!(outbox_len(&store).await, 0);
}

async fn an_event_never_acknowledged_is_set_aside_into_the_queue_which_dead_letters_it(store: Arc<dyn LedgerStore>) {
    // Given a source and a queue that give up after 3 receives, and an event that fails every time
    let s = setup(&store, config()).await;
    let poison = an_event(&store).await;
    for receive in 1..=3 {
        let delivered = s.source.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(delivered[0].receive_count, receive);
        s.source.release(&receipts(&delivered)).await.unwrap();
    }

    // When it is due a fourth time
    let fourth = s.source.receive(10, Duration::ZERO).await.unwrap();

    // Then it is not delivered: it left the outbox for the queue
    assert!(fourth.is_empty(), "{fourth:?}");
    assert_eq!(outbox_len(&store).await, 0);
    assert_eq!(s.queue.depth().await.unwrap(), Some(1));
    // And the next receive takes it from the queue, which counts its receives afresh
    let from_queue = s.source.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(ids(&from_queue), vec![poison.event_id]);
    assert_eq!(from_queue[0].receive_count, 1);
    // And after the queue's own receives it is in the queue's dead-letter table
    s.source.release(&receipts(&from_queue)).await.unwrap();
    for _ in 2..=3 {
        tokio::time::sleep(Duration::from_millis(1_100)).await; // the queue is asked once a second
        let delivered = s.source.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(ids(&delivered), vec![poison.event_id]);
        s.source.release(&receipts(&delivered)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(s.source.receive(10, Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(s.source.dead_letter_depth().await.unwrap(), Some(1));
    assert_eq!(s.source.depth().await.unwrap(), Some(0));
}

async fn what_the_queue_already_holds_is_delivered_and_acknowledged_there(store: Arc<dyn LedgerStore>) {
    // Given an event a relay published to the queue earlier, and one in the outbox
    let s = setup(&store, config()).await;
    let queued = registration(&new_merchant());
    let message = OutboundMessage { event_id: queued.event_id, body: queued.to_json() };
    s.queue.publish(&[message]).await.unwrap();
    let committed = an_event(&store).await;

    // When the source is asked
    let delivered = s.source.receive(10, Duration::ZERO).await.unwrap();

    // Then both come, and acknowledging them empties the queue and the outbox
    let mut got = ids(&delivered);
    got.sort();
    let mut want = vec![queued.event_id, committed.event_id];
    want.sort();
    assert_eq!(got, want);
    s.source.ack(&receipts(&delivered)).await.unwrap();
    assert_eq!(s.queue.depth().await.unwrap(), Some(0));
    assert_eq!(outbox_len(&store).await, 0);
}

async fn a_waiting_receive_is_woken_by_the_commit_signal(store: Arc<dyn LedgerStore>) {
    // Given a source that looks at the outbox by itself only every 10 s, and a receive waiting
    let s = Arc::new(setup(&store, OutboxSourceConfig { poll_interval: Duration::from_secs(10), ..config() }).await);
    s.source.receive(10, Duration::ZERO).await.unwrap(); // the queue asked: not due for a second
    let waiting = {
        let s = s.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            (s.source.receive(10, Duration::from_secs(20)).await.unwrap(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;

    // When an event is committed and the ledger signals it
    let event = an_event(&store).await;
    s.wake.notify_one();

    // Then the receive returns it long before its own look
    let (delivered, after) = waiting.await.unwrap();
    assert_eq!(ids(&delivered), vec![event.event_id]);
    assert!(after < Duration::from_secs(5), "{after:?}");
}

async fn an_entry_committed_after_the_source_started_is_delivered_without_reading_it_back(store: Arc<dyn LedgerStore>) {
    // Given a source that has read the outbox once and reads it by itself only every hour
    let merchant = given_a_merchant(&store).await;
    let s = setup(&store, OutboxSourceConfig { poll_interval: Duration::from_secs(3600), ..config() }).await;
    let registered = s.source.receive(10, Duration::ZERO).await.unwrap();
    s.source.ack(&receipts(&registered)).await.unwrap();

    // When an entry is recorded, and its outbox row deleted behind the source's back
    let entry = sale(&merchant, 1_250);
    let event = recorded_event(&entry);
    store.record(&entry, None, &event).await.unwrap();
    let seqs: Vec<i64> = store.outbox_batch(10).await.unwrap().iter().map(|row| row.seq).collect();
    store.delete_outbox(&seqs).await.unwrap();

    // Then its event is still delivered, once: the ledger's writer handed it over on commit
    let delivered = s.source.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(ids(&delivered), vec![event.event_id]);
    assert_eq!(delivered[0].receive_count, 1);
    assert!(s.source.receive(10, Duration::ZERO).await.unwrap().is_empty());

    // And the receipt of a handed-over event names its outbox row: acknowledging it deletes it
    let next = sale(&merchant, 990);
    store.record(&next, None, &recorded_event(&next)).await.unwrap();
    assert_eq!(outbox_len(&store).await, 1);
    let delivered = s.source.receive(10, Duration::ZERO).await.unwrap();
    s.source.ack(&receipts(&delivered)).await.unwrap();
    assert_eq!(outbox_len(&store).await, 0);
}
