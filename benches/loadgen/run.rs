//! The benchmark's order of work: set up (PKI, mock, proxies, feature probes), then per
//! run every measurement, then the report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::client::{self, client_config, ReqSpec, Route, Tls};
use super::features::{self, fill, FEATURES};
use super::load::{self, Side, Window};
use super::procs::{self, Mock, Nginx, Proxy};
use super::report::{FeatureRes, Results};
use super::scenarios;
use super::setup::{self, chat_stream, write_dir, Config, Policies};
use super::stats::Summary;
use super::Args;

/// Host of the inspected and direct requests.
const API: &str = "api.bench.test";

/// Everything a run needs.
struct Bench {
    args: Args,
    cfg: Config,
    bin: PathBuf,
    work: tempfile::TempDir,
    pol: Policies,
    env: Vec<(String, String)>,
    tls: Tls,
    proxy: Proxy,
    base_dir: PathBuf,
    direct: Route,
    inspect: Route,
    /// (name, route, pid of the proxy on the path or 0) of the non-streaming modes.
    modes: Vec<(&'static str, Route, u32)>,
    /// One proxy per feature whose policy `check` accepted.
    fproxies: Vec<Option<Proxy>>,
    /// nginx in front of the mock (`--nginx`), the reference mode: held so it runs until
    /// the benchmark ends.
    _nginx: Option<Nginx>,
    /// The mock is last so it outlives the proxies.
    mock: Mock,
}

/// Sends `req` once on `route` before anything is measured; the answer's length, or an
/// error naming `name` when it is not a success.
async fn probe(name: &str, route: &Route, tls: &Tls, req: &ReqSpec) -> Result<usize> {
    let mut tx = client::connect(route, tls)
        .await
        .with_context(|| format!("{name}: connecting"))?;
    let (st, body) = client::exchange(&mut tx, req.build(&route.host_header())?).await?;
    if !st.is_success() {
        bail!(
            "{name}: a plain chat request got {st}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body.len())
}

/// Runs everything; returns the report path.
pub async fn run(args: Args) -> Result<PathBuf> {
    let t0 = Instant::now();
    let (b, mut res) = Bench::start(args).await?;
    if b.args.pause > 0 {
        eprintln!(
            "loadgen: proxy pid {} on {}; pausing {} s",
            b.proxy.proc.pid(),
            b.proxy.addr,
            b.args.pause
        );
        tokio::time::sleep(Duration::from_secs(b.args.pause)).await;
    }
    for r in 0..b.cfg.s.runs {
        eprintln!("loadgen: run {}/{}", r + 1, b.cfg.s.runs);
        b.one_run(r, &mut res).await?;
    }
    if b.part("reload") && b.cfg.under_load > 0 {
        let hi = res.feature_conc;
        let (chat, dir) = (features::request("plain"), &b.base_dir);
        let contents = [b.pol.reload_allow.as_str(), b.pol.reload_block.as_str()];
        let r = scenarios::reloads_under_load(
            &b.inspect,
            &b.tls,
            b.proxy.admin,
            hi,
            &chat,
            dir,
            contents,
            b.cfg.under_load,
        )
        .await?;
        eprintln!("  reloads under load: {r:?}");
        res.reload_load = Some((b.cfg.under_load, r.0, r.1, r.2, hi));
    }
    let mut s = b.cfg.s.clone();
    s.wall = t0.elapsed();
    res.cfg = s;
    let (args, bin) = (b.args.clone(), b.bin.clone());
    drop(b);
    setup::write_report(&args, &res, &bin)
}

impl Bench {
    fn part(&self, p: &str) -> bool {
        self.args
            .only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == p))
    }

    /// PKI, mock, base proxy, sanity requests, feature proxies and probes.
    async fn start(args: Args) -> Result<(Bench, Results)> {
        let cfg = setup::config(&args);
        let bin = args
            .bin
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_llm-egress")));
        let work = tempfile::Builder::new()
            .prefix("llm-egress-bench")
            .tempdir()?;
        let w = work.path().to_owned();
        let pki = super::pki::create(&w)?;
        let mock_bin = args.mock_bin.clone().unwrap_or_else(|| bin.clone());
        let mock = Mock::start(&mock_bin, &pki.chain, &pki.key)?;
        eprintln!(
            "loadgen: mock pid {} on {}, binary {}",
            mock.pid(),
            mock.addr,
            mock_bin.display()
        );
        let pol = setup::policies(
            &w,
            &pki,
            mock.addr,
            cfg.s.runs,
            cfg.s.new_hosts,
            args.upstream_http2,
        )?;
        let env = vec![(
            features::PROVIDER_KEY_ENV.to_owned(),
            "sk-bench-provider-key".to_owned(),
        )];
        let base_dir = w.join("policy-base");
        write_dir(&base_dir, &[("00-base.toml", &pol.base)])?;
        procs::check(&bin, &base_dir, &env)
            .map_err(|e| anyhow!("the base policy is not valid: {e}"))?;
        let proxy = Proxy::start(&bin, &w, "base", &base_dir, &env)?;
        let tls = Tls {
            test_root: client_config(&std::fs::read(&pki.root_pem)?)?,
            proxy_ca: client_config(&std::fs::read(proxy.certs.join("ca.pem"))?)?,
        };
        let direct = Route::Direct {
            addr: mock.addr,
            host: API.into(),
        };
        let inspect = Route::Connect {
            proxy: proxy.addr,
            host: API.into(),
            inspect: true,
        };
        let tunnel = Route::Connect {
            proxy: proxy.addr,
            host: "tunnel.bench.test".into(),
            inspect: false,
        };
        let chat = features::plain(args.prompt_bytes);
        let mut sizes = (0, 0);
        for (name, r) in [
            ("direct", &direct),
            ("inspect", &inspect),
            ("tunnel", &tunnel),
        ] {
            sizes = (chat.body.len(), probe(name, r, &tls, &chat).await?);
        }
        let mut res = Results {
            levels: cfg.levels.clone(),
            sizes,
            ..Results::default()
        };
        res.feature_conc = cfg.levels.iter().copied().max().unwrap_or(1);
        let mut fproxies = Vec::new();
        for f in &FEATURES {
            let dir = w.join(format!("policy-{}", f.key));
            write_dir(
                &dir,
                &[
                    ("00-base.toml", &pol.base),
                    ("50-feature.toml", &fill(f.template, &pol.vars)),
                ],
            )?;
            let (status, p) = match procs::check(&bin, &dir, &env) {
                Err(e) => (
                    Err(format!("`llm-egress check` rejects its policy: {e}")),
                    None,
                ),
                Ok(()) => {
                    let p = Proxy::start(&bin, &w, f.key, &dir, &env)?;
                    (features::probe(f.key, &p, &tls).await, Some(p))
                }
            };
            eprintln!(
                "loadgen: feature {}: {}",
                f.key,
                status.as_ref().map_or_else(|e| e.as_str(), |_| "available")
            );
            res.features.push(FeatureRes {
                key: f.key,
                title: f.title,
                in_target: f.in_target,
                status,
                base: vec![],
                on: vec![],
            });
            fproxies.push(p);
        }
        let gateway = match &fproxies[0] {
            Some(p) => features::probe_gateway(p, &tls)
                .await
                .map(|()| (Route::Gateway { proxy: p.addr }, p.proc.pid())),
            None => Err("the routing policy is not accepted".into()),
        };
        let pp = proxy.proc.pid();
        let mut modes = vec![
            ("direct", direct.clone(), 0),
            ("inspect", inspect.clone(), pp),
            ("tunnel", tunnel, pp),
        ];
        if let Ok((g, pid)) = &gateway {
            modes.push(("gateway", g.clone(), *pid));
        }
        let nginx = match &args.nginx {
            Some(path) => {
                let n = Nginx::start(path, &w, mock.addr, API, &pki.chain, &pki.key)?;
                let route = Route::Direct {
                    addr: n.addr,
                    host: API.into(),
                };
                probe("nginx", &route, &tls, &chat).await?;
                // Its CPU: the master's and its workers'.
                modes.push(("nginx", route, n.pid()));
                res.nginx = Some(n.version.clone());
                Some(n)
            }
            None => None,
        };
        if let Some(keep) = &args.modes {
            modes.retain(|(m, _, _)| keep.iter().any(|k| k == m));
        }
        res.modes = modes.iter().map(|m| m.0).collect();
        res.gateway = Some(gateway.map(|_| ()));
        let b = Bench {
            args,
            cfg,
            bin,
            work,
            pol,
            env,
            tls,
            proxy,
            base_dir,
            direct,
            inspect,
            modes,
            fproxies,
            _nginx: nginx,
            mock,
        };
        Ok((b, res))
    }

    /// Run `r`: every measurement once.
    async fn one_run(&self, r: usize, res: &mut Results) -> Result<()> {
        let win = Window {
            warmup: self.cfg.s.warmup,
            measure: self.cfg.s.measure,
        };
        let chat = features::plain(self.args.prompt_bytes);
        let tls = &self.tls;
        if self.part("tput") {
            for &c in &self.cfg.levels {
                let sides: Vec<Side> = self
                    .modes
                    .iter()
                    .map(|(_, route, pid)| Side {
                        route,
                        pids: [*pid, self.mock.pid(), std::process::id()],
                    })
                    .collect();
                let got = load::interleaved(&sides, tls, c, &chat, win, self.cfg.s.slices)
                    .await
                    .with_context(|| format!("non-streaming modes at {c}"))?;
                for ((m, ..), s) in self.modes.iter().zip(got) {
                    eprintln!(
                        "  {m:8} c={c:<3} {:>8.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  failed {}",
                        s.rps, s.p50, s.p99, s.errors
                    );
                    res.tput.entry((m, c)).or_default().push(s);
                }
            }
        }
        if self.part("stream") {
            let req = chat_stream(self.args.stream_words, self.cfg.s.chunk_delay_ms);
            for &c in &self.cfg.levels {
                for (m, route) in [("direct", &self.direct), ("inspect", &self.inspect)] {
                    let s = load::stream_loop(route, tls, c, &req, win).await?.summary();
                    eprintln!("  stream {m:8} c={c:<3} event p50 {:>5.0} µs p99 {:>5.0} µs  ttfb p50 {:>6.0} µs", s.ev_p50, s.ev_p99, s.ttfb_p50);
                    res.stream.entry((m, c)).or_default().push(s);
                }
            }
        }
        if self.part("mint") {
            let m = scenarios::mint(self.proxy.addr, tls, &self.pol.hosts[r], &chat).await?;
            eprintln!(
                "  mint: handshake new {:.0} µs, cached {:.0} µs",
                m.hs_new, m.hs_cached
            );
            res.mint.push(m);
        }
        if self.part("reload") {
            let probe = ReqSpec::post("/v2/chat/completions", features::chat("hello"));
            let (a, b) = (&self.pol.reload_allow, &self.pol.reload_block);
            let v = scenarios::reload_edits(
                &self.inspect,
                tls,
                &self.base_dir,
                a,
                b,
                &probe,
                self.cfg.edits,
            )
            .await?;
            eprintln!("  reload: {v:.0?} ms");
            res.reload_ms.extend(v);
        }
        if self.part("features") {
            for (f, p) in res.features.iter_mut().zip(&self.fproxies) {
                let (Ok(()), Some(p)) = (&f.status, p) else {
                    continue;
                };
                let req = features::request(f.key);
                let on = Route::Connect {
                    proxy: p.addr,
                    host: API.into(),
                    inspect: true,
                };
                let base = Side {
                    route: &self.inspect,
                    pids: [self.proxy.proc.pid(), self.mock.pid(), std::process::id()],
                };
                let with = Side {
                    route: &on,
                    pids: [p.proc.pid(), self.mock.pid(), std::process::id()],
                };
                // The two take turns; which goes first alternates between runs.
                let first_on = r % 2 == 1;
                let sides = if first_on { [with, base] } else { [base, with] };
                let got =
                    load::interleaved(&sides, tls, res.feature_conc, &req, win, self.cfg.s.slices)
                        .await
                        .with_context(|| format!("feature {}", f.key))?;
                let [a, b] = <[Summary; 2]>::try_from(got)
                    .map_err(|_| anyhow!("two sides measured, two summaries expected"))?;
                let (on_s, base_s) = if first_on { (a, b) } else { (b, a) };
                eprintln!(
                    "  feature {}: off {:.0} req/s, on {:.0} req/s",
                    f.key, base_s.rps, on_s.rps
                );
                f.on.push(on_s);
                f.base.push(base_s);
            }
        }
        if self.part("memory") {
            let m = self.memory().await?;
            eprintln!("  memory: {m:?}");
            res.mem.push(m);
        }
        Ok(())
    }

    /// A fresh proxy: idle RSS, then RSS with the configured number of open streams.
    async fn memory(&self) -> Result<scenarios::MemRun> {
        let w: &Path = self.work.path();
        let dir = w.join("policy-mem");
        write_dir(&dir, &[("00-base.toml", &self.pol.base)])?;
        let p = Proxy::start(&self.bin, w, "mem", &dir, &self.env)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = p.proc.rss_kib()?;
        let req = chat_stream(300, 200);
        let rss = || Ok((p.proc.rss_kib()?, p.proc.hwm_kib()?));
        let (open, hwm, opened) =
            scenarios::open_streams(p.addr, &self.tls, API, self.cfg.s.streams, &req, rss).await?;
        Ok(scenarios::MemRun {
            idle_kib: idle,
            open_kib: open,
            hwm_kib: hwm,
            opened,
        })
    }
}
