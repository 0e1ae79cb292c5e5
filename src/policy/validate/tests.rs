//! Each mistake an operator can make, asserted with its exact file, line, column and
//! message (the project's acceptance criterion: at least ten of them).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;

use super::load_and_validate_with_env;

/// A self-signed test certificate (never trusted by anything).
pub(super) const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBlTCCATugAwIBAgIUZfPGp6n/1M8/+p5GHe00WK2BmnAwCgYIKoZIzj0EAwIw
HzEdMBsGA1UEAwwUbGxtLWVncmVzcyB0ZXN0IHJvb3QwIBcNMjYxMTI0MTMyMjM1
WhgPMjEyNjEwMzExMzIyMzVaMB8xHTAbBgNVBAMMFGxsbS1lZ3Jlc3MgdGVzdCBy
b290MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEXqJoibEnRI8F1dP+VrMms2pd
c/pAoxxgTuOw9RAAdUvsNrUci+o11JQuIcwxW+WQE8rnWXLBefc8TCOVAdKWUaNT
MFEwHQYDVR0OBBYEFHQZNp5HQaIOBgYOJzOOvxOQLO8tMB8GA1UdIwQYMBaAFHQZ
Np5HQaIOBgYOJzOOvxOQLO8tMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwID
SAAwRQIhALD16t7dNkqTUTrQqK/npDmGIiwco8fRoZf+tPM3qS2nAiAI87nvplfB
56PyQ2AWLb6vL/mTHbtqVu6JG2wpD97/HQ==
-----END CERTIFICATE-----
";

/// A protection key: base64 of 32 bytes.
pub(super) fn key() -> String {
    base64::engine::general_purpose::STANDARD.encode([42u8; 32])
}

/// The environment the tests pretend to run in (no `set_var`).
pub(super) fn fake_env(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" | "MISTRAL_API_KEY" | "OLLAMA_API_KEY" => Some("sk-test".into()),
        "LLM_EGRESS_PROTECT_KEY" => Some(key()),
        "BAD_KEY" => Some("c2hvcnQ=".into()),
        _ => None,
    }
}

pub(super) fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn write(dir: &Path, name: &str, text: &str) {
    fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{e}"));
}

/// Loads and validates `dir`; each error as "file:line:col: message" (hint dropped),
/// with the directory cut from every path.
pub(super) fn check(dir: &Path) -> Vec<String> {
    full(dir)
        .iter()
        .map(|e| e.lines().next().unwrap_or_default().to_owned())
        .collect()
}

/// Like [`check`], with hints.
pub(super) fn full(dir: &Path) -> Vec<String> {
    match load_and_validate_with_env(dir, &fake_env) {
        Ok(_) => Vec::new(),
        Err(e) => {
            let prefix = format!("{}/", dir.display());
            e.0.iter()
                .map(|e| e.to_string().replace(&prefix, ""))
                .collect()
        }
    }
}

const PIN: &str = "sha256//hxqRlPTu1bMS/0DITB1SSu0vd4u/8l8TjPgfaAp63Gc=";
const PIN2: &str = "sha256//C5+lpZ7tcVwmwQIMcRtPbsQtWLABXhQzejna0wHFr8M=";

#[test]
fn allow_entry_mistakes() {
    let d = tmp();
    let text = format!(
        "[[allow]]\nname = \"\"\nbase_url = \"api.openai.com/v1\"\nmethods = [\"GET\", \"post\"]\npins = [\"sha256//AAAA\"]\n\n\
         [[allow]]\nname = \"t\"\nbase_url = \"https://tunnel.example/v1\"\nmode = \"tunnel\"\npins = [\"{PIN}\"]\n"
    );
    write(d.path(), "a.toml", &text);
    assert_eq!(
        check(d.path()),
        [
            "a.toml:2:8: [[allow]] name is empty",
            "a.toml:3:12: base_url \"api.openai.com/v1\" has no scheme",
            "a.toml:4:19: method \"post\" is not upper case",
            "a.toml:5:9: pin \"sha256//AAAA\" is 3 bytes, not 32",
            "a.toml:9:12: a tunnel entry allows the whole host, but base_url has the path \"/v1\"",
            "a.toml:11:8: pins on a tunnel entry cannot be checked",
        ]
    );
    let hints = full(d.path());
    assert!(
        hints[1].ends_with("hint: write the scheme, e.g. \"https://api.openai.com/v1\""),
        "{}",
        hints[1]
    );
    assert!(
        hints[2].ends_with("hint: HTTP methods are case-sensitive; write \"POST\""),
        "{}",
        hints[2]
    );
    assert!(
        hints[3].contains("`llm-egress pin https://HOST`"),
        "{}",
        hints[3]
    );
}

