//! Prompt protection's added cost per KiB of prompt (issue 6): `protect_request` on chat
//! bodies of 1, 8 and 64 KiB, without sensitive spans and with one email every 256 bytes,
//! and `restore_text` of the protected text. Medians of 7 batches, release build.
//!
//! `cargo bench --bench protect_cost` prints a markdown table; with `--out FILE` it also
//! replaces the block between `<!-- protect-cost:begin -->` and `<!-- protect-cost:end -->`
//! in FILE (`./scripts/bench` passes docs/benchmarks.md).

use std::time::Instant;

#[path = "common/doc_block.rs"]
mod doc_block;

use llm_egress::protect::{ProtectConfig, Protector, RestoreStats};

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
            let body = serde_json::json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": t }] });
            let iters = (256 / kib as u32).max(4);
            let clone = median_us(|| drop(std::hint::black_box(body.clone())), iters);
            let protect = median_us(
                || {
                    let mut b = body.clone();
                    let _ = std::hint::black_box(p.protect_request(&mut b));
                },
                iters,
            ) - clone;
            let mut b = body.clone();
            let _ = p.protect_request(&mut b);
            let protected = b["messages"][0]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let restore = median_us(
                || {
                    let mut st = RestoreStats::default();
                    std::hint::black_box(p.restore_text(&protected, &mut st));
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
        "## 7. Prompt protection cost per KiB\n\n`cargo bench --bench protect_cost` (release, medians of 7 batches; JSON clone cost subtracted).",
    );
}
