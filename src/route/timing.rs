//! Timing watch (PRODUCT.md §7): notice a new hop on the path by its latency.
//!
//! Per endpoint and per [`Metric`] (TLS handshake time of new connections; time to
//! response headers) the watch keeps the last [`BASELINE`] + [`RECENT`] samples. The
//! *recent* set is the last 20; the *baseline* is the up to 200 before them (a rolling
//! median that never includes what it is compared with). Once the baseline holds
//! [`MIN_BASELINE`] samples, every sample is judged:
//!
//! ```text
//! anomaly  ⇔  median(recent) − median(baseline) > max(50 ms, 3 × MAD(baseline))
//! ```
//!
//! where MAD is the median absolute deviation from the baseline median. An anomaly is
//! reported once; the watch re-arms when the excess falls back to half the threshold or
//! less (the hysteresis stops a path that hovers at the threshold from flapping). A lasting
//! change becomes the new normal as it fills the baseline, which re-arms the watch too.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

/// Samples in the recent set.
pub const RECENT: usize = 20;
/// Samples in the baseline at most.
pub const BASELINE: usize = 200;
/// Baseline samples needed before anything is judged.
pub const MIN_BASELINE: usize = 20;
/// The smallest excess (ms) that counts, however steady the baseline.
pub const MIN_EXCESS_MS: f64 = 50.0;
/// MADs of the baseline the excess must pass.
pub const MAD_FACTOR: f64 = 3.0;
/// Endpoints tracked at most (endpoints come from the allowlist; this is a backstop).
pub const MAX_ENDPOINTS: usize = 4096;

/// What is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// TLS handshake of a new upstream connection.
    TlsHandshake,
    /// Request sent → response headers received.
    ResponseHeaders,
}

/// A `timing_anomaly`: the recent median passed the baseline by more than the threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Anomaly {
    /// The endpoint (as the caller names it, e.g. the `[[allow]]` name or `host:port`).
    pub endpoint: String,
    /// Which timing.
    pub metric: Metric,
    /// Median of the baseline, ms.
    pub baseline_ms: f64,
    /// Median of the last 20 samples, ms.
    pub recent_ms: f64,
    /// `max(50, 3 × MAD)`, ms.
    pub threshold_ms: f64,
}

/// One series' state for the admin API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimingSnapshot {
    /// The endpoint.
    pub endpoint: String,
    /// Which timing.
    pub metric: Metric,
    /// Samples held (at most 220).
    pub samples: usize,
    /// Baseline median, ms, once judged.
    pub baseline_ms: Option<f64>,
    /// Recent median, ms, once judged.
    pub recent_ms: Option<f64>,
    /// Threshold, ms, once judged.
    pub threshold_ms: Option<f64>,
    /// Reported and not yet back to normal.
    pub anomalous: bool,
}

/// The timing watch of all endpoints.
#[derive(Debug, Default)]
pub struct TimingWatch {
    series: Mutex<HashMap<String, [Series; 2]>>,
}

#[derive(Debug, Default, Clone)]
struct Series {
    /// Milliseconds, oldest first.
    samples: VecDeque<f64>,
    /// The baseline part of `samples` (all but the last [`RECENT`]), kept sorted so a
    /// judgement costs a binary search and a short walk instead of three sorts.
    baseline: Vec<f64>,
    alarmed: bool,
}

struct Judgement {
    baseline_ms: f64,
    recent_ms: f64,
    threshold_ms: f64,
}

// === impl Metric ===

impl Metric {
    /// The name used in audit lines and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::TlsHandshake => "tls_handshake",
            Metric::ResponseHeaders => "response_headers",
        }
    }

    fn slot(self) -> usize {
        match self {
            Metric::TlsHandshake => 0,
            Metric::ResponseHeaders => 1,
        }
    }
}

// === impl TimingWatch ===

impl TimingWatch {
    /// An empty watch.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, [Series; 2]>> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one sample; returns an anomaly the first time the rule trips.
    pub fn observe(&self, endpoint: &str, metric: Metric, d: Duration) -> Option<Anomaly> {
        let mut map = self.lock();
        if !map.contains_key(endpoint) {
            if map.len() >= MAX_ENDPOINTS {
                return None;
            }
            map.insert(endpoint.to_owned(), Default::default());
        }
        let series = &mut map.get_mut(endpoint)?[metric.slot()];
        series.push(d.as_secs_f64() * 1000.0);
        let j = series.judge()?;
        let excess = j.recent_ms - j.baseline_ms;
        if excess > j.threshold_ms {
            if series.alarmed {
                return None;
            }
            series.alarmed = true;
            return Some(Anomaly {
                endpoint: endpoint.to_owned(),
                metric,
                baseline_ms: j.baseline_ms,
                recent_ms: j.recent_ms,
                threshold_ms: j.threshold_ms,
            });
        }
        if excess <= j.threshold_ms / 2.0 {
            series.alarmed = false;
        }
        None
    }

