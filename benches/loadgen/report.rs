//! The collected results and their rendering as `docs/benchmarks.md`: machine and build,
//! the §11 targets marked met / not met, then one section per measurement (medians of the
//! runs), then the hand-written sections kept from the previous file.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

use super::load::StreamSummary;
use super::scenarios::{MemRun, MintRun};
use super::stats::{median, Summary};

/// Marks the start of the hand-written part of the output file, which is kept as is.
pub const KEEP_MARKER: &str =
    "<!-- Everything below this line is written by hand and kept by the driver across runs. -->";

/// One feature run's outcome.
pub struct FeatureRes {
    /// Key.
    pub key: &'static str,
    /// Title.
    pub title: &'static str,
    /// Counts against the ≤ 15 % target.
    pub in_target: bool,
    /// Ok, or why it is not available.
    pub status: Result<(), String>,
    /// The feature's request on the base policy, per run.
    pub base: Vec<Summary>,
    /// The same request with the feature on, per run.
    pub on: Vec<Summary>,
}

impl FeatureRes {
    /// Throughput cost: median over runs of 1 − on/base (measured taking turns).
    pub fn cost(&self) -> f64 {
        let v: Vec<f64> = self
            .on
            .iter()
            .zip(&self.base)
            .map(|(n, b)| 1.0 - n.rps / b.rps)
            .collect();
        median(&v)
    }
}

/// Everything measured.
#[derive(Default)]
pub struct Results {
    /// Measured non-streaming modes, in order.
    pub modes: Vec<&'static str>,
    /// Concurrency levels.
    pub levels: Vec<usize>,
    /// Non-streaming results per (mode, concurrency), one per run.
    pub tput: HashMap<(&'static str, usize), Vec<Summary>>,
    /// Streaming results per (mode, concurrency), one per run.
    pub stream: HashMap<(&'static str, usize), Vec<StreamSummary>>,
    /// Leaf minting, one per run.
    pub mint: Vec<MintRun>,
    /// Memory, one per run.
    pub mem: Vec<MemRun>,
    /// Policy edit → enforcement (ms), every edit of every run.
    pub reload_ms: Vec<f64>,
    /// Reloads under load: (asked, done, ok requests, failed requests, connections).
    pub reload_load: Option<(usize, usize, u64, u64, usize)>,
    /// Gateway availability.
    pub gateway: Option<Result<(), String>>,
    /// The nginx version, when the `nginx` reference mode was measured.
    pub nginx: Option<String>,
    /// Feature runs.
    pub features: Vec<FeatureRes>,
    /// Concurrency of the feature runs.
    pub feature_conc: usize,
    /// Settings, for the text.
    pub cfg: Settings,
    /// Bytes of the plain chat request body and of its answer body.
    pub sizes: (usize, usize),
}

/// The settings the report quotes.
#[derive(Default, Clone)]
pub struct Settings {
    /// Runs.
    pub runs: usize,
    /// Warm-up per measurement.
    pub warmup: Duration,
    /// Window per measurement.
    pub measure: Duration,
    /// Turns the measured window of an interleaved measurement is split into.
    pub slices: usize,
    /// Mock pacing of streamed events.
    pub chunk_delay_ms: u64,
    /// Events per stream.
    pub stream_events: usize,
    /// Streams held open for the memory figure.
    pub streams: usize,
    /// New hosts per run.
    pub new_hosts: usize,
    /// The command that produced the report.
    pub command: String,
    /// Whether this is the smoke configuration.
    pub smoke: bool,
    /// Wall time of the whole benchmark.
    pub wall: Duration,
    /// `/proc/loadavg` when the benchmark started (other load on the machine).
    pub load_start: String,
}

/// `x` with `digits` decimals, or "–" when it was not measured (NaN).
fn fixed(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "–".into()
    }
}
pub(crate) fn f0(x: f64) -> String {
    fixed(x, 0)
}
pub(crate) fn f1(x: f64) -> String {
    fixed(x, 1)
}
pub(crate) fn f2(x: f64) -> String {
    fixed(x, 2)
}
pub(crate) fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1} %", x * 100.0)
    } else {
        "–".into()
    }
}
fn mark(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**not met**"
    }
}
pub(crate) fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

