//! The SQS adapter against a real SQS API: an emulator such as moto
//! (`scripts/moto-server.py -H 127.0.0.1 -p 5000`, moto with a lost-message race fixed) named by `CASHFLOW_TEST_SQS_ENDPOINT`
//! (e.g. `http://127.0.0.1:5000`). Without that variable every test here is ignored.
//!
//! Each test creates its own uniquely named queues, so tests run in parallel against one
//! emulator and never see each other's messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use cashflow_domain::EventId;
use cashflow_events::{Delivery, EventPublisher, EventSource, OutboundMessage};
use cashflow_queue::sqs::aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use cashflow_queue::sqs::aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use cashflow_queue::sqs::aws_sdk_sqs::{self, Client};
use cashflow_queue::{SqsConfig, SqsQueue};

fn endpoint() -> String {
    std::env::var("CASHFLOW_TEST_SQS_ENDPOINT").expect("CASHFLOW_TEST_SQS_ENDPOINT names the SQS emulator")
}

/// Dummy credentials and region in the client's own configuration: no process-wide
/// environment, which tests running in parallel would race on.
fn sdk_config(endpoint: Option<String>) -> cashflow_queue::sqs::aws_config::SdkConfig {
    let mut builder = cashflow_queue::sqs::aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(Credentials::new(
            "test",
            "test",
            None,
            None,
            "cashflow-tests",
        )));
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    builder.build()
}

fn client() -> Client {
    Client::new(&sdk_config(Some(endpoint())))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn create_queue(client: &Client, name: &str, attributes: &[(QueueAttributeName, String)]) -> String {
    let mut request = client.create_queue().queue_name(name);
    for (k, v) in attributes {
        request = request.attributes(k.clone(), v);
    }
    request.send().await.unwrap().queue_url().unwrap().to_owned()
}

async fn queue_arn(client: &Client, url: &str) -> String {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    out.attributes().unwrap()[&QueueAttributeName::QueueArn].clone()
}

fn config(url: &str) -> SqsConfig {
    SqsConfig {
        visibility_timeout: Duration::from_secs(30),
        wait_time: Duration::from_secs(1),
        attempt_timeout: Duration::from_secs(10),
        ..SqsConfig::new(url)
    }
}

fn adapter(client: &Client, config: SqsConfig) -> SqsQueue {
    SqsQueue::from_client(client, config).unwrap()
}

fn message(body: &str) -> OutboundMessage {
    OutboundMessage { event_id: EventId::new(), body: body.into() }
}

fn receipts(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| d.receipt.clone()).collect()
}