#[test]
fn one_host_port_one_mode_one_pin_set() {
    let d = tmp();
    let text = format!(
        "[[allow]]\nname = \"a\"\nbase_url = \"https://api.example/v1\"\npins = [\"{PIN}\"]\n\n\
         [[allow]]\nname = \"b\"\nbase_url = \"https://API.example:443/v2\"\npins = [\"{PIN2}\"]\n\n\
         [[allow]]\nname = \"c\"\nbase_url = \"https://api.example\"\nmode = \"tunnel\"\n\n\
         [[allow]]\nname = \"d\"\nbase_url = \"https://api.example/v3\"\npins = [\"{PIN}\", \"{PIN}\"]\n\n\
         [[allow]]\nname = \"e\"\nbase_url = \"https://api.example/v4\"\npins = [\"{PIN}\"]\nroots = [\"ca.pem\"]\n"
    );
    write(d.path(), "ca.pem", CERT);
    write(d.path(), "a.toml", &text);
    assert_eq!(
        check(d.path()),
        [
            "a.toml:9:8: pins differ from those of [[allow]] \"a\" for the same https://api.example:443",
            "a.toml:14:8: https://api.example:443 is already allowed in mode \"inspect\" by [[allow]] \"a\"",
            "a.toml:25:9: roots differ from those of [[allow]] \"a\" for the same https://api.example:443",
        ]
    );
}

#[test]
fn roots_and_resolve_mistakes() {
    let d = tmp();
    write(d.path(), "good.pem", CERT);
    write(d.path(), "empty.pem", "no certificate here\n");
    let text = "[[allow]]\nname = \"a\"\nbase_url = \"https://a.example\"\nroots = [\"good.pem\", \"missing.pem\", \"empty.pem\"]\n\n\
                [upstream]\nextra_roots = [\"good.pem\"]\n\
                resolve = { \"a.example:443\" = \"127.0.0.1:9443\", \"b.example:443\" = \"127.0.0.1:1\", \"a.example\" = \"x\" }\n\
                [upstream.more]\n";
    write(d.path(), "a.toml", text);
    // `[upstream.more]` is an unknown key: a parse error, reported alone.
    assert_eq!(check(d.path()), ["a.toml:9:11: unknown key `more`"]);
    write(
        d.path(),
        "a.toml",
        text.trim_end_matches("[upstream.more]\n"),
    );
    assert_eq!(
        check(d.path()),
        [
            "a.toml:4:22: cannot read missing.pem: No such file or directory (os error 2)",
            "a.toml:4:37: empty.pem holds no PEM certificate",
            "a.toml:8:67: resolve key \"b.example:443\" matches no [[allow]] host and port",
            "a.toml:8:96: resolve key \"a.example\" is not host:port",
        ]
    );
}

