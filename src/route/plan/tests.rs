//! Attempt-plan tests, on paused tokio time.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::time::{advance, Instant};

use super::*;

const MS: Duration = Duration::from_millis(1);

fn plan(order: Vec<usize>, policy: &RetryPolicy) -> AttemptPlan {
    AttemptPlan::with_rng(order, policy, StdRng::seed_from_u64(42))
}

fn policy(attempts: Option<u32>) -> RetryPolicy {
    RetryPolicy {
        attempts,
        ..RetryPolicy::default()
    }
}

/// Drains a plan without time passing; returns targets and whether each waited.
fn drain(p: &mut AttemptPlan) -> Vec<(usize, bool)> {
    p.by_ref().map(|(t, w)| (t, w.is_some())).collect()
}

#[tokio::test(start_paused = true)]
async fn default_is_one_attempt_per_target_in_order() {
    let mut p = plan(vec![0, 1, 2], &policy(None));
    assert_eq!(drain(&mut p), [(0, false), (1, false), (2, false)]);
    assert_eq!(p.attempts_made(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_target_is_retried_only_after_the_others() {
    let mut p = plan(vec![2, 0, 1], &policy(Some(7)));
    assert_eq!(
        drain(&mut p),
        [
            (2, false),
            (0, false),
            (1, false),
            (2, true),
            (0, true),
            (1, true),
            (2, true)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn attempts_cap_the_total() {
    let mut p = plan(vec![0, 1, 2], &policy(Some(2)));
    assert_eq!(drain(&mut p), [(0, false), (1, false)]);
    let mut single = plan(vec![4], &policy(Some(3)));
    assert_eq!(drain(&mut single), [(4, false), (4, true), (4, true)]);
}

#[tokio::test(start_paused = true)]
async fn no_targets_no_attempts() {
    let mut p = plan(vec![], &policy(Some(3)));
    assert_eq!(p.next(), None);
}

#[tokio::test(start_paused = true)]
async fn backoff_is_capped_and_at_least_the_base() {
    let pol = RetryPolicy {
        attempts: Some(40),
        backoff: MS * 100,
        max_backoff: MS * 800,
        ..RetryPolicy::default()
    };
    let mut p = plan(vec![0], &pol);
    assert_eq!(p.next(), Some((0, None)));
    let mut waits = Vec::new();
    for (_, w) in p.by_ref() {
        let w = w.expect("a re-try waits");
        waits.push(w);
        advance(w).await;
    }
    assert_eq!(waits.len(), 39);
    assert!(waits.iter().all(|w| *w >= MS * 100 && *w <= MS * 800));
    assert!(waits.contains(&(MS * 800)), "reaches the cap: {waits:?}");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_stops_the_plan() {
    let pol = RetryPolicy {
        attempts: Some(100),
        backoff: MS * 200,
        max_backoff: MS * 200,
        deadline: Duration::from_secs(1),
        ..RetryPolicy::default()
    };
    let mut p = plan(vec![0], &pol);
    let started = Instant::now();
    let mut starts = Vec::new();
    for (_, w) in p.by_ref() {
        advance(w.unwrap_or_default()).await;
        starts.push(Instant::now() - started);
        advance(MS * 100).await; // the attempt fails after 100 ms
    }
    // Attempts at 0, 300, 600 and 900 ms; the next would start at 1200 ms.
    assert_eq!(starts, [Duration::ZERO, MS * 300, MS * 600, MS * 900]);
    assert_eq!(p.remaining(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_on_the_same_target() {
    let mut p = plan(vec![0, 1], &policy(Some(3)));
    assert_eq!(p.next(), Some((0, None)));
    advance(MS * 50).await;
    p.note_retry_after(Duration::from_secs(3)); // 429 with Retry-After: 3
    assert_eq!(p.next(), Some((1, None)));
    advance(MS * 450).await; // target 1 fails after 450 ms
                             // Re-trying 0 waits for the rest of its 3 s (counted from the response, 50 ms in),
                             // longer than any first backoff (≤ 600 ms).
    assert_eq!(p.next(), Some((0, Some(MS * 2550))));
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_the_deadline_skips_that_target() {
    let pol = RetryPolicy {
        attempts: Some(4),
        deadline: Duration::from_secs(10),
        ..RetryPolicy::default()
    };
    let mut p = plan(vec![0, 1], &pol);
    assert_eq!(p.next(), Some((0, None)));
    p.note_retry_after(Duration::from_secs(60));
    assert_eq!(p.next(), Some((1, None)));
    let Some((t, Some(w))) = p.next() else {
        panic!("a re-try of target 1 expected");
    };
    assert_eq!(t, 1);
    assert!(w <= MS * 600);
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_target_leaves_the_plan_and_refunds_the_attempt() {
    let mut p = plan(vec![0, 1, 2], &policy(Some(4)));
    assert_eq!(p.next(), Some((0, None)));
    p.mark_unavailable();
    assert_eq!(p.attempts_made(), 0);
    assert_eq!(
        drain(&mut p),
        [(1, false), (2, false), (1, true), (2, true)]
    );
}

proptest::proptest! {
    /// Without time passing: every attempt is made, the order is walked round by round,
    /// and only re-tries wait, within `[backoff, max_backoff]`.
    #[test]
    fn plans_walk_the_order_round_by_round(
        n in 1usize..6,
        attempts in 1u32..20,
        seed in proptest::prelude::any::<u64>(),
    ) {
        let order: Vec<usize> = (0..n).rev().collect();
        let pol = policy(Some(attempts));
        let mut p = AttemptPlan::with_rng(order.clone(), &pol, StdRng::seed_from_u64(seed));
        let got: Vec<(usize, Option<Duration>)> = p.by_ref().collect();
        proptest::prop_assert_eq!(got.len(), attempts as usize);
        for (k, (t, w)) in got.into_iter().enumerate() {
            proptest::prop_assert_eq!(t, order[k % n]);
            match w {
                None => proptest::prop_assert!(k < n),
                Some(w) => proptest::prop_assert!(
                    k >= n && w >= pol.backoff && w <= pol.max_backoff
                ),
            }
        }
    }
}
