//! Strategy tests: orders, and attempt plans built from them.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::route::plan::AttemptPlan;
use crate::route::retry::RetryPolicy;

const MS: Duration = Duration::from_millis(1);

fn cand(
    open: bool,
    cost: Option<f64>,
    latency: Option<Duration>,
    quality: u32,
    weight: u32,
) -> Candidate<'static> {
    Candidate {
        provider: "p",
        open,
        expected_cost: cost,
        latency,
        quality,
        weight,
    }
}

fn weights(ws: &[u32]) -> Vec<Candidate<'static>> {
    ws.iter().map(|&w| cand(false, None, None, 0, w)).collect()
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(2024)
}

#[test]
fn fallback_keeps_the_order_and_skips_open_circuits() {
    let c = vec![
        cand(false, None, None, 0, 1),
        cand(true, None, None, 0, 1),
        cand(false, None, None, 0, 1),
    ];
    assert_eq!(rank_by(Strategy::Fallback, None, &c, &mut rng()), [0, 2]);
}

#[test]
fn all_open_gives_an_empty_order_under_every_strategy() {
    let c = vec![cand(true, Some(1.0), Some(MS), 5, 1); 3];
    for s in [
        Strategy::Fallback,
        Strategy::Weighted,
        Strategy::Cheapest,
        Strategy::Fastest,
    ] {
        assert!(rank_by(s, None, &c, &mut rng()).is_empty(), "{s:?}");
    }
}

#[test]
fn weighted_first_choice_follows_the_weights() {
    // Weights 1:3: target 1 comes first 75 % of the time; over 10,000 plans the observed
    // share is within ±3 percentage points (the standard deviation is 0.43 points).
    let c = weights(&[1, 3]);
    let mut r = rng();
    let mut firsts = [0u32; 2];
    for _ in 0..10_000 {
        let order = rank_by(Strategy::Weighted, None, &c, &mut r);
        assert_eq!(order.len(), 2);
        firsts[order[0]] += 1;
    }
    let share = f64::from(firsts[1]) / 10_000.0;
    assert!((share - 0.75).abs() <= 0.03, "share {share}");
}

#[test]
fn weighted_is_without_replacement_with_standbys_last() {
    let c = weights(&[0, 2, 5, 0, 1]);
    let mut r = rng();
    for _ in 0..200 {
        let order = rank_by(Strategy::Weighted, None, &c, &mut r);
        let mut head = order[..3].to_vec();
        head.sort_unstable();
        assert_eq!(head, [1, 2, 4]);
        assert_eq!(&order[3..], [0, 3]);
    }
}

#[test]
fn cheapest_respects_the_floor_and_keeps_ties_in_order() {
    let c = vec![
        cand(false, Some(0.001), None, 1, 1), // cheapest but below the floor
        cand(false, Some(0.004), None, 3, 1),
        cand(false, Some(0.002), None, 2, 1),
        cand(false, Some(0.002), None, 2, 1), // tie with 2: after it
        cand(false, None, None, 5, 1),        // unpriced: last
    ];
    assert_eq!(
        rank_by(Strategy::Cheapest, Some(2), &c, &mut rng()),
        [2, 3, 1, 4]
    );
    assert_eq!(
        rank_by(Strategy::Cheapest, None, &c, &mut rng()),
        [0, 2, 3, 1, 4]
    );
    assert!(rank_by(Strategy::Cheapest, Some(9), &c, &mut rng()).is_empty());
}

#[test]
fn fastest_measures_unknown_targets_first() {
    let c = vec![
        cand(false, None, Some(MS * 300), 0, 1),
        cand(false, None, Some(MS * 100), 0, 1),
        cand(false, None, None, 0, 1),
        cand(true, None, Some(MS), 0, 1),
        cand(false, None, Some(MS * 200), 0, 1),
        cand(false, None, None, 0, 1),
    ];
    assert_eq!(
        rank_by(Strategy::Fastest, None, &c, &mut rng()),
        [2, 5, 1, 4, 0]
    );
}

#[test]
fn rank_reads_the_route_and_target_defaults() {
    let route = RouteEntry {
        name: "r".into(),
        strategy: Strategy::Cheapest,
        min_quality: Some(2),
        targets: vec![
            RouteTarget {
                provider: "cheap".into(),
                ..RouteTarget::default()
            },
            RouteTarget {
                provider: "good".into(),
                quality: Some(2),
                ..RouteTarget::default()
            },
        ],
        ..RouteEntry::default()
    };
    let c: Vec<Candidate<'_>> = route
        .targets
        .iter()
        .zip([0.1, 0.5])
        .map(|(t, cost)| Candidate::for_target(t, false, Some(cost), None))
        .collect();
    assert_eq!((c[0].quality, c[0].weight, c[0].provider), (0, 1, "cheap"));
    assert_eq!(rank(&route, &c, &mut rng()), [1]);
    // Fewer candidates than targets: only those described are ranked.
    assert_eq!(rank(&route, &c[..1], &mut rng()), Vec::<usize>::new());
}

