//! `loadgen`: the project's benchmark (issue 7, PRODUCT.md §11). Builds a test PKI, starts
//! the mock provider over TLS and the proxy (`llm-egress` processes), and measures in one
//! run, direct vs proxied:
//!
//! 1. non-streaming chat completions: direct, inspected, tunnelled, gateway — req/s and
//!    p50/p90/p99 at each concurrency level;
//! 2. streaming: per-event delay (client receive − `mock_ts_us`) and time to first byte;
//! 3. first request to a new host (leaf minting) vs a cached host;
//! 4. proxy RSS idle and with N concurrent open streams;
//! 5. policy edit → enforcement, and reloads under load;
//! 6. the optional features (routing, protection, tool validation), one policy each.
//!
//! Every figure is the median of `--runs` runs. The report (markdown) goes to
//! `docs/benchmarks.md`, or with `--smoke` (a tiny configuration for the test suite) to a
//! temp file unless `--out` is given. Run it as `./scripts/bench [--smoke] [ARGS]`, or
//! `cargo bench --bench loadgen -- ARGS`.

#[path = "loadgen/client.rs"]
pub mod client;
#[path = "loadgen/features.rs"]
pub mod features;
#[path = "loadgen/load.rs"]
pub mod load;
#[path = "loadgen/pki.rs"]
pub mod pki;
#[path = "loadgen/procs.rs"]
pub mod procs;
#[path = "loadgen/report.rs"]
pub mod report;
#[path = "loadgen/run.rs"]
pub mod run;
#[path = "loadgen/scenarios.rs"]
pub mod scenarios;
#[path = "loadgen/sections.rs"]
pub mod sections;
#[path = "loadgen/setup.rs"]
pub mod setup;
#[path = "loadgen/stats.rs"]
pub mod stats;

use std::path::PathBuf;

use clap::Parser;

/// Command-line options. Unset tunables take the full defaults, or the smoke defaults with
/// `--smoke`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "loadgen",
    about = "llm-egress benchmark: direct vs proxied, one run"
)]
pub struct Args {
    /// Tiny configuration (a few seconds): 1 run, 0.5 s windows, concurrency 1 and 2, 20
    /// streams; writes to a temp file unless --out is given.
    #[arg(long)]
    pub smoke: bool,
    /// Output markdown file [default: docs/benchmarks.md; with --smoke a temp file].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The llm-egress binary [default: the one cargo built with this benchmark].
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// The binary that runs the mock provider [--bin]: keeps the upstream fixed while
    /// `--bin` changes, for an A/B of the proxy alone.
    #[arg(long, hide = true)]
    pub mock_bin: Option<PathBuf>,
    /// Runs per figure (the report quotes medians) [3; smoke 1].
    #[arg(long)]
    pub runs: Option<usize>,
    /// Measured seconds per measurement [5; smoke 0.5].
    #[arg(long)]
    pub duration: Option<f64>,
    /// The non-streaming modes (and each feature with its base) take turns in this many
    /// windows per measurement, so drift of the machine falls on all of them alike [5;
    /// smoke 1].
    #[arg(long)]
    pub slices: Option<usize>,
    /// Warm-up seconds before each measurement [1; smoke 0.2].
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Concurrency levels, comma-separated [1,16; smoke 1,2].
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Option<Vec<usize>>,
    /// Concurrent open streams for the memory figure [1000; smoke 20].
    #[arg(long)]
    pub streams: Option<usize>,
    /// New host names per run for the leaf-minting figure [10; smoke 2].
    #[arg(long)]
    pub new_hosts: Option<usize>,
    /// Policy edits per run for edit → enforcement (rounded up to even) [6; smoke 2].
    #[arg(long)]
    pub reload_edits: Option<usize>,
    /// Reloads under load, once at the end [100; smoke 3].
    #[arg(long)]
    pub reloads_under_load: Option<usize>,
    /// Pause between streamed events, set by the mock (ms).
    #[arg(long, default_value_t = 10)]
    pub chunk_delay_ms: u64,
    /// Words in a streamed answer (about one event each).
    #[arg(long, default_value_t = 20)]
    pub stream_words: usize,
    /// Give the proxies `[upstream] http2 = true` (h2 multiplexed upstream pools instead of
    /// the default HTTP/1.1 keep-alive pools), to measure that choice.
    #[arg(long)]
    pub upstream_http2: bool,
    /// Put a system message of this many bytes before the user message of the
    /// non-streaming request of section 1 (real prompts are kilobytes; the default request
    /// is tiny, which measures the proxy's fixed cost per request).
    #[arg(long, default_value_t = 0)]
    pub prompt_bytes: usize,
    /// Also measure nginx (this binary) as a TLS reverse proxy in front of the same mock,
    /// as the non-streaming mode `nginx`: the reference PRODUCT.md §11 quotes. `./scripts/bench`
    /// passes it when `nginx` is on the PATH.
    #[arg(long)]
    pub nginx: Option<PathBuf>,
    /// Worker threads of the load generator [number of CPUs].
    #[arg(long)]
    pub client_threads: Option<usize>,
    /// Only these parts, comma-separated (tput, stream, mint, reload, features, memory)
    /// [all].
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<String>>,
    /// Only these non-streaming modes (direct, inspect, tunnel, gateway), e.g. to profile
    /// one of them [all].
    #[arg(long, hide = true, value_delimiter = ',')]
    pub modes: Option<Vec<String>>,
    /// Keep the proxy running this many seconds after start-up, idle, before measuring
    /// (to attach a profiler).
    #[arg(long, hide = true, default_value_t = 0)]
    pub pause: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

/// Parses `argv` (program name first), runs the benchmark, writes the report; returns
/// the report's path.
pub fn main_with<I, T>(argv: I) -> anyhow::Result<PathBuf>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = Args::try_parse_from(argv)?;
    let threads = args
        .client_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(run::run(args))
}

fn main() {
    match main_with(std::env::args_os()) {
        Ok(path) => println!("loadgen: report written to {}", path.display()),
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::exit(1);
        }
    }
}
