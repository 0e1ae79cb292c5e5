//! `llm-egress`: parse the command line, set up logging, dispatch. No logic here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "llm-egress",
    version,
    about = "A TLS-inspecting egress proxy for OpenAI-compatible LLM APIs"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "LLM_EGRESS_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy.
    Run {
        /// Policy file or directory.
        #[arg(long, env = "LLM_EGRESS_POLICY", default_value = "policies/")]
        policy: PathBuf,
        /// Proxy listen address [default: 127.0.0.1:8480, or [proxy] listen].
        #[arg(long, env = "LLM_EGRESS_LISTEN")]
        listen: Option<SocketAddr>,
        /// Admin listen address [default: 127.0.0.1:8481, or [proxy] admin].
        #[arg(long, env = "LLM_EGRESS_ADMIN")]
        admin: Option<SocketAddr>,
        /// Directory of the CA (created if absent) and the audit chain key.
        #[arg(long, env = "LLM_EGRESS_CERTS", default_value = "certs/")]
        certs: PathBuf,
        /// Read ca.pem and ca.key from this directory instead of --certs (e.g. a mounted
        /// Kubernetes Secret); it is never written to, and a missing CA is an error.
        #[arg(long, env = "LLM_EGRESS_CA_DIR")]
        ca_dir: Option<PathBuf>,
        /// Accept a CA key in --ca-dir that its group may read (Kubernetes makes Secret
        /// files 0440 under fsGroup). A key others may read is still refused.
        #[arg(long, env = "LLM_EGRESS_CA_KEY_GROUP_READABLE", requires = "ca_dir")]
        ca_key_group_readable: bool,
        /// Audit log file [default: audit/audit.jsonl, or [audit] path].
        #[arg(long, env = "LLM_EGRESS_AUDIT")]
        audit: Option<PathBuf>,
        /// Longest drain of in-flight requests on SIGTERM, in seconds.
        #[arg(long, env = "LLM_EGRESS_DRAIN_SECONDS", default_value_t = 30)]
        drain_seconds: u64,
        /// Proxy worker threads, each serving its own connections [default: one per CPU
        /// this process may use].
        #[arg(long, env = "LLM_EGRESS_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: Option<u16>,
    },
    /// Validate a policy and print what it allows; exit 1 on errors.
    Check {
        /// Policy file or directory.
        #[arg(long, env = "LLM_EGRESS_POLICY", default_value = "policies/")]
        policy: PathBuf,
    },
    /// Manage the local CA.
    Ca {
        #[command(subcommand)]
        cmd: CaCmd,
    },
    /// Connect to an https URL and print the pins of its verified chain.
    Pin {
        /// The URL, e.g. https://api.openai.com/v1
        url: String,
        /// Extra trust root (PEM) for private CAs.
        #[arg(long, env = "LLM_EGRESS_CA")]
        ca: Option<PathBuf>,
        /// Connect to this address:port instead of resolving the host.
        #[arg(long, env = "LLM_EGRESS_CONNECT")]
        connect: Option<String>,
    },
    /// Read, filter, summarize and verify the audit log.
    Audit {
        /// Audit file.
        #[arg(long, env = "LLM_EGRESS_FILE", default_value = "audit/audit.jsonl")]
        file: PathBuf,
        /// Directory holding the audit chain key (for --verify).
        #[arg(long, env = "LLM_EGRESS_CERTS", default_value = "certs/")]
        certs: PathBuf,
        /// Only lines newer than this (e.g. 15m, 2h).
        #[arg(long, env = "LLM_EGRESS_SINCE")]
        since: Option<String>,
        /// Only this reason code.
        #[arg(long, env = "LLM_EGRESS_REASON")]
        reason: Option<String>,
        /// Only this host.
        #[arg(long, env = "LLM_EGRESS_HOST")]
        host: Option<String>,
        /// Blocked endpoints grouped by host and reason.
        #[arg(long)]
        summary: bool,
        /// Verify the hash chain.
        #[arg(long)]
        verify: bool,
        /// Raw JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Policy tooling.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Prompt-protection keys.
    Protect {
        #[command(subcommand)]
        cmd: ProtectCmd,
    },
    /// Offline tour: two mock providers and the proxy in this process; allowed, blocked,
    /// failing-over, protected and invalid-tool-call requests; a table; the audit log.
    Demo {
        /// Directory for the demo's policy, CA and audit log (replaced if an earlier demo
        /// made it).
        #[arg(long, default_value = "llm-egress-demo")]
        dir: PathBuf,
    },
    /// Run the OpenAI-compatible mock provider.
    MockProvider {
        /// Listen address.
        #[arg(long, env = "LLM_EGRESS_MOCK_LISTEN", default_value = "127.0.0.1:9480")]
        listen: SocketAddr,
        /// TLS certificate chain (PEM).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Fault spec applied to every request (see docs/mock-provider.md).
        #[arg(long, env = "LLM_EGRESS_MOCK_FAULTS")]
        faults: Option<String>,
        /// Name shown in responses.
        #[arg(long, default_value = "mock")]
        name: String,
        /// Delay between streamed events, in milliseconds.
        #[arg(long, default_value_t = 0)]
        chunk_delay_ms: u64,
        /// Do not record requests (for benchmarks).
        #[arg(long)]
        no_record: bool,
        /// Wait this long before answering a new connection's TLS handshake, in milliseconds.
        #[arg(long, default_value_t = 0)]
        handshake_delay_ms: u64,
        /// Close every connection after one response (TLS then offers only http/1.1).
        #[arg(long)]
        no_keep_alive: bool,
        /// Worker threads, each running its own event loop and accepting its own
        /// connections [default: one per CPU the process may use].
        #[arg(long, env = "LLM_EGRESS_MOCK_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: Option<u16>,
    },
}

