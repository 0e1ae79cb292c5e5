//! One validating pass over a request body that keeps only the top-level fields the
//! proxy's steps read on every request (`model`, `stream`, `stream_options`, the output
//! caps, whether tools are declared) and skips everything else as it is read — no map, no
//! strings, no `Value` for the messages. A step that needs the whole body (protection, a
//! rewrite, prompt estimates, tool declarations) builds it later, from the same bytes.
//!
//! It accepts exactly what `serde_json::from_slice::<Value>` accepts (skipped values go
//! through `deserialize_any`, so the nesting limit applies as it does to a `Value`), and
//! a repeated key counts with its last value, as in a `Value` map. The proptest in
//! `tests.rs` holds it to the full parse.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// The top-level fields of a JSON object body, as a `Value` map would give them.
#[derive(Debug, Default)]
pub(super) struct Skim {
    /// `model`, when its last value is a string.
    pub model: Option<Text>,
    /// `stream`, when its last value is a boolean.
    pub stream: Option<bool>,
    /// `stream_options.include_usage` of the last `stream_options`, when a boolean.
    pub include_usage: Option<bool>,
    /// `max_completion_tokens`, `max_tokens`, `max_output_tokens` (last values, as u64).
    pub caps: [Option<u64>; 3],
    /// A `tools` or `functions` key is present.
    pub declares_tools: bool,
    /// Where the value of `model` lies in the body (`start..end`), when the key occurs
    /// exactly once: a model rewrite can then splice the bytes instead of building the map.
    pub model_span: Option<(usize, usize)>,
}

/// A string field's text: where it lies in the body (a string without escapes, so its
/// bytes are its text) or, decoded, its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Text {
    /// `body[start..end]`.
    At(usize, usize),
    /// Decoded from a string with escapes.
    Owned(String),
}

/// Whether `raw` (a JSON value as serde_json validated it) is a string without escapes.
fn plain_string(raw: &str) -> bool {
    raw.len() >= 2
        && raw.starts_with('"')
        && raw.ends_with('"')
        && !raw[1..raw.len() - 1].contains(['\\', '"'])
}

/// What the pass reads: the fields, and the raw `model` value with its key count.
struct Parse<'a> {
    skim: Skim,
    model: Option<&'a RawValue>,
    /// The last `model` is a string without escapes (its text is where it lies).
    model_plain: bool,
    model_keys: usize,
}

impl Skim {
    /// Skims `body`; `None` when it is not a JSON object (the caller then reports the
    /// error the full parse gives).
    pub fn of(body: &[u8]) -> Option<Self> {
        let Parse {
            mut skim,
            model,
            model_plain,
            model_keys,
        } = serde_json::from_slice::<Parse<'_>>(body).ok()?;
        if let Some(raw) = model {
            // A borrowed raw value is a slice of `body`.
            let start = (raw.get().as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
            let end = start + raw.get().len();
            if end > body.len() {
                return None;
            }
            if model_plain {
                skim.model = Some(Text::At(start + 1, end - 1));
            }
            if model_keys == 1 {
                skim.model_span = Some((start, end));
            }
        }
        Some(skim)
    }

    /// The output cap, in the order of precedence.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.caps.iter().find_map(|c| *c)
    }
}

/// The top-level keys the skim keeps; every other key is skipped.
enum Key {
    Model,
    Stream,
    StreamOptions,
    Cap(usize),
    Tools,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "model" => Key::Model,
                    "stream" => Key::Stream,
                    "stream_options" => Key::StreamOptions,
                    "max_completion_tokens" => Key::Cap(0),
                    "max_tokens" => Key::Cap(1),
                    "max_output_tokens" => Key::Cap(2),
                    "tools" | "functions" => Key::Tools,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Parse<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SkimVisitor;
        impl<'de> Visitor<'de> for SkimVisitor {
            type Value = Parse<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parse<'de>, A::Error> {
                let mut skim = Skim::default();
                let (mut model, mut model_plain, mut model_keys) = (None, false, 0);
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Model => {
                            let raw = map.next_value::<&'de RawValue>()?;
                            // A string without escapes is its own text: `Skim::of` notes
                            // where it lies. Anything else is read through a `Value`, so
                            // the depth limit applies as it does to the full parse.
                            model_plain = plain_string(raw.get());
                            skim.model = match model_plain {
                                true => None,
                                false => match serde_json::from_str::<Value>(raw.get())
                                    .map_err(de::Error::custom)?
                                {
                                    Value::String(s) => Some(Text::Owned(s)),
                                    _ => None,
                                },
                            };
                            model = Some(raw);
                            model_keys += 1;
                        }
                        Key::Stream => skim.stream = map.next_value::<Value>()?.as_bool(),
                        Key::StreamOptions => {
                            skim.include_usage = map
                                .next_value::<Value>()?
                                .get("include_usage")
                                .and_then(Value::as_bool);
                        }
                        Key::Cap(i) => skim.caps[i] = map.next_value::<Value>()?.as_u64(),
                        Key::Tools => {
                            map.next_value::<Skip>()?;
                            skim.declares_tools = true;
                        }
                        Key::Other => {
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(Parse {
                    skim,
                    model,
                    model_plain,
                    model_keys,
                })
            }
        }
        d.deserialize_map(SkimVisitor)
    }
}

/// Any JSON value, read and dropped. Unlike [`IgnoredAny`] (which serde_json skips
/// without a depth limit), nested arrays and objects go through `deserialize_any`, so a
/// body too deep for a `Value` is refused here too.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_none<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        // Keys are strings; values are skipped with the depth limit.
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(Skip)
    }
}
