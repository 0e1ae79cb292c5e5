//! Shared end-to-end test helpers: a test PKI (root → intermediate → leaf), the real
//! `llm-egress` binary started as a proxy or a mock provider on ephemeral ports, and
//! clients that go through the proxy.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use llm_egress::cli::run::listening_addrs;
use llm_egress::mock_provider::pki::{ca_params, leaf_params};
use rcgen::{CertifiedIssuer, KeyPair};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_llm-egress")
}

/// A test PKI in a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub root_pem: PathBuf,
    pub root_pin: String,
    pub inter_pin: String,
    pub leaf_pin: String,
    /// Leaf + intermediate chain and key for the mock provider.
    pub chain: PathBuf,
    pub key: PathBuf,
    root: CertifiedIssuer<'static, KeyPair>,
    inter: CertifiedIssuer<'static, KeyPair>,
}

fn spki_pin_of(der: &[u8]) -> String {
    llm_egress::mock_provider::pki::cert_pin(der).expect("test cert parses")
}

impl Pki {
    /// Root → intermediate → leaf for `hosts` (DNS names or IPs).
    pub fn new(hosts: &[&str]) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = CertifiedIssuer::self_signed(
            ca_params("llm-egress test root"),
            KeyPair::generate().expect("key"),
        )
        .expect("root");
        let inter = CertifiedIssuer::signed_by(
            ca_params("llm-egress test intermediate"),
            KeyPair::generate().expect("key"),
            &root,
        )
        .expect("inter");
        let root_pem = dir.path().join("root.pem");
        std::fs::write(&root_pem, root.pem()).expect("write root");
        let mut pki = Pki {
            root_pin: spki_pin_of(root.der()),
            inter_pin: spki_pin_of(inter.der()),
            leaf_pin: String::new(),
            chain: PathBuf::new(),
            key: PathBuf::new(),
            root_pem,
            root,
            inter,
            dir,
        };
        let (chain, key, pin) = pki.leaf("leaf", hosts, 0, 30);
        pki.chain = chain;
        pki.key = key;
        pki.leaf_pin = pin;
        pki
    }

    /// Another leaf from the intermediate, valid from `from_days` to `to_days` relative
    /// to now. Returns (chain file, key file, leaf pin).
    pub fn leaf(
        &self,
        name: &str,
        hosts: &[&str],
        from_days: i64,
        to_days: i64,
    ) -> (PathBuf, PathBuf, String) {
        let names: Vec<String> = hosts.iter().map(|s| s.to_string()).collect();
        let mut p = leaf_params(&names).expect("params");
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::days(from_days) - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(to_days);
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.inter).expect("leaf");
        let chain = self.dir.path().join(format!("{name}-chain.pem"));
        let keyf = self.dir.path().join(format!("{name}-key.pem"));
        std::fs::write(&chain, format!("{}{}", cert.pem(), self.inter.pem())).expect("write chain");
        std::fs::write(&keyf, key.serialize_pem()).expect("write key");
        (chain, keyf, spki_pin_of(cert.der()))
    }

    /// A self-signed leaf no configured root trusts.
    pub fn rogue_leaf(&self, hosts: &[&str]) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(
            hosts.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .expect("rogue");
        let chain = self.dir.path().join("rogue-chain.pem");
        let keyf = self.dir.path().join("rogue-key.pem");
        std::fs::write(&chain, ck.cert.pem()).expect("write");
        std::fs::write(&keyf, ck.signing_key.serialize_pem()).expect("write");
        (chain, keyf)
    }
}

