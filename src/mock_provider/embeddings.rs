//! `POST /v1/embeddings` (deterministic unit vectors from a hash of each input) and
//! `GET /v1/models`, `GET /v1/models/{id}`.

use base64::Engine;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::errors::openai_error;
use super::handlers::{bad_json, Reply};
use super::wire::{words, Text};

/// Dimensions of an embedding when the request does not ask for `dimensions`.
const DEFAULT_DIMENSIONS: usize = 8;
/// The most `dimensions` a request may ask for.
const MAX_DIMENSIONS: usize = 4096;
/// `created` of every model.
const MODEL_CREATED: u64 = 1_700_000_000;

/// `GET /v1/models`: a fixed list.
pub(crate) const MODELS: &[u8] = br#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1700000000,"owned_by":"mock"},{"id":"gpt-4o","object":"model","created":1700000000,"owned_by":"mock"},{"id":"o3-mini","object":"model","created":1700000000,"owned_by":"mock"},{"id":"text-embedding-3-small","object":"model","created":1700000000,"owned_by":"mock"},{"id":"mock-model","object":"model","created":1700000000,"owned_by":"mock"}]}"#;

/// `GET /v1/models/{id}`: every model exists.
pub(crate) fn model(id: &str) -> Reply {
    Reply::json(&json!({
        "id": id, "object": "model", "created": MODEL_CREATED, "owned_by": "mock"
    }))
}

/// Answers an embeddings request: one vector per input (a string, an array of strings, an
/// array of token ids or an array of such arrays), as floats or, with
/// `"encoding_format": "base64"` (the `openai` SDKs' default), as base64 of little-endian f32.
pub(crate) fn embeddings(body: &[u8]) -> Reply {
    let request: EmbeddingRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return bad_json(&err),
    };
    let Some(inputs) = request.input.as_ref().and_then(inputs) else {
        let message = "'input' must be a string, an array of strings, or token arrays";
        return Reply::Error(openai_error(StatusCode::BAD_REQUEST, message));
    };
    let dimensions = request.dimensions.unwrap_or(DEFAULT_DIMENSIONS);
    if !(1..=MAX_DIMENSIONS).contains(&dimensions) {
        let message = format!("'dimensions' must be from 1 to {MAX_DIMENSIONS}");
        return Reply::Error(openai_error(StatusCode::BAD_REQUEST, &message));
    }
    let base64 = request
        .encoding_format
        .as_ref()
        .is_some_and(|f| f.0 == "base64");
    let mut tokens = 0;
    let data = (inputs.into_iter().enumerate())
        .map(|(index, (key, count))| {
            tokens += count;
            let vector = vector(key.as_bytes(), dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Embedding::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Embedding::Floats(vector)
            };
            Item {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let model = request
        .model
        .as_ref()
        .map_or("text-embedding-3-small", |m| &m.0);
    Reply::json(&List {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    })
}

/// Each input's hash key and token count (words of a string, length of a token array).
fn inputs(input: &Value) -> Option<Vec<(String, u64)>> {
    let tokens = |list: &[Value]| list.iter().all(Value::is_number);
    match input {
        Value::String(text) => Some(vec![(text.clone(), words(text))]),
        Value::Array(list) if !list.is_empty() && tokens(list) => {
            Some(vec![(input.to_string(), list.len() as u64)])
        }
        Value::Array(list) => list
            .iter()
            .map(|item| match item {
                Value::String(text) => Some((text.clone(), words(text))),
                Value::Array(ids) if tokens(ids) => Some((item.to_string(), ids.len() as u64)),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// A unit vector determined by `key` (FNV-1a seed, splitmix64 sequence).
fn vector(key: &[u8], dimensions: usize) -> Vec<f32> {
    let mut seed = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let raw: Vec<f64> = (0..dimensions)
        .map(|_| {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1_u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    let norm = if norm > 0.0 { norm } else { 1.0 };
    raw.into_iter().map(|x| (x / norm) as f32).collect()
}

#[derive(Deserialize)]
struct EmbeddingRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Text<'a>>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(borrow, default)]
    encoding_format: Option<Text<'a>>,
    #[serde(default)]
    dimensions: Option<usize>,
}

#[derive(Serialize)]
struct List<'a> {
    object: &'static str,
    data: Vec<Item>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct Item {
    object: &'static str,
    index: usize,
    embedding: Embedding,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Embedding {
    Floats(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_deterministic_unit_vectors() {
        let a = vector(b"hello", 8);
        assert_eq!(a, vector(b"hello", 8));
        assert_ne!(a, vector(b"hellp", 8));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }

    #[test]
    fn input_forms() {
        let keys = |v: Value| inputs(&v).map(|list| list.into_iter().map(|(_, n)| n).collect());
        assert_eq!(keys(json!("a b")), Some(vec![2]));
        assert_eq!(keys(json!(["a", "b c"])), Some(vec![1, 2]));
        assert_eq!(keys(json!([1, 2, 3])), Some(vec![3]));
        assert_eq!(keys(json!([[1, 2], [3]])), Some(vec![2, 1]));
        assert_eq!(keys(json!({"x": 1})), None::<Vec<u64>>);
        assert_eq!(keys(json!([{"x": 1}])), None::<Vec<u64>>);
    }
}
