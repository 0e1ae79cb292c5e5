//! Setting up a benchmark: the configuration (full or smoke), the policies rendered from
//! the templates, the machine facts, and writing the report.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use super::client::ReqSpec;
use super::features::{self, fill};
use super::pki::{Pki, DOMAIN};
use super::report::{Results, Settings, KEEP_MARKER};
use super::Args;

/// Resolved configuration.
pub struct Config {
    /// What the report quotes.
    pub s: Settings,
    /// Concurrency levels.
    pub levels: Vec<usize>,
    /// Policy edits per run (even).
    pub edits: usize,
    /// Reloads under load (once).
    pub under_load: usize,
}

/// Full defaults, or smoke defaults with `--smoke`; explicit flags win.
pub fn config(a: &Args) -> Config {
    let sm = a.smoke;
    let pick = |v: Option<f64>, full: f64, smoke: f64| v.unwrap_or(if sm { smoke } else { full });
    let s = Settings {
        runs: a.runs.unwrap_or(if sm { 1 } else { 3 }).max(1),
        warmup: Duration::from_secs_f64(pick(a.warmup, 1.0, 0.2)),
        measure: Duration::from_secs_f64(pick(a.duration, 5.0, 0.5)),
        slices: a.slices.unwrap_or(if sm { 1 } else { 5 }).max(1),
        chunk_delay_ms: a.chunk_delay_ms,
        stream_events: a.stream_words + 3,
        streams: a.streams.unwrap_or(if sm { 20 } else { 1000 }),
        new_hosts: a.new_hosts.unwrap_or(if sm { 2 } else { 10 }).max(1),
        command: std::env::var("BENCH_COMMAND").unwrap_or_else(|_| {
            let rest: Vec<String> = std::env::args()
                .skip(1)
                .filter(|x| x != "--bench")
                .collect();
            format!("cargo bench --bench loadgen -- {}", rest.join(" "))
        }),
        smoke: sm,
        load_start: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        ..Settings::default()
    };
    let levels = a
        .concurrency
        .clone()
        .unwrap_or(if sm { vec![1, 2] } else { vec![1, 16] });
    let edits = a.reload_edits.unwrap_or(if sm { 2 } else { 6 });
    Config {
        s,
        levels,
        edits: edits.div_ceil(2) * 2,
        under_load: a.reloads_under_load.unwrap_or(if sm { 3 } else { 100 }),
    }
}

/// Writes `files` into `dir` (created).
pub fn write_dir(dir: &Path, files: &[(&str, &str)]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, content) in files {
        std::fs::write(dir.join(name), content)?;
    }
    Ok(())
}

/// A streamed chat request of `words` words, paced `delay_ms` per event by the mock.
pub fn chat_stream(words: usize, delay_ms: u64) -> ReqSpec {
    let text: Vec<String> = (0..words).map(|i| format!("w{i}")).collect();
    let mut body = features::chat(&text.join(" "));
    body["stream"] = serde_json::json!(true);
    let r = ReqSpec::post("/v1/chat/completions", body);
    if delay_ms > 0 {
        r.header("x-mock-fault", &format!("chunk_delay={delay_ms}ms"))
    } else {
        r
    }
}

/// The rendered policies.
pub struct Policies {
    /// `00-base.toml`.
    pub base: String,
    /// Reload state A (allows /v2).
    pub reload_allow: String,
    /// Reload state B (blocks /v2).
    pub reload_block: String,
    /// Placeholder values for feature templates.
    pub vars: Vec<(&'static str, String)>,
    /// New host names, per run.
    pub hosts: Vec<Vec<String>>,
}

/// Renders the templates for `mock` (and writes the protection key into `work`).
pub fn policies(
    work: &Path,
    pki: &Pki,
    mock: SocketAddr,
    runs: usize,
    new_hosts: usize,
    upstream_http2: bool,
) -> Result<Policies> {
    let key_file = work.join("protect.key");
    {
        use base64::Engine;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let key: [u8; 32] = rand::random();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file)?;
        writeln!(
            f,
            "{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )?;
    }
    let vars = vec![
        ("ROOT_PEM", pki.root_pem.display().to_string()),
        ("MOCK", mock.to_string()),
        ("PIN", pki.inter_pin.clone()),
        ("PROTECT_KEY", key_file.display().to_string()),
    ];
    let hosts: Vec<Vec<String>> = (0..runs)
        .map(|r| {
            (0..new_hosts)
                .map(|i| format!("m{r}-{i}.{DOMAIN}"))
                .collect()
        })
        .collect();
    let mut resolve = String::new();
    let mut allow = String::new();
    for h in hosts.iter().flatten() {
        resolve.push_str(&format!(", \"{h}:443\" = \"{mock}\""));
        let id = h.split('.').next().unwrap_or_default().to_owned();
        let mut v = vec![("HOST", h.clone()), ("HOST_ID", id)];
        v.extend(vars.iter().cloned());
        allow.push_str(&fill(features::MINT_HOST, &v));
        allow.push('\n');
    }
    let mut base_vars = vars.clone();
    base_vars.push(("MINT_RESOLVE", resolve));
    base_vars.push(("MINT_ALLOW", allow));
    base_vars.push((
        "UPSTREAM_EXTRA",
        if upstream_http2 { "http2 = true" } else { "" }.to_owned(),
    ));
    Ok(Policies {
        base: fill(features::BASE, &base_vars),
        reload_allow: fill(features::RELOAD_ALLOW, &vars),
        reload_block: fill(features::RELOAD_BLOCK, &vars),
        vars,
        hosts,
    })
}

fn sh(cmd: &str, args: &[&str], dir: &Path) -> Option<String> {
    let o = std::process::Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// Machine and build facts for the report.
pub fn machine(bin: &Path) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let mem = read("/proc/meminfo")
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or("?".into(), |k| format!("{:.0} GiB", k as f64 / 1048576.0));
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit =
        sh("git", &["rev-parse", "--short", "HEAD"], root).unwrap_or_else(|| "unknown".into());
    let dirty = sh(
        "git",
        &["status", "--porcelain", "--", "src", "Cargo.lock"],
        root,
    )
    .is_some_and(|s| !s.is_empty());
    let version = sh(&bin.display().to_string(), &["--version"], root).unwrap_or_default();
    let date = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    vec![
        (
            "machine".into(),
            format!("nproc {nproc}, {model}, {mem} RAM, Linux {kernel}"),
        ),
        (
            "commit".into(),
            format!(
                "`{commit}`{}",
                if dirty {
                    " (with uncommitted changes under src/ or in Cargo.lock)"
                } else {
                    ""
                }
            ),
        ),
        (
            "binary".into(),
            format!(
                "{version} (`{}`)",
                bin.strip_prefix(root).unwrap_or(bin).display()
            ),
        ),
        ("date".into(), date),
    ]
}

/// Writes the report (keeping the hand-written tail of an existing file); returns its path.
pub fn write_report(args: &Args, res: &Results, bin: &Path) -> Result<PathBuf> {
    let out = match (&args.out, args.smoke) {
        (Some(p), _) => p.clone(),
        (None, true) => {
            std::env::temp_dir().join(format!("llm-egress-bench-smoke-{}.md", std::process::id()))
        }
        (None, false) => Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md"),
    };
    let old = std::fs::read_to_string(&out).unwrap_or_default();
    let kept = old.split_once(KEEP_MARKER).map(|(_, k)| k.to_owned());
    let text = res.render(&machine(bin), kept.as_deref());
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&out, text)?;
    Ok(out)
}
