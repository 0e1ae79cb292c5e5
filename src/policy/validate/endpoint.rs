//! Parsing a `base_url` into scheme, host, port and a normalized path prefix, refusing
//! anything the request-side normalizer could never match or that hides something
//! (credentials, query, wildcards, dot segments, encoded slashes).

/// A checked `base_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `http` or `https`.
    pub(crate) scheme: String,
    /// Lower-case host name or IP literal (IPv6 in brackets).
    pub(crate) host: String,
    /// Explicit port, or the scheme's default.
    pub(crate) port: u16,
    /// Path prefix without a trailing slash; empty for the whole host.
    pub(crate) path: String,
}

/// Why a `base_url` was refused: a message and a hint.
pub(crate) type Refusal = (String, String);

const EXAMPLE: &str = "write scheme://host[:port][/path], e.g. \"https://api.openai.com/v1\"";

// === impl Endpoint ===

impl Endpoint {
    /// Parses and checks a `base_url`.
    pub(crate) fn parse(raw: &str) -> Result<Endpoint, Refusal> {
        let refuse = |msg: String, hint: &str| Err((msg, hint.to_owned()));
        if raw.trim() != raw || raw.is_empty() {
            return refuse(
                format!("base_url {raw:?} is empty or has spaces around it"),
                EXAMPLE,
            );
        }
        if raw.contains('\\') {
            return refuse(format!("base_url {raw:?} contains a backslash"), EXAMPLE);
        }
        let url = match url::Url::parse(raw) {
            Ok(u) => u,
            Err(url::ParseError::RelativeUrlWithoutBase) => {
                return refuse(
                    format!("base_url {raw:?} has no scheme"),
                    &format!("write the scheme, e.g. \"https://{raw}\""),
                )
            }
            Err(e) => return refuse(format!("base_url {raw:?} is not a valid URL: {e}"), EXAMPLE),
        };
        let scheme = url.scheme().to_owned();
        if scheme != "https" && scheme != "http" {
            return refuse(
                format!("base_url scheme must be https or http, not {scheme:?}"),
                EXAMPLE,
            );
        }
        if !url.username().is_empty() || url.password().is_some() {
            return refuse(
                "base_url must not contain credentials (user:password@)".into(),
                "provider keys go in [[provider]] api_key = { env = \"...\" }",
            );
        }
        if url.query().is_some() || url.fragment().is_some() {
            return refuse(
                format!("base_url {raw:?} has a query or fragment"),
                "a base URL is scheme, host, port and path prefix only; remove everything from '?' or '#'",
            );
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => {
                check_domain(d)?;
                d.to_owned()
            }
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            None => return refuse(format!("base_url {raw:?} has no host"), EXAMPLE),
        };
        let port = match url.port_or_known_default() {
            Some(0) | None => {
                return refuse(
                    format!("base_url {raw:?} has port 0"),
                    "use a port from 1 to 65535, or none for the scheme's default",
                )
            }
            Some(p) => p,
        };
        check_raw_path(raw)?;
        let path = url.path().trim_end_matches('/').to_owned();
        Ok(Endpoint {
            scheme,
            host,
            port,
            path,
        })
    }

    /// Same scheme, host and port.
    pub(crate) fn same_origin(&self, other: &Endpoint) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
    }

    /// Whether `other` falls under this prefix: same origin, and this path is a prefix of
    /// the other's on a segment boundary (`/v1` covers `/v1` and `/v1/x`, not `/v1x`).
    pub(crate) fn covers(&self, other: &Endpoint) -> bool {
        self.same_origin(other)
            && (self.path.is_empty()
                || other.path == self.path
                || other
                    .path
                    .strip_prefix(&self.path)
                    .is_some_and(|rest| rest.starts_with('/')))
    }

    /// `scheme://host:port`, for messages.
    pub(crate) fn origin(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.port)
    }
}

