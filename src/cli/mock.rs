//! `llm-egress mock-provider`: the OpenAI-compatible fake, as a process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::mock_provider::{serve, tls_config_from_files, FaultSpec, MockOptions};

/// Serves the mock provider until SIGINT / SIGTERM. Prints `listening on URL` first.
pub async fn run(
    listen: SocketAddr,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    faults: Option<String>,
    name: String,
    chunk_delay_ms: u64,
    record: bool,
) -> Result<()> {
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
        ..MockOptions::default()
    };
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    serve(listener, tls, opts, shutdown).await?;
    Ok(())
}
