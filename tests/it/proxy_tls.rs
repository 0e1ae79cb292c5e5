//! End-to-end TLS behaviour: upstream pins and verification, CONNECT/SNI/Host agreement,
//! leaf minting under concurrency, strict X.509 leaves.

use std::process::Command;
use std::sync::Arc;

use crate::common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn status_of(proxy: &Proxy, url: &str) -> (u16, serde_json::Value) {
    let r = proxy.client().get(url).send().await.expect("send");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn pins_of_leaf_intermediate_and_root_each_serve() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    for pin in [&pki.leaf_pin, &pki.inter_pin, &pki.root_pin] {
        let proxy = Proxy::start(&mock_policy(
            &pki,
            mock.addr,
            &format!("pins = [\"{pin}\"]"),
        ));
        let (s, _) = status_of(&proxy, "https://api.mock.test/v1/models").await;
        assert_eq!(s, 200, "pin {pin}");
    }
}

#[tokio::test]
async fn a_pin_that_matches_nothing_is_refused_with_observed_pins() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let wrong = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let proxy = Proxy::start(&mock_policy(
        &pki,
        mock.addr,
        &format!("pins = [\"{wrong}\"]"),
    ));
    let (s, v) = status_of(&proxy, "https://api.mock.test/v1/models").await;
    assert_eq!(s, 502);
    assert_eq!(v["error"]["code"], "certificate_pin_mismatch");
    let lines = proxy.audit_lines(1, |v| v["reason"] == "certificate_pin_mismatch");
    assert_eq!(lines.len(), 1);
    let observed: Vec<String> = lines[0]["detail"]["observed_pins"]
        .as_array()
        .expect("observed pins")
        .iter()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        observed,
        vec![
            pki.leaf_pin.clone(),
            pki.inter_pin.clone(),
            pki.root_pin.clone()
        ]
    );
    assert!(mock.requests(&pki.root_pem).is_empty());
}

#[tokio::test]
async fn unknown_ca_wrong_name_and_expired_are_tls_errors() {
    let pki = Pki::new(&["api.mock.test"]);
    let (rogue_chain, rogue_key) = pki.rogue_leaf(&["api.mock.test"]);
    let (wrong_chain, wrong_key, _) = pki.leaf("wrong", &["other.test"], 0, 30);
    let (old_chain, old_key, _) = pki.leaf("expired", &["api.mock.test"], -30, -1);
    for (chain, key, what) in [
        (rogue_chain, rogue_key, "unknown CA"),
        (wrong_chain, wrong_key, "wrong name"),
        (old_chain, old_key, "expired"),
    ] {
        let mock = Mock::start_tls(&chain, &key, &[]);
        let proxy = Proxy::start(&mock_policy(&pki, mock.addr, ""));
        let (s, v) = status_of(&proxy, "https://api.mock.test/v1/models").await;
        assert_eq!(s, 502, "{what}");
        assert_eq!(v["error"]["code"], "upstream_tls_error", "{what}: {v}");
        assert_eq!(
            proxy
                .audit_lines(1, |v| v["reason"] == "upstream_tls_error")
                .len(),
            1,
            "{what} audited"
        );
    }
}

/// Opens CONNECT `target` and a TLS session with `sni`, trusting the proxy CA.
async fn tunnel_tls(
    proxy: &Proxy,
    target: &str,
    sni: &str,
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    tunnel_tls_with(proxy, target, sni, client_cfg(proxy, alpn)).await
}

/// A client config trusting the proxy CA, offering `alpn`.
fn client_cfg(proxy: &Proxy, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_pki_types_certs(&proxy.ca()));
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(cfg)
}

/// `CONNECT target`, then TLS with `cfg` (whose session store may resume).
async fn tunnel_tls_with(
    proxy: &Proxy,
    target: &str,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await?;
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).await?;
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).expect("name");
    tokio_rustls::TlsConnector::from(cfg).connect(name, s).await
}

/// One HTTP/1.1 `GET /v1/models` with `Host: host` over an established tunnel.
async fn h1_get_models(
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    host: &str,
) -> http::Response<hyper::body::Incoming> {
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1");
    tokio::spawn(conn);
    let req = http::Request::get("/v1/models")
        .header("host", host)
        .body(Empty::<bytes::Bytes>::new())
        .expect("req");
    send.send_request(req).await.expect("resp")
}

/// TLS session resumption towards clients: a client that reconnects to the same host
/// resumes its session (no new certificate exchange), across proxy workers.
#[tokio::test]
async fn clients_resume_their_tls_sessions() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let proxy = Proxy::start(&mock_policy(&pki, mock.addr, ""));
    let cfg = client_cfg(&proxy, b"http/1.1");
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let tls = tunnel_tls_with(&proxy, "api.mock.test:443", "api.mock.test", cfg.clone())
            .await
            .expect("tls");
        kinds.push(tls.get_ref().1.handshake_kind());
        // One exchange, so the client reads the session tickets sent after the handshake.
        let resp = h1_get_models(tls, "api.mock.test").await;
        assert_eq!(resp.status(), 200);
    }
    use rustls::HandshakeKind::{Full, Resumed};
    assert_eq!(
        kinds,
        [Some(Full), Some(Resumed), Some(Resumed), Some(Resumed)]
    );
}

