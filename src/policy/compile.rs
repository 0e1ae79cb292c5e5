//! Compiles a validated [`PolicyFile`] into the structures the request path reads:
//! an index of allowed endpoints by host and port, one upstream client per host (with
//! its TLS settings and address policy already built), and resolved limits. Runs off the
//! request path, at start-up and on each reload; requests only load an `Arc<Policy>`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Method;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use super::model::{Mode, PolicyFile};
use crate::proxy::url::{normalize_host, normalize_path, under_prefix};
use crate::tls::client::{AddrPolicy, ConnectObserver, Connector, UpstreamClient};
use crate::tls::verify::{anchors_with, PinnedVerifier};

/// A name the policy gives (provider, allow entry, model) as a metrics label: shared, so
/// that a request takes it with a reference count instead of a copy.
pub type Label = Arc<str>;

/// Default largest buffered request body.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 32 * 1024 * 1024;

/// A compile failure: the dotted path of the offending key and what is wrong.
#[derive(Debug, Clone)]
pub struct CompileError {
    /// e.g. `allow[2].roots[0]`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// One `[[allow]]` entry, ready to match.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The entry's name (`rule` in audit lines, the provider metrics label of requests
    /// no `[[provider]]` covers).
    pub name: Label,
    /// `https` or `http`.
    pub https: bool,
    /// Normalized host.
    pub host: String,
    /// Port (default by scheme).
    pub port: u16,
    /// Normalized path prefix, no trailing slash (`/` for all).
    pub prefix: String,
    /// Allowed methods; None for all.
    pub methods: Option<Vec<Method>>,
    /// Inspect or tunnel.
    pub mode: Mode,
}

/// Everything about one upstream `scheme://host:port`.
pub struct HostRule {
    /// Inspect or tunnel (all entries of a host agree; `check` enforces it).
    pub mode: Mode,
    /// Indices into [`Policy::endpoints`].
    pub entries: Vec<usize>,
    /// Where to connect for a tunnel (resolved at connect time through `addr`).
    pub addr: AddrPolicy,
    /// The pooled client for inspected requests.
    pub client: UpstreamClient,
    /// Hash of the TLS settings and address policy: the pool key.
    pub client_key: String,
    /// The authority of upstream URLs to this host (made once: a request's URL shares it).
    pub authority: http::uri::Authority,
    /// The `Host` header of HTTP/1.1 requests to this host, made once, when the upstream
    /// speaks only HTTP/1.1 (with `[upstream] http2` the client sets it per connection).
    pub host_header: Option<http::HeaderValue>,
}

/// The outcome of matching a request against the allowlist.
pub enum Verdict<'a> {
    /// Allowed by this entry.
    Allowed(&'a Endpoint, &'a HostRule),
    /// The URL is covered but the method is not.
    MethodNotAllowed(&'a Endpoint),
    /// Nothing covers the URL.
    NotAllowed,
}

/// Resource limits and timeouts (PRODUCT.md §9.3), with defaults filled in.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most concurrent client connections.
    pub max_connections: usize,
    /// Largest request head.
    pub max_header_size: usize,
    /// TLS handshake (and CONNECT head) deadline.
    pub handshake_timeout: Duration,
    /// Deadline to read a request head.
    pub header_read_timeout: Duration,
    /// Keep-alive idle lifetime.
    pub idle_timeout: Duration,
    /// Idle tunnel lifetime.
    pub tunnel_idle_timeout: Duration,
    /// HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 header list size.
    pub h2_max_header_list_size: u32,
    /// Largest body a step may buffer.
    pub max_request_body: u64,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Upstream time to response headers.
    pub first_byte_timeout: Duration,
}

/// A `[[provider]]` as accounting and routing see it.
#[derive(Debug, Clone)]
pub struct ProviderInfo {
    /// Provider name (metrics label).
    pub name: Label,
    /// `https`?
    pub https: bool,
    /// Normalized host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Normalized path prefix of its base URL.
    pub prefix: String,
    /// Its pricing, for cost accounting.
    pub price: Option<crate::openai::usage::Price>,
    /// Whether it accepts `stream_options.include_usage`.
    pub stream_usage: bool,
    /// `Authorization: Bearer <key>` for this provider, when it has an `api_key`.
    pub auth: Option<Secret>,
    /// Circuit-breaker settings (defaults, then the provider's overrides).
    pub breaker: crate::route::BreakerConfig,
}

