//! Percentiles of in-memory samples (a sorted Vec) and medians across runs.

/// The `p`-th percentile (0–100, nearest rank) of sorted samples; 0 when empty.
pub fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Same for signed samples.
pub fn pct_i(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of values (mean of the middle two for an even count); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Nanoseconds to microseconds.
pub fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Latency summary of one measurement, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    /// Completed requests per second in the measured window.
    pub rps: f64,
    /// Percentiles of request latency (µs).
    pub p50: f64,
    /// 90th percentile (µs).
    pub p90: f64,
    /// 99th percentile (µs).
    pub p99: f64,
    /// Requests completed in the window.
    pub ok: u64,
    /// Failed requests (non-2xx or transport errors).
    pub errors: u64,
    /// CPU time (user + system) per completed request, µs, of the proxy, the mock and
    /// the load generator during the window (NaN: no such process).
    pub cpu: [f64; 3],
    /// Context switches (voluntary + involuntary, all threads) per completed request of
    /// the same three processes (NaN: no such process).
    pub cs: [f64; 3],
}

impl Summary {
    /// From raw latencies (ns, any order) over `secs` seconds.
    pub fn from_ns(mut lat: Vec<u64>, secs: f64, errors: u64) -> Summary {
        lat.sort_unstable();
        Summary {
            rps: lat.len() as f64 / secs,
            p50: us(pct(&lat, 50.0)),
            p90: us(pct(&lat, 90.0)),
            p99: us(pct(&lat, 99.0)),
            ok: lat.len() as u64,
            errors,
            cpu: [f64::NAN; 3],
            cs: [f64::NAN; 3],
        }
    }

    /// Field-wise medians of several runs.
    pub fn median_of(runs: &[Summary]) -> Summary {
        let m = |f: fn(&Summary) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        // Per process (proxy, mock, load generator): the median of each slot over the runs.
        let each = |f: fn(&Summary) -> [f64; 3]| -> [f64; 3] {
            std::array::from_fn(|i| median(&runs.iter().map(|s| f(s)[i]).collect::<Vec<_>>()))
        };
        Summary {
            rps: m(|s| s.rps),
            p50: m(|s| s.p50),
            p90: m(|s| s.p90),
            p99: m(|s| s.p99),
            ok: runs.iter().map(|s| s.ok).sum(),
            errors: runs.iter().map(|s| s.errors).sum(),
            cpu: each(|s| s.cpu),
            cs: each(|s| s.cs),
        }
    }
}
