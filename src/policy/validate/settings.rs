//! Checks of the single tables: `[proxy]`, `[breaker]`, `[protect]`, `[limits]`, `[audit]`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;

use super::{is_env_name, Ctx};
use crate::policy::load::read_small;
use crate::policy::locate::FieldPath;
use crate::policy::model::{PolicyFile, ProtectKey, ProtectMode, ProtectSection};

/// The built-in detectors of `[protect]`.
pub(crate) use crate::protect::DETECTORS;

const KEYGEN: &str = "create one with `llm-egress protect keygen --out certs/protect.key`";

/// Checks the single tables.
pub(super) fn check(cx: &mut Ctx<'_>, model: &PolicyFile) {
    if let Some(p) = &model.proxy {
        let at = FieldPath::root().key("proxy");
        let listen = addr(cx, at.clone().key("listen"), p.listen.as_deref());
        let admin = addr(cx, at.clone().key("admin"), p.admin.as_deref());
        if listen.is_some() && listen == admin {
            cx.push(
                at.clone().key("admin"),
                "admin and listen are the same address",
                Some(
                    "the admin port must be separate from the proxy port, e.g. 127.0.0.1:8481"
                        .into(),
                ),
            );
        }
        cx.positive_n(at.key("max_request_body"), p.max_request_body.map(|b| b.0));
    }
    if let Some(b) = &model.breaker {
        cx.breaker(FieldPath::root().key("breaker"), b);
    }
    if let Some(p) = &model.protect {
        protect(cx, p);
    }
    if let Some(l) = &model.limits {
        let at = FieldPath::root().key("limits");
        cx.positive_n(
            at.clone().key("max_connections"),
            l.max_connections.map(u64::from),
        );
        cx.positive_n(
            at.clone().key("max_header_size"),
            l.max_header_size.map(|b| b.0),
        );
        cx.positive(at.clone().key("handshake_timeout"), l.handshake_timeout);
        cx.positive(at.clone().key("header_read_timeout"), l.header_read_timeout);
        cx.positive(at.clone().key("idle_timeout"), l.idle_timeout);
        cx.positive(at.clone().key("tunnel_idle_timeout"), l.tunnel_idle_timeout);
        cx.positive_n(
            at.clone().key("h2_max_concurrent_streams"),
            l.h2_max_concurrent_streams.map(u64::from),
        );
        cx.positive_n(
            at.key("h2_max_header_list_size"),
            l.h2_max_header_list_size.map(|b| b.0),
        );
    }
    if let Some(a) = &model.audit {
        if a.path.as_deref().is_some_and(|p| p.trim().is_empty()) {
            cx.push(
                FieldPath::root().key("audit").key("path"),
                "audit path is empty",
                Some("remove it to use --audit (default audit/audit.jsonl)".into()),
            );
        }
    }
}

fn addr(cx: &mut Ctx<'_>, at: FieldPath, value: Option<&str>) -> Option<SocketAddr> {
    let v = value?;
    match v.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            cx.push(
                at,
                format!("{v:?} is not an address:port"),
                Some(
                    "e.g. \"127.0.0.1:8480\" or \"[::1]:8480\"; host names are not accepted".into(),
                ),
            );
            None
        }
    }
}

