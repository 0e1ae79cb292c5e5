//! The processes under test: the mock provider and the proxy, started from the
//! `llm-egress` binary on ephemeral ports, killed on drop; plus `/proc` RSS readings and
//! `llm-egress check`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use llm_egress::cli::run::listening_addrs;

/// How many output lines of a child are kept (the newest).
const KEEP_LINES: usize = 2000;

/// A child process whose stdout and stderr lines are collected; killed on drop.
pub struct Proc {
    child: Child,
    lines: Arc<Mutex<VecDeque<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `bin args` with `env` added and `RUST_LOG=info`.
    pub fn spawn(bin: &Path, args: &[String], env: &[(String, String)]) -> Result<Proc> {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let outs: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().context("stdout")?),
            Box::new(child.stderr.take().context("stderr")?),
        ];
        for r in outs {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines().map_while(Result::ok) {
                    let mut g = lines.lock().unwrap_or_else(|e| e.into_inner());
                    if g.len() == KEEP_LINES {
                        g.pop_front();
                    }
                    g.push_back(l);
                }
            });
        }
        Ok(Proc { child, lines })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to 30 s) for a line from which `f` extracts something.
    pub fn wait_for<T>(&mut self, what: &str, f: impl Fn(&str) -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(t) = self.lines().iter().find_map(|l| f(l)) {
                return Ok(t);
            }
            if let Some(st) = self.child.try_wait()? {
                bail!("process exited ({st}) before {what}:\n{}", self.output());
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn lines(&self) -> Vec<String> {
        let g = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        g.iter().cloned().collect()
    }

    /// The last lines printed, for error messages.
    pub fn output(&self) -> String {
        let l = self.lines();
        l[l.len().saturating_sub(40)..].join("\n")
    }

    /// Resident set size in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> Result<u64> {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Peak resident set size in KiB (`VmHWM`).
    pub fn hwm_kib(&self) -> Result<u64> {
        proc_status_kib(self.pid(), "VmHWM:")
    }
}

fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    line.split_whitespace()
        .nth(1)
        .context("malformed status line")?
        .parse()
        .context("malformed status number")
}

/// A running mock provider (TLS, no recording).
pub struct Mock {
    /// The process (killed when this is dropped).
    pub proc: Proc,
    /// Its address.
    pub addr: SocketAddr,
}

impl Mock {
    /// The mock's process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

impl Mock {
    /// Starts `llm-egress mock-provider --tls-cert --tls-key --no-record`.
    pub fn start(bin: &Path, chain: &Path, key: &Path) -> Result<Mock> {
        let args: Vec<String> = [
            "mock-provider",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &chain.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
            "--no-record",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut proc = Proc::spawn(bin, &args, &[])?;
        let addr = proc.wait_for("the mock's `listening on`", |l| {
            let a = l.split("listening on ").nth(1)?;
            a.trim().trim_start_matches("https://").parse().ok()
        })?;
        Ok(Mock { proc, addr })
    }
}

/// nginx as a TLS reverse proxy in front of the mock: the reference PRODUCT.md §11 quotes
/// ("nginx itself as a TLS reverse proxy … ~47–48 % of direct"). One worker per CPU, as the
/// proxy; a keep-alive upstream pool with TLS session reuse; no access log. Its workers
/// run as the user nginx picks (they read nothing: the master loads the key). Stopped
/// with `SIGTERM` on drop, which the master passes on to its workers.
pub struct Nginx {
    child: Child,
    /// Where it listens (TLS, the bench leaf for `api.bench.test`).
    pub addr: SocketAddr,
    /// What `nginx -v` says.
    pub version: String,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: `kill` with a pid of our own child and a valid signal number.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// The master's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `nginx` with a configuration written under `work/nginx`, proxying to
    /// `mock` with SNI `host`, serving `chain` / `key`.
    pub fn start(
        nginx: &Path,
        work: &Path,
        mock: SocketAddr,
        host: &str,
        chain: &Path,
        key: &Path,
    ) -> Result<Nginx> {
        let dir = work.join("nginx");
        std::fs::create_dir_all(&dir)?;
        // A free port now; nginx binds it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let d = dir.display();
        let conf = format!(
            r#"worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 100000000;
    upstream mock {{
        server {mock};
        keepalive 256;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {chain};
        ssl_certificate_key {key};
        location / {{
            proxy_pass https://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {host};
            proxy_ssl_server_name on;
            proxy_ssl_name {host};
            proxy_ssl_session_reuse on;
        }}
    }}
}}
"#,
            chain = chain.display(),
            key = key.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let version = Command::new(nginx)
            .arg("-v")
            .output()
            .with_context(|| format!("running {} -v", nginx.display()))?;
        let version = String::from_utf8_lossy(&version.stderr)
            .trim()
            .trim_start_matches("nginx version: ")
            .to_owned();
        let mut child = Command::new(nginx)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", nginx.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if child.try_wait()?.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                bail!("nginx did not start listening on {addr}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Nginx {
            child,
            addr,
            version,
        })
    }
}

