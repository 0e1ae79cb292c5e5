//! OpenAI-format awareness as pure functions: bytes in, values out, no I/O.
//!
//! - [`sse`]: the incremental server-sent-events decoder and encoders.
//! - [`request`]: routes, request-body parsing, prompt text and token estimates.
//! - [`errors`]: upstream errors normalized to the OpenAI shape; the proxy's own bodies.
//! - [`usage`]: usage extraction, pricing, and terminal-event detection for streams.

pub mod errors;
pub mod request;
pub mod sse;
pub mod usage;
