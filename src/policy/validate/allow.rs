//! Checks of `[[allow]]` entries and `[upstream]`: base URLs, methods, pins, trust roots,
//! per-host:port agreement on mode, pins and roots (TLS is per host and port), and `resolve` overrides.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::endpoint::Endpoint;
use super::Ctx;
use crate::policy::load::read_small;
use crate::policy::locate::FieldPath;
use crate::policy::model::{AllowEntry, Mode, PolicyFile};

const PIN_HINT: &str = "a pin is \"sha256//\" + standard base64 of the 32-byte SHA-256 of a SubjectPublicKeyInfo \
                        (curl --pinnedpubkey format); `llm-egress pin https://HOST` prints the pins of a chain";

/// Checks every `[[allow]]` entry and the `[upstream]` table.
pub(super) fn check(cx: &mut Ctx<'_>, model: &PolicyFile) {
    cx.names("allow", model.allow.iter().map(|e| e.name.as_str()));
    let mut endpoints: Vec<Option<Endpoint>> = Vec::new();
    for (i, entry) in model.allow.iter().enumerate() {
        endpoints.push(entry_checks(cx, i, entry));
    }
    agreement(cx, model, &endpoints);
    upstream(cx, model, &endpoints);
}

fn entry_checks(cx: &mut Ctx<'_>, i: usize, e: &AllowEntry) -> Option<Endpoint> {
    let at = FieldPath::root().key("allow").index(i);
    let endpoint = match Endpoint::parse(&e.base_url) {
        Ok(ep) => Some(ep),
        Err((msg, hint)) => {
            cx.push(at.clone().key("base_url"), msg, Some(hint));
            None
        }
    };
    if let Some(methods) = &e.methods {
        methods_check(cx, &at, methods);
    }
    if e.mode == Mode::Tunnel {
        let why = "a tunnel splices TLS bytes without looking inside";
        if e.pins.is_some() {
            cx.push(
                at.clone().key("pins"),
                "pins on a tunnel entry cannot be checked",
                Some(format!(
                    "{why}, and TLS 1.3 encrypts the certificates; use mode = \"inspect\" to pin"
                )),
            );
        }
        if e.roots.is_some() {
            cx.push(
                at.clone().key("roots"),
                "roots on a tunnel entry are never used",
                Some(format!("{why}: the client verifies the upstream itself")),
            );
        }
        if e.methods.is_some() {
            cx.push(
                at.clone().key("methods"),
                "methods on a tunnel entry cannot be enforced",
                Some(format!("{why}; use mode = \"inspect\" to restrict methods")),
            );
        }
        if let Some(ep) = endpoint.as_ref().filter(|ep| !ep.path.is_empty()) {
            cx.push(
                at.clone().key("base_url"),
                format!(
                    "a tunnel entry allows the whole host, but base_url has the path {:?}",
                    ep.path
                ),
                Some(format!(
                    "{why}; write base_url = \"{}\" or use mode = \"inspect\"",
                    ep.origin()
                )),
            );
        }
    }
    if let Some(pins) = &e.pins {
        if pins.is_empty() {
            cx.push(
                at.clone().key("pins"),
                "pins is empty, so no certificate could ever match",
                Some(
                    "remove `pins` to rely on WebPKI validation alone, or list at least one pin"
                        .into(),
                ),
            );
        }
        for (j, pin) in pins.iter().enumerate() {
            if let Err(msg) = pin_check(pin) {
                cx.push(at.clone().key("pins").index(j), msg, Some(PIN_HINT.into()));
            }
        }
    }
    for (j, file) in e.roots.iter().flatten().enumerate() {
        pem_roots(cx, at.clone().key("roots").index(j), file);
    }
    endpoint
}

fn methods_check(cx: &mut Ctx<'_>, at: &FieldPath, methods: &[String]) {
    if methods.is_empty() {
        cx.push(
            at.clone().key("methods"),
            "methods is empty, so nothing would be allowed",
            Some("remove `methods` to allow every method".into()),
        );
    }
    for (j, m) in methods.iter().enumerate() {
        let path = at.clone().key("methods").index(j);
        let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if m.is_empty() || !m.chars().all(tchar) {
            cx.push(
                path,
                format!("{m:?} is not an HTTP method"),
                Some("e.g. \"GET\", \"POST\"".into()),
            );
        } else if m.chars().any(|c| c.is_ascii_lowercase()) {
            cx.push(
                path,
                format!("method {m:?} is not upper case"),
                Some(format!(
                    "HTTP methods are case-sensitive; write \"{}\"",
                    m.to_ascii_uppercase()
                )),
            );
        }
    }
}

/// `sha256//` + standard base64 of exactly 32 bytes.
pub(super) fn pin_check(pin: &str) -> Result<(), String> {
    let Some(b64) = pin.strip_prefix("sha256//") else {
        return Err(format!("pin {pin:?} does not start with \"sha256//\""));
    };
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(bytes) if bytes.len() == 32 => Ok(()),
        Ok(bytes) => Err(format!("pin {pin:?} is {} bytes, not 32", bytes.len())),
        Err(_) if b64.contains(['-', '_']) => Err(format!(
            "pin {pin:?} is base64url, not standard base64 (+ and /)"
        )),
        Err(e) => Err(format!("pin {pin:?} is not valid base64: {e}")),
    }
}

