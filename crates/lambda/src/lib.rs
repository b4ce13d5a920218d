//! The AWS Lambda functions of cashflow: the same routers and workers as the long-lived
//! processes, built by the one composition root ([`cashflow::app::Parts`]) and driven by
//! Lambda events instead of a listener and background loops.
//!
//! Lambda freezes an execution environment between invocations, so nothing here relies on a
//! background task: `ledger-api` publishes a commit's event inline before it answers (bounded,
//! the outbox keeps what it missed), `outbox-sweep` publishes what is left on a schedule, and
//! `consumer` applies the batch Lambda hands it. Backends are opened on the first invocation
//! that needs them and kept for the life of the execution environment.
//!
//! # Layout
//! - [`env`]: configuration from the processes' environment variables, plus the database
//!   secret from Secrets Manager (read once per cold start).
//! - [`http`]: `ledger-api`, `reports-api` and `web` (API Gateway HTTP API v2 through
//!   `lambda_http`).
//! - [`consumer`]: `consumer` (SQS batches, partial batch responses).
//! - [`sweep`]: `outbox-sweep` (EventBridge schedule).
//! - [`admin`]: `admin` (migrations and operator commands as JSON payloads).
//! - [`invocation`]: around every handler: its time, its metrics line, its spans flushed.
//! - [`emf`]: the key metrics as CloudWatch Embedded Metric Format lines.
//!
//! Each binary under `src/bin` only builds its handler from [`env::parts`] and hands it to
//! the runtime through [`invocation::serve`]; the tests call the handlers directly.

pub mod admin;
pub mod consumer;
pub mod emf;
pub mod env;
pub mod http;
pub mod invocation;
pub mod sweep;
