#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The functions' CloudWatch EMF lines, parsed back: the structure CloudWatch requires
//! (namespace, dimensions, metric definitions with units, a value for each) and the values
//! the consumer and the sweep recorded during one invocation. This binary installs the
//! functions' recorder as its own (a process has one), and its tests take turns.

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use serde_json::{json, Value};

use cashflow::app::{AppConfig, Parts};
use cashflow_auth::Scopes;
use cashflow_domain::{Currency, MerchantId, MerchantName, MerchantTimeZone};
use cashflow_lambda::emf::{self, Invocation, Recorded};
use cashflow_lambda::http::{Api, HttpFunction};
use cashflow_lambda::{admin, consumer, sweep};

static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn parts(dir: &tempfile::TempDir) -> Parts {
    Parts::new(AppConfig::embedded(dir.path(), "http://cashflow.test", Duration::from_secs(600)))
}

fn invocation(function: &str) -> Invocation {
    Invocation {
        function: function.into(),
        stage: "prod".into(),
        request_id: "8476a536-e9f4-11e8-9739-2dfe598c3fcd".into(),
        xray_trace_id: Some("Root=1-674cf0a0-6d7e0c3b2a1f4e5d6c7b8a90;Parent=53995c3f42cd8ad8;Sampled=1".into()),
    }
}

