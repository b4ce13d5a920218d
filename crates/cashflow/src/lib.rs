//! The `cashflow` binary's library: configuration, wiring and operator commands.
//!
//! `main.rs` only parses the command line and calls in here, so the integration tests build
//! exactly the application the binary runs.
//!
//! # Layout
//! - [`cli`]: the command line (clap), every flag with its environment variable.
//! - [`backends`]: the stores, queue and cache, chosen by URL.
//! - [`app`]: the composition root: builds the parts of a process ([`app::Parts`]) and runs
//!   them ([`app::Process`]); [`app::Application`] is every part (`serve`).
//! - [`processes`]: `serve` and the split deployment (`ledger`, `relay`, `consolidator`): which
//!   parts each runs.
//! - [`server`]: the HTTP server, one single-threaded runtime per core, with the timeouts and
//!   the connection cap that hold against slow clients.
//! - [`tls`]: HTTPS: the certificate from PEM files, reloaded on `SIGHUP`.
//! - [`ops`]: system routes (`/health/*`, `/openapi.json`).
//! - [`commands`]: dispatch, and `merchant create`, `client create`, `user create`, `migrate`.
//! - [`operator`]: listing, revoking and rotating credentials, listing merchants, rotating
//!   the issuer's key (`client list|revoke|rotate-secret`, `user list|disable|enable|set-password`,
//!   `merchant list`, `issuer rotate-key`).
//! - [`grpc`]: the ledger's gRPC server (`--grpc-listen`) and the consolidation side's client.
//! - [`reconcile`]: `cashflow reconcile` and the consolidator's scheduled reconciliation.
//! - [`telemetry`]: logs and their format, metrics, and the trace exporter ([`otel`]).

pub mod app;
pub mod backends;
pub mod cli;
pub mod commands;
pub mod grpc;
pub mod operator;
pub mod ops;
pub mod otel;
pub mod processes;
pub mod reconcile;
pub mod server;
pub mod telemetry;
pub mod tls;
