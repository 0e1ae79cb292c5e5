//! Closed-loop load: `conc` keep-alive connections, each sending its next request as soon
//! as the previous answer is complete, for a warm-up then a measured window. Latencies go
//! into a Vec per slot (sorted once at the end).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::task::JoinSet;

use super::client::{self, ReqSpec, Route, Tls};
use super::procs;
use super::stats::{self, Summary};

/// Warm-up and measured window.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Not recorded.
    pub warmup: Duration,
    /// Recorded.
    pub measure: Duration,
}

/// Opens `conc` connections on `route` in parallel.
async fn open_all(route: &Route, tls: &Tls, conc: usize) -> Result<Conns> {
    let mut set = JoinSet::new();
    for _ in 0..conc {
        let (r, t) = (route.clone(), tls.clone());
        set.spawn(async move { client::connect(&r, &t).await });
    }
    let mut out = Vec::with_capacity(conc);
    while let Some(r) = set.join_next().await {
        out.push(r?.with_context(|| format!("connecting {route:?}"))?);
    }
    Ok(out)
}

/// Keep-alive connections of one route, kept across windows.
type Conns = Vec<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>>;

/// One side of an interleaved measurement: where the requests go, and whose CPU time is
/// charged to it (proxy, mock, load generator; 0 for none).
pub struct Side<'a> {
    /// The route.
    pub route: &'a Route,
    /// Processes whose CPU time is read.
    pub pids: [u32; 3],
}

/// Unrecorded load before each window but a side's first (which gets the whole warm-up).
pub const SETTLE: Duration = Duration::from_millis(200);

