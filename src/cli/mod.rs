//! The subcommands behind `main.rs`. These are tools at the edge of the library, so
//! they report with `anyhow` and print for people.

pub mod ca;
pub mod check;
pub mod demo;
pub mod mock;
pub mod pin;
pub mod run;
