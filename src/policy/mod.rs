//! Policy: the file model (`model`), reading and merging files (`load`, `locate` for
//! file:line:column), cross-checks (`validate`), compilation into the structures the
//! request path reads (`compile`), and watching the directory for changes (`watch`).

pub mod compile;
pub mod load;
pub mod locate;
pub mod model;
pub mod validate;
pub mod watch;

pub use compile::{Policy, Verdict};
pub use load::{PolicyError, PolicyErrors};
