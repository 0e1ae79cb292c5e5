//! The span tree of a TOML text, from `toml_edit`, which keeps spans for keys, values,
//! `[table]` headers, inline tables and arrays.

use super::{Kids, SpanEntry, SpanNode};

/// The span tree of `text`, or `None` if it is not valid TOML.
pub(super) fn parse(text: &str) -> Option<SpanNode> {
    let doc = toml_edit::Document::parse(text).ok()?;
    Some(toml_item(doc.as_item(), 0))
}

fn toml_item(item: &toml_edit::Item, fallback: usize) -> SpanNode {
    use toml_edit::Item;
    match item {
        Item::Table(t) => toml_table(t.iter().map(|(k, v)| (k, t.key(k), v)), t.span(), fallback),
        Item::ArrayOfTables(a) => {
            let kids = a
                .iter()
                .map(|t| toml_table(t.iter().map(|(k, v)| (k, t.key(k), v)), t.span(), fallback))
                .collect();
            node(a.span(), fallback, Kids::List(kids))
        }
        Item::Value(v) => toml_value(v, fallback),
        Item::None => node(None, fallback, Kids::Leaf),
    }
}

fn toml_value(v: &toml_edit::Value, fallback: usize) -> SpanNode {
    use toml_edit::Value;
    match v {
        Value::InlineTable(t) => {
            let items = t.iter().filter_map(|(k, _)| {
                let (key, item) = t.get_key_value(k)?;
                Some((k, Some(key), item))
            });
            toml_table(items, t.span(), fallback)
        }
        Value::Array(a) => {
            let kids = a.iter().map(|v| toml_value(v, fallback)).collect();
            node(a.span(), fallback, Kids::List(kids))
        }
        other => node(other.span(), fallback, Kids::Leaf),
    }
}

fn toml_table<'a>(
    items: impl Iterator<Item = (&'a str, Option<&'a toml_edit::Key>, &'a toml_edit::Item)>,
    span: Option<std::ops::Range<usize>>,
    fallback: usize,
) -> SpanNode {
    let start = span.as_ref().map_or(fallback, |s| s.start);
    let entries = items
        .map(|(k, key, item)| {
            let key_start = key.and_then(|k| k.span()).map_or(start, |s| s.start);
            SpanEntry {
                key: k.to_owned(),
                key_start,
                value: toml_item(item, key_start),
            }
        })
        .collect();
    node(span, fallback, Kids::Map(entries))
}

fn node(span: Option<std::ops::Range<usize>>, fallback: usize, kids: Kids) -> SpanNode {
    let (start, end) = span.map_or((fallback, fallback), |s| (s.start, s.end));
    // A `[table]`'s span is its header only; stretch it over its keys so `innermost`
    // can descend into it.
    let kids_end = match &kids {
        Kids::Leaf => end,
        Kids::Map(entries) => entries.iter().map(|e| e.value.end).max().unwrap_or(end),
        Kids::List(items) => items.iter().map(|n| n.end).max().unwrap_or(end),
    };
    SpanNode {
        start,
        end: end.max(kids_end),
        kids,
    }
}