    /// Every series, by endpoint then metric.
    pub fn snapshot(&self) -> Vec<TimingSnapshot> {
        let map = self.lock();
        let mut out = Vec::new();
        for (endpoint, pair) in map.iter() {
            for (metric, s) in [Metric::TlsHandshake, Metric::ResponseHeaders]
                .into_iter()
                .zip(pair)
            {
                if s.samples.is_empty() {
                    continue;
                }
                let j = s.judge();
                out.push(TimingSnapshot {
                    endpoint: endpoint.clone(),
                    metric,
                    samples: s.samples.len(),
                    baseline_ms: j.as_ref().map(|j| j.baseline_ms),
                    recent_ms: j.as_ref().map(|j| j.recent_ms),
                    threshold_ms: j.as_ref().map(|j| j.threshold_ms),
                    anomalous: s.alarmed,
                });
            }
        }
        out.sort_by(|a, b| (&a.endpoint, a.metric.slot()).cmp(&(&b.endpoint, b.metric.slot())));
        out
    }
}

// === impl Series ===

impl Series {
    /// Appends a sample; the oldest leaves once [`BASELINE`] + [`RECENT`] are held, and the
    /// sample [`RECENT`] places back moves from the recent set into the sorted baseline.
    fn push(&mut self, ms: f64) {
        if self.samples.len() >= BASELINE + RECENT {
            if let Some(old) = self.samples.pop_front() {
                let i = self.baseline.partition_point(|v| v.total_cmp(&old).is_lt());
                if i < self.baseline.len() {
                    self.baseline.remove(i);
                }
            }
        }
        self.samples.push_back(ms);
        if let Some(joins) = self
            .samples
            .len()
            .checked_sub(RECENT + 1)
            .and_then(|i| self.samples.get(i).copied())
        {
            let i = self
                .baseline
                .partition_point(|v| v.total_cmp(&joins).is_le());
            self.baseline.insert(i, joins);
        }
    }

    fn judge(&self) -> Option<Judgement> {
        let n = self.samples.len();
        if n < MIN_BASELINE + RECENT {
            return None;
        }
        let mut recent = [0.0f64; RECENT];
        for (slot, v) in recent.iter_mut().zip(self.samples.iter().skip(n - RECENT)) {
            *slot = *v;
        }
        let baseline_ms = median_sorted(&self.baseline)?;
        let recent_ms = median(&mut recent)?;
        let mad = mad_sorted(&self.baseline, baseline_ms)?;
        Some(Judgement {
            baseline_ms,
            recent_ms,
            threshold_ms: MIN_EXCESS_MS.max(MAD_FACTOR * mad),
        })
    }
}

/// Median (mean of the middle two for an even count); sorts `v`.
fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_unstable_by(f64::total_cmp);
    median_sorted(v)
}

/// Median of an already sorted slice.
fn median_sorted(v: &[f64]) -> Option<f64> {
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => v.get(n / 2).copied(),
        _ => Some((v.get(n / 2 - 1)? + v.get(n / 2)?) / 2.0),
    }
}

