//! `llm-egress mock-provider`: the OpenAI-compatible fake, as a process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::mock_provider::{serve_on_workers, tls_config_from_files, FaultSpec, Mock, MockOptions};

/// The `mock-provider` command line.
pub struct MockArgs {
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS certificate chain (PEM); TLS only when given with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Fault spec for every request.
    pub faults: Option<String>,
    /// Name shown in responses.
    pub name: String,
    /// Pause between streamed events, ms.
    pub chunk_delay_ms: u64,
    /// Record requests.
    pub record: bool,
    /// Wait before answering a new connection's TLS handshake, ms.
    pub handshake_delay_ms: u64,
    /// Keep connections alive after a response.
    pub keep_alive: bool,
    /// Worker threads, each accepting and serving its own connections.
    pub workers: usize,
}

/// Serves the mock provider until SIGINT / SIGTERM. Prints `listening on URL` first.
pub async fn run(args: MockArgs) -> Result<()> {
    let MockArgs {
        listen,
        tls_cert,
        tls_key,
        faults,
        name,
        chunk_delay_ms,
        record,
        handshake_delay_ms,
        keep_alive,
        workers,
    } = args;
    let faults = match faults {
        Some(f) => Some(
            f.parse::<FaultSpec>()
                .map_err(|e| anyhow::anyhow!("--faults: {e}"))?,
        ),
        None => None,
    };
    let tls = match (tls_cert, tls_key) {
        (Some(c), Some(k)) => Some(tls_config_from_files(&c, &k)?),
        _ => None,
    };
    // Before the listening line: a signal sent as soon as it appears must stop the mock
    // cleanly, not kill it with the default action.
    let (mut term, mut int) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "mock-provider {name} listening on {scheme}://{}",
        listener.local_addr()?
    );
    let opts = MockOptions {
        name,
        faults,
        stream_chunk_delay: Duration::from_millis(chunk_delay_ms),
        record,
        handshake_delay: Duration::from_millis(handshake_delay_ms),
        keep_alive,
        ..MockOptions::default()
    };
    let mock = Mock::new(tls, opts)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let threads = serve_on_workers(&mock, &listener.into_std()?, workers, &stop)?;
    // SIGTERM or SIGINT stops it; the handlers were installed before the listening line.
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    stop.cancel();
    tokio::task::spawn_blocking(move || {
        for t in threads {
            match t.join() {
                Ok(result) => result?,
                Err(_) => anyhow::bail!("a mock-provider worker panicked"),
            }
        }
        Ok(())
    })
    .await??;
    Ok(())
}
