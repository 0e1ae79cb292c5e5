//! One accepted connection, and the connection-level behaviour a request header cannot
//! reach because it happens before any request: how long the TLS handshake takes and
//! whether the connection is kept alive after a response.
//!
//! Both are set at start ([`MockOptions`](super::MockOptions)) and can be changed while the
//! mock runs (`PUT /__mock/connections?handshake_delay=300ms&keep_alive=false`), so a test
//! can make an endpoint's handshakes suddenly slower — what a new hop on the path looks like
//! to the proxy's timing watch — and force a new connection, hence a new handshake, per
//! request. A change applies to connections accepted afterwards; open ones keep theirs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use rustls::ServerConfig;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::faults::parse_duration;
use super::handlers::{self, State};

/// How long a new connection may take to finish its TLS handshake (after any
/// `handshake_delay`).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 streams per connection: the proxy's pool may multiplex many streams onto one
/// connection during the 1,000-stream benchmark.
const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// The connection settings of one mock, shared by its connections and its control path.
#[derive(Debug)]
pub(crate) struct ConnectionSettings {
    handshake_delay_us: AtomicU64,
    keep_alive: AtomicBool,
}

/// What serving a connection needs besides the shared [`State`]: the TLS acceptors and
/// the HTTP builders for each keep-alive setting.
pub(crate) struct Acceptors {
    /// ALPN `h2` and `http/1.1` (or what the given config names).
    tls: Option<TlsAcceptor>,
    /// ALPN `http/1.1` only, for keep-alive off: HTTP/2 would multiplex every request onto
    /// one connection.
    tls_http1: Option<TlsAcceptor>,
    keep_alive: auto::Builder<TokioExecutor>,
    close: auto::Builder<TokioExecutor>,
}

// === impl ConnectionSettings ===

impl ConnectionSettings {
    /// Settings with these starting values.
    pub(crate) fn new(handshake_delay: Duration, keep_alive: bool) -> Self {
        Self {
            handshake_delay_us: AtomicU64::new(micros(handshake_delay)),
            keep_alive: AtomicBool::new(keep_alive),
        }
    }

    /// The wait before a new TLS connection's handshake is answered.
    pub(crate) fn handshake_delay(&self) -> Duration {
        Duration::from_micros(self.handshake_delay_us.load(Ordering::Relaxed))
    }

    /// Whether new connections are kept alive after a response.
    pub(crate) fn keep_alive(&self) -> bool {
        self.keep_alive.load(Ordering::Relaxed)
    }

    /// Applies a query string such as `handshake_delay=300ms&keep_alive=false`. Every item
    /// is checked before any is applied; the error names the offending item.
    pub(crate) fn update(&self, query: &str) -> Result<(), String> {
        let mut delay = None;
        let mut keep_alive = None;
        for item in query.split('&').filter(|item| !item.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            let bad = |why: String| format!("invalid connection setting `{item}`: {why}");
            match key {
                "handshake_delay" => delay = Some(parse_duration(value).map_err(bad)?),
                "keep_alive" => {
                    keep_alive = Some(match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad(format!("`{value}` is not true or false"))),
                    })
                }
                _ => {
                    return Err(bad(format!(
                        "unknown setting `{key}` (handshake_delay, keep_alive)"
                    )))
                }
            }
        }
        if delay.is_none() && keep_alive.is_none() {
            return Err(
                "nothing to change: give handshake_delay=D and/or keep_alive=true|false \
                 in the query string"
                    .to_owned(),
            );
        }
        if let Some(delay) = delay {
            self.handshake_delay_us
                .store(micros(delay), Ordering::Relaxed);
        }
        if let Some(keep_alive) = keep_alive {
            self.keep_alive.store(keep_alive, Ordering::Relaxed);
        }
        Ok(())
    }

    /// `{"handshake_delay_ms": …, "keep_alive": …}` for the control path.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let ms = self.handshake_delay().as_secs_f64() * 1000.0;
        json!({ "handshake_delay_ms": ms, "keep_alive": self.keep_alive() })
            .to_string()
            .into_bytes()
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

// === impl Acceptors ===

