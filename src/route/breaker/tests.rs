//! Breaker tests, on paused tokio time.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{advance, Instant};

use super::*;
use crate::policy::model::Dur;

const MS: Duration = Duration::from_millis(1);

fn breaker(cfg: BreakerConfig) -> Arc<Breaker> {
    Arc::new(Breaker::new(cfg))
}

fn ok(ms: u64) -> Outcome {
    Outcome::Success {
        ttfb: MS * ms as u32,
    }
}

fn fail() -> Outcome {
    Outcome::Failure { ttfb: None }
}

/// Acquires and records one request now.
fn run(b: &Arc<Breaker>, outcome: Outcome) -> Option<Transition> {
    let now = Instant::now();
    let attempt = b.try_acquire(now)?;
    b.record(attempt, outcome, now)
}

fn opened(reason: OpenReason) -> Option<Transition> {
    Some(Transition::Opened { reason })
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_open_and_success_resets() {
    let b = breaker(BreakerConfig::default());
    for _ in 0..4 {
        assert_eq!(run(&b, fail()), None);
    }
    assert_eq!(run(&b, ok(10)), None);
    for _ in 0..4 {
        assert_eq!(run(&b, fail()), None);
    }
    assert_eq!(run(&b, fail()), opened(OpenReason::ConsecutiveFailures));
    assert!(b.try_acquire(Instant::now()).is_none());
    assert!(!b.admits(Instant::now()));
    let st = b.state(Instant::now());
    assert_eq!(st.state, CircuitState::Open);
    assert_eq!(st.reason, Some(OpenReason::ConsecutiveFailures));
    assert_eq!(st.opened_at, Some(Instant::now()));
    assert_eq!(
        OpenReason::ConsecutiveFailures.as_str(),
        "consecutive_failures"
    );
}

#[tokio::test(start_paused = true)]
async fn failure_rate_needs_min_requests() {
    let cfg = BreakerConfig {
        consecutive_failures: 1000,
        ..BreakerConfig::default()
    };
    let b = breaker(cfg);
    // F, S, F, S, ...: 19 requests (10 failures) are below min_requests.
    for i in 0..19 {
        let outcome = if i % 2 == 0 { fail() } else { ok(5) };
        assert_eq!(run(&b, outcome), None, "request {i}");
        advance(MS * 10).await;
    }
    assert_eq!(b.state(Instant::now()).window_requests, 19);
    // The 20th (a success) makes 10 / 20 = 0.5 ≥ 0.5.
    assert_eq!(run(&b, ok(5)), opened(OpenReason::FailureRate));
}

#[tokio::test(start_paused = true)]
async fn failure_rate_forgets_what_left_the_window() {
    let cfg = BreakerConfig {
        consecutive_failures: 1000,
        ..BreakerConfig::default()
    };
    let b = breaker(cfg);
    for _ in 0..15 {
        assert_eq!(run(&b, fail()), None);
    }
    advance(Duration::from_secs(31)).await;
    // The 15 failures aged out: 20 fresh requests with 5 failures stay closed.
    for i in 0..20 {
        let outcome = if i % 4 == 0 { fail() } else { ok(5) };
        assert_eq!(run(&b, outcome), None);
    }
    let st = b.state(Instant::now());
    assert_eq!((st.window_requests, st.window_failures), (20, 5));
}

#[tokio::test(start_paused = true)]
async fn p99_is_judged_only_from_100_samples() {
    let b = breaker(BreakerConfig {
        p99_latency: Some(Duration::from_secs(2)),
        ..BreakerConfig::default()
    });
    for _ in 0..99 {
        assert_eq!(run(&b, ok(3000)), None);
    }
    assert_eq!(b.state(Instant::now()).p99, Some(MS * 3000));
    assert_eq!(run(&b, ok(3000)), opened(OpenReason::P99Latency));
}

#[tokio::test(start_paused = true)]
async fn p99_tolerates_one_slow_sample_in_a_hundred() {
    let b = breaker(BreakerConfig::default());
    assert_eq!(run(&b, ok(5000)), None);
    for _ in 0..99 {
        assert_eq!(run(&b, ok(100)), None);
    }
    // 100 samples, one slow: the p99 (99th smallest) is 100 ms.
    assert_eq!(b.state(Instant::now()).p99, Some(MS * 100));
    // A second slow one makes the 99th smallest slow.
    assert_eq!(run(&b, ok(5000)), opened(OpenReason::P99Latency));
}

async fn tripped(cfg: BreakerConfig) -> Arc<Breaker> {
    let b = breaker(cfg);
    for _ in 0..5 {
        run(&b, fail());
    }
    assert_eq!(b.state(Instant::now()).state, CircuitState::Open);
    b
}

#[tokio::test(start_paused = true)]
async fn half_open_probes_close_the_circuit() {
    let b = tripped(BreakerConfig::default()).await;
    advance(Duration::from_secs(29)).await;
    assert!(b.try_acquire(Instant::now()).is_none());
    advance(Duration::from_secs(1)).await;
    assert_eq!(b.state(Instant::now()).state, CircuitState::HalfOpen);
    let now = Instant::now();
    let p1 = b.try_acquire(now).expect("first probe");
    assert_eq!(p1.transition(), Some(Transition::HalfOpened));
    assert!(p1.is_probe());
    let p2 = b.try_acquire(now).expect("second probe");
    assert_eq!(p2.transition(), None);
    let p3 = b.try_acquire(now).expect("third probe");
    assert!(b.try_acquire(now).is_none(), "only three concurrent probes");
    assert!(!b.admits(now));
    assert_eq!(b.state(now).probes_in_flight, 3);
    assert_eq!(b.record(p1, ok(10), now), None);
    assert!(
        b.try_acquire(now).is_none(),
        "successes count towards the probes"
    );
    assert_eq!(b.record(p2, ok(10), now), None);
    assert_eq!(b.record(p3, ok(10), now), Some(Transition::Closed));
    let st = b.state(now);
    assert_eq!(st.state, CircuitState::Closed);
    assert_eq!((st.window_requests, st.consecutive_failures), (0, 0));
    assert_eq!(st.opened_at, None);
    assert!(b.try_acquire(now).is_some_and(|a| !a.is_probe()));
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_again() {
    let b = tripped(BreakerConfig::default()).await;
    advance(Duration::from_secs(30)).await;
    let now = Instant::now();
    let p1 = b.try_acquire(now).expect("probe");
    let p2 = b.try_acquire(now).expect("probe");
    assert_eq!(b.record(p1, fail(), now), opened(OpenReason::ProbeFailed));
    // The other probe's late result belongs to the old half-open phase: ignored.
    assert_eq!(b.record(p2, ok(10), now), None);
    assert_eq!(b.state(now).state, CircuitState::Open);
    advance(Duration::from_secs(29)).await;
    assert!(b.try_acquire(Instant::now()).is_none());
    advance(Duration::from_secs(1)).await;
    assert!(b.try_acquire(Instant::now()).is_some());
}

#[tokio::test(start_paused = true)]
async fn client_errors_do_not_count() {
    let b = breaker(BreakerConfig::default());
    for _ in 0..4 {
        run(&b, fail());
        for _ in 0..10 {
            assert_eq!(run(&b, Outcome::ClientError), None);
        }
    }
    let st = b.state(Instant::now());
    assert_eq!((st.consecutive_failures, st.window_requests), (4, 4));
    assert_eq!(run(&b, fail()), opened(OpenReason::ConsecutiveFailures));
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_dropped_probes_give_back_the_slot() {
    let b = tripped(BreakerConfig::default()).await;
    advance(Duration::from_secs(30)).await;
    let now = Instant::now();
    let probes: Vec<Attempt> = (0..3).filter_map(|_| b.try_acquire(now)).collect();
    assert_eq!(probes.len(), 3);
    assert!(b.try_acquire(now).is_none());
    let mut probes = probes.into_iter();
    if let Some(p) = probes.next() {
        assert_eq!(b.record(p, Outcome::ClientError, now), None);
    }
    let again = b
        .try_acquire(now)
        .expect("slot given back by a client error");
    drop(probes.next());
    let another = b
        .try_acquire(now)
        .expect("slot given back by a dropped probe");
    assert!(b.try_acquire(now).is_none());
    assert_eq!(b.state(now).state, CircuitState::HalfOpen);
    drop((again, another, probes));
}

#[tokio::test(start_paused = true)]
async fn stale_results_are_ignored() {
    let b = breaker(BreakerConfig::default());
    let now = Instant::now();
    let early = b.try_acquire(now).expect("closed");
    for _ in 0..5 {
        run(&b, fail());
    }
    // A success admitted before the circuit opened does not touch the open state.
    assert_eq!(b.record(early, ok(10), now), None);
    assert_eq!(b.state(now).state, CircuitState::Open);
    // Nor does an attempt of another breaker.
    let other = breaker(BreakerConfig::default());
    let foreign = other.try_acquire(now).expect("closed");
    assert_eq!(b.record(foreign, ok(10), now), None);
}

#[tokio::test(start_paused = true)]
async fn state_survives_a_reload_with_new_settings() {
    let reg = BreakerRegistry::new();
    let b = reg.get_or_create("openai", BreakerConfig::default());
    for _ in 0..5 {
        run(&b, fail());
    }
    let longer = BreakerConfig {
        open_for: Duration::from_secs(60),
        ..BreakerConfig::default()
    };
    let again = reg.get_or_create("openai", longer.clone());
    assert!(Arc::ptr_eq(&b, &again));
    assert_eq!(again.config(), longer);
    advance(Duration::from_secs(30)).await;
    assert_eq!(again.state(Instant::now()).state, CircuitState::Open);
    assert!(again.try_acquire(Instant::now()).is_none());
    advance(Duration::from_secs(30)).await;
    assert!(again.try_acquire(Instant::now()).is_some());

    reg.get_or_create("mistral", BreakerConfig::default());
    let snap = reg.snapshot(Instant::now());
    let names: Vec<&str> = snap.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["mistral", "openai"]);
    assert_eq!(snap[1].1.state, CircuitState::HalfOpen);
    reg.retain(|n| n != "mistral");
    assert!(reg.get("mistral").is_none());
    assert!(reg.get("openai").is_some());
}

#[tokio::test(start_paused = true)]
async fn lowering_p99_latency_recounts_the_window() {
    let b = breaker(BreakerConfig {
        p99_latency: None,
        ..BreakerConfig::default()
    });
    for _ in 0..100 {
        assert_eq!(run(&b, ok(500)), None);
    }
    b.set_config(BreakerConfig {
        p99_latency: Some(MS * 400),
        ..BreakerConfig::default()
    });
    assert_eq!(run(&b, ok(10)), opened(OpenReason::P99Latency));
}

#[test]
fn provider_keys_override_defaults_key_by_key() {
    let defaults = BreakerSection {
        consecutive_failures: Some(7),
        window: Some(Dur(Duration::from_secs(60))),
        open_for: Some(Dur(Duration::from_secs(10))),
        ..BreakerSection::default()
    };
    let provider = BreakerSection {
        consecutive_failures: Some(3),
        p99_latency: Some(Dur(Duration::from_secs(5))),
        ..BreakerSection::default()
    };
    let cfg = BreakerConfig::from_model(Some(&defaults), Some(&provider));
    assert_eq!(cfg.consecutive_failures, 3);
    assert_eq!(cfg.window, Duration::from_secs(60));
    assert_eq!(cfg.open_for, Duration::from_secs(10));
    assert_eq!(cfg.p99_latency, Some(Duration::from_secs(5)));
    assert_eq!(cfg.failure_rate, 0.5);
    assert_eq!(cfg.min_requests, 20);
    assert_eq!(cfg.half_open_probes, 3);
    assert_eq!(
        BreakerConfig::from_model(None, None),
        BreakerConfig::default()
    );
}
