//! The one-off scenarios: first request to a new host (leaf minting), memory with many
//! open streams, and policy reload (edit → enforcement, and reloads under load).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::task::JoinSet;

use super::client::{self, ReqSpec, Route, Tls};
use super::stats::median;

/// One new-host vs cached-host sample pair, per host (µs).
#[derive(Clone, Copy, Debug, Default)]
pub struct MintRun {
    /// TCP + CONNECT + TLS handshake to a host never seen (the proxy mints a leaf).
    pub hs_new: f64,
    /// The same to a host whose leaf is cached.
    pub hs_cached: f64,
    /// New connection + first request to a new host (also opens the upstream pool).
    pub req_new: f64,
    /// New connection + first request to a cached host.
    pub req_cached: f64,
}

/// For each host: a fresh connection (mint) then a second fresh connection (cached).
/// Returns the medians over the hosts.
pub async fn mint(
    proxy: SocketAddr,
    tls: &Tls,
    hosts: &[String],
    req: &ReqSpec,
) -> Result<MintRun> {
    let mut v: [Vec<f64>; 4] = Default::default();
    for h in hosts {
        for cached in [false, true] {
            let t0 = Instant::now();
            let s = client::connect_tunnel(proxy, h).await?;
            let io = client::tls_over(s, &tls.proxy_ca, h).await?;
            let hs = t0.elapsed();
            let mut tx = client::handshake(Box::new(io)).await?;
            let (st, _) = client::exchange(&mut tx, req.build(h)?).await?;
            let total = t0.elapsed();
            if !st.is_success() {
                bail!("first request to {h}: status {st}");
            }
            let i = usize::from(cached);
            v[i].push(hs.as_secs_f64() * 1e6);
            v[2 + i].push(total.as_secs_f64() * 1e6);
        }
    }
    Ok(MintRun {
        hs_new: median(&v[0]),
        hs_cached: median(&v[1]),
        req_new: median(&v[2]),
        req_cached: median(&v[3]),
    })
}

/// Proxy RSS with `n` streams open at once (KiB), and how many were open.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemRun {
    /// Right after start, before any request.
    pub idle_kib: u64,
    /// While all streams were open (max of a few samples).
    pub open_kib: u64,
    /// Peak RSS (VmHWM) at that point.
    pub hwm_kib: u64,
    /// Streams that had received their first event when sampled.
    pub opened: usize,
}

/// Opens `n` inspected streams (one connection each) that the mock paces at 200 ms per
/// event, waits until each has its first event, samples `rss()` and closes them.
pub async fn open_streams(
    proxy: SocketAddr,
    tls: &Tls,
    host: &str,
    n: usize,
    req: &ReqSpec,
    rss: impl Fn() -> Result<(u64, u64)>,
) -> Result<(u64, u64, usize)> {
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (gate, opened, failed) = (gate.clone(), opened.clone(), failed.clone());
        let (tls, req, host) = (tls.clone(), req.clone(), host.to_owned());
        set.spawn(async move {
            let r = async {
                let permit = gate.acquire().await?;
                let route = Route::Connect {
                    proxy,
                    host: host.clone(),
                    inspect: true,
                };
                let mut tx = client::connect(&route, &tls).await?;
                tx.ready().await?;
                let resp = tx.send_request(req.build(&host)?).await?;
                anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
                let mut body = resp.into_body();
                use http_body_util::BodyExt;
                let first = body.frame().await.context("stream ended at once")??;
                drop(first);
                drop(permit);
                opened.fetch_add(1, Ordering::SeqCst);
                // Keep reading (the stream stays open) until aborted.
                while let Some(f) = body.frame().await {
                    f?;
                }
                anyhow::Ok(())
            }
            .await;
            if r.is_err() {
                failed.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while (opened.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst)) < n as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut open_kib = 0;
    let mut hwm = 0;
    for _ in 0..3 {
        let (r, h) = rss()?;
        open_kib = open_kib.max(r);
        hwm = hwm.max(h);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let opened = opened.load(Ordering::SeqCst) as usize;
    set.shutdown().await;
    Ok((open_kib, hwm, opened))
}

/// Writes `content` to `dir/name` atomically (a dotfile the loader ignores, then rename).
pub fn write_policy(dir: &Path, name: &str, content: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

/// Edit → enforcement: alternately allows (`allow_v2`) and blocks (`block_v2`) the path of
/// `probe` by rewriting `dir/90-reload.toml`, polling `probe` on one inspected connection
/// until the change shows. Returns milliseconds per edit.
pub async fn reload_edits(
    route: &Route,
    tls: &Tls,
    dir: &Path,
    allow_v2: &str,
    block_v2: &str,
    probe: &ReqSpec,
    edits: usize,
) -> Result<Vec<f64>> {
    let host = route.host_header();
    let mut tx = client::connect(route, tls).await?;
    let mut out = Vec::new();
    for i in 0..edits {
        let allow = i % 2 == 0;
        // Where we start from must hold before the edit.
        let (st, _) = client::exchange(&mut tx, probe.build(&host)?).await?;
        if st.is_success() == allow {
            bail!(
                "reload probe: path already {} before the edit",
                if allow { "allowed" } else { "blocked" }
            );
        }
        let t0 = Instant::now();
        write_policy(
            dir,
            "90-reload.toml",
            if allow { allow_v2 } else { block_v2 },
        )?;
        loop {
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("policy edit {i} not enforced after 30 s");
            }
            let st = match client::exchange(&mut tx, probe.build(&host)?).await {
                Ok((st, _)) => st,
                Err(_) => {
                    tx = client::connect(route, tls).await?;
                    continue;
                }
            };
            if st.is_success() == allow {
                break;
            }
            if tx.is_closed() {
                tx = client::connect(route, tls).await?;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("policy edit {i} not enforced after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        out.push(t0.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(out)
}

/// Reloads under load: `conc` connections send `req` in a closed loop while the policy
/// is rewritten `n` times (each waited for on `/readyz`). Returns (reloads, ok, failed).
#[allow(clippy::too_many_arguments)]
pub async fn reloads_under_load(
    route: &Route,
    tls: &Tls,
    admin: SocketAddr,
    conc: usize,
    req: &ReqSpec,
    dir: &Path,
    contents: [&str; 2],
    n: usize,
) -> Result<(usize, u64, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let host = route.host_header();
    let mut set = JoinSet::new();
    for _ in 0..conc {
        let mut tx = client::connect(route, tls).await?;
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        let (req, host, route, tls) = (req.clone(), host.clone(), route.clone(), tls.clone());
        set.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client::exchange(&mut tx, req.build(&host)?).await {
                    Ok((s, _)) if s.is_success() => ok.fetch_add(1, Ordering::Relaxed),
                    _ => bad.fetch_add(1, Ordering::Relaxed),
                };
                if tx.is_closed() {
                    tx = client::connect(&route, &tls).await?;
                }
            }
            anyhow::Ok(())
        });
    }
    let mut done = 0;
    let mut hash = policy_hash(admin).await?;
    for i in 0..n {
        write_policy(dir, "90-reload.toml", contents[i % 2])?;
        let t0 = Instant::now();
        loop {
            let h = policy_hash(admin).await?;
            if h != hash {
                hash = h;
                done += 1;
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok((
        done,
        ok.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
    ))
}

/// The running policy's hash from the admin `/readyz`.
async fn policy_hash(admin: SocketAddr) -> Result<String> {
    let (_, body) = client::admin_get(admin, "/readyz").await?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(v["policy"]["hash"].as_str().unwrap_or_default().to_owned())
}