#[test]
fn provider_mistakes() {
    let d = tmp();
    let text = "[[allow]]\nname = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\n\n\
                [[provider]]\nname = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\napi_key = { env = \"UNSET_VAR\" }\n\n\
                [[provider]]\nname = \"other\"\nbase_url = \"https://api.openai.com/v1x\"\napi_key = { env = \"1BAD\" }\n\n\
                [[provider]]\nname = \"filekey\"\nbase_url = \"https://api.openai.com/v1/sub\"\napi_key = { file = \"nokey.txt\" }\n";
    write(d.path(), "p.toml", text);
    assert_eq!(
        check(d.path()),
        [
            "p.toml:8:19: environment variable UNSET_VAR is not set",
            "p.toml:12:12: provider \"other\" base_url https://api.openai.com/v1x is not covered by any [[allow]] \
             ([[allow]] \"openai\" has this host, but its path \"/v1\" is not a prefix of \"/v1x\")",
            "p.toml:13:19: \"1BAD\" is not a valid environment variable name",
            "p.toml:18:20: cannot read key file nokey.txt: No such file or directory (os error 2)",
        ]
    );
    let hints = full(d.path());
    assert!(
        hints[1]
            .contains("hint: add an entry such as\n        [[allow]]\n        name = \"other\""),
        "{}",
        hints[1]
    );
}

#[test]
fn route_mistakes() {
    let d = tmp();
    let text = "[[allow]]\nname = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\n\n\
                [[provider]]\nname = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\napi_key = { env = \"OPENAI_API_KEY\" }\n\n\
                [[provider]]\nname = \"nokey\"\nbase_url = \"https://api.openai.com/v1\"\n\n\
                [[route]]\nname = \"r1\"\ntargets = [{ provider = \"openai\" }, { provider = \"nokey\" }, { provider = \"ghost\" }]\n\
                retry = { on = [429, 600] }\n\n\
                [[route]]\nname = \"cheap\"\nstrategy = \"cheapest\"\nmin_quality = 5\ntargets = [{ provider = \"openai\", quality = 3 }]\n\n\
                [[route]]\nname = \"w\"\nstrategy = \"weighted\"\ntargets = [{ provider = \"openai\", weight = 0 }]\n\n\
                [[route]]\nname = \"empty\"\ntargets = []\n";
    write(d.path(), "r.toml", text);
    assert_eq!(
        check(d.path()),
        [
            "r.toml:16:50: route \"r1\" targets provider \"nokey\", which has no api_key",
            "r.toml:16:74: unknown provider \"ghost\"",
            "r.toml:17:22: 600 is not an HTTP status",
            "r.toml:22:15: no target of route \"cheap\" has quality >= 5",
            "r.toml:23:25: strategy \"cheapest\" needs pricing, but provider \"openai\" has none",
            "r.toml:28:11: every target of weighted route \"w\" has weight 0",
            "r.toml:32:11: route \"empty\" has no targets",
        ]
    );
    let hints = full(d.path());
    assert!(
        hints[0].contains("hint: credentials never cross providers"),
        "{}",
        hints[0]
    );
    assert!(
        hints[1].contains("hint: known providers: openai, nokey"),
        "{}",
        hints[1]
    );
}

#[test]
fn reprobe_after_belongs_to_fastest_and_is_positive() {
    let d = tmp();
    let text = "[[allow]]\nname = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\n\n\
                [[provider]]\nname = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\napi_key = { env = \"OPENAI_API_KEY\" }\n\n\
                [[route]]\nname = \"quick\"\nstrategy = \"fastest\"\nreprobe_after = \"2s\"\ntargets = [{ provider = \"openai\" }]\n\n\
                [[route]]\nname = \"zero\"\nstrategy = \"fastest\"\nreprobe_after = \"0s\"\ntargets = [{ provider = \"openai\" }]\n\n\
                [[route]]\nname = \"ordered\"\nreprobe_after = \"5s\"\ntargets = [{ provider = \"openai\" }]\n";
    write(d.path(), "r.toml", text);
    assert_eq!(
        check(d.path()),
        [
            "r.toml:19:17: must be greater than zero",
            "r.toml:24:17: reprobe_after applies only to strategy \"fastest\"; route \"ordered\" uses another",
        ]
    );
}