impl Results {
    pub(crate) fn tp(&self, mode: &str, c: usize) -> Option<Summary> {
        let v = self
            .tput
            .iter()
            .find(|((m, l), _)| *m == mode && *l == c)?
            .1;
        Some(Summary::median_of(v))
    }
    pub(crate) fn st(&self, mode: &str, c: usize) -> Option<StreamSummary> {
        let v = self
            .stream
            .iter()
            .find(|((m, l), _)| *m == mode && *l == c)?
            .1;
        Some(StreamSummary::median_of(v))
    }
    /// Median over runs of `f(run of mode, same run of direct)` at concurrency `c`: ratios
    /// and differences are taken within a run (measured taking turns), then the median.
    pub(crate) fn paired(
        &self,
        mode: &str,
        c: usize,
        f: impl Fn(&Summary, &Summary) -> f64,
    ) -> f64 {
        self.paired_between(mode, "direct", c, f)
    }

    /// Median over runs of `f(run of mode, same run of other)` at concurrency `c`.
    pub(crate) fn paired_between(
        &self,
        mode: &str,
        other: &str,
        c: usize,
        f: impl Fn(&Summary, &Summary) -> f64,
    ) -> f64 {
        median(&self.per_run_between(mode, other, c, f))
    }

    /// `f(run of mode, same run of other)` at concurrency `c`, one per run, in run order
    /// (empty when either mode was not measured).
    pub(crate) fn per_run_between(
        &self,
        mode: &str,
        other: &str,
        c: usize,
        f: impl Fn(&Summary, &Summary) -> f64,
    ) -> Vec<f64> {
        let get = |m: &str| {
            self.tput
                .iter()
                .find(|((mm, l), _)| *mm == m && *l == c)
                .map(|x| x.1)
        };
        let (Some(a), Some(b)) = (get(mode), get(other)) else {
            return Vec::new();
        };
        a.iter().zip(b).map(|(a, b)| f(a, b)).collect()
    }

    /// The per-run ratios of `mode` to `other` at `c`, for a summary line:
    /// "; per run 46.9 / 43.2 / 40.6 %" (nothing for a single run).
    fn per_run_note(&self, mode: &str, other: &str, c: usize) -> String {
        let v = self.per_run_between(mode, other, c, |a, b| a.rps / b.rps);
        if v.len() < 2 {
            return String::new();
        }
        let each: Vec<String> = v.iter().map(|r| format!("{:.1}", r * 100.0)).collect();
        format!("; per run {} %", each.join(" / "))
    }

    /// [`Self::paired`] for the streaming results.
    pub(crate) fn paired_st(
        &self,
        mode: &str,
        c: usize,
        f: impl Fn(&StreamSummary, &StreamSummary) -> f64,
    ) -> f64 {
        let get = |m: &str| {
            self.stream
                .iter()
                .find(|((mm, l), _)| *mm == m && *l == c)
                .map(|x| x.1)
        };
        let (Some(a), Some(d)) = (get(mode), get("direct")) else {
            return f64::NAN;
        };
        median(&a.iter().zip(d).map(|(a, d)| f(a, d)).collect::<Vec<_>>())
    }

    fn lo(&self) -> usize {
        self.levels.iter().copied().min().unwrap_or(1)
    }
    fn hi(&self) -> usize {
        self.levels.iter().copied().max().unwrap_or(1)
    }