/// Non-streaming closed loops on several routes that take turns: each side gets `slices`
/// windows of `w.measure / slices`, in rotation (A B C A B C …), so the slow drift of a
/// shared machine (other tenants, clock speed) falls on every side alike and a ratio of two
/// sides compares like with like. Each side's connections are opened once and kept; its
/// first window follows the whole warm-up, later ones a short settle. Returns one
/// [`Summary`] per side over all its windows: throughput, latency percentiles, CPU per
/// request.
pub async fn interleaved(
    sides: &[Side<'_>],
    tls: &Tls,
    conc: usize,
    req: &ReqSpec,
    w: Window,
    slices: usize,
) -> Result<Vec<Summary>> {
    let slices = slices.max(1);
    let mut conns = Vec::with_capacity(sides.len());
    for side in sides {
        conns.push(Some(open_all(side.route, tls, conc).await?));
    }
    let mut acc: Vec<Acc> = sides.iter().map(|_| Acc::default()).collect();
    let slice = w.measure / slices as u32;
    for k in 0..slices {
        for (i, side) in sides.iter().enumerate() {
            let win = Window {
                warmup: if k == 0 {
                    w.warmup
                } else {
                    SETTLE.min(w.warmup)
                },
                measure: slice,
            };
            let open = conns[i].take().unwrap_or_default();
            let (kept, got) = window(side, tls, open, req, win).await?;
            conns[i] = Some(kept);
            acc[i].add(got, slice);
        }
    }
    Ok(acc.into_iter().map(Acc::summary).collect())
}

/// What the windows of one side recorded.
#[derive(Default)]
struct Acc {
    lat: Vec<u64>,
    errors: u64,
    /// CPU seconds of the three processes.
    cpu: [f64; 3],
    /// Context switches of the three processes.
    cs: [f64; 3],
    secs: f64,
}

// === impl Acc ===

impl Acc {
    fn add(&mut self, w: Acc, measured: Duration) {
        self.lat.extend(w.lat);
        self.errors += w.errors;
        for (sum, add) in self.cpu.iter_mut().zip(w.cpu) {
            *sum += add;
        }
        for (sum, add) in self.cs.iter_mut().zip(w.cs) {
            *sum += add;
        }
        self.secs += measured.as_secs_f64();
    }

    fn summary(self) -> Summary {
        let mut s = Summary::from_ns(self.lat, self.secs, self.errors);
        s.cpu = self.cpu.map(|secs| secs * 1e6 / s.ok.max(1) as f64);
        s.cs = self.cs.map(|n| n / s.ok.max(1) as f64);
        s
    }
}

/// One closed-loop window on `conns` (reconnecting slots that fail): the latencies of the
/// requests that started and ended inside the measured part, and the CPU seconds the
/// side's processes spent in it.
async fn window(
    side: &Side<'_>,
    tls: &Tls,
    conns: Conns,
    req: &ReqSpec,
    w: Window,
) -> Result<(Conns, Acc)> {
    let start = Instant::now();
    let from = start + w.warmup;
    let end = from + w.measure;
    let route = side.route;
    let host = route.host_header();
    let pids = side.pids;
    let cpu = tokio::spawn(async move {
        // The proxy side may be a process tree (nginx: a master and its workers).
        let snap = || {
            let [proxy, mock, loadgen] = pids;
            let cpu = [
                procs::tree(proxy, procs::cpu_seconds),
                procs::cpu_seconds(mock),
                procs::cpu_seconds(loadgen),
            ];
            let cs = [
                procs::tree(proxy, procs::ctx_switches),
                procs::ctx_switches(mock),
                procs::ctx_switches(loadgen),
            ];
            let known = |v: Option<f64>| v.unwrap_or(f64::NAN);
            (cpu.map(known), cs.map(known))
        };
        tokio::time::sleep_until(from.into()).await;
        let a = snap();
        tokio::time::sleep_until(end.into()).await;
        let b = snap();
        let delta = |a: [f64; 3], b: [f64; 3]| -> [f64; 3] { std::array::from_fn(|i| b[i] - a[i]) };
        (delta(a.0, b.0), delta(a.1, b.1))
    });
    let mut set = JoinSet::new();
    for mut tx in conns {
        let (req, host, route, tls) = (req.clone(), host.clone(), route.clone(), tls.clone());
        set.spawn(async move {
            let mut lat = Vec::with_capacity(1 << 14);
            let mut errors = 0u64;
            while Instant::now() < end {
                let t0 = Instant::now();
                let r = client::exchange(&mut tx, req.build(&host)?).await;
                let t1 = Instant::now();
                let ok = matches!(&r, Ok((s, _)) if s.is_success());
                if t0 >= from && t1 <= end {
                    if ok {
                        lat.push((t1 - t0).as_nanos() as u64);
                    } else {
                        errors += 1;
                    }
                }
                if r.is_err() || tx.is_closed() {
                    // Reconnect the slot and go on.
                    tx = client::connect(&route, &tls).await?;
                }
            }
            anyhow::Ok((tx, lat, errors))
        });
    }
    let mut out = Acc::default();
    let mut kept = Vec::new();
    while let Some(r) = set.join_next().await {
        let (tx, lat, e) = r??;
        kept.push(tx);
        out.lat.extend(lat);
        out.errors += e;
    }
    (out.cpu, out.cs) = cpu.await?;
    Ok((kept, out))
}

/// What a streaming measurement saw.
#[derive(Clone, Debug, Default)]
pub struct StreamSample {
    /// Per event: client receive time minus the event's `mock_ts_us` (µs).
    pub event_delay_us: Vec<i64>,
    /// Per stream: request sent to first body byte (ns).
    pub ttfb_ns: Vec<u64>,
    /// Per stream: request sent to end of body (ns).
    pub total_ns: Vec<u64>,
    /// Failed streams.
    pub errors: u64,
}

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Extracts `"mock_ts_us":N` from each complete SSE event in `buf` (events end with a
/// blank line), consuming them.
pub fn take_event_stamps(buf: &mut BytesMut) -> Vec<i64> {
    const KEY: &[u8] = b"\"mock_ts_us\":";
    let mut out = Vec::new();
    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
        let ev = buf.split_to(end + 2);
        if let Some(i) = ev.windows(KEY.len()).position(|w| w == KEY) {
            let digits: Vec<u8> = ev[i + KEY.len()..]
                .iter()
                .copied()
                .skip_while(|b| *b == b' ')
                .take_while(u8::is_ascii_digit)
                .collect();
            if let Ok(n) = std::str::from_utf8(&digits).unwrap_or("").parse::<i64>() {
                out.push(n);
            }
        }
    }
    out
}

/// One streamed request: stamps each event on arrival. Returns (ttfb ns, total ns, delays).
pub async fn one_stream(
    tx: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    req: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<(u64, u64, Vec<i64>)> {
    tx.ready().await?;
    let t0 = Instant::now();
    let resp = tx.send_request(req).await?;
    anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    let mut ttfb = None;
    let mut delays = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        let now = unix_us();
        ttfb.get_or_insert_with(|| t0.elapsed().as_nanos() as u64);
        buf.extend_from_slice(&data);
        delays.extend(take_event_stamps(&mut buf).into_iter().map(|ts| now - ts));
    }
    Ok((ttfb.unwrap_or(0), t0.elapsed().as_nanos() as u64, delays))
}

/// Streaming closed loop: `conc` connections each streaming one answer after another.
pub async fn stream_loop(
    route: &Route,
    tls: &Tls,
    conc: usize,
    req: &ReqSpec,
    w: Window,
) -> Result<StreamSample> {
    let conns = open_all(route, tls, conc).await?;
    let from = Instant::now() + w.warmup;
    let end = from + w.measure;
    let host = route.host_header();
    let mut set = JoinSet::new();
    for mut tx in conns {
        let (req, host, route, tls) = (req.clone(), host.clone(), route.clone(), tls.clone());
        set.spawn(async move {
            let mut s = StreamSample::default();
            while Instant::now() < end {
                let t0 = Instant::now();
                let r = one_stream(&mut tx, req.build(&host)?).await;
                let done = Instant::now() <= end;
                match r {
                    Ok((ttfb, total, d)) if t0 >= from && done => {
                        s.ttfb_ns.push(ttfb);
                        s.total_ns.push(total);
                        s.event_delay_us.extend(d);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        if t0 >= from {
                            s.errors += 1;
                        }
                        tx = client::connect(&route, &tls).await?;
                    }
                }
            }
            anyhow::Ok(s)
        });
    }
    let mut all = StreamSample::default();
    while let Some(r) = set.join_next().await {
        let s = r??;
        all.event_delay_us.extend(s.event_delay_us);
        all.ttfb_ns.extend(s.ttfb_ns);
        all.total_ns.extend(s.total_ns);
        all.errors += s.errors;
    }
    all.event_delay_us.sort_unstable();
    all.ttfb_ns.sort_unstable();
    all.total_ns.sort_unstable();
    Ok(all)
}

/// Summary of one streaming measurement (µs).
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamSummary {
    /// Per-event delay p50.
    pub ev_p50: f64,
    /// Per-event delay p99.
    pub ev_p99: f64,
    /// Per-event delay max.
    pub ev_max: f64,
    /// Time to first byte p50.
    pub ttfb_p50: f64,
    /// Time to first byte p99.
    pub ttfb_p99: f64,
    /// Whole stream p50.
    pub total_p50: f64,
    /// Events seen.
    pub events: u64,
    /// Failed streams.
    pub errors: u64,
}

impl StreamSample {
    /// Percentiles of this sample.
    pub fn summary(&self) -> StreamSummary {
        let e = &self.event_delay_us;
        StreamSummary {
            ev_p50: stats::pct_i(e, 50.0) as f64,
            ev_p99: stats::pct_i(e, 99.0) as f64,
            ev_max: e.last().copied().unwrap_or(0) as f64,
            ttfb_p50: stats::us(stats::pct(&self.ttfb_ns, 50.0)),
            ttfb_p99: stats::us(stats::pct(&self.ttfb_ns, 99.0)),
            total_p50: stats::us(stats::pct(&self.total_ns, 50.0)),
            events: e.len() as u64,
            errors: self.errors,
        }
    }
}

impl StreamSummary {
    /// Field-wise medians of several runs.
    pub fn median_of(runs: &[StreamSummary]) -> StreamSummary {
        let m =
            |f: fn(&StreamSummary) -> f64| stats::median(&runs.iter().map(f).collect::<Vec<_>>());
        StreamSummary {
            ev_p50: m(|s| s.ev_p50),
            ev_p99: m(|s| s.ev_p99),
            ev_max: m(|s| s.ev_max),
            ttfb_p50: m(|s| s.ttfb_p50),
            ttfb_p99: m(|s| s.ttfb_p99),
            total_p50: m(|s| s.total_p50),
            events: runs.iter().map(|s| s.events).sum(),
            errors: runs.iter().map(|s| s.errors).sum(),
        }
    }
}
