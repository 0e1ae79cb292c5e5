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
//!   the `x-mock-fault` header (which `mock=NAME` aims at one mock); and per connection (slow
//!   TLS handshakes, no keep-alive), also changed at runtime through `/__mock/connections`;
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
mod connection;
mod control;
mod embeddings;
mod errors;
mod faults;
mod handlers;
pub mod pki;
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

use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use faults::{FaultSpec, FaultSpecError};
pub use pki::MockPki;

use connection::{serve_connection, Acceptors};
use handlers::State;

/// How long `serve` waits for open connections (streams included) after `shutdown` resolves.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// How long a new TLS connection waits before its handshake is answered (changeable at
    /// runtime through `PUT /__mock/connections`).
    pub handshake_delay: Duration,
    /// Whether connections are kept alive after a response. Off, TLS offers only ALPN
    /// `http/1.1` and every HTTP/1.1 response closes its connection, so each request costs
    /// the client a new connection and handshake (changeable at runtime too).
    pub keep_alive: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            name: "mock".to_owned(),
            faults: None,
            stream_chunk_delay: Duration::ZERO,
            record_limit: 1000,
            record: true,
            handshake_delay: Duration::ZERO,
            keep_alive: true,
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
/// prior knowledge) are both served; `opts.handshake_delay` and `opts.keep_alive` shape new
/// connections. After `shutdown`, no connection is accepted, open ones are asked to finish
/// and are dropped after a few seconds.
///
/// Errors only when `opts.name` cannot be sent as a header value.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    opts: MockOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    Mock::new(tls, opts)?.serve(listener, shutdown).await;
    Ok(())
}

/// One mock provider that several accept loops can serve at once (see
/// [`serve_on_workers`]): they share what it records, its counters and its runtime
/// settings.
#[derive(Clone)]
pub struct Mock {
    state: Arc<State>,
    acceptors: Arc<Acceptors>,
}

impl Mock {
    /// A mock answering as `opts` says, over TLS when `tls` is given.
    ///
    /// Errors only when `opts.name` cannot be sent as a header value.
    pub fn new(tls: Option<Arc<ServerConfig>>, opts: MockOptions) -> io::Result<Self> {
        Ok(Self {
            state: Arc::new(State::new(opts)?),
            acceptors: Arc::new(Acceptors::new(tls)),
        })
    }

    /// Accepts and serves connections from `listener` until `shutdown` resolves, then
    /// drains them as [`serve`] does.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
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
            connections.spawn(serve_connection(
                stream,
                Arc::clone(&self.acceptors),
                Arc::clone(&self.state),
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
    }
}

/// Serves `mock` on `workers` threads, each running its own single-threaded runtime and
/// accepting from the same `listener` (as the proxy's workers do, and as nginx does with a
/// worker per core): a connection stays on the thread that accepted it, so a busy mock
/// costs no cross-thread wake-ups. Every thread stops accepting once `shutdown` is
/// cancelled and returns after draining its connections; join the handles to wait.
///
/// # Errors
///
/// When the listener cannot be shared or made non-blocking, or a thread cannot start.
pub fn serve_on_workers(
    mock: &Mock,
    listener: &std::net::TcpListener,
    workers: usize,
    shutdown: &tokio_util::sync::CancellationToken,
) -> io::Result<Vec<std::thread::JoinHandle<io::Result<()>>>> {
    listener.set_nonblocking(true)?;
    (0..workers.max(1))
        .map(|i| {
            let (mock, listener, shutdown) =
                (mock.clone(), listener.try_clone()?, shutdown.clone());
            std::thread::Builder::new()
                .name(format!("mock-worker-{i}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        let listener = TcpListener::from_std(listener)?;
                        mock.serve(listener, shutdown.cancelled_owned()).await;
                        Ok(())
                    })
                })
        })
        .collect()
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
    config.alpn_protocols = connection::default_alpn();
    Ok(Arc::new(config))
}