#[derive(Subcommand)]
enum CaCmd {
    /// Create the local CA.
    Init {
        #[arg(long, env = "LLM_EGRESS_CERTS", default_value = "certs/")]
        certs: PathBuf,
        /// Replace an existing CA.
        #[arg(long)]
        force: bool,
    },
    /// Subject, SPKI pin, expiry, and how to trust it.
    Show {
        #[arg(long, env = "LLM_EGRESS_CERTS", default_value = "certs/")]
        certs: PathBuf,
    },
    /// Mozilla roots + the proxy CA, for SSL_CERT_FILE / REQUESTS_CA_BUNDLE.
    Bundle {
        #[arg(long, env = "LLM_EGRESS_CERTS", default_value = "certs/")]
        certs: PathBuf,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ProtectCmd {
    /// Write a new 256-bit protection key (base64, mode 0600); refuses to overwrite.
    Keygen {
        /// Key file to create.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Print the JSON Schema of the policy, for editors.
    Schema,
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // The demo prints a table; its proxy's info lines would bury it (RUST_LOG overrides).
    let level = if matches!(cli.cmd, Cmd::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    init_logging(cli.log_format, level);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let code = rt.block_on(dispatch(cli.cmd))?;
    std::process::exit(code);
}

async fn dispatch(cmd: Cmd) -> Result<i32> {
    use llm_egress::cli;
    match cmd {
        Cmd::Run {
            policy,
            listen,
            admin,
            certs,
            ca_dir,
            ca_key_group_readable,
            audit,
            drain_seconds,
            workers,
        } => {
            cli::run::run(cli::run::RunOptions {
                policy,
                listen,
                admin,
                certs,
                ca_dir,
                ca_key_group_readable,
                audit,
                drain: Duration::from_secs(drain_seconds),
                workers: workers.map(usize::from),
            })
            .await?;
        }
        Cmd::Check { policy } => return Ok(cli::check::run(&policy)),
        Cmd::Ca { cmd } => match cmd {
            CaCmd::Init { certs, force } => cli::ca::init(&certs, force)?,
            CaCmd::Show { certs } => cli::ca::show(&certs)?,
            CaCmd::Bundle { certs, out } => cli::ca::bundle(&certs, out.as_deref())?,
        },
        Cmd::Pin { url, ca, connect } => {
            cli::pin::run(&url, ca.as_deref(), connect.as_deref()).await?
        }
        Cmd::Audit {
            file,
            certs,
            since,
            reason,
            host,
            summary,
            verify,
            json,
        } => {
            let since = match since {
                Some(s) => Some(
                    llm_egress::policy::model::Dur::parse(&s)
                        .map_err(anyhow::Error::msg)?
                        .0,
                ),
                None => None,
            };
            let opts = llm_egress::audit::QueryOptions {
                file,
                key_file: Some(certs.join(llm_egress::audit::CHAIN_KEY_FILE)),
                since,
                reason,
                host,
                summary,
                verify,
                json,
            };
            return Ok(llm_egress::audit::run_query(
                &opts,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            ));
        }
        Cmd::Protect {
            cmd: ProtectCmd::Keygen { out },
        } => {
            llm_egress::protect::keygen(&out)?;
            println!(
                "wrote {} (mode 0600); reference it as keys = [{{ id = \"k1\", file = \"{}\" }}]",
                out.display(),
                out.display()
            );
        }
        Cmd::Policy {
            cmd: PolicyCmd::Schema,
        } => {
            let schema = schemars::schema_for!(llm_egress::policy::model::PolicyFile);
            println!("{}", serde_json::to_string_pretty(&schema)?);
        }
        Cmd::Demo { dir } => {
            let passed = cli::demo::run(cli::demo::DemoOptions { dir }).await?;
            return Ok(if passed { 0 } else { 1 });
        }
        Cmd::MockProvider {
            listen,
            tls_cert,
            tls_key,
            faults,
            name,
            chunk_delay_ms,
            no_record,
            handshake_delay_ms,
            no_keep_alive,
            workers,
        } => {
            cli::mock::run(cli::mock::MockArgs {
                listen,
                tls_cert,
                tls_key,
                faults,
                name,
                chunk_delay_ms,
                record: !no_record,
                handshake_delay_ms,
                keep_alive: !no_keep_alive,
                workers: workers
                    .map_or_else(llm_egress::proxy::workers::default_count, usize::from),
            })
            .await?;
        }
    }
    Ok(0)
}
