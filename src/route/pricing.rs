//! Expected cost of a request at a provider, for the `cheapest` strategy.
//!
//! The billing arithmetic itself is [`crate::openai::usage::cost`] (the same function that
//! prices actual usage after the response), so `cheapest` compares like with like. This
//! file maps the policy's `pricing` table into a [`Price`] and supplies what is not known
//! before the response: the output size (`max_completion_tokens` / `max_tokens`, else
//! [`DEFAULT_EXPECTED_OUTPUT_TOKENS`]) and, for per-character billing of the output, its
//! length in characters ([`CHARS_PER_TOKEN`] per token).

use crate::openai::usage::{cost, Price, Tier};
use crate::policy::model::Pricing;

/// Expected completion tokens when the request sets no `max_completion_tokens` or
/// `max_tokens`: a typical chat answer. Only the order of costs matters for `cheapest`, and
/// a small default keeps the prompt's price (which is known) in charge of the comparison.
pub const DEFAULT_EXPECTED_OUTPUT_TOKENS: u64 = 256;

/// Characters per token assumed when output billed per character is estimated from
/// tokens; the same ratio as the prompt-token heuristic
/// (`openai::request::estimate_tokens_heuristic`).
pub const CHARS_PER_TOKEN: u64 = 4;

/// A provider's `pricing` table as a [`Price`].
///
/// Absent base prices are 0 (a side billed per character needs no per-token price). A
/// tier that leaves one side out keeps the base per-token price for that side.
pub fn price_from_model(p: &Pricing) -> Price {
    let input = p.input_per_mtok.unwrap_or(0.0);
    let output = p.output_per_mtok.unwrap_or(0.0);
    Price {
        input_per_mtok: input,
        output_per_mtok: output,
        input_per_mchar: p.input_per_mchar,
        output_per_mchar: p.output_per_mchar,
        tiers: p
            .tiers
            .iter()
            .map(|t| Tier {
                above_prompt_tokens: t.above_prompt_tokens,
                input_per_mtok: t.input_per_mtok.unwrap_or(input),
                output_per_mtok: t.output_per_mtok.unwrap_or(output),
            })
            .collect(),
        committed_discount: p.committed_discount.unwrap_or(0.0),
    }
}

/// The output size to expect: the request's `max_completion_tokens` / `max_tokens` when
/// given, else [`DEFAULT_EXPECTED_OUTPUT_TOKENS`].
pub fn expected_output_tokens(max_tokens: Option<u64>) -> u64 {
    max_tokens.unwrap_or(DEFAULT_EXPECTED_OUTPUT_TOKENS)
}

