//! What reading a body costs the proxy on every request: the one-pass skim of
//! `parse_request_bytes` (top-level fields only, messages skipped) against building the
//! whole request as a `serde_json::Value` (what the proxy did before, and still does when
//! a step needs the content); and reading the usage of a JSON answer with
//! `extract_usage_from_slice` (borrowed slices, the rest skipped) against parsing the
//! whole answer. Best of 5 batches, release build.
//!
//! `cargo bench --locked --bench request_parse` prints two markdown tables; with `--out
//! FILE` it also replaces the `request-parse` and `usage-skim` blocks in FILE
//! (`./scripts/bench` passes docs/benchmarks.md).

use std::hint::black_box;
use std::time::Instant;

#[path = "common/doc_block.rs"]
mod doc_block;

use bytes::Bytes;
use llm_egress::openai::request::{parse_request_bytes, ApiRoute};
use llm_egress::openai::usage::{extract_usage, extract_usage_from_slice};
use serde_json::{json, Value};

const BATCH: u32 = 20_000;

/// Best-of-5 mean time of `f`, in µs.
fn best_us(mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..BATCH {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(BATCH)
        })
        .fold(f64::MAX, f64::min)
}

fn row(label: &str, body: &Value) -> String {
    let raw = Bytes::from(body.to_string());
    let full = best_us(|| {
        black_box(serde_json::from_slice::<Value>(black_box(&raw)).is_ok());
    });
    let skim = best_us(|| {
        black_box(parse_request_bytes(ApiRoute::ChatCompletions, black_box(raw.clone())).is_ok());
    });
    format!(
        "| {label} | {} | {full:.2} | {skim:.2} | {:.1}× |\n",
        raw.len(),
        full / skim
    )
}

fn usage_row(label: &str, body: &Value) -> String {
    let raw = Bytes::from(body.to_string());
    let full = best_us(|| {
        let v = serde_json::from_slice::<Value>(black_box(&raw)).unwrap_or_default();
        black_box(extract_usage(&v));
    });
    let skim = best_us(|| {
        black_box(extract_usage_from_slice(black_box(&raw)));
    });
    format!(
        "| {label} | {} | {full:.2} | {skim:.2} | {:.1}× |\n",
        raw.len(),
        full / skim
    )
}

/// A chat completion as OpenAI sends it, with `content` as the answer's text.
fn answer(content: &str) -> Value {
    json!({
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion",
        "created": 1_741_569_952, "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content,
            "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
        "service_tier": "default", "system_fingerprint": "fp_06737a9306"
    })
}

fn usage_table() -> String {
    let mut rows = String::from(
        "| JSON answer | bytes | whole `Value` µs | skim µs | faster |\n|---|---|---|---|---|\n",
    );
    rows += &usage_row(
        "a short chat answer with usage details",
        &answer("Hello! How can I help you today?"),
    );
    rows += &usage_row(
        "a 4 KiB chat answer",
        &answer(&"An ordinary sentence of an answer. ".repeat(120)),
    );
    rows
}

fn main() {
    let mut rows = String::from(
        "| chat request | bytes | whole `Value` µs | skim µs | faster |\n|---|---|---|---|---|\n",
    );
    rows += &row(
        "one short user message (section 1 of the load benchmark)",
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}),
    );
    rows += &row(
        "an 8 KiB system message + a short user message",
        &json!({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": "x".repeat(8192)},
            {"role": "user", "content": "hello"},
        ]}),
    );
    let turns: Vec<Value> = (0..40)
        .map(|i| {
            json!({
                "role": if i % 2 == 0 { "user" } else { "assistant" },
                "content": format!("turn {i}: an ordinary sentence or two of conversation, about as long as people type them, {}", "z".repeat(80)),
            })
        })
        .collect();
    rows += &row(
        "a 40-turn conversation",
        &json!({"model": "gpt-4o-mini", "temperature": 0.2, "messages": turns}),
    );
    print!("{rows}");
    doc_block::write_from_args(
        "request-parse",
        &rows,
        "## 8. Reading the request body\n\n`cargo bench --bench request_parse` (release, best of 5 batches).",
    );
    let usage = usage_table();
    print!("\n{usage}");
    doc_block::write_from_args(
        "usage-skim",
        &usage,
        "## 9. Reading the answer's usage\n\n`cargo bench --bench request_parse` (release, best of 5 batches).",
    );
}