/// A credential header value that never prints.
#[derive(Clone)]
pub struct Secret(pub http::HeaderValue);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The compiled, immutable policy. Requests hold an `Arc<Policy>` for their lifetime.
pub struct Policy {
    /// Hex SHA-256 of the policy sources.
    pub hash: String,
    /// When this policy was compiled.
    pub loaded_at: SystemTime,
    /// The merged source model.
    pub model: PolicyFile,
    /// All allow entries.
    pub endpoints: Vec<Endpoint>,
    /// `(https, host, port)` → rule.
    pub hosts: HashMap<(bool, String, u16), HostRule>,
    /// Limits with defaults.
    pub limits: Limits,
    /// Log allowed requests too.
    pub log_allowed: bool,
    /// Providers, for pricing and routing.
    pub providers: Vec<ProviderInfo>,
    /// Model names the policy mentions: the only values the `model` metrics label takes.
    pub model_labels: std::collections::HashSet<Label>,
    /// Tool-call validation settings, when enabled.
    pub tool_calls: Option<super::model::ToolCallsSection>,
    /// Prompt protection, when `mode = "tokenize"`.
    pub protector: Option<Arc<crate::protect::Protector>>,
    /// A route matches on prompt size, so finding a route needs a prompt estimate.
    pub routes_match_prompt_size: bool,
}

// === impl Policy ===

