//! Sparse borrowed views of JSON objects: a struct declares only the keys a pass reads,
//! each an optional [`Field`] (a `&RawValue`, i.e. a slice of the input). Unknown keys are
//! skipped as they are read and nothing is built, so reading a few fields of a large body
//! costs little and allocates nothing. A key that appears twice is an error, which the
//! callers take as "use the whole parse" (a `Value` keeps the last one).

use serde_json::value::RawValue;

/// One optional field: the raw JSON text of its value (`null` reads as `None`).
pub(crate) type Field<'a> = Option<&'a RawValue>;

/// Declares a struct of optional borrowed fields, e.g.
/// `sparse_struct!(/** docs */ Choice { message, text });`.
macro_rules! sparse_struct {
    ($(#[$doc:meta])* $name:ident { $($field:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(serde::Deserialize)]
        struct $name<'a> {
            $(#[serde(borrow)] $field: $crate::sparse::Field<'a>,)*
        }
    };
}
pub(crate) use sparse_struct;

/// Whether raw JSON text is an object.
pub(crate) fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}
