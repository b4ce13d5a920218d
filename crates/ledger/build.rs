//! Runs the Postgres half of the contract tests only when a server is configured: with
//! `CASHFLOW_TEST_POSTGRES_URL` unset they are compiled but `#[ignore]`d, so `cargo test` shows
//! them as ignored (never as passed).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(postgres_tests)");
    println!("cargo::rerun-if-env-changed=CASHFLOW_TEST_POSTGRES_URL");
    if std::env::var_os("CASHFLOW_TEST_POSTGRES_URL").is_some() {
        println!("cargo::rustc-cfg=postgres_tests");
    }
}
