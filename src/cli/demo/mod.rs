//! `llm-egress demo`: an offline tour. Two mock providers (`alpha`, `beta`) and the proxy
//! start in this process on loopback ports; an app-like client sends allowed, blocked,
//! failing-over, protected and invalid-tool-call requests through `CONNECT`, as an app with
//! `HTTPS_PROXY` would; the demo prints what happened and leaves its directory behind
//! (policy, CA, audit log) to look at.

mod client;
mod scenarios;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio_util::sync::CancellationToken;

use crate::mock_provider::{tls_config_from_files, Mock, MockOptions, MockPki};
pub use scenarios::{Row, EMAIL};

/// Marks a directory the demo made, so a second run may replace it.
const MARKER: &str = ".llm-egress-demo";

/// Options of `demo`.
pub struct DemoOptions {
    /// Where the policy, CA, mock PKI and audit log go (replaced if an earlier demo made it).
    pub dir: PathBuf,
}

/// Runs the tour; prints the table and where to look next. Returns whether every scenario
/// behaved as the policy says it must.
pub async fn run(opts: DemoOptions) -> Result<bool> {
    let dir = prepare(&opts.dir)?;
    let pki = MockPki::create(
        &dir.join("upstream"),
        "llm-egress demo",
        &["alpha.demo.test".into(), "*.demo.test".into()],
    )?;
    let stop_mocks = CancellationToken::new();
    let tls = tls_config_from_files(&pki.chain, &pki.key)?;
    let alpha = start_mock("alpha", tls.clone(), &stop_mocks).await?;
    let beta = start_mock("beta", tls, &stop_mocks).await?;
    crate::protect::keygen(&dir.join("protect.key"))?;
    // Routed requests carry the provider's own key, never the app's.
    for name in ["alpha", "beta"] {
        let path = dir.join("upstream").join(format!("{name}.api-key"));
        crate::audit::chain::write_private(&path, format!("sk-demo-{name}\n").as_bytes(), false)?;
    }
    let policy_dir = dir.join("policies");
    std::fs::write(
        policy_dir.join("00-demo.toml"),
        policy(&pki, &dir, alpha, beta),
    )?;
    // The CA exists before the proxy starts, so it does not announce a new one.
    crate::tls::ca::CaFiles::load_or_create(&dir.join("certs"))?;
    let stop_proxy = CancellationToken::new();
    let proxy = super::run::start(
        super::run::RunOptions {
            policy: policy_dir,
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            certs: dir.join("certs"),
            ca_dir: None,
            ca_key_group_readable: false,
            audit: Some(dir.join("audit").join("audit.jsonl")),
            drain: Duration::from_secs(2),
            workers: Some(1),
        },
        stop_proxy.clone(),
    )
    .await
    .context("starting the proxy")?;
    let client = client::Client::new(
        proxy.proxy,
        &[
            &dir.join("certs").join(crate::tls::ca::CA_CERT_FILE),
            &pki.root_pem,
        ],
    )?;
    println!(
        "llm-egress demo: proxy on {}, mock providers alpha on {alpha} and beta on {beta}\n",
        proxy.proxy
    );
    let rows = scenarios::run(&client, &scenarios::Mocks { alpha }).await;
    let metrics = proxy.app.metrics.render("");
    let audit = proxy.audit.clone();
    stop_proxy.cancel();
    proxy.finished().await?;
    stop_mocks.cancel();
    let rows = rows?;
    print!("{}", scenarios::table(&rows));
    println!("\nUsage and cost the proxy counted (from /metrics):");
    for l in metrics.lines().filter(|l| {
        l.starts_with("llm_egress_tokens_total{")
            || l.starts_with("llm_egress_cost_total{")
            || l.starts_with("llm_egress_protected_spans_total{")
    }) {
        println!("  {l}");
    }
    let passed = rows.iter().all(|r| r.ok);
    summary(&dir, &audit)?;
    if !passed {
        eprintln!("\nllm-egress demo: a scenario did not behave as the policy says (FAIL rows)");
    }
    Ok(passed)
}

