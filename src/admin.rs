//! The admin port: `/healthz`, `/readyz`, `/metrics`, `/api/status`, `/status`.
//! Separate from the proxy port, loopback by default (PRODUCT.md §9.6, §10).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::App;

/// Serves the admin API until `shutdown`.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = shutdown.cancelled() => return,
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(route(&app, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route(app: &App, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n", "text/plain"),
        "/readyz" => {
            let ready = app.ready.load(Ordering::Acquire);
            let body = serde_json::to_string(&serde_json::json!({
                "ready": ready,
                "policy": status_policy(app),
            }))
            .unwrap_or_default();
            let code = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(code, &body, "application/json")
        }
        "/metrics" => {
            let (seq, hash) = app.auditor.head();
            let mut breaker_lines = String::from("# HELP llm_egress_breaker_open Whether a provider's circuit is open (1) or half-open (0.5).\n# TYPE llm_egress_breaker_open gauge\n");
            for (name, st) in app.breakers.snapshot(tokio::time::Instant::now()) {
                let v = match format!("{:?}", st.state).to_lowercase().as_str() {
                    "open" => "1",
                    "halfopen" | "half_open" => "0.5",
                    _ => "0",
                };
                breaker_lines.push_str(&format!(
                    "llm_egress_breaker_open{{provider=\"{name}\"}} {v}\n"
                ));
            }
            breaker_lines.push_str("# HELP llm_egress_worker_connections Open client connections per proxy worker thread.\n# TYPE llm_egress_worker_connections gauge\n");
            for (i, n) in app.workers.snapshot().into_iter().enumerate() {
                breaker_lines.push_str(&format!(
                    "llm_egress_worker_connections{{worker=\"{i}\"}} {n}\n"
                ));
            }
            let extra = breaker_lines + &format!(
                "# HELP llm_egress_audit_head Sequence number of the last audit line (hash in the label).\n# TYPE llm_egress_audit_head gauge\nllm_egress_audit_head{{hash=\"{hash}\"}} {seq}\n# HELP llm_egress_certs_minted Leaf certificates minted since start.\n# TYPE llm_egress_certs_minted counter\nllm_egress_certs_minted_total {}\n",
                app.ca.minted()
            );
            text(
                StatusCode::OK,
                &app.metrics.render(&extra),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        }
        "/api/status" => {
            let body = serde_json::to_string_pretty(&status_json(app)).unwrap_or_default();
            text(StatusCode::OK, &body, "application/json")
        }
        "/status" => text(
            StatusCode::OK,
            &status_html(app),
            "text/html; charset=utf-8",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
    }
}

fn status_policy(app: &App) -> serde_json::Value {
    let p = app.policy.load();
    let loaded: time::OffsetDateTime = p.loaded_at.into();
    serde_json::json!({
        "hash": p.hash,
        "loaded_at": loaded.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "endpoints": p.endpoints.len(),
    })
}

/// The `/api/status` document.
pub fn status_json(app: &App) -> serde_json::Value {
    let (seq, hash) = app.auditor.head();
    let p = app.policy.load();
    let endpoints: Vec<_> = p
        .endpoints
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": &*e.name,
                "url": format!("{}://{}:{}{}", if e.https { "https" } else { "http" }, e.host, e.port, e.prefix),
                "mode": format!("{:?}", e.mode).to_lowercase(),
            })
        })
        .collect();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "ready": app.ready.load(Ordering::Acquire),
        "policy": status_policy(app),
        "endpoints": endpoints,
        "audit": { "seq": seq, "hash": hash, "dropped_allowed": app.auditor.dropped_allowed(), "lost_security": app.auditor.lost_security() },
        "certs_minted": app.ca.minted(),
        "breakers": breakers_json(app),
        "latency_ms": app.latency.snapshot().into_iter().map(|(n, d)| (n, serde_json::json!(d.as_secs_f64() * 1000.0))).collect::<serde_json::Map<_, _>>(),
        "timing": serde_json::to_value(app.timing.watch.snapshot()).unwrap_or_default(),
    })
}

fn breakers_json(app: &App) -> serde_json::Value {
    let now = tokio::time::Instant::now();
    let list: Vec<_> = app
        .breakers
        .snapshot(now)
        .into_iter()
        .map(|(name, s)| {
            serde_json::json!({
                "provider": name,
                "state": format!("{:?}", s.state).to_lowercase(),
                "consecutive_failures": s.consecutive_failures,
                "window_requests": s.window_requests,
                "window_failures": s.window_failures,
                "latency_samples": s.latency_samples,
                "p99_ms": s.p99.map(|d| d.as_secs_f64() * 1000.0),
                "reason": s.reason.map(|r| r.as_str()),
            })
        })
        .collect();
    serde_json::Value::Array(list)
}

fn status_html(app: &App) -> String {
    let s = status_json(app);
    let esc = |v: &serde_json::Value| {
        v.to_string()
            .trim_matches('"')
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut rows = String::new();
    if let Some(eps) = s["endpoints"].as_array() {
        for e in eps {
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&e["name"]),
                esc(&e["url"]),
                esc(&e["mode"])
            ));
        }
    }
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>llm-egress status</title><style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em 1em;text-align:left}}</style></head><body><h1>llm-egress</h1><p>Ready: <b>{}</b> · up {} s · policy <code>{}</code> loaded {}</p><p>Audit head: seq {} <code>{}</code> · certificates minted: {}</p><h2>Allowed endpoints</h2><table><tr><th>name</th><th>base URL</th><th>mode</th></tr>{}</table></body></html>",
        esc(&s["ready"]),
        esc(&s["uptime_seconds"]),
        esc(&s["policy"]["hash"]),
        esc(&s["policy"]["loaded_at"]),
        esc(&s["audit"]["seq"]),
        esc(&s["audit"]["hash"]),
        esc(&s["certs_minted"]),
        rows
    )
}

fn text(code: StatusCode, body: &str, ct: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ct),
    );
    r
}
