//! HTTP conventions shared by every cashflow service, so that a client sees one API whichever
//! process answers.
//!
//! # Layout
//! - [`problem`]: RFC 9457 problem details, the one error body of every endpoint.
//! - [`problem_type`]: every problem `type` the API answers, in one list.
//! - [`context`]: the request's W3C trace context, carried to the queue and the consumer.
//! - [`extract`]: `Json`/`Query` extractors whose rejections are problems, not plain text.
//! - [`layers`]: request ids, panic safety and tracing, applied by [`layers::common`].
//! - [`openapi`]: the answers every operation shares, written into the OpenAPI document.

pub mod context;
pub mod extract;
pub mod layers;
pub mod openapi;
pub mod problem;
pub mod problem_type;

pub use extract::{ApiJson, ApiQuery};
pub use problem::Problem;
pub use problem_type::ProblemType;
