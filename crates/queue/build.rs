//! Turns on the SQS integration tests when an emulator endpoint is given, so that without one
//! they show as ignored instead of passing vacuously.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(sqs_tests)");
    println!("cargo::rerun-if-env-changed=CASHFLOW_TEST_SQS_ENDPOINT");
    if std::env::var_os("CASHFLOW_TEST_SQS_ENDPOINT").is_some() {
        println!("cargo::rustc-cfg=sqs_tests");
    }
}