/// A file of PEM trust roots: it must exist and hold at least one certificate.
pub(super) fn pem_roots(cx: &mut Ctx<'_>, at: FieldPath, file: &str) {
    let bytes = match read_small(Path::new(file), 16 * 1024 * 1024) {
        Ok(b) => b,
        Err(e) => {
            let hint = "relative paths resolve against the directory of the policy file";
            cx.push(at, format!("cannot read {file}: {e}"), Some(hint.into()));
            return;
        }
    };
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    match certs {
        Ok(c) if !c.is_empty() => {}
        Ok(_) => {
            let hint = "expected one or more -----BEGIN CERTIFICATE----- blocks";
            cx.push(
                at,
                format!("{file} holds no PEM certificate"),
                Some(hint.into()),
            );
        }
        Err(e) => cx.push(at, format!("{file} is not a valid PEM file: {e}"), None),
    }
}

/// All entries of one scheme/host/port must agree on mode and pins.
fn agreement(cx: &mut Ctx<'_>, model: &PolicyFile, endpoints: &[Option<Endpoint>]) {
    for (j, ep) in endpoints.iter().enumerate() {
        let Some(ep) = ep else { continue };
        let first = endpoints[..j]
            .iter()
            .position(|o| o.as_ref().is_some_and(|o| o.same_origin(ep)));
        let Some(i) = first else { continue };
        let (a, b) = (&model.allow[i], &model.allow[j]);
        let at = FieldPath::root().key("allow").index(j);
        let origin = ep.origin();
        if a.mode != b.mode {
            cx.push(
                at.clone().key("mode"),
                format!("{origin} is already allowed in mode \"{}\" by [[allow]] \"{}\"", mode_name(a.mode), a.name),
                Some("a host:port is either tunnelled or inspected: give all its entries the same mode".into()),
            );
        } else if pin_set(a) != pin_set(b) {
            cx.push(
                at.key("pins"),
                format!("pins differ from those of [[allow]] \"{}\" for the same {origin}", a.name),
                Some("TLS is per host and port, so all entries of one host:port must list the same pins".into()),
            );
        } else if root_set(a) != root_set(b) {
            cx.push(
                at.key("roots"),
                format!("roots differ from those of [[allow]] \"{}\" for the same {origin}", a.name),
                Some("TLS is per host and port, so all entries of one host:port must list the same roots".into()),
            );
        }
    }
}

fn root_set(e: &AllowEntry) -> BTreeSet<&str> {
    e.roots.iter().flatten().map(String::as_str).collect()
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Inspect => "inspect",
        Mode::Tunnel => "tunnel",
    }
}

fn pin_set(e: &AllowEntry) -> Option<BTreeSet<&str>> {
    e.pins
        .as_ref()
        .map(|p| p.iter().map(String::as_str).collect())
}

fn upstream(cx: &mut Ctx<'_>, model: &PolicyFile, endpoints: &[Option<Endpoint>]) {
    let Some(up) = &model.upstream else { return };
    let at = FieldPath::root().key("upstream");
    for (j, file) in up.extra_roots.iter().enumerate() {
        pem_roots(cx, at.clone().key("extra_roots").index(j), file);
    }
    for (key, value) in &up.resolve {
        let path = at.clone().key("resolve").key(key.clone());
        let hint =
            "resolve = { \"api.openai.com:443\" = \"127.0.0.1:9443\" } (IPv6: \"[::1]:9443\")";
        let Some((host, port)) = split_host_port(key) else {
            cx.push(
                path,
                format!("resolve key {key:?} is not host:port"),
                Some(hint.into()),
            );
            continue;
        };
        if value.parse::<SocketAddr>().is_err() {
            cx.push(
                path,
                format!("resolve target {value:?} is not ip:port"),
                Some(hint.into()),
            );
            continue;
        }
        let used = endpoints
            .iter()
            .flatten()
            .any(|ep| ep.host == host && ep.port == port);
        if !used {
            cx.push(
                path,
                format!("resolve key {key:?} matches no [[allow]] host and port"),
                Some("check the spelling: an override that matches nothing lets the real host be used".into()),
            );
        }
    }
}

/// `host:port` with a non-zero port; IPv6 hosts in brackets. Hosts are lower-cased.
fn split_host_port(key: &str) -> Option<(String, u16)> {
    let (host, port) = key.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: std::net::Ipv6Addr = v6.parse().ok()?;
        return Some((format!("[{ip}]"), port));
    }
    if host.is_empty() || host.contains(':') {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins() {
        let good = format!(
            "sha256//{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        );
        assert!(pin_check(&good).is_ok());
        assert!(pin_check("sha1//AAAA").unwrap_err().contains("sha256//"));
        assert!(pin_check("sha256//AAAA").unwrap_err().contains("3 bytes"));
        assert!(pin_check("sha256//-_-_").unwrap_err().contains("base64url"));
    }

    #[test]
    fn host_ports() {
        assert_eq!(
            split_host_port("API.x.com:443"),
            Some(("api.x.com".into(), 443))
        );
        assert_eq!(split_host_port("[0:0::1]:443"), Some(("[::1]".into(), 443)));
        assert_eq!(split_host_port("::1:443"), None);
        assert_eq!(split_host_port("x.com"), None);
        assert_eq!(split_host_port("x.com:0"), None);
    }
}