/// A child process killed on drop, its output lines collected.
pub struct Proc {
    pub child: Child,
    pub out: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `bin args`, collecting stdout and stderr lines.
    pub fn spawn(args: &[&str], cwd: Option<&Path>) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        Self::spawn_cmd(cmd)
    }

    /// Starts a prepared command, collecting stdout and stderr lines.
    pub fn spawn_cmd(mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        cmd.env("RUST_LOG", "info");
        let mut child = cmd.spawn().expect("spawn llm-egress");
        let out = Arc::new(Mutex::new(Vec::new()));
        for r in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    out.lock().expect("lock").push(line);
                }
            });
        }
        Proc { child, out }
    }

    /// Waits until a line satisfies `f`, returning what `f` extracted.
    pub fn wait_for<T>(&mut self, what: &str, f: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(t) = self.out.lock().expect("lock").iter().find_map(|l| f(l)) {
                return t;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("process exited ({st}) before {what}:\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a line containing `needle` appears.
    pub fn clone_wait_for_line(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .out
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains(needle))
        {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.out.lock().expect("lock").join("\n")
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

/// A running mock provider.
pub struct Mock {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Mock {
    /// Starts `llm-egress mock-provider` over TLS with `chain`/`key`.
    pub fn start_tls(chain: &Path, key: &Path, extra: &[&str]) -> Mock {
        Self::start_tls_at(chain, key, "127.0.0.1:0", extra)
    }

    /// Starts the mock on a given address (e.g. the port of one that was stopped).
    pub fn start_tls_at(chain: &Path, key: &Path, listen: &str, extra: &[&str]) -> Mock {
        let mut args = vec![
            "mock-provider",
            "--listen",
            listen,
            "--tls-cert",
            chain.to_str().expect("utf8"),
            "--tls-key",
            key.to_str().expect("utf8"),
        ];
        args.extend_from_slice(extra);
        let mut proc = Proc::spawn(&args, None);
        let addr = proc.wait_for("mock listening", |l| {
            l.split("listening on ").nth(1).and_then(|a| {
                a.trim()
                    .trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .parse()
                    .ok()
            })
        });
        Mock { proc, addr }
    }

    /// What the mock received (`GET /__mock/requests`), fetched directly.
    pub fn requests(&self, root_pem: &Path) -> Vec<serde_json::Value> {
        self.control(root_pem, "GET", "/__mock/requests")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A control path (`/__mock/...`) called directly; its JSON answer (null if none).
    pub fn control(&self, root_pem: &Path, method: &str, path: &str) -> serde_json::Value {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-X",
                method,
                "--cacert",
                root_pem.to_str().expect("utf8"),
                "--connect-to",
                &format!("api.mock.test:443:{}", self.addr),
                &format!("https://api.mock.test{path}"),
            ])
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }
}

/// A header of a recorded request (`/__mock/requests`), by case-insensitive name.
pub fn record_header<'a>(rec: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    rec["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))?[1]
        .as_str()
}

/// A running proxy.
pub struct Proxy {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub policy_dir: PathBuf,
    pub certs: PathBuf,
    pub audit: PathBuf,
}

impl Proxy {
    /// Starts `llm-egress run` with `policy` as `policies/00.toml` in a fresh work dir.
    pub fn start(policy: &str) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy_dir = dir.path().join("policies");
        std::fs::create_dir_all(&policy_dir).expect("mkdir");
        std::fs::write(policy_dir.join("00.toml"), policy).expect("write policy");
        Self::start_in(dir, policy_dir)
    }

    /// Like [`Proxy::start`] with extra environment variables for the proxy process.
    pub fn start_with_env(policy: &str, env: &[(&str, &str)]) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy_dir = dir.path().join("policies");
        std::fs::create_dir_all(&policy_dir).expect("mkdir");
        std::fs::write(policy_dir.join("00.toml"), policy).expect("write policy");
        Self::start_full(dir, policy_dir, env)
    }

    /// Starts the proxy on an existing work dir and policy directory.
    pub fn start_in(dir: tempfile::TempDir, policy_dir: PathBuf) -> Proxy {
        Self::start_full(dir, policy_dir, &[])
    }

    /// Starts the proxy with everything explicit.
    pub fn start_full(dir: tempfile::TempDir, policy_dir: PathBuf, env: &[(&str, &str)]) -> Proxy {
        let certs = dir.path().join("certs");
        let audit = dir.path().join("audit/audit.jsonl");
        let mut cmd = Command::new(bin());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args([
            "--log-format",
            "json",
            "run",
            "--policy",
            policy_dir.to_str().expect("utf8"),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--certs",
            certs.to_str().expect("utf8"),
            "--audit",
            audit.to_str().expect("utf8"),
            "--drain-seconds",
            "5",
        ]);
        let mut proc = Proc::spawn_cmd(cmd);
        let (addr, admin) = proc.wait_for("proxy listening", listening_addrs);
        Proxy {
            proc,
            addr,
            admin,
            dir,
            policy_dir,
            certs,
            audit,
        }
    }

    /// The proxy CA file.
    pub fn ca(&self) -> PathBuf {
        self.certs.join("ca.pem")
    }

    /// `http://addr` for HTTPS_PROXY.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Audit lines parsed, waiting briefly for at least `min` lines matching `f`.
    pub fn audit_lines(
        &self,
        min: usize,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines: Vec<serde_json::Value> = std::fs::read_to_string(&self.audit)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .filter(|v| f(v))
                .collect();
            if lines.len() >= min || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// A reqwest client through this proxy trusting its CA.
    pub fn client(&self) -> reqwest::Client {
        install_provider();
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(self.ca()).expect("ca")).expect("ca pem");
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(self.url()).expect("proxy"))
            .tls_certs_only([ca])
            .build()
            .expect("client")
    }

    /// GET an admin path, returning status and body.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                &format!("http://{}{path}", self.admin),
            ])
            .output()
            .expect("curl");
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = s.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }
}