fn check_domain(d: &str) -> Result<(), Refusal> {
    if d.contains('*') {
        return Err((
            format!("base_url host {d:?} has a wildcard"),
            "wildcards are not supported: list each host in its own [[allow]] entry".into(),
        ));
    }
    if d.ends_with('.') {
        return Err((
            format!("base_url host {d:?} ends with a dot"),
            "write the host without the trailing dot".into(),
        ));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if d.len() > 253 || !d.split('.').all(label_ok) {
        return Err((
            format!("base_url host {d:?} is not a valid host name"),
            EXAMPLE.into(),
        ));
    }
    Ok(())
}

/// Checks the path as written (the `url` crate would silently resolve `..`).
fn check_raw_path(raw: &str) -> Result<(), Refusal> {
    let after_scheme = raw.split_once("://").map_or(raw, |(_, r)| r);
    let Some(slash) = after_scheme.find('/') else {
        return Ok(());
    };
    let path = &after_scheme[slash..];
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let hint = "write the path prefix in normalized form, e.g. \"/v1\"";
    for (i, seg) in segments.iter().enumerate() {
        let lower = seg.to_ascii_lowercase();
        let decoded = lower.replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err((
                format!("base_url path {path:?} has a dot segment"),
                hint.into(),
            ));
        }
        if lower.contains("%2f") || lower.contains("%5c") {
            return Err((
                format!("base_url path {path:?} has an encoded slash"),
                "encoded slashes are refused in requests, so a prefix with one can never match"
                    .into(),
            ));
        }
        if seg.is_empty() && i + 1 < segments.len() {
            return Err((
                format!("base_url path {path:?} has an empty segment (//)"),
                hint.into(),
            ));
        }
        check_percent(path, seg)?;
    }
    Ok(())
}

/// Percent escapes must be well-formed and must not encode unreserved characters (requests
/// are normalized to the plain character, so such a prefix would never match).
fn check_percent(path: &str, seg: &str) -> Result<(), Refusal> {
    let bytes = seg.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = seg
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(b) = hex else {
                return Err((
                    format!("base_url path {path:?} has a malformed percent escape"),
                    "a '%' must be followed by two hex digits".into(),
                ));
            };
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                return Err((
                    format!("base_url path {path:?} percent-encodes {:?}", b as char),
                    format!("write {:?} instead of %{:02X}", b as char, b),
                ));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> Endpoint {
        Endpoint::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e:?}"))
    }

    fn refused(raw: &str) -> String {
        match Endpoint::parse(raw) {
            Ok(e) => panic!("{raw} accepted as {e:?}"),
            Err((m, _)) => m,
        }
    }

    #[test]
    fn accepts_normal_urls() {
        let e = ok("https://API.openai.com/v1/");
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("api.openai.com", 443, "/v1")
        );
        assert_eq!(ok("http://localhost:11434/v1").port, 11434);
        assert_eq!(ok("https://[::1]:8443").host, "[::1]");
        assert_eq!(ok("https://api.deepseek.com").path, "");
    }

    #[test]
    fn refuses_what_cannot_match_or_hides_something() {
        assert!(refused("api.openai.com/v1").contains("no scheme"));
        assert!(refused("ftp://x.com").contains("scheme"));
        assert!(refused("https://u:p@x.com").contains("credentials"));
        assert!(refused("https://x.com/v1?a=b").contains("query"));
        assert!(refused("https://x.com/v1#f").contains("fragment"));
        assert!(refused("https://*.x.com").contains("wildcard"));
        assert!(refused("https://x.com./v1").contains("dot"));
        assert!(refused("https://x.com:0").contains("port 0"));
        assert!(refused("https://x.com:70000").contains("not a valid URL"));
        assert!(refused("https://x.com/v1/../admin").contains("dot segment"));
        assert!(refused("https://x.com/%2E%2e/admin").contains("dot segment"));
        assert!(refused("https://x.com/a%2Fb").contains("encoded slash"));
        assert!(refused("https://x.com//v1").contains("empty segment"));
        assert!(refused("https://x.com/%761").contains("percent-encodes"));
        assert!(refused("https://x.com/%zz").contains("malformed"));
        assert!(refused("https://x.com\\v1").contains("backslash"));
        assert!(refused(" https://x.com").contains("spaces"));
    }

    #[test]
    fn covers_on_segment_boundaries() {
        let allow = ok("https://x.com/v1");
        assert!(allow.covers(&ok("https://x.com/v1")));
        assert!(allow.covers(&ok("https://x.com/v1/chat")));
        assert!(!allow.covers(&ok("https://x.com/v1x")));
        assert!(!allow.covers(&ok("https://x.com:444/v1")));
        assert!(!allow.covers(&ok("http://x.com/v1")));
        assert!(ok("https://x.com").covers(&ok("https://x.com:443/anything")));
    }
}
