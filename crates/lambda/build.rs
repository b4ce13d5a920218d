//! The end-to-end test under the Lambda runtime emulator (`tests/runtime_e2e.rs`) runs only
//! where cargo-lambda and its backends are: `CASHFLOW_TEST_CARGO_LAMBDA` (the `cargo-lambda`
//! executable) with PostgreSQL, Redis and moto named by their `CASHFLOW_TEST_*` variables turn
//! on the `cargo_lambda_tests` cfg; without them the test is compiled as `#[ignore]`, so
//! `cargo test` reports it as skipped instead of passing vacuously.

fn main() {
    const NEEDED: [&str; 4] = [
        "CASHFLOW_TEST_CARGO_LAMBDA",
        "CASHFLOW_TEST_POSTGRES_URL",
        "CASHFLOW_TEST_REDIS_URL",
        "CASHFLOW_TEST_SQS_ENDPOINT",
    ];
    println!("cargo::rustc-check-cfg=cfg(cargo_lambda_tests)");
    for var in NEEDED {
        println!("cargo::rerun-if-env-changed={var}");
    }
    if NEEDED.iter().all(|var| std::env::var_os(var).is_some()) {
        println!("cargo::rustc-cfg=cargo_lambda_tests");
    }
}
