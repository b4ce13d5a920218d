//! gRPC between the services: the ledger's `cashflow.ledger.v1.LedgerService`.
//!
//! The consolidation side proves its reports against the ledger (and rebuilds drifting days)
//! without reading the ledger's tables: it calls this service, which streams a merchant's
//! entries page by page from the [`LedgerStore`](cashflow_ledger::LedgerStore) and answers the
//! ledger's own day totals. The contract is `proto/cashflow/ledger/v1/ledger.proto`, compiled in
//! `build.rs` by protox (no `protoc`); the generated code lives in `OUT_DIR` and is never edited.
//!
//! # Layout
//! - [`pb`]: the generated messages, server trait and client.
//! - [`server`]: [`server::LedgerGrpc`] (the service), the `authorization` check, and
//!   [`server::routes`] with the standard health service and server reflection (v1 and
//!   v1alpha).
//! - [`client`]: [`client::LedgerGrpcClient`], the generated client with a service token,
//!   implementing consolidation's [`LedgerSource`](cashflow_consolidation::reconcile::LedgerSource).

pub mod client;
pub mod server;

/// The generated code of `cashflow.ledger.v1`.
#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("cashflow.ledger.v1");

    /// The encoded descriptor set of the protos, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ledger_descriptor");
}

pub use client::{ClientError, LedgerGrpcClient};
pub use server::{routes, serve, LedgerGrpc};
