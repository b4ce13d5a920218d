//! HTTP tests through the real router: the application the binary serves, on a fresh data
//! directory per test, with the relay and the consumer driven by the test so it can decide
//! when consolidation is "down".

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly, by design

mod auth;
mod bad_input;
mod balances;
mod days;
mod entries;
mod helpers;
mod ops;
mod resilience;
