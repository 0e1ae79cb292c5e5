//! The per-measurement sections of the report (1.–6.), medians of the runs.

use std::fmt::Write;

use super::report::{f0, f1, f2, mib, pct, Results};
use super::scenarios::{MemRun, MintRun};
use super::stats::{median, Summary};

impl Results {
    pub(crate) fn section_tput(&self, o: &mut String) {
        let _ = writeln!(o, "## 1. Non-streaming chat completions\n\nA `POST /v1/chat/completions` ({} bytes of JSON up, {} down). *direct*: TLS straight to the mock. *inspect*: `CONNECT` + TLS with the proxy's minted leaf (full policy: allowlist, pinned upstream chain, audit). *tunnel*: a `mode = \"tunnel\"` entry, the client sees the mock's certificate. *gateway*: plain HTTP, origin-form, to the proxy port.{} Ratios and added latency (proxied − direct at the same percentile) are taken within each run, where the modes took turns, then the median over runs; the req/s and µs columns are medians of their own. CPU µs/req: user + system time of each process (`/proc/PID/stat`) during the window divided by the requests completed; loopback TCP work done in softirq context is charged to whichever process was running, so the columns do not add up to the machine's total. Context switches per request: voluntary + involuntary, every thread of each process (`/proc/PID/task/*/status`), proxy / mock / load generator — what a proxy in the path costs the processes around it.\n", self.sizes.0, self.sizes.1,
            self.nginx.as_ref().map_or(String::new(), |v| format!(" *nginx*: {v} as a TLS reverse proxy in front of the same mock, one worker per CPU, keep-alive upstream pool with TLS session reuse, no access log — the reference PRODUCT.md §11 quotes; its CPU column sums the master and its workers.")));
        let _ = writeln!(o, "| mode | conns | req/s | p50 µs | p90 µs | p99 µs | req/s vs direct | added p50 µs | added p99 µs | failed | CPU µs/req proxy | mock | loadgen | context switches/req proxy / mock / loadgen |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for &l in &self.levels {
            let d = self.tp("direct", l);
            for &m in &self.modes {
                let Some(s) = self.tp(m, l) else { continue };
                let (ratio, a50, a99) = match (m, d) {
                    ("direct", _) | (_, None) => ("–".into(), "–".into(), "–".into()),
                    (_, Some(_)) => (
                        pct(self.paired(m, l, |a, d| a.rps / d.rps)),
                        f0(self.paired(m, l, |a, d| a.p50 - d.p50)),
                        f0(self.paired(m, l, |a, d| a.p99 - d.p99)),
                    ),
                };
                let _ = writeln!(
                    o,
                    "| {m} | {l} | {} | {} | {} | {} | {ratio} | {a50} | {a99} | {} | {} | {} | {} | {} |",
                    f0(s.rps),
                    f0(s.p50),
                    f0(s.p90),
                    f0(s.p99),
                    s.errors,
                    f1(s.cpu[0]),
                    f1(s.cpu[1]),
                    f1(s.cpu[2]),
                    s.cs.map(f2).join(" / ")
                );
            }
        }
        match &self.gateway {
            Some(Err(why)) => {
                let _ = writeln!(o, "\nGateway mode: **not available in this build** ({why}; it was probed with the routing policy of section 6).");
            }
            Some(Ok(())) => {
                let _ = writeln!(o, "\nGateway mode was measured with the routing policy of section 6 (origin-form requests need a route).");
            }
            None => {}
        }
        let _ = writeln!(
            o,
            "\nPer run (req/s): {}\n",
            self.levels
                .iter()
                .flat_map(|&l| self.modes.iter().filter_map(move |&m| {
                    let v = self
                        .tput
                        .iter()
                        .find(|((mm, ll), _)| *mm == m && *ll == l)?
                        .1;
                    Some(format!(
                        "{m}@{l} {}",
                        v.iter().map(|s| f0(s.rps)).collect::<Vec<_>>().join("/")
                    ))
                }))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }

    pub(crate) fn section_stream(&self, o: &mut String) {
        let c = &self.cfg;
        let _ = writeln!(o, "## 2. Streaming\n\n`\"stream\": true`, {} events per stream paced {} ms apart by the mock (`x-mock-fault: chunk_delay={}ms`), streams back to back on each connection. Event delay = client receive time − the event's `mock_ts_us` (same clock). TTFB = request sent → first body byte.\n", c.stream_events, c.chunk_delay_ms, c.chunk_delay_ms);
        let _ = writeln!(o, "| mode | conns | event delay p50 µs | p99 µs | max µs | added p50 µs | added p99 µs | TTFB p50 µs | TTFB p99 µs | stream p50 ms | events | failed |\n|---|---|---|---|---|---|---|---|---|---|---|---|");
        for &l in &self.levels {
            let d = self.st("direct", l);
            for m in ["direct", "inspect"] {
                let Some(s) = self.st(m, l) else { continue };
                let (a50, a99) = match (m, d) {
                    ("inspect", Some(_)) => (
                        f0(self.paired_st(m, l, |a, d| a.ev_p50 - d.ev_p50)),
                        f0(self.paired_st(m, l, |a, d| a.ev_p99 - d.ev_p99)),
                    ),
                    _ => ("–".into(), "–".into()),
                };
                let _ = writeln!(
                    o,
                    "| {m} | {l} | {} | {} | {} | {a50} | {a99} | {} | {} | {} | {} | {} |",
                    f0(s.ev_p50),
                    f0(s.ev_p99),
                    f0(s.ev_max),
                    f0(s.ttfb_p50),
                    f0(s.ttfb_p99),
                    f1(s.total_p50 / 1000.0),
                    s.events,
                    s.errors
                );
            }
        }
        let _ = writeln!(o);
    }

    pub(crate) fn section_mint(&self, o: &mut String) {
        let _ = writeln!(o, "## 3. First request to a new host (leaf minting)\n\n{} host names per run (`mN-I.bench.test`, each its own `[[allow]]` entry, mapped to the mock with `[upstream] resolve`); for each, a fresh connection (the proxy mints a leaf) and then a second fresh connection (leaf cached). The client never resumes TLS sessions, so both handshakes do the same work apart from minting. The first request to a new host also opens that host's upstream pool.\n", self.cfg.new_hosts);
        if self.mint.is_empty() {
            return;
        }
        let m = |f: fn(&MintRun) -> f64| median(&self.mint.iter().map(f).collect::<Vec<_>>());
        let _ = writeln!(o, "| µs (median over hosts, then runs) | new host | cached host | difference |\n|---|---|---|---|");
        let _ = writeln!(
            o,
            "| TCP + `CONNECT` + TLS handshake | {} | {} | {} |",
            f0(m(|r| r.hs_new)),
            f0(m(|r| r.hs_cached)),
            f0(m(|r| r.hs_new) - m(|r| r.hs_cached))
        );
        let _ = writeln!(
            o,
            "| … + first request and answer | {} | {} | {} |\n",
            f0(m(|r| r.req_new)),
            f0(m(|r| r.req_cached)),
            f0(m(|r| r.req_new) - m(|r| r.req_cached))
        );
    }

    pub(crate) fn section_mem(&self, o: &mut String) {
        let _ = writeln!(o, "## 4. Memory\n\nA fresh proxy per run on the base policy. Idle: `VmRSS` 0.5 s after start, before any request. Open streams: {} inspected connections, each with one chat stream paced at 200 ms per event, sampled once every stream has received its first event.\n", self.cfg.streams);
        if self.mem.is_empty() {
            return;
        }
        let m = |f: fn(&MemRun) -> f64| median(&self.mem.iter().map(f).collect::<Vec<_>>());
        let _ = writeln!(o, "| | MiB |\n|---|---|");
        let _ = writeln!(o, "| idle RSS | {} |", f1(mib(m(|r| r.idle_kib as f64))));
        let _ = writeln!(
            o,
            "| RSS with {} streams open | {} |",
            self.cfg.streams,
            f1(mib(m(|r| r.open_kib as f64)))
        );
        let _ = writeln!(
            o,
            "| peak RSS (VmHWM) by then | {} |",
            f1(mib(m(|r| r.hwm_kib as f64)))
        );
        let per =
            (m(|r| r.open_kib as f64) - m(|r| r.idle_kib as f64)) / self.cfg.streams.max(1) as f64;
        let _ = writeln!(o, "| per open stream (KiB) | {} |\n", f1(per));
    }

    pub(crate) fn section_reload(&self, o: &mut String) {
        let _ = writeln!(o, "## 5. Policy reload\n\nEdit → enforcement: `90-reload.toml` is rewritten (temp file + rename) to alternately allow and block `/v2`; one inspected connection polls `POST /v2/chat/completions` every ~1 ms until the answer changes (200 ↔ 403).\n");
        if !self.reload_ms.is_empty() {
            let mut v = self.reload_ms.clone();
            v.sort_by(f64::total_cmp);
            let _ = writeln!(o, "| | ms |\n|---|---|\n| median | {} |\n| min | {} |\n| max | {} |\n| every edit | {} |", f0(median(&v)), f0(v[0]), f0(v[v.len() - 1]), v.iter().map(|x| f0(*x)).collect::<Vec<_>>().join(", "));
        }
        if let Some((n, done, ok, bad, conns)) = self.reload_load {
            let _ = writeln!(o, "\nReloads under load: {n} edits, each waited for until `/readyz` shows the new policy hash ({done} seen), while {conns} connections sent requests in a closed loop: {ok} answered 200, {bad} failed.");
        }
        let _ = writeln!(o);
    }

    pub(crate) fn section_features(&self, o: &mut String) {
        let _ = writeln!(o, "## 6. Optional features\n\nEach feature is one policy file (`benches/policies/feature-*.toml`) added to the base policy, in its own proxy. The same request (chosen so the feature has work to do) is measured against the base proxy and the feature proxy, taking turns, {} connections, inspected. A feature is \"not available\" when `llm-egress check` rejects its policy or a probe request shows no effect.\n", self.feature_conc);
        let _ = writeln!(o, "| feature | status | base req/s | with feature req/s | throughput cost | base p50 µs | with feature p50 µs | proxy CPU µs/req base | with feature |\n|---|---|---|---|---|---|---|---|---|");
        for f in &self.features {
            match &f.status {
                Ok(()) => {
                    let (b, n) = (Summary::median_of(&f.base), Summary::median_of(&f.on));
                    let _ = writeln!(
                        o,
                        "| {} | measured | {} | {} | {} | {} | {} | {} | {} |",
                        f.title,
                        f0(b.rps),
                        f0(n.rps),
                        pct(f.cost()),
                        f0(b.p50),
                        f0(n.p50),
                        f1(b.cpu[0]),
                        f1(n.cpu[0])
                    );
                }
                Err(why) => {
                    let _ = writeln!(
                        o,
                        "| {} | not available: {} | – | – | – | – | – | – | – |",
                        f.title,
                        why.replace('|', "\\|")
                    );
                }
            }
        }
        let _ = writeln!(o);
    }
}