    /// The markdown document; `kept` is the hand-written tail of the previous file.
    pub fn render(&self, machine: &[(String, String)], kept: Option<&str>) -> String {
        let mut o = String::new();
        let c = &self.cfg;
        let _ = writeln!(o, "# Benchmarks\n");
        let _ = writeln!(o, "Written by `benches/loadgen.rs` (run it with `./scripts/bench`). Every figure is the median of {} run(s); each throughput/latency measurement is {:.1} s after a {:.1} s warm-up, closed loop, one keep-alive HTTP/1.1 connection per concurrency slot. The non-streaming modes of one concurrency level (and each feature with its base) take turns in {} windows of {:.1} s each ({:.1} s of unrecorded load before every later window), so the drift of this shared machine falls on all of them alike. The mock provider, the proxy and the load generator run on the same machine, so proxied figures include the proxy competing with both for the same cores: ratios are what this machine gives, not the proxy's ceiling.{}\n",
            c.runs, c.measure.as_secs_f64(), c.warmup.as_secs_f64(), c.slices,
            c.measure.as_secs_f64() / c.slices as f64, c.warmup.min(super::load::SETTLE).as_secs_f64(),
            if c.smoke { " **Smoke configuration: the figures are not meaningful.**" } else { "" });
        let _ = writeln!(o, "## Machine and build\n\n| | |\n|---|---|");
        for (k, v) in machine {
            let _ = writeln!(o, "| {k} | {v} |");
        }
        let _ = writeln!(o, "| command | `{}` |", c.command);
        let _ = writeln!(o, "| settings | runs {}, warm-up {:.1} s, window {:.1} s in {} turns, concurrency {:?}, {} streams held open, {} new hosts per run, stream pacing {} ms |",
            c.runs, c.warmup.as_secs_f64(), c.measure.as_secs_f64(), c.slices, self.levels, c.streams, c.new_hosts, c.chunk_delay_ms);
        let _ = writeln!(
            o,
            "| wall time | {:.0} s (load average before the start: {}) |\n",
            c.wall.as_secs_f64(),
            c.load_start
        );
        self.targets(&mut o);
        self.section_tput(&mut o);
        self.section_stream(&mut o);
        self.section_mint(&mut o);
        self.section_mem(&mut o);
        self.section_reload(&mut o);
        self.section_features(&mut o);
        let _ = writeln!(o, "{KEEP_MARKER}\n");
        match kept {
            Some(k) => o.push_str(k.trim_start_matches('\n')),
            None => o.push_str("## Where the time goes\n\nNot profiled yet.\n"),
        }
        if !o.ends_with('\n') {
            o.push('\n');
        }
        o
    }