#[test]
fn protect_mistakes() {
    let d = tmp();
    let loose = d.path().join("loose.key");
    write(d.path(), "loose.key", &key());
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = "[protect]\nmode = \"tokenize\"\n\
                keys = [{ id = \"K1\", file = \"loose.key\" }, { id = \"k2\" }, { id = \"k3\", env = \"BAD_KEY\" }]\n\
                detectors = [\"email\", \"ssn\"]\npatterns = [{ name = \"cust\", regex = \"CUST-[0-9\" }]\n";
    write(d.path(), "p.toml", text);
    assert_eq!(
        check(d.path()),
        [
            "p.toml:3:16: key id \"K1\" does not match [a-z0-9]{1,16}",
            "p.toml:3:29: key file loose.key is readable by group or others; run: chmod 600 loose.key",
            "p.toml:3:44: a key needs exactly one of `file` or `env`",
            "p.toml:3:78: environment variable BAD_KEY does not hold a base64-encoded 32-byte key",
            "p.toml:4:23: unknown detector \"ssn\"",
            "p.toml:5:38: regex does not compile: unclosed character class",
        ]
    );
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
    write(d.path(), "p.toml", "[protect]\nmode = \"tokenize\"\nkeys = [{ id = \"k1\", file = \"loose.key\" }]\ndetectors = [\"email\"]\n");
    assert_eq!(check(d.path()), Vec::<String>::new());
    write(
        d.path(),
        "p.toml",
        "\n[protect]\nmode = \"tokenize\"\ndetectors = [\"email\"]\n",
    );
    assert_eq!(
        check(d.path()),
        ["p.toml:2:1: mode \"tokenize\" needs at least one key"]
    );
}

#[test]
fn settings_mistakes() {
    let d = tmp();
    let text = "[proxy]\nlisten = \"localhost:8480\"\nadmin = \"127.0.0.1:8481\"\n\n\
                [breaker]\nfailure_rate = 1.5\nwindow = \"0s\"\n\n[limits]\nmax_connections = 0\n";
    write(d.path(), "s.toml", text);
    assert_eq!(
        check(d.path()),
        [
            "s.toml:2:10: \"localhost:8480\" is not an address:port",
            "s.toml:6:16: failure_rate 1.5 is outside (0, 1]",
            "s.toml:7:10: must be greater than zero",
            "s.toml:10:19: must be greater than zero",
        ]
    );
    write(
        d.path(),
        "s.toml",
        "[proxy]\nlisten = \"127.0.0.1:8480\"\nadmin = \"127.0.0.1:8480\"\n",
    );
    assert_eq!(
        check(d.path()),
        ["s.toml:3:9: admin and listen are the same address"]
    );
}

#[test]
fn json_policy_mistakes() {
    let d = tmp();
    let text = "{\n  \"allow\": [\n    {\"name\": \"a\", \"base_url\": \"https://a.example\", \"methods\": [\"get\"]}\n  ],\n  \
                \"provider\": [\n    {\"name\": \"p\", \"base_url\": \"https://b.example/v1\", \"api_key\": {\"env\": \"OPENAI_API_KEY\"}}\n  ]\n}\n";
    write(d.path(), "p.json", text);
    assert_eq!(
        check(d.path()),
        [
            "p.json:3:64: method \"get\" is not upper case",
            "p.json:6:31: provider \"p\" base_url https://b.example/v1 is not covered by any [[allow]]",
        ]
    );
}

#[test]
fn issues_in_later_files_point_into_them() {
    let d = tmp();
    write(d.path(), "00.toml", "[[allow]]\nname = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\n\n[[provider]]\nname = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\n");
    write(
        d.path(),
        "10.toml",
        "[[allow]]\nname = \"x\"\nbase_url = \"https://x.example\"\nmethods = [\"Get\"]\n",
    );
    write(
        d.path(),
        "20.json",
        "{\"route\": [{\"name\": \"r\", \"targets\": [{\"provider\": \"openai\"}]}]}",
    );
    assert_eq!(
        check(d.path()),
        [
            "10.toml:4:12: method \"Get\" is not upper case",
            "20.json:1:51: route \"r\" targets provider \"openai\", which has no api_key",
        ]
    );
}
