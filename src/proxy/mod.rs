//! The proxy port: listener → CONNECT handling → the per-request pipeline.

pub mod body;
pub mod cancel;
pub mod connect;
pub mod exchange;
pub mod headers;
pub mod listener;
pub mod pipeline;
pub mod response;
pub mod rewind;
pub mod routing;
pub mod sse_body;
pub mod sse_restore;
pub mod url;
pub mod workers;