/// A running proxy in its own work directory.
pub struct Proxy {
    /// The process.
    pub proc: Proc,
    /// Proxy port.
    pub addr: SocketAddr,
    /// Admin port.
    pub admin: SocketAddr,
    /// `certs/` (the proxy CA is `certs/ca.pem`).
    pub certs: PathBuf,
    /// The audit file.
    pub audit: PathBuf,
}

impl Proxy {
    /// Starts `llm-egress --log-format json run` on `policy_dir`, with its CA and audit
    /// log under `work` (a CA there is reused, so every proxy of one run shares it).
    pub fn start(
        bin: &Path,
        work: &Path,
        name: &str,
        policy_dir: &Path,
        env: &[(String, String)],
    ) -> Result<Proxy> {
        let certs = work.join("certs");
        let audit = work.join(format!("audit-{name}.jsonl"));
        let args: Vec<String> = vec![
            "--log-format".into(),
            "json".into(),
            "run".into(),
            "--policy".into(),
            policy_dir.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--admin".into(),
            "127.0.0.1:0".into(),
            "--certs".into(),
            certs.display().to_string(),
            "--audit".into(),
            audit.display().to_string(),
            "--drain-seconds".into(),
            "1".into(),
        ];
        let mut proc = Proc::spawn(bin, &args, env)?;
        let (addr, admin) = proc.wait_for("`llm-egress listening`", listening_addrs)?;
        Ok(Proxy {
            proc,
            addr,
            admin,
            certs,
            audit,
        })
    }

    /// Audit lines whose `event` is `kind`.
    pub fn audit_count(&self, kind: &str) -> usize {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == kind)
            .count()
    }
}

/// `llm-egress check --policy DIR`: Ok(()) when valid, Err(first error lines) otherwise.
pub fn check(bin: &Path, policy_dir: &Path, env: &[(String, String)]) -> Result<(), String> {
    let out = Command::new(bin)
        .args(["check", "--policy"])
        .arg(policy_dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .map_err(|e| format!("cannot run check: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    Err(text.lines().take(3).collect::<Vec<_>>().join(" / "))
}

/// `count` of `pid` plus the same of its child processes (nginx: the master and its
/// workers); None when `pid` itself cannot be read.
pub fn tree(pid: u32, count: fn(u32) -> Option<f64>) -> Option<f64> {
    let own = count(pid)?;
    // Without CONFIG_PROC_CHILDREN the file is missing: the process's own figure only.
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    Some(
        own + children
            .split_whitespace()
            .filter_map(|c| count(c.parse().ok()?))
            .sum::<f64>(),
    )
}

/// Context switches (voluntary + involuntary) of every thread of process `pid` so far,
/// from `/proc/PID/task/*/status` (the process's own `status` counts its first thread
/// only); None when the process does not exist (pid 0).
pub fn ctx_switches(pid: u32) -> Option<f64> {
    if pid == 0 {
        return None;
    }
    let mut sum = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(status) = std::fs::read_to_string(t.ok()?.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        sum += status
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(sum as f64)
}

/// CPU time (user + system) of process `pid` in seconds, from `/proc/PID/stat`; None
/// when the process does not exist (pid 0).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    if pid == 0 {
        return None;
    }
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / hz.max(1) as f64)
}