impl Policy {
    /// Compiles `model`. `prev` lends its upstream clients where the key is unchanged so
    /// connection pools survive reloads.
    pub fn compile(
        model: PolicyFile,
        hash: String,
        prev: Option<&Policy>,
        observer: Option<Arc<dyn ConnectObserver>>,
    ) -> Result<Policy, CompileError> {
        let limits = limits(&model);
        let upstream = model.upstream.clone().unwrap_or_default();
        let extra_roots = read_roots(&upstream.extra_roots, "upstream.extra_roots")?;
        let mut resolve = HashMap::new();
        for (k, v) in &upstream.resolve {
            let addr: SocketAddr = v.parse().map_err(|_| {
                err(
                    format!("upstream.resolve.{k}"),
                    format!("{v:?} is not an address:port"),
                )
            })?;
            resolve.insert(k.to_ascii_lowercase().replace(['[', ']'], ""), addr);
        }
        let mut endpoints = Vec::new();
        let mut hosts: HashMap<(bool, String, u16), HostRule> = HashMap::new();
        for (i, a) in model.allow.iter().enumerate() {
            let path = format!("allow[{i}]");
            let url = url::Url::parse(&a.base_url)
                .map_err(|e| err(format!("{path}.base_url"), e.to_string()))?;
            let https = match url.scheme() {
                "https" => true,
                "http" => false,
                s => {
                    return Err(err(
                        format!("{path}.base_url"),
                        format!("unsupported scheme {s:?}"),
                    ))
                }
            };
            let host = normalize_host(url.host_str().unwrap_or_default())
                .map_err(|e| err(format!("{path}.base_url"), e.to_string()))?;
            let port = url
                .port_or_known_default()
                .unwrap_or(if https { 443 } else { 80 });
            let mut prefix = normalize_path(url.path())
                .map_err(|e| err(format!("{path}.base_url"), e.to_string()))?
                .into_owned();
            while prefix.len() > 1 && prefix.ends_with('/') {
                prefix.pop();
            }
            let methods = match &a.methods {
                None => None,
                Some(ms) => Some(
                    ms.iter()
                        .map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| err(format!("{path}.methods"), e.to_string()))?,
                ),
            };
            let key = (https, host.clone(), port);
            if !hosts.contains_key(&key) {
                let pins: Vec<[u8; 32]> = a
                    .pins
                    .iter()
                    .flatten()
                    .map(|p| {
                        crate::tls::parse_pin(p).ok_or_else(|| {
                            err(
                                format!("{path}.pins"),
                                format!("{p:?} is not sha256//BASE64 of 32 bytes"),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let mut roots = extra_roots.clone();
                roots.extend(read_roots(
                    a.roots.as_deref().unwrap_or_default(),
                    &format!("{path}.roots"),
                )?);
                let addr = match resolve.get(&format!("{host}:{port}")) {
                    Some(a) => AddrPolicy::Fixed(*a),
                    None if host == "localhost" || host.parse::<IpAddr>().is_ok() => {
                        AddrPolicy::Trusted
                    }
                    None => AddrPolicy::Dns {
                        allow_private: upstream.allow_private_addresses,
                    },
                };
                let client_key = client_key(
                    https,
                    &roots,
                    &pins,
                    &addr,
                    limits.connect_timeout,
                    upstream.http2,
                );
                let client = match prev
                    .and_then(|p| p.hosts.get(&key))
                    .filter(|r| r.client_key == client_key)
                {
                    Some(r) => r.client.clone(),
                    None => {
                        let tls = if https {
                            let anchors = anchors_with(&roots)
                                .map_err(|e| err(format!("{path}.roots"), format!("{e:?}")))?;
                            Some(crate::tls::client::client_config(
                                Arc::new(PinnedVerifier::new(anchors, pins)),
                                upstream.http2,
                            ))
                        } else {
                            None
                        };
                        Connector::new(tls, addr.clone(), limits.connect_timeout, observer.clone())
                            .into_client(upstream.http2)
                    }
                };
                // One buffer shared by the URI authority and the Host header: each request's
                // copy of either is a reference count.
                let shared =
                    bytes::Bytes::from_owner(crate::proxy::url::authority(https, &host, port));
                let authority = http::uri::Authority::from_maybe_shared(shared.clone())
                    .map_err(|e| err(format!("{path}.base_url"), e.to_string()))?;
                hosts.insert(
                    key.clone(),
                    HostRule {
                        mode: a.mode,
                        entries: Vec::new(),
                        addr,
                        client,
                        client_key,
                        authority,
                        host_header: match upstream.http2 {
                            true => None,
                            false => http::HeaderValue::from_maybe_shared(shared).ok(),
                        },
                    },
                );
            }
            if let Some(rule) = hosts.get_mut(&key) {
                rule.entries.push(endpoints.len());
            }
            endpoints.push(Endpoint {
                name: Label::from(a.name.as_str()),
                https,
                host,
                port,
                prefix,
                methods,
                mode: a.mode,
            });
        }
        let log_allowed = model.audit.as_ref().is_some_and(|a| a.log_allowed);
        let providers = providers(&model)?;
        let mut model_labels = std::collections::HashSet::new();
        for r in &model.route {
            let named = r.matcher.model.iter().flatten();
            let targets = r.targets.iter().filter_map(|t| t.model.as_ref());
            model_labels.extend(named.chain(targets).map(|m| Label::from(m.as_str())));
        }
        let tool_calls = model.tool_calls.clone().filter(|t| t.validate);
        let protector = protector(&model)?;
        if crate::tokens::needed(&model) {
            crate::tokens::warm_up();
        }
        let routes_match_prompt_size = crate::tokens::matches_on_prompt_size(&model);
        Ok(Policy {
            hash,
            loaded_at: SystemTime::now(),
            model,
            endpoints,
            hosts,
            limits,
            log_allowed,
            providers,
            model_labels,
            tool_calls,
            protector,
            routes_match_prompt_size,
        })
    }

    /// The provider whose base URL covers this URL, if any.
    pub fn provider_for(
        &self,
        https: bool,
        host: &str,
        port: u16,
        path: &str,
    ) -> Option<&ProviderInfo> {
        self.providers.iter().find(|p| {
            p.https == https && p.port == port && p.host == host && under_prefix(path, &p.prefix)
        })
    }

    /// The `model` metrics label for `model`: itself when the policy names it, else `other`.
    /// Shared, not copied: a label costs a reference count per request.
    pub fn model_label(&self, model: Option<&str>) -> Label {
        static OTHER: std::sync::LazyLock<Label> = std::sync::LazyLock::new(|| "other".into());
        match model.and_then(|m| self.model_labels.get(m)) {
            Some(label) => label.clone(),
            None => OTHER.clone(),
        }
    }

    /// The rule for a `CONNECT host:port` (an `https` host), if any entry covers it.
    pub fn connect_rule(&self, host: &str, port: u16) -> Option<&HostRule> {
        self.hosts.get(&(true, host, port) as &dyn HostKey)
    }

    /// Matches a normalized URL and method against the allowlist.
    pub fn check(
        &self,
        https: bool,
        host: &str,
        port: u16,
        path: &str,
        method: &Method,
    ) -> Verdict<'_> {
        let Some(rule) = self.hosts.get(&(https, host, port) as &dyn HostKey) else {
            return Verdict::NotAllowed;
        };
        let mut method_miss = None;
        for &i in &rule.entries {
            let e = &self.endpoints[i];
            if !under_prefix(path, &e.prefix) {
                continue;
            }
            match &e.methods {
                Some(ms) if !ms.contains(method) => method_miss = Some(e),
                _ => return Verdict::Allowed(e, rule),
            }
        }
        match method_miss {
            Some(e) => Verdict::MethodNotAllowed(e),
            None => Verdict::NotAllowed,
        }
    }
}

/// A key of [`Policy::hosts`], owned or borrowed: the index is looked up with the
/// request's `&str` host, without copying it into a `String` per request.
trait HostKey {
    fn parts(&self) -> (bool, &str, u16);
}

impl HostKey for (bool, String, u16) {
    fn parts(&self) -> (bool, &str, u16) {
        (self.0, &self.1, self.2)
    }
}

impl HostKey for (bool, &str, u16) {
    fn parts(&self) -> (bool, &str, u16) {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn HostKey + 'a> for (bool, String, u16) {
    fn borrow(&self) -> &(dyn HostKey + 'a) {
        self
    }
}

// Hash and Eq agree with the owned tuple's: `(bool, &str, u16)` hashes as
// `(bool, String, u16)` does.
impl std::hash::Hash for dyn HostKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.parts().hash(h);
    }
}

impl PartialEq for dyn HostKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn HostKey + '_ {}

/// Parses a dotted path like `allow[2].roots[0]` into a [`FieldPath`] for the locator.
pub fn field_path(s: &str) -> super::locate::FieldPath {
    let mut fp = super::locate::FieldPath::root();
    for part in s.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            fp = fp.key(&rest[..i]);
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                if let Ok(n) = rest[1..end].parse::<usize>() {
                    fp = fp.index(n);
                }
                rest = &rest[end + 1..];
            }
        } else if !rest.is_empty() {
            fp = fp.key(rest);
        }
    }
    fp
}