/// Creates `dir` (or empties one an earlier demo left) with its subdirectories.
fn prepare(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if dir.join(MARKER).exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("removing the earlier demo in {}", dir.display()))?;
        } else if !empty {
            bail!(
                "{} exists and was not made by `llm-egress demo`; pass --dir with a new or empty directory",
                dir.display()
            );
        }
    }
    for sub in ["upstream", "policies", "certs", "audit"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::write(
        dir.join(MARKER),
        "made by `llm-egress demo`; the next demo run replaces this directory\n",
    )?;
    Ok(std::fs::canonicalize(dir)?)
}

async fn start_mock(
    name: &str,
    tls: std::sync::Arc<rustls::ServerConfig>,
    stop: &CancellationToken,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mock = Mock::new(
        Some(tls),
        MockOptions {
            name: name.into(),
            ..MockOptions::default()
        },
    )?;
    let stop = stop.clone();
    tokio::spawn(async move { mock.serve(listener, stop.cancelled_owned()).await });
    Ok(addr)
}

/// The demo's policy: the two mocks behind made-up names, a pin, a failover route,
/// protection and tool-call validation.
fn policy(pki: &MockPki, dir: &Path, alpha: SocketAddr, beta: SocketAddr) -> String {
    // A well-formed pin of a key no certificate here has.
    let wrong_pin = format!("sha256//{}=", "A".repeat(43));
    format!(
        r#"# The policy `llm-egress demo` ran with (docs/policy.md has the whole reference).
# Two mock providers stand in for real ones; `resolve` sends their names to loopback.

[upstream]
extra_roots = ["{root}"]   # the mocks' test CA (real providers need none)
resolve = {{ "alpha.demo.test:443" = "{alpha}", "beta.demo.test:443" = "{beta}", "gamma.demo.test:443" = "{alpha}" }}

[[allow]]
name     = "alpha"
base_url = "https://alpha.demo.test/v1"
pins     = ["{pin}"]   # the mocks' intermediate CA

[[allow]]
name     = "beta"
base_url = "https://beta.demo.test/v1"

[[allow]]
name     = "gamma"     # allowed, but pinned to a key its chain does not hold
base_url = "https://gamma.demo.test/v1"
pins     = ["{wrong_pin}"]

[[provider]]
name     = "alpha"
base_url = "https://alpha.demo.test/v1"
api_key  = {{ file = "../upstream/alpha.api-key" }}
pricing  = {{ input_per_mtok = 0.15, output_per_mtok = 0.6 }}

[[provider]]
name     = "beta"
base_url = "https://beta.demo.test/v1"
api_key  = {{ file = "../upstream/beta.api-key" }}
pricing  = {{ input_per_mtok = 2.5, output_per_mtok = 10.0 }}

[[route]]
name     = "smart"
match    = {{ model = ["demo-smart"] }}
strategy = "fallback"
targets  = [{{ provider = "beta", model = "gpt-4o" }}, {{ provider = "alpha", model = "gpt-4o-mini" }}]

[protect]
mode      = "tokenize"
keys      = [{{ id = "demo", file = "{key}" }}]
detectors = ["email", "phone", "credit_card", "iban", "secret"]

[tool_calls]
validate   = true
on_invalid = "reject"

[audit]
log_allowed = true   # one line per allowed request too (never content)
"#,
        root = pki.root_pem.display(),
        pin = pki.inter_pin,
        key = dir.join("protect.key").display(),
    )
}

/// Where the files are and how to read the audit log.
fn summary(dir: &Path, audit: &Path) -> Result<()> {
    let key = crate::audit::ChainKey::load(&dir.join("certs").join(crate::audit::CHAIN_KEY_FILE))?;
    let report = crate::audit::verify(audit, &key)?;
    let chain = match &report.problem {
        None => format!("{} lines, hash chain verified", report.lines),
        Some(p) => format!("hash chain BROKEN: {p:?}"),
    };
    let (d, a) = (dir.display(), audit.display());
    println!(
        "\nAudit log: {a} ({chain}). Read it:
  llm-egress audit --file {a} --summary
  llm-egress audit --file {a} --reason certificate_pin_mismatch
  llm-egress audit --file {a} --certs {d}/certs --verify
The policy this ran with: {d}/policies/00-demo.toml"
    );
    if report.problem.is_some() {
        bail!("the demo's audit log does not verify");
    }
    Ok(())
}