/// Installs aws-lc-rs as the process default for reqwest (rustls-no-provider).
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A policy for the mock at `mock`, reached as `api.mock.test`, trusting `pki`'s root.
pub fn mock_policy(pki: &Pki, mock: SocketAddr, allow_extra: &str) -> String {
    format!(
        r#"
[upstream]
extra_roots = ["{root}"]
resolve = {{ "api.mock.test:443" = "{mock}" }}

[[allow]]
name = "mock"
base_url = "https://api.mock.test/v1"
methods = ["GET", "POST"]
{allow_extra}
"#,
        root = pki.root_pem.display()
    )
}

/// A chat completion request body.
pub fn chat_body(text: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    })
}

/// The venv's python with the `openai` SDK; a missing venv fails with instructions.
pub fn python() -> String {
    if let Ok(p) = std::env::var("LLM_EGRESS_TEST_PYTHON") {
        return p;
    }
    let local = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    assert!(
        Path::new(local).exists(),
        "the openai SDK venv is missing: run ./scripts/setup-test-env (./scripts/test does)"
    );
    local.to_owned()
}

/// Runs `tests/python/<script>` with the SDK through the proxy (HTTPS_PROXY, the proxy
/// CA, `OPENAI_BASE_URL=https://api.mock.test/v1`) plus `env`; returns its JSON line.
pub fn run_sdk(proxy: &Proxy, script: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = sdk_command(script);
    cmd.env("HTTPS_PROXY", proxy.url())
        .env("SSL_CERT_FILE", proxy.ca())
        .env("OPENAI_BASE_URL", "https://api.mock.test/v1")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    finish_sdk(cmd, proxy, env)
}

/// Runs `tests/python/<script>` with the SDK against the proxy's gateway
/// (`OPENAI_BASE_URL=http://PROXY/v1`, no proxy variables) plus `env`; returns its JSON line.
pub fn run_sdk_gateway(proxy: &Proxy, script: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = sdk_command(script);
    cmd.env("OPENAI_BASE_URL", format!("http://{}/v1", proxy.addr));
    for var in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"] {
        cmd.env_remove(var).env_remove(var.to_ascii_lowercase());
    }
    finish_sdk(cmd, proxy, env)
}

fn sdk_command(script: &str) -> Command {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut cmd = Command::new(python());
    cmd.arg(path);
    cmd
}

fn finish_sdk(mut cmd: Command, proxy: &Proxy, env: &[(&str, &str)]) -> serde_json::Value {
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("python");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.proc.output()
    );
    serde_json::from_slice(&out.stdout).expect("the script prints one JSON line")
}
