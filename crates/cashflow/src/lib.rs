//! The `cashflow` binary's library: configuration, wiring and operator commands.
//!
//! `main.rs` only parses the command line and calls in here, so the integration tests build
//! exactly the application the binary runs.
//!
//! # Layout
//! - [`cli`]: the command line (clap), every flag with its environment variable.
//! - [`backends`]: the stores, queue and cache, chosen by URL.
//! - [`app`]: composes the services into one [`app::Application`] (`serve`).
//! - [`processes`]: the split deployment (`ledger`, `relay`, `consolidator`).
//! - [`server`]: the HTTP server, one single-threaded runtime per core.
//! - [`ops`]: system routes (`/health/*`, `/openapi.json`).
//! - [`commands`]: `merchant create`, `client create`, `user create`, `migrate`, and the
//!   first-start demo.
//! - [`grpc`]: the ledger's gRPC server (`--grpc-listen`) and the consolidation side's client.
//! - [`reconcile`]: `cashflow reconcile` and the consolidator's scheduled reconciliation.
//! - [`telemetry`]: logs and their format.

pub mod app;
pub mod backends;
pub mod cli;
pub mod commands;
pub mod grpc;
pub mod ops;
pub mod processes;
pub mod reconcile;
pub mod server;
pub mod telemetry;