/// The lines, parsed, each checked against EMF's structure; the metric names each defines.
fn parsed(lines: &[String]) -> Vec<(Value, Vec<(String, String)>)> {
    lines
        .iter()
        .map(|line| {
            let line: Value = serde_json::from_str(line).unwrap();
            let aws = &line["_aws"];
            assert!(aws["Timestamp"].as_i64().unwrap() > 1_700_000_000_000, "{line}");
            let directives = aws["CloudWatchMetrics"].as_array().unwrap();
            assert_eq!(directives.len(), 1, "{line}");
            assert_eq!(directives[0]["Namespace"], "cashflow");
            assert_eq!(directives[0]["Dimensions"], json!([["Stage"]]));
            assert_eq!(line["Stage"], "prod", "every dimension has its value");
            let metrics: Vec<(String, String)> = directives[0]["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| (m["Name"].as_str().unwrap().to_owned(), m["Unit"].as_str().unwrap().to_owned()))
                .collect();
            for (name, _) in &metrics {
                let value = &line[name.as_str()];
                assert!(
                    value.is_number() || value.as_array().is_some_and(|v| v.iter().all(Value::is_number)),
                    "{name}: {line}"
                );
            }
            assert_eq!(line["requestId"], "8476a536-e9f4-11e8-9739-2dfe598c3fcd");
            assert!(line["xrayTraceId"].as_str().unwrap().starts_with("Root=1-674cf0a0"));
            (line, metrics)
        })
        .collect()
}

/// A merchant created by `admin` (which publishes its registration) and an entry recorded by
/// `ledger-api`: the events on the queue.
async fn recorded_entry(function: &HttpFunction) -> Vec<String> {
    let parts = function.parts();
    let created = admin::handle(parts, json!({"command": "merchant-create", "name": "Padaria"})).await.unwrap();
    let merchant = MerchantId::parse(created["merchant_id"].as_str().unwrap()).unwrap();
    let token = parts.auth().await.unwrap().0.mint("maria", merchant, Scopes::all()).unwrap().0;
    let text = include_str!("fixtures/http-api-v2-post-entry.json")
        .replace("{{TOKEN}}", &token)
        .replace("{{MERCHANT}}", &merchant.to_string());
    let response = function.handle(lambda_http::request::from_str(&text).unwrap()).await.unwrap();
    assert_eq!(response.status(), 201);
    let deliveries = parts.queue().await.unwrap().source.receive(10, Duration::ZERO).await.unwrap();
    deliveries.into_iter().map(|d| d.body).collect()
}

fn batch(bodies: &[String]) -> SqsEvent {
    let mut records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(
            |(i, body)| json!({"messageId": format!("m-{i}"), "body": body, "attributes": {}, "messageAttributes": {}}),
        )
        .collect();
    records.push(
        json!({"messageId": "poison", "body": "this is not an event", "attributes": {}, "messageAttributes": {}}),
    );
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

#[tokio::test]
async fn a_consumer_invocation_reports_what_it_applied_rejected_and_the_lag_of_each_event() {
    let _turn = TURNS.lock().await;
    let recorder = emf::install();
    let dir = tempfile::tempdir().unwrap();
    let function = HttpFunction::new(Api::Ledger, parts(&dir));
    let bodies = recorded_entry(&function).await;
    assert_eq!(bodies.len(), 2, "the merchant's and the entry's events");
    recorder.take();

    consumer::handle(function.parts(), batch(&bodies)).await;
    let recorded = recorder.take();
    let lines = emf::lines(&invocation("consumer"), &recorded, Duration::from_micros(2500), 1_796_166_000_123);

    assert_eq!(lines.len(), 1);
    let (line, metrics) = parsed(&lines).remove(0);
    for (name, unit) in [
        ("HandlerDuration", "Milliseconds"),
        ("EventsApplied", "Count"),
        ("EventsRejected", "Count"),
        ("EventsDuplicate", "Count"),
        ("EventsPoison", "Count"),
        ("ConsolidationLagSeconds", "Seconds"),
    ] {
        assert!(metrics.contains(&(name.into(), unit.into())), "{name} ({unit}) missing: {line}");
    }
    assert_eq!(line["HandlerDuration"], 2.5);
    assert_eq!(
        (&line["EventsApplied"], &line["EventsRejected"], &line["EventsPoison"]),
        (&json!(2), &json!(0), &json!(1))
    );
    let lags = line["ConsolidationLagSeconds"].as_array().unwrap();
    assert_eq!(lags.len(), 2, "one lag per applied event: {line}");
    assert!(lags.iter().all(|l| (0.0..60.0).contains(&l.as_f64().unwrap())), "{line}");
    assert_eq!(line["Function"], "consumer");

    // The next invocation starts from nothing: a redelivery is a duplicate, not applied again.
    consumer::handle(function.parts(), batch(&bodies)).await;
    let again = recorder.take();
    assert_eq!((again.counts["EventsApplied"], again.counts["EventsDuplicate"]), (0, 2));
    assert!(!again.values.contains_key("ConsolidationLagSeconds"));
}

#[tokio::test]
async fn a_sweep_reports_what_it_published_and_the_age_of_the_oldest_event_it_found() {
    let _turn = TURNS.lock().await;
    let recorder = emf::install();
    let dir = tempfile::tempdir().unwrap();
    let parts = parts(&dir);
    // An event left in the outbox (a merchant registered, nothing published it).
    parts
        .ledger()
        .await
        .unwrap()
        .create_merchant(MerchantName::parse("Padaria").unwrap(), Currency::BRL, MerchantTimeZone::DEFAULT)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    recorder.take();

    let scheduled = serde_json::from_str(include_str!("fixtures/eventbridge-scheduled.json")).unwrap();
    assert_eq!(sweep::handle(&parts, scheduled).await.unwrap(), sweep::Swept { published: 1 });
    let lines = emf::lines(&invocation("outbox-sweep"), &recorder.take(), Duration::from_millis(3), 1_796_166_000_123);

    let (line, metrics) = parsed(&lines).remove(0);
    assert!(metrics.contains(&("EventsPublished".into(), "Count".into())), "{line}");
    assert!(metrics.contains(&("OutboxOldestAgeSeconds".into(), "Seconds".into())), "{line}");
    assert_eq!(line["EventsPublished"], 1);
    let age = line["OutboxOldestAgeSeconds"].as_f64().unwrap();
    assert!((1.0..30.0).contains(&age), "the event waited over a second: {age}");
}

#[test]
fn lag_values_beyond_emfs_hundred_per_metric_go_on_further_lines_and_counts_only_on_the_first() {
    let mut recorded = Recorded::default();
    recorded.counts.insert("EventsApplied", 250);
    recorded.values.insert("ConsolidationLagSeconds", (0..250).map(|i| f64::from(i) / 1000.0).collect());

    let lines = emf::lines(&invocation("consumer"), &recorded, Duration::from_millis(40), 1_796_166_000_123);

    let parsed = parsed(&lines);
    let sizes: Vec<usize> =
        parsed.iter().map(|(l, _)| l["ConsolidationLagSeconds"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(parsed[0].0["EventsApplied"], 250);
    assert!(parsed[1..].iter().all(|(l, m)| l.get("EventsApplied").is_none() && m.len() == 1), "{lines:?}");
    let all: Vec<f64> = parsed
        .iter()
        .flat_map(|(l, _)| {
            l["ConsolidationLagSeconds"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(all, recorded.values["ConsolidationLagSeconds"]);
}
