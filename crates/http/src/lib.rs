//! HTTP conventions shared by every cashflow service, so that a client sees one API whichever
//! process answers.
//!
//! # Layout
//! - [`problem`]: RFC 9457 problem details, the one error body of every endpoint.
//! - [`extract`]: `Json`/`Query` extractors whose rejections are problems, not plain text.
//! - [`layers`]: request ids, panic safety and tracing, applied by [`layers::common`].

pub mod extract;
pub mod layers;
pub mod problem;

pub use extract::{ApiJson, ApiQuery};
pub use problem::Problem;