    fn targets(&self, o: &mut String) {
        let (lo, hi) = (self.lo(), self.hi());
        let _ = writeln!(o, "## Summary: PRODUCT.md §11 targets\n\n| target | measured (medians) | status |\n|---|---|---|");
        let mut row = |t: String, m: String, s: &str| {
            let _ = writeln!(o, "| {t} | {m} | {s} |");
        };
        if let (Some(d), Some(i)) = (self.tp("direct", hi), self.tp("inspect", hi)) {
            let r = self.paired("inspect", hi, |a, d| a.rps / d.rps);
            row(format!("throughput, inspected HTTPS, keep-alive, {hi} connections, full policy ≥ 50 % of direct"),
                format!("{} ({} vs {} req/s{})", pct(r), f0(i.rps), f0(d.rps), self.per_run_note("inspect", "direct", hi)), mark(r >= 0.5));
        }
        if let (Some(d), Some(n)) = (self.tp("direct", hi), self.tp("nginx", hi)) {
            let r = self.paired("nginx", hi, |a, d| a.rps / d.rps);
            let vs = self.paired_between("inspect", "nginx", hi, |i, n| i.rps / n.rps);
            row(format!("reference, not a target: nginx as a TLS reverse proxy in front of the same mock, {hi} connections (§11 quotes ~47–48 % for it)"),
                format!("{} of direct ({} vs {} req/s{}); inspect reached {} of nginx's throughput{}", pct(r), f0(n.rps), f0(d.rps), self.per_run_note("nginx", "direct", hi), pct(vs), self.per_run_note("inspect", "nginx", hi)),
                "reference");
        }
        if let (Some(d), Some(i)) = (self.tp("direct", lo), self.tp("inspect", lo)) {
            let a = self.paired("inspect", lo, |a, d| a.p50 - d.p50);
            row(
                format!("added latency p50 at {lo} connection ≤ 40 µs"),
                format!("{} µs ({} vs {} µs)", f0(a), f0(i.p50), f0(d.p50)),
                mark(a <= 40.0),
            );
        }
        if let (Some(d), Some(i)) = (self.tp("direct", hi), self.tp("inspect", hi)) {
            let a = self.paired("inspect", hi, |a, d| a.p99 - d.p99);
            row(
                format!("added latency p99 at {hi} connections ≤ 1 ms"),
                format!("{} µs ({} vs {} µs)", f0(a), f0(i.p99), f0(d.p99)),
                // A proxied p99 below the direct one is the machine's noise, not a result;
                // but the added part can never exceed the proxied p99 itself, so a proxied
                // p99 within the target still settles it.
                match (a < 0.0, i.p99 <= 1000.0) {
                    (false, _) => mark(a <= 1000.0),
                    (true, true) => "**met** (the direct p99 was the larger, a noisy run; the proxied p99 itself is within 1 ms, which bounds the added part)",
                    (true, false) => "**inconclusive** (the direct p99 was the larger: a noisy run)",
                },
            );
        }
        let worst = self
            .levels
            .iter()
            .filter_map(|&l| self.st("inspect", l).map(|s| (l, s)))
            .max_by(|a, b| a.1.ev_p99.total_cmp(&b.1.ev_p99));
        if let Some((l, s)) = worst {
            row(format!("streaming: each SSE event within 1 ms of leaving the upstream (p99 of client receive − `mock_ts_us`, worst level: {l} conn.)"),
                format!("p99 {} µs, p50 {} µs, max {} µs", f0(s.ev_p99), f0(s.ev_p50), f0(s.ev_max)), mark(s.ev_p99 <= 1000.0));
            row(
                "streaming: no whole-response buffering (first byte long before the stream ends)"
                    .into(),
                format!(
                    "TTFB p50 {} µs of a {} ms stream",
                    f0(s.ttfb_p50),
                    f1(s.total_p50 / 1000.0)
                ),
                mark(s.ttfb_p50 < s.total_p50 / 2.0),
            );
        }
        if !self.mint.is_empty() {
            let n = median(&self.mint.iter().map(|m| m.hs_new).collect::<Vec<_>>());
            let k = median(&self.mint.iter().map(|m| m.hs_cached).collect::<Vec<_>>());
            row(
                "first request to a new host: leaf minting ≤ 2 ms".into(),
                format!(
                    "{} µs (handshake to a new host {} µs − to a cached host {} µs)",
                    f0(n - k),
                    f0(n),
                    f0(k)
                ),
                mark(n - k <= 2000.0),
            );
            row(
                "… cached afterwards".into(),
                format!("repeat handshake {} µs < first {} µs", f0(k), f0(n)),
                mark(k < n),
            );
        }
        if !self.mem.is_empty() {
            let idle = median(
                &self
                    .mem
                    .iter()
                    .map(|m| m.idle_kib as f64)
                    .collect::<Vec<_>>(),
            );
            let open = median(
                &self
                    .mem
                    .iter()
                    .map(|m| m.open_kib as f64)
                    .collect::<Vec<_>>(),
            );
            let opened = self.mem.iter().map(|m| m.opened).min().unwrap_or(0);
            row(
                "idle RSS ≤ 20 MiB (policy without tokenizer)".into(),
                format!("{} MiB", f1(mib(idle))),
                mark(mib(idle) <= 20.0),
            );
            let all = opened == self.cfg.streams;
            row(
                format!(
                    "{} concurrent open streams within 100 MiB",
                    self.cfg.streams
                ),
                format!(
                    "{} MiB ({} of {} open)",
                    f1(mib(open)),
                    opened,
                    self.cfg.streams
                ),
                if all {
                    mark(mib(open) <= 100.0)
                } else {
                    "**not met** (not all streams opened)"
                },
            );
        }
        if !self.reload_ms.is_empty() {
            let m = median(&self.reload_ms);
            let mx = self.reload_ms.iter().copied().fold(0.0, f64::max);
            row(
                "a policy edit is enforced within 500 ms".into(),
                format!(
                    "median {} ms, max {} ms over {} edits",
                    f0(m),
                    f0(mx),
                    self.reload_ms.len()
                ),
                mark(mx <= 500.0),
            );
        }
        if let Some((n, done, ok, bad, conns)) = self.reload_load {
            row(
                format!("{n} reloads under load fail no request"),
                format!(
                    "{done} reloads with {conns} connections busy: {bad} failed of {} requests",
                    ok + bad
                ),
                mark(bad == 0 && done == n),
            );
        }
        for f in self.features.iter().filter(|f| f.in_target) {
            match &f.status {
                Ok(()) => {
                    let cost = f.cost();
                    row(
                        format!("{} costs ≤ 15 % throughput", f.key),
                        format!(
                            "{} ({} vs {} req/s)",
                            pct(cost),
                            f0(median_rps(&f.on)),
                            f0(median_rps(&f.base))
                        ),
                        mark(cost <= 0.15),
                    );
                }
                Err(_) => row(
                    format!("{} costs ≤ 15 % throughput", f.key),
                    "not available in this build (see 6.)".into(),
                    "not available",
                ),
            }
        }
        let _ = writeln!(o);
    }
}

fn median_rps(v: &[Summary]) -> f64 {
    median(&v.iter().map(|s| s.rps).collect::<Vec<_>>())
}
