//! An OpenAI-compatible fake provider with fault injection (`llm-egress mock-provider`).
//!
//! The demo, the end-to-end tests and the benchmarks all talk to this server instead of a real
//! provider, so it has three jobs:
//!
//! * answer like OpenAI, deterministically (`echo: <last user message>`), for chat completions
//!   (JSON and SSE, text and tool calls), legacy completions, embeddings, models and a minimal
//!   Responses API, so a test can check that what went in comes back;
//! * misbehave on demand ([`FaultSpec`]: status codes with other providers' error bodies,
//!   latency, cut or short streams, gzip, dropped connections), globally or per request through
//!   the `x-mock-fault` header;
//! * remember what it received (`GET /__mock/requests`) so a test can check what the proxy
//!   actually sent upstream.
//!
//! It is on the benchmark's hot path, so the fast path (a non-streaming chat completion with no
//! fault) parses the request borrowing from its body, serializes straight into one buffer, and
//! records by moving the request's headers and body into a bounded ring under a short lock.
//!
//! The endpoints and the fault grammar are documented in `docs/mock-provider.md`.

mod body;
mod chat;
mod completions;
mod control;
mod embeddings;
mod errors;
mod faults;
mod handlers;
mod record;
mod responses;
mod sse;
#[cfg(test)]
mod tests;
mod wire;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use faults::{FaultSpec, FaultSpecError};

use handlers::State;

/// How long a new connection may take to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `serve` waits for open connections (streams included) after `shutdown` resolves.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 streams per connection: the proxy's pool may multiplex many streams onto one
/// connection during the 1,000-stream benchmark.
const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// How a mock provider behaves. Plain data; the CLI maps its flags onto it.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Shown in responses' `system_fingerprint` and in the `x-mock-name` header, so a test
    /// behind a failover route can tell which mock answered.
    pub name: String,
    /// Faults applied to every request (the `x-mock-fault` header overrides them).
    pub faults: Option<FaultSpec>,
    /// Pause between two events of a streamed response (the `chunk_delay` fault overrides it).
    pub stream_chunk_delay: Duration,
    /// How many requests `GET /__mock/requests` keeps; the oldest are dropped first.
    pub record_limit: usize,
    /// Whether requests are recorded at all (`--no-record` turns it off for benchmarks;
    /// `GET /__mock/stats` keeps counting).
    pub record: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            name: "mock".to_owned(),
            faults: None,
            stream_chunk_delay: Duration::ZERO,
            record_limit: 1000,
            record: true,
        }
    }
}

/// Why a TLS configuration for the mock could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// The certificate chain file could not be read or parsed as PEM.
    #[error("cannot read certificate chain {}: {source}", path.display())]
    Certificates {
        /// The file given with `--tls-cert`.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate chain file holds no `CERTIFICATE` block.
    #[error("no certificate found in {}", path.display())]
    NoCertificate {
        /// The file given with `--tls-cert`.
        path: PathBuf,
    },
    /// The private key file could not be read or holds no private key.
    #[error("cannot read private key {}: {source}", path.display())]
    PrivateKey {
        /// The file given with `--tls-key`.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refused the pair (for example, the key does not match the certificate).
    #[error("invalid TLS certificate or key: {0}")]
    Tls(#[from] rustls::Error),
}

/// Serves the mock provider on `listener` until `shutdown` resolves.
///
/// With `tls`, every connection is TLS (ALPN `h2` and `http/1.1` are advertised when the given
/// config names no protocol); without it, plain HTTP. HTTP/1.1 and HTTP/2 (including h2c with
/// prior knowledge) are both served. After `shutdown`, no connection is accepted, open ones are
/// asked to finish and are dropped after a few seconds.
///
/// Errors only when `opts.name` cannot be sent as a header value.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    opts: MockOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let state = Arc::new(State::new(opts)?);
    let acceptor = tls.map(|config| TlsAcceptor::from(with_alpn(config)));
    let builder = Arc::new(http_builder());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning; the listener stays.
                    tracing::warn!(error = %err, "mock provider: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(connection(
            stream,
            acceptor.clone(),
            Arc::clone(&builder),
            Arc::clone(&state),
            graceful.watcher(),
        ));
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("mock provider: drain timed out, dropping open connections");
    }
    connections.shutdown().await;
    Ok(())
}

/// Builds a rustls server config from a PEM certificate chain and a PEM private key, with
/// aws-lc-rs as the crypto provider and ALPN `h2`, `http/1.1`.
pub fn tls_config_from_files(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, MockError> {
    let certificates_error = |source| MockError::Certificates {
        path: cert.to_path_buf(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(certificates_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(certificates_error)?;
    if chain.is_empty() {
        return Err(MockError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| MockError::PrivateKey {
        path: key.to_path_buf(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = default_alpn();
    Ok(Arc::new(config))
}

// === connections ===

/// Serves one accepted connection: TLS handshake (bounded in time), then HTTP/1.1 or HTTP/2.
async fn connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    state: Arc<State>,
    watcher: Watcher,
) {
    // Small SSE events must leave at once, not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| handlers::handle(Arc::clone(&state), request));
    let result = match tls {
        None => {
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            watcher.watch(conn).await
        }
        Some(acceptor) => {
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
/// No header-read timeout: with a timer, hyper arms one per request, which cost about 10 µs of
/// CPU per request in the benchmark (a third of the mock's budget). The mock is a test fixture
/// on loopback, not a public server that must shed slow clients.
fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
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

fn default_alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}
