//! Prompt-token estimates for routing (PRODUCT.md §7): tiktoken for OpenAI model families,
//! the documented heuristic (`openai::request::estimate_tokens_heuristic`, ~4 characters a
//! token plus per-message overhead) otherwise.
//!
//! The tiktoken tables cost ~0.1–0.2 s and tens of MiB to load, so they load on a
//! background thread, and only when the policy has a route that needs estimates (a token
//! bound or `cheapest`). Until they are ready, the heuristic answers: a request never waits.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::openai::request::ParsedRequest;
use crate::policy::model::{PolicyFile, Strategy};

static STARTED: AtomicBool = AtomicBool::new(false);
static READY: AtomicBool = AtomicBool::new(false);

/// Whether `policy` has a route that uses prompt-token estimates.
pub fn needed(policy: &PolicyFile) -> bool {
    matches_on_prompt_size(policy)
        || policy
            .route
            .iter()
            .any(|r| r.strategy == Strategy::Cheapest)
}

/// Whether a route of `policy` matches on the prompt's size (`min_prompt_tokens`,
/// `max_prompt_tokens`): only then does choosing a route need an estimate.
pub fn matches_on_prompt_size(policy: &PolicyFile) -> bool {
    policy
        .route
        .iter()
        .any(|r| r.matcher.max_prompt_tokens.is_some() || r.matcher.min_prompt_tokens.is_some())
}

/// Starts loading the tokenizer tables in the background (once per process).
pub fn warm_up() {
    if STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    std::thread::spawn(|| {
        let _ = tiktoken_rs::o200k_base_singleton();
        let _ = tiktoken_rs::cl100k_base_singleton();
        READY.store(true, Ordering::Release);
        tracing::info!("tokenizer tables loaded");
    });
}

/// Whether the tiktoken tables are loaded.
pub fn ready() -> bool {
    READY.load(Ordering::Acquire)
}

/// The encoding family of an OpenAI model name, if it is one.
fn family(model: &str) -> Option<&'static tiktoken_rs::CoreBPE> {
    let m = model.to_ascii_lowercase();
    if m.starts_with("gpt-4o")
        || m.starts_with("gpt-4.1")
        || m.starts_with("gpt-5")
        || is_o_series(&m)
        || m.starts_with("chatgpt")
    {
        Some(tiktoken_rs::o200k_base_singleton())
    } else if m.starts_with("gpt-4") || m.starts_with("gpt-3.5") || m.starts_with("text-embedding")
    {
        Some(tiktoken_rs::cl100k_base_singleton())
    } else {
        None
    }
}

/// `o1`, `o3-mini`, `o4-mini-2025-04-16`, ...: an `o` and a digit (not any name that starts
/// with an `o`, such as `olmo` or `openchat`).
fn is_o_series(m: &str) -> bool {
    let b = m.as_bytes();
    b.first() == Some(&b'o') && b.get(1).is_some_and(u8::is_ascii_digit)
}

/// Estimated prompt tokens of a parsed request.
pub fn estimate(parsed: &ParsedRequest) -> u64 {
    let bpe = match parsed.model() {
        Some(m) if ready() => family(m),
        _ => None,
    };
    let Some(bpe) = bpe else {
        return parsed.estimated_prompt_tokens();
    };
    let mut n: u64 = 0;
    parsed.for_each_prompt_text(|t| n += bpe.encode_ordinary(t).len() as u64);
    // OpenAI's chat format: ~3 tokens of framing per message, plus 3 to prime the reply.
    let messages = parsed.prompt_messages() as u64;
    n + if messages > 0 { messages * 3 + 3 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::request::{parse_request, ApiRoute};

    #[test]
    fn o_series_needs_a_digit_after_the_o() {
        for m in ["o1", "o3-mini", "O4-mini-2025-04-16"] {
            assert!(family(m).is_some(), "{m}");
        }
        for m in ["olmo-7b", "openchat", "only", "o"] {
            assert!(family(m).is_none(), "{m}");
        }
    }

    #[test]
    fn tiktoken_counts_openai_models_and_heuristic_the_rest() {
        warm_up();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !ready() {
            assert!(
                std::time::Instant::now() < deadline,
                "tokenizer never loaded"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello world, how are you today?"}]}"#;
        let p = parse_request(ApiRoute::ChatCompletions, body).expect("parse");
        let n = estimate(&p);
        // o200k: "hello world, how are you today?" is 8 tokens; + 3 + 3 framing.
        assert_eq!(n, 14, "{n}");
        let body = br#"{"model":"mistral-small","messages":[{"role":"user","content":"hello world, how are you today?"}]}"#;
        let p = parse_request(ApiRoute::ChatCompletions, body).expect("parse");
        assert_eq!(estimate(&p), p.estimated_prompt_tokens());
    }
}