/// Targets handed out by a plan over `order`, with whether each waited first.
fn attempts(order: Vec<usize>, attempts: Option<u32>) -> Vec<(usize, bool)> {
    let policy = RetryPolicy {
        attempts,
        ..RetryPolicy::default()
    };
    let mut plan = AttemptPlan::with_rng(order, &policy, rng());
    plan.by_ref().map(|(t, w)| (t, w.is_some())).collect()
}

#[tokio::test(start_paused = true)]
async fn plans_per_strategy() {
    // fallback: in order, then again from the top with backoff.
    let c = vec![cand(false, None, None, 0, 1); 3];
    let order = rank_by(Strategy::Fallback, None, &c, &mut rng());
    assert_eq!(
        attempts(order, Some(5)),
        [(0, false), (1, false), (2, false), (0, true), (1, true)]
    );
    // cheapest: next-best not yet tried, below-floor never.
    let c = vec![
        cand(false, Some(3.0), None, 2, 1),
        cand(false, Some(1.0), None, 1, 1),
        cand(false, Some(2.0), None, 2, 1),
    ];
    let order = rank_by(Strategy::Cheapest, Some(2), &c, &mut rng());
    assert_eq!(
        attempts(order, Some(3)),
        [(2, false), (0, false), (2, true)]
    );
    // fastest: default attempts are one per available target; the open one is skipped.
    let c = vec![
        cand(false, None, Some(MS * 50), 0, 1),
        cand(true, None, Some(MS * 10), 0, 1),
        cand(false, None, Some(MS * 20), 0, 1),
    ];
    let order = rank_by(Strategy::Fastest, None, &c, &mut rng());
    assert_eq!(attempts(order, None), [(2, false), (0, false)]);
    // weighted: every target once before any re-try.
    let order = rank_by(Strategy::Weighted, None, &weights(&[1, 1, 1]), &mut rng());
    let got = attempts(order.clone(), Some(4));
    assert_eq!(got.len(), 4);
    assert_eq!(got[3], (order[0], true));
    let mut firsts: Vec<usize> = got[..3].iter().map(|(t, _)| *t).collect();
    firsts.sort_unstable();
    assert_eq!(firsts, [0, 1, 2]);
}

#[test]
fn reprobe_moves_the_first_granted_target_to_the_front() {
    let mut asked = Vec::new();
    let mut order = vec![2, 0, 3, 1];
    reprobe(&mut order, |i| {
        asked.push(i);
        false
    });
    assert_eq!(order, [2, 0, 3, 1], "nothing granted, nothing moves");
    assert_eq!(asked, [2, 0, 3, 1]);

    asked.clear();
    reprobe(&mut order, |i| {
        asked.push(i);
        i == 3 || i == 1
    });
    assert_eq!(
        order,
        [3, 2, 0, 1],
        "one target moves, the rest keep their order"
    );
    assert_eq!(asked, [2, 0, 3], "no claim after the granted one");

    asked.clear();
    reprobe(&mut order, |i| {
        asked.push(i);
        true
    });
    assert_eq!(order, [3, 2, 0, 1], "a granted leader stays first");
    assert_eq!(asked, [3]);

    let mut empty: Vec<usize> = Vec::new();
    reprobe(&mut empty, |_| true);
    assert!(empty.is_empty());
}

proptest::proptest! {
    /// Every strategy returns distinct admitted targets; all but `cheapest` return all.
    #[test]
    fn orders_are_permutations_of_the_admitted_targets(
        spec in proptest::collection::vec((proptest::prelude::any::<bool>(), 0u32..4, 0u32..5, 0u64..1000), 0..8),
        seed in proptest::prelude::any::<u64>(),
    ) {
        let c: Vec<Candidate<'_>> = spec
            .iter()
            .map(|&(open, q, w, ms)| {
                let lat = (ms % 3 != 0).then(|| MS * ms as u32);
                cand(open, Some(ms as f64), lat, q, w)
            })
            .collect();
        let admitted: Vec<usize> = (0..c.len()).filter(|&i| !c[i].open).collect();
        let mut r = StdRng::seed_from_u64(seed);
        for s in [Strategy::Fallback, Strategy::Weighted, Strategy::Cheapest, Strategy::Fastest] {
            let mut got = rank_by(s, Some(2), &c, &mut r);
            got.sort_unstable();
            if s == Strategy::Cheapest {
                let floor: Vec<usize> = admitted.iter().copied().filter(|&i| c[i].quality >= 2).collect();
                proptest::prop_assert_eq!(got, floor);
            } else {
                proptest::prop_assert_eq!(&got, &admitted);
            }
        }
    }
}
