//! The proxy port: listener → CONNECT handling → the per-request pipeline.

pub mod connect;
pub mod headers;
pub mod listener;
pub mod pipeline;
pub mod rewind;
pub mod url;