fn rustls_pki_types_certs(p: &std::path::Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(p)
        .expect("pem")
        .filter_map(Result::ok)
        .collect()
}

#[tokio::test]
async fn sni_that_differs_from_connect_fails_the_handshake_and_is_audited() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let proxy = Proxy::start(&mock_policy(&pki, mock.addr, ""));
    let r = tunnel_tls(&proxy, "api.mock.test:443", "evil.test", b"http/1.1").await;
    assert!(r.is_err(), "handshake must fail");
    let lines = proxy.audit_lines(1, |v| v["reason"] == "host_mismatch");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["detail"]["sni"], "evil.test");
}

#[tokio::test]
async fn host_or_authority_that_differs_gets_421_on_h1_and_h2() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let proxy = Proxy::start(&mock_policy(&pki, mock.addr, ""));
    // HTTP/1.1 with a foreign Host header.
    let tls = tunnel_tls(&proxy, "api.mock.test:443", "api.mock.test", b"http/1.1")
        .await
        .expect("tls");
    let resp = h1_get_models(tls, "other.test").await;
    assert_eq!(resp.status(), 421);
    assert_eq!(resp.headers()["x-llm-egress-reason"], "host_mismatch");
    // HTTP/2 with a foreign :authority.
    let tls = tunnel_tls(&proxy, "api.mock.test:443", "api.mock.test", b"h2")
        .await
        .expect("tls");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2");
    tokio::spawn(conn);
    let req = http::Request::get("https://other.test/v1/models")
        .body(Empty::<bytes::Bytes>::new())
        .expect("req");
    let resp = send.send_request(req).await.expect("resp");
    assert_eq!(resp.status(), 421);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["code"], "host_mismatch");
    // The same connection with the right authority works.
    let req = http::Request::get("https://api.mock.test/v1/models")
        .body(Empty::<bytes::Bytes>::new())
        .expect("req");
    assert_eq!(send.send_request(req).await.expect("resp").status(), 200);
    assert!(mock.requests(&pki.root_pem).len() == 1);
    assert_eq!(
        proxy
            .audit_lines(2, |v| v["reason"] == "host_mismatch")
            .len(),
        2
    );
}

#[tokio::test]
async fn fifty_concurrent_first_requests_mint_one_certificate() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let proxy = Proxy::start(&mock_policy(&pki, mock.addr, ""));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        // A fresh client per task: 50 separate CONNECTs and handshakes.
        let c = proxy.client();
        tasks.push(tokio::spawn(async move {
            c.get("https://api.mock.test/v1/models")
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("send"), 200);
    }
    let (_, metrics) = proxy.admin_get("/metrics");
    assert!(
        metrics.contains("llm_egress_certs_minted_total 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn minted_leaf_passes_strict_x509_checks() {
    let pki = Pki::new(&["api.mock.test"]);
    let mock = Mock::start_tls(&pki.chain, &pki.key, &[]);
    let proxy = Proxy::start(&mock_policy(&pki, mock.addr, ""));
    let tls = tunnel_tls(&proxy, "api.mock.test:443", "api.mock.test", b"http/1.1")
        .await
        .expect("tls");
    let leaf = tls.get_ref().1.peer_certificates().expect("certs")[0].clone();
    let leaf_pem = proxy.dir.path().join("leaf.pem");
    std::fs::write(&leaf_pem, pem(&leaf)).expect("write");
    let out = Command::new("openssl")
        .args([
            "verify",
            "-x509_strict",
            "-purpose",
            "sslserver",
            "-CAfile",
            proxy.ca().to_str().expect("utf8"),
            leaf_pem.to_str().expect("utf8"),
        ])
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Python's ssl with VERIFY_X509_STRICT (the Python 3.13 default) through the proxy.
    let script = format!(
        r#"
import socket, ssl
ctx = ssl.create_default_context(cafile={ca:?})
ctx.verify_flags |= ssl.VERIFY_X509_STRICT
s = socket.create_connection(("127.0.0.1", {port}))
s.sendall(b"CONNECT api.mock.test:443 HTTP/1.1\r\nHost: api.mock.test:443\r\n\r\n")
assert s.recv(1024).startswith(b"HTTP/1.1 200")
t = ctx.wrap_socket(s, server_hostname="api.mock.test")
print("strict ok", t.version())
"#,
        ca = proxy.ca().display().to_string(),
        port = proxy.addr.port()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("strict ok"));
}

fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("b64"))
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}
