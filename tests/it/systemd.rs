//! The shipped systemd unit (`systemd/llm-egress.service`, PRODUCT.md §10): its command
//! line runs the proxy with the notify protocol (ready after bind, reloading on SIGHUP,
//! stopping on SIGTERM), `systemd-analyze verify` accepts it, and `systemd-analyze
//! security` scores it "OK".

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const UNIT: &str = "systemd/llm-egress.service";

/// The unit's `Key=value` lines (continuations joined), in order.
fn unit_entries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(UNIT).expect("read unit");
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn unit_value(key: &str) -> String {
    unit_entries()
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("{UNIT} has no {key}="))
}

/// The next notify message, within `secs`.
fn next_notify(sock: &UnixDatagram, secs: u64) -> String {
    sock.set_read_timeout(Some(Duration::from_secs(secs)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notify message in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_unit_declares_the_service_contract() {
    assert_eq!(unit_value("Type"), "notify");
    assert_eq!(unit_value("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(unit_value("DynamicUser"), "yes");
    assert_eq!(unit_value("StateDirectory"), "llm-egress");
    assert_eq!(unit_value("ConfigurationDirectory"), "llm-egress");
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("UMask", "0077"),
    ] {
        assert_eq!(unit_value(key), value, "{key}");
    }
}

#[test]
fn the_units_command_line_runs_the_proxy_with_the_notify_protocol() {
    let exec = unit_value("ExecStart");
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, state) = (dir.path().join("etc"), dir.path().join("state"));
    std::fs::create_dir_all(config.join("policies")).expect("config dir");
    std::fs::create_dir_all(&state).expect("state dir");
    for entry in std::fs::read_dir("policies").expect("shipped policies") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_name().expect("name");
            std::fs::copy(&path, config.join("policies").join(name)).expect("copy policy");
        }
    }
    // What systemd does: expand the directories it created, run as written; only the
    // fixed ports become ephemeral ones, so tests can run side by side.
    let line = exec
        .replace("${CONFIGURATION_DIRECTORY}", config.to_str().expect("utf8"))
        .replace("${STATE_DIRECTORY}", state.to_str().expect("utf8"))
        .replace("127.0.0.1:8480", "127.0.0.1:0")
        .replace("127.0.0.1:8481", "127.0.0.1:0");
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/llm-egress"));
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    let mut cmd = Command::new(bin());
    cmd.args(words).env("NOTIFY_SOCKET", &notify_path);
    let mut proc = Proc::spawn_cmd(cmd);

    assert!(next_notify(&notify, 30).contains("READY=1"));
    // Ready means serving: the admin port answers at once.
    let (_, admin) = proc.wait_for("listening line", listening_addrs);
    let ready = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{admin}/readyz"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&ready.stdout), "200");
    // The state lands where the unit says, the CA key private.
    let key = state.join("certs/ca.key");
    let mode = std::fs::metadata(&key)
        .expect("CA key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "CA key mode {mode:o}");
    assert!(state.join("certs/ca.pem").exists());
    assert!(state.join("audit/audit.jsonl").exists());

    // `systemctl reload` (ExecReload) sends SIGHUP.
    proc.signal(libc::SIGHUP);
    assert!(next_notify(&notify, 10).contains("RELOADING=1"));
    assert!(next_notify(&notify, 10).contains("READY=1"));

    proc.signal(libc::SIGTERM);
    assert!(next_notify(&notify, 40).contains("STOPPING=1"));
    let status = proc.child.wait().expect("exit");
    assert!(status.success(), "{status}\n{}", proc.output());
}

/// `systemd-analyze` of the unit as installed (with the binary this build made).
fn analyze(args: &[&str], unit: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze (scripts/setup-test-env installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn systemd_analyze_verifies_the_unit_and_scores_it_ok() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("llm-egress.service");
    let text = std::fs::read_to_string(UNIT)
        .expect("read unit")
        .replace("/usr/local/bin/llm-egress", bin());
    std::fs::write(&unit, text).expect("write unit");

    let (ok, out) = analyze(&["verify"], &unit);
    assert!(ok, "systemd-analyze verify failed:\n{out}");
    assert!(
        !out.contains("llm-egress.service:"),
        "systemd-analyze verify warns about the unit:\n{out}"
    );

    let (_, out) = analyze(&["security", "--offline=true"], &unit);
    let score: f64 = out
        .lines()
        .find_map(|l| {
            let rest = l
                .split("Overall exposure level for llm-egress.service:")
                .nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    // systemd rates 0–2 "OK" (then MEDIUM, EXPOSED, UNSAFE).
    assert!(score <= 2.0, "exposure {score}:\n{out}");
}