fn protect(cx: &mut Ctx<'_>, p: &ProtectSection) {
    let at = FieldPath::root().key("protect");
    if p.mode == ProtectMode::Tokenize && p.keys.is_empty() {
        cx.push(
            at.clone().key("keys"),
            "mode \"tokenize\" needs at least one key",
            Some(format!(
                "keys = [{{ id = \"k1\", file = \"protect.key\" }}]; {KEYGEN}"
            )),
        );
    }
    if p.mode == ProtectMode::Tokenize && p.detectors.is_empty() && p.patterns.is_empty() {
        cx.push(
            at.clone().key("detectors"),
            "mode \"tokenize\" with no detectors and no patterns protects nothing",
            Some(format!("e.g. detectors = [{}]", quoted(DETECTORS))),
        );
    }
    let mut ids = HashSet::new();
    for (j, key) in p.keys.iter().enumerate() {
        protect_key(cx, at.clone().key("keys").index(j), key, &mut ids);
    }
    for (j, d) in p.detectors.iter().enumerate() {
        if !DETECTORS.contains(&d.as_str()) {
            cx.push(
                at.clone().key("detectors").index(j),
                format!("unknown detector \"{d}\""),
                Some(format!(
                    "built-in detectors: {}; custom ones go in patterns",
                    DETECTORS.join(", ")
                )),
            );
        }
    }
    let mut names = HashSet::new();
    for (j, pat) in p.patterns.iter().enumerate() {
        let pat_at = at.clone().key("patterns").index(j);
        let valid_name = pat.name.len() <= 32
            && pat.name.starts_with(|c: char| c.is_ascii_lowercase())
            && pat
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if pat.name.trim().is_empty() {
            cx.push(pat_at.clone().key("name"), "pattern name is empty", None);
        } else if !valid_name || DETECTORS.contains(&pat.name.as_str()) {
            cx.push(
                pat_at.clone().key("name"),
                format!("pattern name \"{}\" must match [a-z][a-z0-9_]{{0,31}} and not be a built-in detector", pat.name),
                Some("it becomes part of each token, e.g. customer_id".into()),
            );
        } else if !names.insert(pat.name.as_str()) {
            cx.push(
                pat_at.clone().key("name"),
                format!("duplicate pattern name \"{}\"", pat.name),
                None,
            );
        }
        if let Err(e) = regex::Regex::new(&pat.regex) {
            let text = e.to_string();
            let summary = text
                .lines()
                .last()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_owned();
            cx.push(
                pat_at.key("regex"),
                format!("regex does not compile: {summary}"),
                Some(text),
            );
        }
    }
}

fn protect_key(cx: &mut Ctx<'_>, at: FieldPath, key: &ProtectKey, ids: &mut HashSet<String>) {
    let id_ok = (1..=16).contains(&key.id.len())
        && key
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !id_ok {
        cx.push(
            at.clone().key("id"),
            format!("key id {:?} does not match [a-z0-9]{{1,16}}", key.id),
            Some("ids appear inside tokens, e.g. \"k1\" or \"2026a\"".into()),
        );
    } else if !ids.insert(key.id.clone()) {
        cx.push(
            at.clone().key("id"),
            format!("duplicate key id \"{}\"", key.id),
            Some("each key needs its own id so tokens name the key that made them".into()),
        );
    }
    match (&key.file, &key.env) {
        (Some(file), None) => key_file(cx, at.key("file"), file),
        (None, Some(env)) => {
            let at = at.key("env");
            if !is_env_name(env) {
                cx.push(at, format!("{env:?} is not a valid environment variable name"), None);
            } else {
                match cx.env(env) {
                    None => cx.push(at, format!("environment variable {env} is not set"), Some(format!("set it to a base64-encoded 32-byte key; {KEYGEN}"))),
                    Some(v) if !is_key(&v) => cx.push(at, format!("environment variable {env} does not hold a base64-encoded 32-byte key"), Some(KEYGEN.into())),
                    Some(_) => {}
                }
            }
        }
        _ => cx.push(at, "a key needs exactly one of `file` or `env`", Some("e.g. { id = \"k1\", file = \"protect.key\" } or { id = \"k1\", env = \"LLM_EGRESS_PROTECT_KEY\" }".into())),
    }
}

/// A key file: not readable by group or others, holding base64 of 32 bytes. Neither the
/// key nor any part of the file is ever put in a message.
fn key_file(cx: &mut Ctx<'_>, at: FieldPath, file: &str) {
    let meta = match std::fs::metadata(file) {
        Ok(m) => m,
        Err(e) => {
            cx.push(
                at,
                format!("cannot read key file {file}: {e}"),
                Some(format!(
                    "relative paths resolve against the policy file's directory; {KEYGEN}"
                )),
            );
            return;
        }
    };
    if meta.permissions().mode() & 0o077 != 0 {
        cx.push(at, format!("key file {file} is readable by group or others; run: chmod 600 {file}"), Some("protection keys must be private to the proxy's user (in Kubernetes, where Secret files are group-readable under fsGroup, use { env = \"...\" } set from a secretKeyRef)".into()));
        return;
    }
    match read_small(Path::new(file), 4096).map(|b| String::from_utf8_lossy(&b).into_owned()) {
        Ok(text) if is_key(&text) => {}
        Ok(_) => cx.push(
            at,
            format!("key file {file} does not hold a base64-encoded 32-byte key on one line"),
            Some(KEYGEN.into()),
        ),
        Err(e) => cx.push(at, format!("cannot read key file {file}: {e}"), None),
    }
}

fn is_key(text: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .is_ok_and(|k| k.len() == 32)
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}