/// Receives until `n` distinct bodies came back (or 20 s passed), returning the last delivery
/// of each body.
async fn receive_bodies(queue: &SqsQueue, n: usize, per_call: usize) -> (HashMap<String, Delivery>, usize) {
    let mut got = HashMap::new();
    let mut calls = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < n && Instant::now() < deadline {
        calls += 1;
        for d in queue.receive(per_call, Duration::from_secs(1)).await.unwrap() {
            got.insert(d.body.clone(), d);
        }
    }
    (got, calls)
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against an SQS emulator")]
async fn published_messages_are_received_over_several_calls_and_gone_once_acknowledged() {
    // Given a queue and 25 events, more than two SQS batches
    let client = client();
    let url = create_queue(&client, &unique("cashflow-events"), &[]).await;
    let queue = adapter(&client, config(&url));
    let messages: Vec<_> = (0..25).map(|i| message(&format!("event-{i}"))).collect();

    // When they are published in one call and received ten at a time
    queue.publish(&messages).await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), Some(25));
    let (got, calls) = receive_bodies(&queue, 25, 10).await;

    // Then every one arrives, first delivery, over several receives
    assert_eq!(got.len(), 25);
    assert!(calls >= 3, "ten messages per call at most, got all in {calls} calls");
    assert!(got.values().all(|d| d.receive_count == 1));
    let expected: HashSet<_> = messages.iter().map(|m| m.body.clone()).collect();
    assert_eq!(got.keys().cloned().collect::<HashSet<_>>(), expected);

    // And acknowledging them (in batches of ten) empties the queue
    let all: Vec<Delivery> = got.into_values().collect();
    queue.ack(&receipts(&all)).await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), Some(0));
    assert!(queue.receive(10, Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against an SQS emulator")]
async fn one_receive_of_more_than_ten_fans_out_into_several_calls() {
    let client = client();
    let url = create_queue(&client, &unique("cashflow-fanout"), &[]).await;
    let queue = adapter(&client, config(&url));
    let messages: Vec<_> = (0..25).map(|i| message(&format!("event-{i}"))).collect();
    queue.publish(&messages).await.unwrap();

    let first = queue.receive(500, Duration::from_secs(1)).await.unwrap();

    // The first call long-polls and comes back full, so the rest is fetched in the same receive.
    assert!(first.len() > 10, "one receive returned {} messages", first.len());
    // SQS delivers at least once: a message may come twice, even within one receive (the
    // emulator's concurrent calls did it under CI's load), so what is counted is distinct.
    let distinct: HashSet<_> = first.iter().map(|d| d.body.clone()).collect();
    let (rest, _) = receive_bodies(&queue, 25usize.saturating_sub(distinct.len()), 500).await;
    let bodies: HashSet<_> = first.iter().map(|d| d.body.clone()).chain(rest.keys().cloned()).collect();
    assert_eq!(bodies.len(), 25);
    let all: Vec<_> = first.into_iter().chain(rest.into_values()).collect();
    queue.ack(&receipts(&all)).await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), Some(0));
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against an SQS emulator")]
async fn an_unacknowledged_message_reappears_after_the_visibility_timeout() {
    let client = client();
    let url = create_queue(&client, &unique("cashflow-visibility"), &[]).await;
    let queue = adapter(&client, SqsConfig { visibility_timeout: Duration::from_secs(1), ..config(&url) });
    queue.publish(&[message("lease me")]).await.unwrap();

    let first = queue.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].receive_count, 1);
    assert!(queue.receive(10, Duration::ZERO).await.unwrap().is_empty(), "a leased message is invisible");
    assert_eq!(queue.depth().await.unwrap(), Some(1), "a leased message still counts");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = queue.receive(10, Duration::from_secs(1)).await.unwrap();

    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, "lease me");
    assert_eq!(again[0].receive_count, 2);
    queue.ack(&receipts(&again)).await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), Some(0));
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against an SQS emulator")]
async fn a_released_message_is_receivable_at_once_and_keeps_its_receive_count() {
    // Given a message leased for far longer than the test
    let client = client();
    let url = create_queue(&client, &unique("cashflow-release"), &[]).await;
    let queue = adapter(&client, SqsConfig { visibility_timeout: Duration::from_secs(60), ..config(&url) });
    queue.publish(&[message("hand me back")]).await.unwrap();
    let first = queue.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(first.len(), 1);

    // When the consumer releases it
    queue.release(&receipts(&first)).await.unwrap();

    // Then it is received again at once, as a second receive
    let again = queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(again.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(), ["hand me back"]);
    assert_eq!(again[0].receive_count, 2);
    queue.ack(&receipts(&again)).await.unwrap();
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against an SQS emulator")]
async fn a_poison_message_reaches_the_dead_letter_queue_while_the_others_are_acknowledged() {
    // Given a queue whose redrive policy dead-letters after two receives
    let client = client();
    let dlq_url = create_queue(&client, &unique("cashflow-dlq"), &[]).await;
    let redrive =
        format!(r#"{{"deadLetterTargetArn":"{}","maxReceiveCount":"2"}}"#, queue_arn(&client, &dlq_url).await);
    let url = create_queue(&client, &unique("cashflow-main"), &[(QueueAttributeName::RedrivePolicy, redrive)]).await;
    let queue = adapter(&client, SqsConfig { visibility_timeout: Duration::from_secs(1), ..config(&url) });
    let dead_letters = adapter(&client, config(&dlq_url));
    queue.publish(&[message("good-1"), message("poison"), message("good-2"), message("good-3")]).await.unwrap();

    // When a consumer acknowledges everything but the poison message, round after round
    let mut poison_receives = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dead_letters.depth().await.unwrap() != Some(1) && Instant::now() < deadline {
        let batch = queue.receive(10, Duration::from_secs(1)).await.unwrap();
        let (poison, good): (Vec<_>, Vec<_>) = batch.into_iter().partition(|d| d.body == "poison");
        poison_receives.extend(poison.iter().map(|d| d.receive_count));
        queue.ack(&receipts(&good)).await.unwrap();
        if !poison.is_empty() {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    }

    // Then SQS moved it to the dead-letter queue after two receives, and the adapter deleted
    // nothing it was not told to
    assert_eq!(poison_receives, [1, 2]);
    assert_eq!(queue.depth().await.unwrap(), Some(0));
    let dead = dead_letters.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(dead.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(), ["poison"]);
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against an SQS emulator")]
async fn every_message_carries_its_event_id_as_an_attribute() {
    let client = client();
    let url = create_queue(&client, &unique("cashflow-attributes"), &[]).await;
    let queue = adapter(&client, config(&url));
    let m = message("{}");
    queue.publish(std::slice::from_ref(&m)).await.unwrap();

    let out = client.receive_message().queue_url(&url).message_attribute_names("All").send().await.unwrap();

    let received = &out.messages()[0];
    let attribute = &received.message_attributes().unwrap()["event_id"];
    assert_eq!(attribute.data_type(), "String");
    assert_eq!(attribute.string_value(), Some(m.event_id.to_string().as_str()));
    assert!(!received.message_attributes().unwrap().contains_key("traceparent"), "no trace, no attribute");
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against an SQS emulator")]
async fn an_event_with_a_trace_carries_it_as_the_traceparent_attribute() {
    let client = client();
    let url = create_queue(&client, &unique("cashflow-trace"), &[]).await;
    let queue = adapter(&client, config(&url));
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let m = message(&format!(r#"{{"event_id":"x","trace":"{traceparent}"}}"#));
    queue.publish(std::slice::from_ref(&m)).await.unwrap();

    let out = client.receive_message().queue_url(&url).message_attribute_names("All").send().await.unwrap();

    let attributes = out.messages()[0].message_attributes().unwrap();
    assert_eq!(attributes["traceparent"].string_value(), Some(traceparent));
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against an SQS emulator")]
async fn on_a_fifo_queue_the_event_id_deduplicates_a_republished_event() {
    // Given a FIFO queue
    let client = client();
    let name = format!("{}.fifo", unique("cashflow-events"));
    let url = create_queue(&client, &name, &[(QueueAttributeName::FifoQueue, "true".into())]).await;
    let queue = adapter(&client, config(&url));
    let m = message("once");
    let other = message("other");

    // When the relay publishes an event, crashes and publishes it again
    queue.publish(&[m.clone(), other.clone()]).await.unwrap();
    queue.publish(std::slice::from_ref(&m)).await.unwrap();

    // Then SQS holds it once, with the event id as deduplication id
    assert_eq!(queue.depth().await.unwrap(), Some(2));
    let out = client
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    let dedup_ids: HashSet<String> = out
        .messages()
        .iter()
        .map(|msg| msg.attributes().unwrap()[&MessageSystemAttributeName::MessageDeduplicationId].clone())
        .collect();
    assert_eq!(dedup_ids, HashSet::from([m.event_id.to_string(), other.event_id.to_string()]));
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against an SQS emulator")]
async fn a_queue_that_does_not_exist_is_an_error_not_a_panic() {
    let client = client();
    let url = format!("{}/123456789012/{}", endpoint(), unique("cashflow-missing"));
    let queue = adapter(&client, config(&url));

    assert!(queue.publish(&[message("lost?")]).await.is_err(), "the relay keeps the event in its outbox");
    assert!(queue.receive(10, Duration::ZERO).await.is_err());
    assert!(queue.depth().await.is_err());
    assert!(queue.ping().await.is_err());
}

#[tokio::test]
async fn an_unreachable_endpoint_is_an_error_after_bounded_retries() {
    // Needs no emulator: nothing listens on port 1, so every attempt is refused at once.
    let client = Client::new(&sdk_config(Some("http://127.0.0.1:1".into())));
    let config =
        SqsConfig { max_attempts: 2, base_delay: Duration::from_millis(10), ..config("http://127.0.0.1:1/1/q") };
    let queue = adapter(&client, config);
    let started = Instant::now();

    assert!(queue.publish(&[message("x")]).await.is_err());
    assert!(queue.ping().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against an SQS emulator")]
async fn an_emulator_queue_url_is_enough_to_reach_the_queue() {
    // Given an AWS configuration with credentials and region but no endpoint, as the binary
    // loads it from the environment
    let client = client();
    let url = create_queue(&client, &unique("cashflow-by-url"), &[]).await;

    // When the adapter is built from the queue URL alone
    let queue = SqsQueue::from_sdk_config(&sdk_config(None), config(&url)).unwrap();

    // Then it talks to the emulator that URL names
    queue.ping().await.unwrap();
    queue.publish(&[message("hello")]).await.unwrap();
    let got = queue.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(got[0].body, "hello");
}
