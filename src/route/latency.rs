//! Recent latency per provider, for the `fastest` strategy.
//!
//! An exponentially weighted moving average of time to first byte (the same measure the
//! breaker uses): `ewma ← ALPHA × sample + (1 − ALPHA) × ewma`, the first sample taken as
//! is. With [`ALPHA`] = 0.3 a sample's weight halves about every two requests, so a
//! provider that slows down loses its place within a handful of requests while a single
//! outlier moves the average by less than a third of its excess. Lock-free: a few atomic
//! words per provider.
//!
//! An average only moves when its provider is tried, and `fastest` only tries the leader.
//! So that one slow sample (a cold connection, a passing hiccup) cannot rank a provider
//! last for ever, an average older than the route's `reprobe_after` ([`REPROBE_AFTER`] by
//! default) is *stale*: one request claims a re-probe of it ([`Ewma::claim_probe`]) and the
//! sample that follows a claim replaces the stale average instead of being blended into it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Weight of the newest sample.
pub const ALPHA: f64 = 0.3;

/// How old an average may grow before one request re-probes its provider, unless the
/// route sets `reprobe_after`.
pub const REPROBE_AFTER: Duration = Duration::from_secs(10);

/// Bit pattern meaning "no sample yet" (a NaN no arithmetic here produces).
const EMPTY: u64 = u64::MAX;

/// One EWMA of durations.
#[derive(Debug)]
pub struct Ewma {
    /// `f64` bits of the average in seconds, or [`EMPTY`].
    bits: AtomicU64,
    /// The instant the stamps below count from.
    origin: Instant,
    /// Microseconds from `origin` to the newest sample, plus one (0: none yet).
    sampled: AtomicU64,
    /// Microseconds from `origin` to the newest re-probe claim, plus one (0: none yet).
    probed: AtomicU64,
}

/// EWMAs by provider name; kept across policy reloads like the breakers.
#[derive(Debug, Default)]
pub struct LatencyRegistry {
    map: Mutex<HashMap<String, Arc<Ewma>>>,
}

// === impl Ewma ===

impl Default for Ewma {
    fn default() -> Self {
        Self::new()
    }
}

impl Ewma {
    /// No sample yet.
    pub fn new() -> Self {
        Self {
            bits: AtomicU64::new(EMPTY),
            origin: Instant::now(),
            sampled: AtomicU64::new(0),
            probed: AtomicU64::new(0),
        }
    }

    /// Folds in one sample taken now.
    pub fn observe(&self, d: Duration) {
        self.observe_at(d, Instant::now());
    }

