//! Strategies (PRODUCT.md §7): the order in which a route's targets are tried.
//!
//! - `fallback`: the targets in the order written.
//! - `weighted`: a random target by weight, then the rest by weight without replacement
//!   (a weighted shuffle); weight-0 targets come last, in order, as standbys.
//! - `cheapest`: targets with `quality >= min_quality` by expected cost, lowest first, ties
//!   in the order written; targets below the floor are left out. A target without a known
//!   cost goes after the priced ones.
//! - `fastest`: targets by recent (EWMA) time to first byte, lowest first; targets with no
//!   measurement yet go first, in order, so a new target gets measured instead of starving
//!   behind a known one. Then [`reprobe`] may move one target whose average has gone stale
//!   to the front, so a target that was slow once is measured again.
//!
//! Targets whose circuit is open are skipped under every strategy; when all are, the order
//! is empty and the caller answers 503 `all_targets_unavailable`.

use std::cmp::Ordering;
use std::time::Duration;

use rand::Rng;

use crate::policy::model::{RouteEntry, RouteTarget, Strategy};

/// What the strategies know about one target (index-aligned with `route.targets`).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    /// The target's provider.
    pub provider: &'a str,
    /// The provider's circuit refuses requests now (see `Breaker::admits`).
    pub open: bool,
    /// Expected cost of this request at this target (`pricing::expected_cost`).
    pub expected_cost: Option<f64>,
    /// Recent time to first byte (`latency::Ewma::get`).
    pub latency: Option<Duration>,
    /// The target's quality (absent: 0).
    pub quality: u32,
    /// The target's weight (absent: 1).
    pub weight: u32,
}

// === impl Candidate ===

impl<'a> Candidate<'a> {
    /// A candidate for `target`, with the policy's defaults for quality and weight.
    pub fn for_target(
        target: &'a RouteTarget,
        open: bool,
        expected_cost: Option<f64>,
        latency: Option<Duration>,
    ) -> Self {
        Self {
            provider: &target.provider,
            open,
            expected_cost,
            latency,
            quality: target.quality.unwrap_or(0),
            weight: target.weight.unwrap_or(1),
        }
    }
}

/// The order to try `route`'s targets in, as indices into `route.targets`; `candidates`
/// describes each target (extra entries on either side are ignored).
pub fn rank<R: Rng + ?Sized>(
    route: &RouteEntry,
    candidates: &[Candidate<'_>],
    rng: &mut R,
) -> Vec<usize> {
    let n = route.targets.len().min(candidates.len());
    rank_by(route.strategy, route.min_quality, &candidates[..n], rng)
}

/// [`rank`] with the strategy and quality floor given directly.
pub fn rank_by<R: Rng + ?Sized>(
    strategy: Strategy,
    min_quality: Option<u32>,
    candidates: &[Candidate<'_>],
    rng: &mut R,
) -> Vec<usize> {
    let mut open: Vec<usize> = (0..candidates.len())
        .filter(|&i| !candidates[i].open)
        .collect();
    match strategy {
        Strategy::Fallback => open,
        Strategy::Weighted => weighted(open, candidates, rng),
        Strategy::Cheapest => {
            let floor = min_quality.unwrap_or(0);
            open.retain(|&i| candidates[i].quality >= floor);
            // A stable sort keeps ties in the order written.
            open.sort_by(|&a, &b| {
                by_cost(candidates[a].expected_cost, candidates[b].expected_cost)
            });
            open
        }
        Strategy::Fastest => {
            open.sort_by_key(|&i| {
                candidates[i]
                    .latency
                    .map_or((0, Duration::ZERO), |d| (1, d))
            });
            open
        }
    }
}

/// For `fastest`, after [`rank`]: asks `claim` about the targets of `order`, leader first,
/// until one is granted the re-probe of its stale average (`LatencyRegistry::claim_probe`),
/// and moves that target to the front. At most one claim is granted per request; a granted
/// leader stays where it is (it is tried anyway, and its sample now replaces the average).
pub fn reprobe(order: &mut Vec<usize>, mut claim: impl FnMut(usize) -> bool) {
    if let Some(k) = order.iter().position(|&i| claim(i)) {
        let i = order.remove(k);
        order.insert(0, i);
    }
}

fn by_cost(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Weighted sampling without replacement, then the weight-0 standbys in order.
fn weighted<R: Rng + ?Sized>(
    mut pool: Vec<usize>,
    candidates: &[Candidate<'_>],
    rng: &mut R,
) -> Vec<usize> {
    let standby: Vec<usize> = pool
        .iter()
        .copied()
        .filter(|&i| candidates[i].weight == 0)
        .collect();
    pool.retain(|&i| candidates[i].weight > 0);
    let mut out = Vec::with_capacity(pool.len() + standby.len());
    let mut total: u64 = pool.iter().map(|&i| u64::from(candidates[i].weight)).sum();
    while total > 0 {
        let mut pick = rng.random_range(0..total);
        let mut chosen = pool.len() - 1;
        for (k, &i) in pool.iter().enumerate() {
            let w = u64::from(candidates[i].weight);
            if pick < w {
                chosen = k;
                break;
            }
            pick -= w;
        }
        let i = pool.remove(chosen);
        total -= u64::from(candidates[i].weight);
        out.push(i);
    }
    out.extend(standby);
    out
}

#[cfg(test)]
mod tests;