/// Median absolute deviation of sorted `v` from `m` without sorting the deviations: the
/// deviations left of `m` (read leftwards) and right of it are each sorted, so their merge
/// yields them in order; walk it to the middle.
fn mad_sorted(v: &[f64], m: f64) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let split = v.partition_point(|x| *x < m);
    let (mut left, mut right) = (split, split);
    let mut next = || -> Option<f64> {
        let l = left.checked_sub(1).and_then(|i| v.get(i)).map(|x| m - x);
        let r = v.get(right).map(|x| x - m);
        match (l, r) {
            (Some(a), Some(b)) if a <= b => {
                left -= 1;
                Some(a)
            }
            (_, Some(b)) => {
                right += 1;
                Some(b)
            }
            (Some(a), None) => {
                left -= 1;
                Some(a)
            }
            (None, None) => None,
        }
    };
    let mut prev = 0.0;
    for _ in 0..n / 2 {
        prev = next()?;
    }
    let mid = next()?;
    Some(if n % 2 == 1 { mid } else { (prev + mid) / 2.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `samples` (ms); returns the indices at which anomalies were reported.
    fn feed(
        w: &TimingWatch,
        metric: Metric,
        samples: impl IntoIterator<Item = u64>,
    ) -> Vec<(usize, Anomaly)> {
        samples
            .into_iter()
            .enumerate()
            .filter_map(|(i, ms)| {
                w.observe("api.example:443", metric, MS * ms as u32)
                    .map(|a| (i, a))
            })
            .collect()
    }

    /// The rule computed from scratch: sort copies of both sets and of the deviations.
    fn naive_judge(samples: &[f64]) -> Option<(f64, f64, f64)> {
        let n = samples.len();
        if n < MIN_BASELINE + RECENT {
            return None;
        }
        let split = n - RECENT;
        let mut base = samples[split.saturating_sub(BASELINE)..split].to_vec();
        let mut recent = samples[split..].to_vec();
        let b = median(&mut base)?;
        let r = median(&mut recent)?;
        let mut dev: Vec<f64> = base.iter().map(|x| (x - b).abs()).collect();
        let mad = median(&mut dev)?;
        Some((b, r, MIN_EXCESS_MS.max(MAD_FACTOR * mad)))
    }

    proptest::proptest! {
        /// The sorted, incrementally kept baseline judges exactly like sorting everything
        /// anew, after every sample, through the window filling up and sliding (values
        /// drawn from a small set so ties and duplicates are common).
        #[test]
        fn incremental_judgement_equals_the_naive_rule(
            values in proptest::collection::vec(
                proptest::prop_oneof![0u32..8, 0u32..100_000], 0..520),
            scale in proptest::sample::select(vec![1.0f64, 0.25, 7.5]),
        ) {
            let mut s = Series::default();
            let mut all = Vec::new();
            for v in values {
                let ms = f64::from(v) * scale;
                s.push(ms);
                all.push(ms);
                proptest::prop_assert!(s.samples.len() <= BASELINE + RECENT);
                proptest::prop_assert_eq!(
                    s.baseline.len(),
                    s.samples.len().saturating_sub(RECENT)
                );
                let got = s.judge().map(|j| (j.baseline_ms, j.recent_ms, j.threshold_ms));
                proptest::prop_assert_eq!(got, naive_judge(&all));
            }
        }
    }

    #[test]
    fn a_sudden_step_is_reported_once_within_20_samples() {
        let w = TimingWatch::new();
        assert!(feed(&w, Metric::TlsHandshake, std::iter::repeat_n(10, 200)).is_empty());
        let hits = feed(&w, Metric::TlsHandshake, std::iter::repeat_n(310, 400));
        assert_eq!(hits.len(), 1, "{hits:?}");
        let (i, a) = &hits[0];
        assert!(*i < 20, "reported after {} samples", i + 1);
        assert_eq!(a.metric, Metric::TlsHandshake);
        assert_eq!(a.endpoint, "api.example:443");
        assert_eq!((a.baseline_ms, a.threshold_ms), (10.0, 50.0));
        assert!(a.recent_ms > 60.0);
        // The new level became the baseline: back to quiet, re-armed.
        let snap = w.snapshot();
        assert_eq!(snap.len(), 1);
        assert!(!snap[0].anomalous);
        assert_eq!(snap[0].baseline_ms, Some(310.0));
    }

    #[test]
    fn jitter_under_50ms_never_reports() {
        let w = TimingWatch::new();
        // Deterministic pseudo-random samples in 10..60 ms, with runs of highs and lows.
        let mut x: u64 = 12345;
        let samples: Vec<u64> = (0..5000)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let base = if (i / 37) % 2 == 0 { 10 } else { 30 };
                base + (x >> 33) % 30
            })
            .collect();
        assert!(samples.iter().all(|s| (10..60).contains(s)));
        assert!(feed(&w, Metric::ResponseHeaders, samples).is_empty());
    }

    #[test]
    fn rearms_after_returning_to_normal() {
        let w = TimingWatch::new();
        feed(&w, Metric::TlsHandshake, std::iter::repeat_n(10, 100));
        assert_eq!(
            feed(&w, Metric::TlsHandshake, std::iter::repeat_n(400, 20)).len(),
            1
        );
        assert!(w.snapshot()[0].anomalous);
        assert!(feed(&w, Metric::TlsHandshake, std::iter::repeat_n(10, 20)).is_empty());
        assert!(!w.snapshot()[0].anomalous);
        assert_eq!(
            feed(&w, Metric::TlsHandshake, std::iter::repeat_n(400, 20)).len(),
            1
        );
    }

    #[test]
    fn a_noisy_baseline_needs_a_bigger_step() {
        let w = TimingWatch::new();
        // Cycling 100, 150, …, 300 ms: median 200, MAD 50, threshold 150.
        let noisy = (0..200).map(|i| 100 + 50 * (i % 5));
        assert!(feed(&w, Metric::ResponseHeaders, noisy).is_empty());
        let snap = &w.snapshot()[0];
        assert_eq!(
            (snap.baseline_ms, snap.threshold_ms),
            (Some(200.0), Some(150.0))
        );
        // +140 ms over the baseline median is inside 3 MADs …
        assert!(feed(&w, Metric::ResponseHeaders, std::iter::repeat_n(340, 20)).is_empty());
        // … +200 ms is not.
        assert_eq!(
            feed(&w, Metric::ResponseHeaders, std::iter::repeat_n(400, 20)).len(),
            1
        );
    }

    #[test]
    fn series_are_separate_per_endpoint_and_metric() {
        let w = TimingWatch::new();
        for _ in 0..100 {
            w.observe("a", Metric::TlsHandshake, MS * 10);
            w.observe("b", Metric::TlsHandshake, MS * 500);
            w.observe("a", Metric::ResponseHeaders, MS * 500);
        }
        let snap = w.snapshot();
        let keys: Vec<(&str, Metric)> = snap
            .iter()
            .map(|s| (s.endpoint.as_str(), s.metric))
            .collect();
        assert_eq!(
            keys,
            [
                ("a", Metric::TlsHandshake),
                ("a", Metric::ResponseHeaders),
                ("b", Metric::TlsHandshake)
            ]
        );
        assert!(snap.iter().all(|s| !s.anomalous && s.samples == 100));
        assert_eq!(Metric::ResponseHeaders.as_str(), "response_headers");
    }
}
