//! Backend tests run only where their servers are: each `CASHFLOW_TEST_*` variable turns on a
//! cfg, and tests without their server are compiled as `#[ignore]`, so `cargo test` reports
//! them as skipped instead of passing vacuously.

fn main() {
    for (cfg, var) in [
        ("postgres_tests", "CASHFLOW_TEST_POSTGRES_URL"),
        ("redis_tests", "CASHFLOW_TEST_REDIS_URL"),
        ("sqs_tests", "CASHFLOW_TEST_SQS_ENDPOINT"),
        ("nginx_tests", "CASHFLOW_TEST_NGINX"),
        ("browser_tests", "CASHFLOW_TEST_BROWSER"),
        // The web app's OpenID sign-in against scripts/oidc-provider (node, `npm ci` there).
        ("oidc_provider_tests", "CASHFLOW_TEST_OIDC_PROVIDER"),
        // TLS backends started by the tests: PostgreSQL's `initdb`/`pg_ctl` and `redis-server`.
        ("pg_tls_tests", "CASHFLOW_TEST_PG_BIN"),
        ("redis_tls_tests", "CASHFLOW_TEST_REDIS_SERVER"),
        // The OTLP/HTTP receiver of the exported-traces test (scripts/otlp-receiver.py).
        ("otlp_tests", "CASHFLOW_TEST_OTLP_RECEIVER"),
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-env-changed={var}");
        if std::env::var_os(var).is_some() {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
