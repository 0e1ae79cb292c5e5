//! `CONNECT host:port`: deny, splice (tunnel) or terminate TLS and inspect
//! (PRODUCT.md §5 step 1).

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;

use super::cancel::Cancellable;
use super::pipeline::{self, Ctx, Origin};
use super::rewind::Rewind;
use super::url::normalize_host;
use crate::audit::{AuditEvent, EventKind};
use crate::error::{Code, ProxyError};
use crate::policy::model::Mode;
use crate::tls::client::dial;
use crate::App;

/// Handles a CONNECT whose head has been read; `stream` replays any bytes after it.
pub async fn handle(
    app: Arc<App>,
    mut stream: Rewind<TcpStream>,
    target: &str,
    peer: std::net::SocketAddr,
) {
    let Some((host, port)) = parse_target(target) else {
        let e = ProxyError::new(Code::BadRequest, "CONNECT target must be host:port");
        let _ = write_error(&mut stream, &e).await;
        return;
    };
    let policy = app.policy.load_full();
    let audit = |code: Code, detail: Option<serde_json::Value>| {
        audit_block(&app, code, peer, &host, port, detail)
    };
    let Some(rule) = policy.connect_rule(&host, port) else {
        audit(Code::EndpointNotAllowed, None);
        tracing::info!(host, port, "CONNECT refused: not on the allowlist");
        let e = ProxyError::new(
            Code::EndpointNotAllowed,
            format!("{host}:{port} is not on the allowlist"),
        );
        let _ = write_error(&mut stream, &e).await;
        return;
    };
    match rule.mode {
        Mode::Tunnel => {
            let upstream = match dial(&rule.addr, &host, port).await {
                Ok(s) => s,
                Err(e) => {
                    let code = match e {
                        crate::tls::client::ConnectError::PrivateAddress { .. } => {
                            Code::PrivateAddress
                        }
                        _ => Code::UpstreamUnreachable,
                    };
                    if code.is_block() {
                        audit(code, None);
                    }
                    let _ = write_error(&mut stream, &ProxyError::new(code, e.to_string())).await;
                    return;
                }
            };
            drop(policy);
            if stream
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            splice(app, stream, upstream, host, port).await;
        }
        Mode::Inspect => {
            drop(policy);
            if stream
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            inspect(app, stream, host, port, peer).await;
        }
    }
}

async fn inspect(
    app: Arc<App>,
    stream: Rewind<TcpStream>,
    host: String,
    port: u16,
    peer: std::net::SocketAddr,
) {
    let limits = app.policy.load().limits.clone();
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let handshake = async {
        let start = acceptor.await.map_err(|e| e.to_string())?;
        let sni = start.client_hello().server_name().map(|s| s.to_owned());
        if let Some(sni) = &sni {
            let sni_norm = normalize_host(sni).unwrap_or_default();
            if sni_norm != host {
                audit_block(
                    &app,
                    Code::HostMismatch,
                    peer,
                    &host,
                    port,
                    Some(serde_json::json!({ "sni": sni_norm })),
                );
                return Err(format!("SNI {sni_norm} differs from CONNECT host {host}"));
            }
        }
        let cfg = app.ca.server_config(&host).map_err(|e| e.to_string())?;
        start.into_stream(cfg).await.map_err(|e| e.to_string())
    };
    let tls = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!(host, "client TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(host, "client TLS handshake timed out");
            return;
        }
    };
    let ctx = Arc::new(Ctx {
        peer,
        origin: Origin::Inspect { host, port },
    });
    let stopping = app.stopping.clone();
    let svc = service_fn(move |req| pipeline::handle(app.clone(), ctx.clone(), req));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_size.max(8192))
        .writev(false)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.h2_max_header_list_size)
        .max_pending_accept_reset_streams(64)
        .keep_alive_interval(Some(limits.idle_timeout / 2));
    let conn = builder.serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    let res = match Cancellable::new(conn.as_mut(), stopping).await {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        tracing::debug!("inspected connection ended: {e}");
    }
}

/// Audits a refused CONNECT or handshake.
fn audit_block(
    app: &App,
    code: Code,
    peer: std::net::SocketAddr,
    host: &str,
    port: u16,
    detail: Option<serde_json::Value>,
) {
    app.metrics.refused(code);
    app.auditor.record(AuditEvent {
        event: EventKind::Blocked,
        reason: Some(code.as_str().to_owned()),
        client: Some(peer.to_string()),
        method: Some("CONNECT".into()),
        url: None,
        host: Some(host.to_owned()),
        port: Some(port),
        rule: None,
        request_id: None,
        detail,
    });
}

/// Splices bytes both ways until either side closes, the tunnel idles out, or a policy
/// reload no longer allows this host as a tunnel.
async fn splice(
    app: Arc<App>,
    client: Rewind<TcpStream>,
    upstream: TcpStream,
    host: String,
    port: u16,
) {
    let idle = app.policy.load().limits.tunnel_idle_timeout;
    let mut client = client;
    let mut upstream = upstream;
    let mut generation = app.policy_generation.subscribe();
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    let lifetime = tokio::time::sleep(idle * 6);
    tokio::pin!(lifetime);
    loop {
        tokio::select! {
            r = &mut copy => {
                match r {
                    Ok((up, down)) => tracing::debug!(host, port, up, down, "tunnel closed"),
                    Err(e) => tracing::debug!(host, port, "tunnel error: {e}"),
                }
                return;
            }
            _ = &mut lifetime => {
                tracing::debug!(host, port, "tunnel lifetime exceeded");
                return;
            }
            changed = generation.changed() => {
                if changed.is_err() {
                    return;
                }
                let still = app.policy.load().connect_rule(&host, port).is_some_and(|r| r.mode == Mode::Tunnel);
                if !still {
                    tracing::info!(host, port, "closing tunnel: the new policy no longer allows it");
                    return;
                }
            }
        }
    }
}

/// Writes an OpenAI-shaped error as a complete HTTP/1.1 response and closes.
pub async fn write_error<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    e: &ProxyError,
) -> std::io::Result<()> {
    let body = e.body();
    let status = e.code.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-llm-egress-reason: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        e.code.as_str()
    );
    if !e.code.retryable() {
        head.push_str("x-should-retry: false\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await?;
    s.write_all(&body).await?;
    s.shutdown().await
}

/// Parses `host:port` / `[v6]:port` into a normalized host and port.
pub fn parse_target(target: &str) -> Option<(String, u16)> {
    let a: http::uri::Authority = target.parse().ok()?;
    let port = a.port_u16()?;
    let host = normalize_host(a.host()).ok()?;
    Some((host, port))
}
