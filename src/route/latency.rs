//! Recent latency per provider, for the `fastest` strategy.
//!
//! An exponentially weighted moving average of time to first byte (the same measure the
//! breaker uses): `ewma ← ALPHA × sample + (1 − ALPHA) × ewma`, the first sample taken as
//! is. With [`ALPHA`] = 0.3 a sample's weight halves about every two requests, so a
//! provider that slows down loses its place within a handful of requests while a single
//! outlier moves the average by less than a third of its excess. Lock-free: one atomic word
//! per provider.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Weight of the newest sample.
pub const ALPHA: f64 = 0.3;

/// Bit pattern meaning "no sample yet" (a NaN no arithmetic here produces).
const EMPTY: u64 = u64::MAX;

/// One EWMA of durations.
#[derive(Debug)]
pub struct Ewma {
    /// `f64` bits of the average in seconds, or [`EMPTY`].
    bits: AtomicU64,
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
        }
    }

    /// Folds in one sample.
    pub fn observe(&self, d: Duration) {
        let x = d.as_secs_f64();
        // The closure always returns Some, so the update cannot fail.
        let _ = self
            .bits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                let next = if old == EMPTY {
                    x
                } else {
                    ALPHA * x + (1.0 - ALPHA) * f64::from_bits(old)
                };
                Some(next.to_bits())
            });
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
    fn registry_by_provider() {
        let reg = LatencyRegistry::new();
        assert_eq!(reg.get("a"), None);
        reg.observe("a", MS * 10);
        reg.observe("b", MS * 20);
        reg.get_or_create("c");
        assert!(approx(reg.get("a"), 10.0));
        let names: Vec<String> = reg.snapshot().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