fn protector(model: &PolicyFile) -> Result<Option<Arc<crate::protect::Protector>>, CompileError> {
    use super::model::ProtectMode;
    let Some(p) = model
        .protect
        .as_ref()
        .filter(|p| p.mode == ProtectMode::Tokenize)
    else {
        return Ok(None);
    };
    let mut keys = Vec::new();
    for (i, k) in p.keys.iter().enumerate() {
        let key = match (&k.file, &k.env) {
            (Some(f), _) => crate::protect::load_key_file(Path::new(f)),
            (None, Some(e)) => crate::protect::key_from_env(e),
            (None, None) => {
                return Err(err(format!("protect.keys[{i}]"), "a key needs file or env"))
            }
        }
        .map_err(|e| err(format!("protect.keys[{i}]"), e.to_string()))?;
        keys.push((k.id.clone(), key));
    }
    let cfg = crate::protect::ProtectConfig {
        keys,
        detectors: p.detectors.clone(),
        patterns: p
            .patterns
            .iter()
            .map(|x| (x.name.clone(), x.regex.clone()))
            .collect(),
    };
    crate::protect::Protector::new(&cfg)
        .map(|p| Some(Arc::new(p)))
        .map_err(|e| err("protect", e.to_string()))
}

fn providers(model: &PolicyFile) -> Result<Vec<ProviderInfo>, CompileError> {
    let mut out = Vec::new();
    for (i, p) in model.provider.iter().enumerate() {
        let path = format!("provider[{i}].base_url");
        let url = url::Url::parse(&p.base_url).map_err(|e| err(&path, e.to_string()))?;
        let https = url.scheme() == "https";
        let host = normalize_host(url.host_str().unwrap_or_default())
            .map_err(|e| err(&path, e.to_string()))?;
        let mut prefix = normalize_path(url.path())
            .map_err(|e| err(&path, e.to_string()))?
            .into_owned();
        while prefix.len() > 1 && prefix.ends_with('/') {
            prefix.pop();
        }
        let price = p.pricing.as_ref().map(|pr| crate::openai::usage::Price {
            input_per_mtok: pr.input_per_mtok.unwrap_or(0.0),
            output_per_mtok: pr.output_per_mtok.unwrap_or(0.0),
            input_per_mchar: pr.input_per_mchar,
            output_per_mchar: pr.output_per_mchar,
            tiers: pr
                .tiers
                .iter()
                .map(|t| crate::openai::usage::Tier {
                    above_prompt_tokens: t.above_prompt_tokens,
                    input_per_mtok: t.input_per_mtok.unwrap_or(pr.input_per_mtok.unwrap_or(0.0)),
                    output_per_mtok: t
                        .output_per_mtok
                        .unwrap_or(pr.output_per_mtok.unwrap_or(0.0)),
                })
                .collect(),
            committed_discount: pr.committed_discount.unwrap_or(0.0),
        });
        out.push(ProviderInfo {
            name: Label::from(p.name.as_str()),
            https,
            port: url
                .port_or_known_default()
                .unwrap_or(if https { 443 } else { 80 }),
            host,
            prefix,
            price,
            stream_usage: p.stream_usage.unwrap_or(true),
            auth: api_key(p, i)?,
            breaker: crate::route::BreakerConfig::from_model(
                model.breaker.as_ref(),
                p.breaker.as_ref(),
            ),
        });
    }
    Ok(out)
}

