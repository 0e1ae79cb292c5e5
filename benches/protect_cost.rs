//! Prompt protection's added cost per KiB of prompt (issue 6), as the proxy pays it: the
//! raw-byte passes, `protect_request_raw` on chat bodies of 1, 8 and 64 KiB (without
//! sensitive spans, and with one email every 256 bytes) and `restore_response_raw` on an
//! answer that echoes the protected prompt (after the `may_hold_tokens` check the proxy
//! makes first). Medians of 7 batches, release build.
//!
//! `cargo bench --bench protect_cost` prints a markdown table; with `--out FILE` it also
//! replaces the block between `<!-- protect-cost:begin -->` and `<!-- protect-cost:end -->`
//! in FILE (`./scripts/bench` passes docs/benchmarks.md).

use std::time::Instant;

#[path = "common/doc_block.rs"]
mod doc_block;

use llm_egress::protect::{ProtectConfig, Protector, RawPass};

fn text(bytes: usize, every: Option<usize>) -> String {
    let words = [
        "the",
        "model",
        "answers",
        "questions",
        "about",
        "invoices",
        "and",
        "orders",
    ];
    let mut s = String::with_capacity(bytes + 64);
    let (mut i, mut next_span) = (0usize, every.unwrap_or(usize::MAX));
    while s.len() < bytes {
        if s.len() >= next_span {
            s.push_str(&format!("write to jane.doe{i}@example.com "));
            next_span += every.unwrap_or(usize::MAX);
        } else {
            s.push_str(words[i % words.len()]);
            s.push(' ');
        }
        i += 1;
    }
    s
}

fn median_us(mut f: impl FnMut(), iters: u32) -> f64 {
    let mut samples = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        samples.push(t.elapsed().as_secs_f64() * 1e6 / f64::from(iters));
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[3]
}

fn main() {
    let cfg = ProtectConfig {
        keys: vec![("k1".into(), [7u8; 32])],
        detectors: ["email", "phone", "credit_card", "iban", "secret"]
            .map(String::from)
            .to_vec(),
        patterns: Vec::new(),
    };
    let p = Protector::new(&cfg).expect("protector");
    let mut rows = String::from(
        "| prompt | spans | protect µs | protect µs/KiB | restore µs | restore µs/KiB |\n|---|---|---|---|---|---|\n",
    );
    for kib in [1usize, 8, 64] {
        for (label, every) in [("none", None), ("1 email / 256 B", Some(256))] {
            let t = text(kib * 1024, every);
            let body = serde_json::to_vec(&serde_json::json!({
                "model": "gpt-4o-mini",
                "messages": [{ "role": "user", "content": t }],
            }))
            .expect("json");
            let iters = (256 / kib as u32).max(4);
            let protect = median_us(
                || drop(std::hint::black_box(p.protect_request_raw(&body))),
                iters,
            );
            let protected = match p.protect_request_raw(&body) {
                Ok(RawPass::Rewritten(b, _)) => b,
                _ => body.clone(),
            };
            let sent: serde_json::Value = serde_json::from_slice(&protected).expect("json");
            // The answer echoes the protected prompt, as the mock provider does.
            let answer = serde_json::to_vec(&serde_json::json!({
                "object": "chat.completion",
                "choices": [{ "index": 0, "message": {
                    "role": "assistant", "content": sent["messages"][0]["content"],
                }}],
            }))
            .expect("json");
            // As the proxy does: an answer without a token (or an escape) is not walked.
            let restore = median_us(
                || {
                    if Protector::may_hold_tokens(std::hint::black_box(&answer)) {
                        drop(std::hint::black_box(p.restore_response_raw(&answer)));
                    }
                },
                iters,
            );
            rows.push_str(&format!(
                "| {kib} KiB | {label} | {protect:.1} | {:.1} | {restore:.1} | {:.1} |\n",
                protect / kib as f64,
                restore / kib as f64
            ));
        }
    }
    print!("{rows}");
    doc_block::write_from_args(
        "protect-cost",
        &rows,
        "## 7. Prompt protection cost per KiB\n\n`cargo bench --bench protect_cost` (release, medians of 7 batches; the raw-byte passes the proxy runs).",
    );
}