/// Expected cost of a request with `prompt_tokens` (estimated) and `prompt_chars` of
/// prompt and `expected_output_tokens` of output: per-token or per-character prices,
/// the prompt-size tier, then the committed discount. The output's characters are
/// estimated as `tokens × CHARS_PER_TOKEN`.
pub fn expected_cost(
    price: &Price,
    prompt_tokens: u64,
    prompt_chars: u64,
    expected_output_tokens: u64,
) -> f64 {
    let output_chars = expected_output_tokens.saturating_mul(CHARS_PER_TOKEN);
    cost(
        price,
        prompt_tokens,
        expected_output_tokens,
        prompt_chars,
        output_chars,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{PricingTier, RouteEntry, RouteTarget, Strategy};
    use crate::route::strategy::{rank, Candidate};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn per_token(input: f64, output: f64) -> Pricing {
        Pricing {
            input_per_mtok: Some(input),
            output_per_mtok: Some(output),
            ..Pricing::default()
        }
    }

    #[test]
    fn per_token_with_default_output() {
        let price = price_from_model(&per_token(0.15, 0.60));
        // 1,000 × 0.15 / 1e6 + 256 × 0.60 / 1e6 = 0.00015 + 0.0001536
        let c = expected_cost(&price, 1_000, 4_000, expected_output_tokens(None));
        assert!(close(c, 0.0003036), "{c}");
        // max_tokens = 1,000: 0.00015 + 0.0006
        assert!(close(expected_cost(&price, 1_000, 4_000, 1_000), 0.00075));
    }

    #[test]
    fn per_character_output_uses_four_chars_per_token() {
        let price = price_from_model(&Pricing {
            input_per_mchar: Some(0.25),
            output_per_mchar: Some(1.0),
            ..Pricing::default()
        });
        // 10,000 chars × 0.25 / 1e6 + (500 × 4) chars × 1.0 / 1e6 = 0.0025 + 0.002
        assert!(close(expected_cost(&price, 2_500, 10_000, 500), 0.0045));
    }

    #[test]
    fn tiers_replace_base_prices_and_keep_unset_sides() {
        let price = price_from_model(&Pricing {
            tiers: vec![
                PricingTier {
                    above_prompt_tokens: 128_000,
                    input_per_mtok: Some(0.30),
                    output_per_mtok: None,
                },
                PricingTier {
                    above_prompt_tokens: 32_000,
                    input_per_mtok: Some(0.20),
                    output_per_mtok: Some(0.90),
                },
            ],
            ..per_token(0.10, 0.40)
        });
        // At 32,000 the base applies: 32,000 × 0.10 / 1e6 + 1,000 × 0.40 / 1e6.
        assert!(close(expected_cost(&price, 32_000, 0, 1_000), 0.0036));
        // 50,000 × 0.20 / 1e6 + 1,000 × 0.90 / 1e6 = 0.01 + 0.0009
        assert!(close(expected_cost(&price, 50_000, 0, 1_000), 0.0109));
        // 200,000 × 0.30 / 1e6 + 1,000 × 0.40 (base output kept) / 1e6 = 0.06 + 0.0004
        assert!(close(expected_cost(&price, 200_000, 0, 1_000), 0.0604));
    }

    #[test]
    fn committed_discount_comes_off_the_total() {
        let price = price_from_model(&Pricing {
            committed_discount: Some(0.25),
            ..per_token(2.0, 8.0)
        });
        // (1,000 × 2 + 1,000 × 8) / 1e6 × 0.75 = 0.0075
        assert!(close(expected_cost(&price, 1_000, 0, 1_000), 0.0075));
    }

    fn route(targets: &[&str]) -> RouteEntry {
        RouteEntry {
            name: "r".into(),
            strategy: Strategy::Cheapest,
            targets: targets
                .iter()
                .map(|p| RouteTarget {
                    provider: (*p).to_owned(),
                    ..RouteTarget::default()
                })
                .collect(),
            ..RouteEntry::default()
        }
    }

    /// The `cheapest` order for one request over (route, prices).
    fn cheapest(prices: &[Price], tokens: u64, chars: u64) -> Vec<usize> {
        let r = route(&["a", "b"]);
        let cands: Vec<Candidate<'_>> = r
            .targets
            .iter()
            .zip(prices)
            .map(|(t, p)| {
                Candidate::for_target(t, false, Some(expected_cost(p, tokens, chars, 256)), None)
            })
            .collect();
        rank(&r, &cands, &mut StdRng::seed_from_u64(0))
    }

    #[test]
    fn per_character_pricing_flips_the_choice_with_the_text() {
        let by_token = price_from_model(&per_token(1.0, 1.0));
        let by_char = price_from_model(&Pricing {
            input_per_mchar: Some(0.20),
            output_per_mchar: Some(0.20),
            ..Pricing::default()
        });
        let prices = [by_token, by_char];
        // Prose at 4 chars/token: 40,000 × 0.2 / 1e6 + 1,024 × 0.2 / 1e6 = 0.0082048 beats
        // 10,000 × 1.0 / 1e6 + 256 × 1.0 / 1e6 = 0.010256: per character first.
        assert_eq!(cheapest(&prices, 10_000, 40_000), [1, 0]);
        // Whitespace-heavy text at 8 chars/token: 0.016 + 0.0002048 > 0.010256.
        assert_eq!(cheapest(&prices, 10_000, 80_000), [0, 1]);
    }

    #[test]
    fn a_long_context_tier_flips_the_choice() {
        let flat = price_from_model(&per_token(0.30, 1.20));
        let tiered = price_from_model(&Pricing {
            tiers: vec![PricingTier {
                above_prompt_tokens: 128_000,
                input_per_mtok: Some(0.50),
                output_per_mtok: Some(2.00),
            }],
            ..per_token(0.20, 0.80)
        });
        let prices = [flat, tiered];
        // 100k prompt: 0.02 + … (tiered base) < 0.03 + … (flat): tiered first.
        assert_eq!(cheapest(&prices, 100_000, 400_000), [1, 0]);
        // 200k prompt: the tier applies, 0.10 > 0.06: flat first.
        assert_eq!(cheapest(&prices, 200_000, 800_000), [0, 1]);
    }
}