    /// Folds in one sample taken at `now`; a sample that follows a re-probe claim (made
    /// after the previous sample) replaces the average.
    pub fn observe_at(&self, d: Duration, now: Instant) {
        let x = d.as_secs_f64();
        let previous = self.sampled.swap(self.stamp(now), Ordering::AcqRel);
        let replace = self.probed.load(Ordering::Acquire) > previous;
        // The closure always returns Some, so the update cannot fail.
        let _ = self
            .bits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                let next = if old == EMPTY || replace {
                    x
                } else {
                    ALPHA * x + (1.0 - ALPHA) * f64::from_bits(old)
                };
                Some(next.to_bits())
            });
    }

    /// Claims the re-probe of a stale average: true for exactly one caller once the
    /// newest sample is at least `after` old at `now` and no other claim was granted
    /// within `after`. False while there is no sample (an unmeasured provider is tried
    /// first anyway).
    pub fn claim_probe(&self, now: Instant, after: Duration) -> bool {
        let sampled = self.sampled.load(Ordering::Acquire);
        if sampled == 0 {
            return false;
        }
        let t = self.stamp(now);
        let after = u64::try_from(after.as_micros()).unwrap_or(u64::MAX);
        let probed = self.probed.load(Ordering::Acquire);
        let old = |stamp: u64| t.saturating_sub(stamp) >= after;
        old(sampled)
            && (probed == 0 || old(probed))
            && self
                .probed
                .compare_exchange(probed, t, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// `now` in microseconds from `origin`, plus one.
    fn stamp(&self, now: Instant) -> u64 {
        let us = now.saturating_duration_since(self.origin).as_micros();
        u64::try_from(us).unwrap_or(u64::MAX - 1) + 1
    }

    /// The average, or `None` before the first sample.
    pub fn get(&self) -> Option<Duration> {
        let bits = self.bits.load(Ordering::Acquire);
        if bits == EMPTY {
            return None;
        }
        Duration::try_from_secs_f64(f64::from_bits(bits)).ok()
    }
}

// === impl LatencyRegistry ===

impl LatencyRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Ewma>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The EWMA of `name`, created empty if new.
    pub fn get_or_create(&self, name: &str) -> Arc<Ewma> {
        let mut map = self.lock();
        if let Some(e) = map.get(name) {
            return Arc::clone(e);
        }
        let e = Arc::new(Ewma::new());
        map.insert(name.to_owned(), Arc::clone(&e));
        e
    }

    /// Folds a time to first byte of `name` in.
    pub fn observe(&self, name: &str, d: Duration) {
        self.get_or_create(name).observe(d);
    }

    /// The recent latency of `name`, if measured.
    pub fn get(&self, name: &str) -> Option<Duration> {
        self.lock().get(name).and_then(|e| e.get())
    }

    /// [`Ewma::claim_probe`] of `name` (false if it was never measured).
    pub fn claim_probe(&self, name: &str, now: Instant, after: Duration) -> bool {
        self.lock()
            .get(name)
            .is_some_and(|e| e.claim_probe(now, after))
    }

    /// Every measured provider's latency, by name.
    pub fn snapshot(&self) -> Vec<(String, Duration)> {
        let mut out: Vec<(String, Duration)> = self
            .lock()
            .iter()
            .filter_map(|(n, e)| e.get().map(|d| (n.clone(), d)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn approx(d: Option<Duration>, ms: f64) -> bool {
        d.is_some_and(|d| (d.as_secs_f64() * 1000.0 - ms).abs() < 1e-6)
    }

    #[test]
    fn first_sample_then_weighted_average() {
        let e = Ewma::new();
        assert_eq!(e.get(), None);
        e.observe(MS * 100);
        assert!(approx(e.get(), 100.0));
        e.observe(MS * 200);
        // 0.3 × 200 + 0.7 × 100
        assert!(approx(e.get(), 130.0));
        e.observe(MS * 200);
        // 0.3 × 200 + 0.7 × 130
        assert!(approx(e.get(), 151.0));
    }

    #[test]
    fn converges_to_a_new_level() {
        let e = Ewma::new();
        e.observe(MS * 50);
        for _ in 0..20 {
            e.observe(MS * 500);
        }
        assert!(e.get().is_some_and(|d| d > MS * 499));
    }

    #[test]
    fn a_stale_average_is_reprobed_once_and_the_probe_replaces_it() {
        let e = Ewma::new();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let after = s * 10;
        assert!(
            !e.claim_probe(t0, after),
            "nothing to re-probe before a sample"
        );
        e.observe_at(MS * 300, t0);
        assert!(!e.claim_probe(t0 + s * 9, after), "fresh");
        assert!(e.claim_probe(t0 + s * 10, after), "stale: one claim");
        assert!(!e.claim_probe(t0 + s * 10, after), "only one");
        assert!(
            !e.claim_probe(t0 + s * 19, after),
            "not again while that probe may run"
        );
        // The probe's sample replaces the stale 300 ms; the next one blends as usual.
        e.observe_at(MS * 5, t0 + s * 10 + MS);
        assert!(approx(e.get(), 5.0));
        e.observe_at(MS * 15, t0 + s * 11);
        assert!(approx(e.get(), 8.0)); // 0.3 × 15 + 0.7 × 5
        assert!(!e.claim_probe(t0 + s * 20, after));
        assert!(e.claim_probe(t0 + s * 21, after));
    }

    #[test]
    fn a_probe_without_a_sample_is_claimed_again_after_the_interval() {
        let e = Ewma::new();
        let t0 = Instant::now();
        let after = MS * 100;
        e.observe_at(MS * 40, t0);
        assert!(e.claim_probe(t0 + after, after));
        // The probe failed (no sample): the next claim comes one interval later.
        assert!(!e.claim_probe(t0 + after * 2 - MS, after));
        assert!(e.claim_probe(t0 + after * 2, after));
        // Samples that do not follow a claim blend.
        e.observe_at(MS * 10, t0 + after * 2 + MS);
        e.observe_at(MS * 20, t0 + after * 2 + MS * 2);
        assert!(approx(e.get(), 13.0)); // 0.3 × 20 + 0.7 × 10
    }

    #[test]
    fn concurrent_callers_get_one_probe() {
        let e = Arc::new(Ewma::new());
        let t0 = Instant::now();
        e.observe_at(MS, t0);
        let now = t0 + Duration::from_secs(60);
        let granted: usize = (0..8)
            .map(|_| {
                let e = Arc::clone(&e);
                std::thread::spawn(move || (0..1000).filter(|_| e.claim_probe(now, MS)).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .sum();
        assert_eq!(granted, 1);
    }

    #[test]
    fn registry_by_provider() {
        let reg = LatencyRegistry::new();
        assert_eq!(reg.get("a"), None);
        reg.observe("a", MS * 10);
        reg.observe("b", MS * 20);
        reg.get_or_create("c");
        assert!(approx(reg.get("a"), 10.0));
        let names: Vec<String> = reg.snapshot().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b"]);
        let later = Instant::now() + REPROBE_AFTER;
        assert!(
            !reg.claim_probe("c", later, REPROBE_AFTER),
            "never measured"
        );
        assert!(!reg.claim_probe("unknown", later, REPROBE_AFTER));
        assert!(reg.claim_probe("a", later, REPROBE_AFTER));
    }
}
