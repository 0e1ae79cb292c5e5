//! Pricing: what a response costs, however the provider bills.

/// How a provider bills one model, in currency units (USD unless the policy says
/// otherwise). The policy layer maps its `pricing` table into this plain struct.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Price {
    /// Per million prompt tokens.
    pub input_per_mtok: f64,
    /// Per million completion tokens.
    pub output_per_mtok: f64,
    /// Per million prompt characters; when set, the prompt is billed by characters
    /// instead of tokens.
    pub input_per_mchar: Option<f64>,
    /// Per million completion characters; when set, the completion is billed by
    /// characters instead of tokens.
    pub output_per_mchar: Option<f64>,
    /// Long-context tiers: per-token rates that replace the base ones when the prompt is
    /// larger than a threshold.
    pub tiers: Vec<Tier>,
    /// A committed-volume discount the operator states, as a fraction (`0.2` = 20 % off),
    /// applied to the whole cost. Clamped to `0.0..=1.0`.
    pub committed_discount: f64,
}

/// Per-token rates that apply when the prompt exceeds `above_prompt_tokens`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tier {
    /// The tier applies to prompts of strictly more tokens than this.
    pub above_prompt_tokens: u64,
    /// Per million prompt tokens in this tier.
    pub input_per_mtok: f64,
    /// Per million completion tokens in this tier.
    pub output_per_mtok: f64,
}

/// The cost of one response.
///
/// The per-token rates come from the tier with the highest `above_prompt_tokens` that
/// `prompt_tokens` exceeds, else from the base price; tiers apply to the whole request,
/// as long-context surcharges do. Each side is billed by characters instead when its
/// per-character rate is set. The committed discount applies last. For an estimate (the
/// `cheapest` strategy), pass estimated counts.
pub fn cost(
    price: &Price,
    prompt_tokens: u64,
    completion_tokens: u64,
    prompt_chars: u64,
    completion_chars: u64,
) -> f64 {
    let tier = price
        .tiers
        .iter()
        .filter(|tier| prompt_tokens > tier.above_prompt_tokens)
        .max_by_key(|tier| tier.above_prompt_tokens);
    let (input_per_mtok, output_per_mtok) = tier
        .map_or((price.input_per_mtok, price.output_per_mtok), |tier| {
            (tier.input_per_mtok, tier.output_per_mtok)
        });
    let per_million = |count: u64, rate: f64| count as f64 * rate / 1_000_000.0;
    let input = match price.input_per_mchar {
        Some(rate) => per_million(prompt_chars, rate),
        None => per_million(prompt_tokens, input_per_mtok),
    };
    let output = match price.output_per_mchar {
        Some(rate) => per_million(completion_chars, rate),
        None => per_million(completion_tokens, output_per_mtok),
    };
    let discount = price.committed_discount.clamp(0.0, 1.0);
    (input + output) * (1.0 - discount)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn gpt_4o_mini() -> Price {
        Price {
            input_per_mtok: 0.15,
            output_per_mtok: 0.60,
            ..Price::default()
        }
    }

    #[test]
    fn per_token() {
        // 1,000 * 0.15 / 1e6 + 500 * 0.60 / 1e6 = 0.00015 + 0.0003
        assert!(close(cost(&gpt_4o_mini(), 1_000, 500, 0, 0), 0.00045));
        assert!(close(cost(&gpt_4o_mini(), 0, 0, 0, 0), 0.0));
    }

    #[test]
    fn highest_exceeded_tier_wins() {
        let price = Price {
            input_per_mtok: 1.25,
            output_per_mtok: 5.0,
            tiers: vec![
                Tier {
                    above_prompt_tokens: 200_000,
                    input_per_mtok: 2.5,
                    output_per_mtok: 10.0,
                },
                Tier {
                    above_prompt_tokens: 128_000,
                    input_per_mtok: 2.0,
                    output_per_mtok: 8.0,
                },
            ],
            ..Price::default()
        };
        // At the threshold itself the base price applies: 128,000 * 1.25 / 1e6 = 0.16.
        assert!(close(cost(&price, 128_000, 0, 0, 0), 0.16));
        // 150,000 * 2.0 / 1e6 + 1,000 * 8.0 / 1e6 = 0.3 + 0.008
        assert!(close(cost(&price, 150_000, 1_000, 0, 0), 0.308));
        // 300,000 * 2.5 / 1e6 + 1,000 * 10.0 / 1e6 = 0.75 + 0.01
        assert!(close(cost(&price, 300_000, 1_000, 0, 0), 0.76));
    }

    #[test]
    fn per_character_replaces_per_token() {
        let price = Price {
            input_per_mtok: 100.0,
            output_per_mtok: 0.5,
            input_per_mchar: Some(0.125),
            ..Price::default()
        };
        // Input by characters: 4,000 * 0.125 / 1e6 = 0.0005; output by tokens:
        // 2,000 * 0.5 / 1e6 = 0.001.
        assert!(close(cost(&price, 1_000, 2_000, 4_000, 9_999), 0.0015));
        let both = Price {
            output_per_mchar: Some(0.375),
            ..price
        };
        // 0.0005 + 8,000 * 0.375 / 1e6 = 0.0005 + 0.003
        assert!(close(cost(&both, 1_000, 2_000, 4_000, 8_000), 0.0035));
    }

    #[test]
    fn committed_discount_applies_last() {
        let price = Price {
            committed_discount: 0.2,
            ..gpt_4o_mini()
        };
        // 0.00045 * 0.8
        assert!(close(cost(&price, 1_000, 500, 0, 0), 0.00036));
        let odd = Price {
            committed_discount: 7.0,
            ..gpt_4o_mini()
        };
        assert!(close(cost(&odd, 1_000, 500, 0, 0), 0.0));
    }
}