impl Acceptors {
    /// Acceptors for `tls` (plain HTTP without it) and the HTTP builders.
    pub(crate) fn new(tls: Option<Arc<ServerConfig>>) -> Self {
        let tls = tls.map(with_alpn);
        let tls_http1 = tls.as_ref().map(|config| {
            let mut config = ServerConfig::clone(config);
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            TlsAcceptor::from(Arc::new(config))
        });
        Self {
            tls: tls.map(TlsAcceptor::from),
            tls_http1,
            keep_alive: http_builder(true),
            close: http_builder(false),
        }
    }
}

/// Serves one accepted connection: the handshake delay, the TLS handshake (bounded in
/// time), then HTTP/1.1 or HTTP/2 with the keep-alive setting read at accept time.
pub(crate) async fn serve_connection(
    stream: TcpStream,
    acceptors: Arc<Acceptors>,
    state: Arc<State>,
    watcher: Watcher,
) {
    // Small SSE events must leave at once, not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let keep_alive = state.connections.keep_alive();
    let delay = state.connections.handshake_delay();
    let builder = if keep_alive {
        &acceptors.keep_alive
    } else {
        &acceptors.close
    };
    let service = service_fn(move |request| handlers::handle(Arc::clone(&state), request));
    let acceptor = if keep_alive {
        &acceptors.tls
    } else {
        &acceptors.tls_http1
    };
    let result = match acceptor {
        None => {
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            watcher.watch(conn).await
        }
        Some(acceptor) => {
            // The client's ClientHello waits in the socket: to the client, the handshake
            // takes `delay` longer.
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let tls_stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => tls_stream,
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, "mock provider: TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("mock provider: TLS handshake timed out");
                        return;
                    }
                };
            let conn = builder.serve_connection(TokioIo::new(tls_stream), service);
            watcher.watch(conn).await
        }
    };
    if let Err(err) = result {
        // Cut streams and `disconnect` faults end up here on purpose.
        tracing::debug!(error = %err, "mock provider: connection ended with an error");
    }
}

/// The HTTP/1.1 + HTTP/2 server settings shared by every connection.
///
/// Without keep-alive, hyper answers HTTP/1.1 requests with `Connection: close` and closes
/// the connection after the response.
///
/// No header-read timeout: with a timer, hyper arms one per request, which cost about 10 µs of
/// CPU per request in the benchmark (a third of the mock's budget). The mock is a test fixture
/// on loopback, not a public server that must shed slow clients.
fn http_builder(keep_alive: bool) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(keep_alive);
    builder
        .http2()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(64 * 1024);
    builder
}

/// Returns `config`, with ALPN `h2` and `http/1.1` when it names no protocol itself.
fn with_alpn(config: Arc<ServerConfig>) -> Arc<ServerConfig> {
    if !config.alpn_protocols.is_empty() {
        return config;
    }
    let mut config = Arc::unwrap_or_clone(config);
    config.alpn_protocols = default_alpn();
    Arc::new(config)
}

/// ALPN `h2`, then `http/1.1`.
pub(crate) fn default_alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_apply_all_or_nothing() {
        let s = ConnectionSettings::new(Duration::ZERO, true);
        s.update("handshake_delay=300ms&keep_alive=false").unwrap();
        assert_eq!(s.handshake_delay(), Duration::from_millis(300));
        assert!(!s.keep_alive());
        let err = s
            .update("handshake_delay=0ms&keep_alive=maybe")
            .unwrap_err();
        assert!(err.contains("`keep_alive=maybe`"), "{err}");
        assert_eq!(
            s.handshake_delay(),
            Duration::from_millis(300),
            "nothing applied"
        );
        for (query, needle) in [
            ("handshake_delay=5", "not a duration"),
            ("latency=1s", "unknown setting `latency`"),
            ("", "nothing to change"),
        ] {
            let err = s.update(query).unwrap_err();
            assert!(err.contains(needle), "{query}: {err}");
        }
        s.update("keep_alive=true").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap();
        assert_eq!(v, json!({"handshake_delay_ms": 300.0, "keep_alive": true}));
    }
}