fn api_key(p: &super::model::ProviderEntry, i: usize) -> Result<Option<Secret>, CompileError> {
    use super::model::SecretSource;
    let path = format!("provider[{i}].api_key");
    let key = match &p.api_key {
        None => return Ok(None),
        Some(SecretSource::Env { env }) => std::env::var(env)
            .map_err(|_| err(&path, format!("environment variable {env} is not set")))?,
        Some(SecretSource::File { file }) => std::fs::read_to_string(file)
            .map_err(|e| err(&path, format!("{file}: {e}")))?
            .trim()
            .to_owned(),
    };
    let mut v = http::HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| err(&path, "the key contains characters not allowed in a header"))?;
    v.set_sensitive(true);
    Ok(Some(Secret(v)))
}

fn err(path: impl Into<String>, message: impl Into<String>) -> CompileError {
    CompileError {
        path: path.into(),
        message: message.into(),
    }
}

fn read_roots(files: &[String], path: &str) -> Result<Vec<CertificateDer<'static>>, CompileError> {
    use rustls_pki_types::pem::PemObject;
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let certs: Vec<_> = CertificateDer::pem_file_iter(Path::new(f))
            .map_err(|e| err(format!("{path}[{i}]"), format!("{f}: {e}")))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(format!("{path}[{i}]"), format!("{f}: {e}")))?;
        if certs.is_empty() {
            return Err(err(
                format!("{path}[{i}]"),
                format!("{f}: no PEM certificate"),
            ));
        }
        out.extend(certs);
    }
    Ok(out)
}

fn client_key(
    https: bool,
    roots: &[CertificateDer<'_>],
    pins: &[[u8; 32]],
    addr: &AddrPolicy,
    connect: Duration,
    http2: bool,
) -> String {
    let mut h = Sha256::new();
    h.update([u8::from(https)]);
    for r in roots {
        h.update(Sha256::digest(r.as_ref()));
    }
    for p in pins {
        h.update(p);
    }
    h.update(format!("{addr:?}|{connect:?}|{http2}").as_bytes());
    hex::encode(&h.finalize()[..16])
}

fn limits(model: &PolicyFile) -> Limits {
    let l = model.limits.clone().unwrap_or_default();
    let d = |v: Option<super::model::Dur>, def: u64| v.map_or(Duration::from_secs(def), |d| d.0);
    Limits {
        max_connections: l.max_connections.map_or(4096, |v| v as usize),
        max_header_size: l.max_header_size.map_or(64 * 1024, |v| v.0 as usize),
        handshake_timeout: d(l.handshake_timeout, 10),
        header_read_timeout: d(l.header_read_timeout, 30),
        idle_timeout: d(l.idle_timeout, 120),
        tunnel_idle_timeout: d(l.tunnel_idle_timeout, 600),
        h2_max_concurrent_streams: l.h2_max_concurrent_streams.unwrap_or(256),
        h2_max_header_list_size: l.h2_max_header_list_size.map_or(64 * 1024, |v| v.0 as u32),
        max_request_body: model
            .proxy
            .as_ref()
            .and_then(|p| p.max_request_body)
            .map_or(DEFAULT_MAX_REQUEST_BODY, |b| b.0),
        connect_timeout: Duration::from_secs(10),
        first_byte_timeout: Duration::from_secs(600),
    }
}
