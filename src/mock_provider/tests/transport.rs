//! TLS (ALPN h2 and http/1.1), certificate loading and shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{sse_json, start, start_with, Mock};
use crate::mock_provider::{tls_config_from_files, MockError, MockOptions};

const BODY: &str =
    r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"over tls"}]}"#;

/// A self-signed certificate for `localhost`, written as PEM files.
struct TestCert {
    dir: tempfile::TempDir,
    der: rustls::pki_types::CertificateDer<'static>,
}

fn test_cert() -> TestCert {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        certified.signing_key.serialize_pem(),
    )
    .unwrap();
    TestCert {
        dir,
        der: certified.cert.der().clone(),
    }
}

async fn tls_connect(
    mock: &Mock,
    cert: &TestCert,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(mock.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn tls_serves_h2_and_http1_by_alpn() {
    let cert = test_cert();
    let dir = cert.dir.path();
    let config = tls_config_from_files(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    let mock = start_with(MockOptions::default(), Some(config)).await;

    let tls = tls_connect(&mock, &cert, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = Request::post("https://localhost/v1/chat/completions")
        .body(Full::new(Bytes::from(BODY)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let events = sse_json(&body, true);
    let text: String = events[1..events.len() - 1]
        .iter()
        .map(|e| e["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "echo: over tls");

    let tls = tls_connect(&mock, &cert, &[b"http/1.1"]).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get("/__mock/requests")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let records: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(records[0]["version"], "HTTP/2");
    assert_eq!(records[0]["authority"], "localhost");
    mock.stop().await;
}

/// One HTTP/1.1 request on a new TLS connection; returns the response and whether the
/// server closed the connection after it.
async fn tls_http1_request(
    mock: &Mock,
    cert: &TestCert,
    method: http::Method,
    path: &str,
) -> (http::response::Parts, Value, bool) {
    let tls = tls_connect(mock, cert, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    // The connection task ends only when the server closes the connection.
    let closed = tokio::time::timeout(Duration::from_secs(2), conn)
        .await
        .is_ok();
    (parts, serde_json::from_slice(&body).unwrap(), closed)
}

#[tokio::test]
async fn handshake_delay_and_keep_alive_change_at_runtime() {
    let cert = test_cert();
    let dir = cert.dir.path();
    let config = tls_config_from_files(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    let mock = start_with(MockOptions::default(), Some(config)).await;
    let tls = tls_connect(&mock, &cert, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(tls);

    // Clients offering only http/1.1 keep their connection by default.
    let tls = tls_connect(&mock, &cert, &[b"http/1.1"]).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    for _ in 0..2 {
        let request = Request::put("/__mock/connections?handshake_delay=300ms&keep_alive=false")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("connection").is_none());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["handshake_delay_ms"], 300.0);
        assert_eq!(v["keep_alive"], false);
    }
    drop(sender);
    let _ = conn.await;

    // New connections: the handshake waits, HTTP/2 is not offered, and the connection
    // closes after one response.
    let started = std::time::Instant::now();
    let (parts, v, closed) =
        tls_http1_request(&mock, &cert, http::Method::GET, "/__mock/connections").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(parts.headers.get("connection").unwrap(), "close");
    assert!(closed, "the mock closed the connection");
    assert_eq!(
        v,
        serde_json::json!({"handshake_delay_ms": 300.0, "keep_alive": false})
    );

    let (parts, v, _) = tls_http1_request(
        &mock,
        &cert,
        http::Method::PUT,
        "/__mock/connections?keep_alive=true&handshake_delay=soon",
    )
    .await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("`handshake_delay=soon`"), "{message}");
    let (_, v, _) = tls_http1_request(
        &mock,
        &cert,
        http::Method::PUT,
        "/__mock/connections?keep_alive=true&handshake_delay=0ms",
    )
    .await;
    assert_eq!(
        v,
        serde_json::json!({"handshake_delay_ms": 0.0, "keep_alive": true})
    );
    let tls = tls_connect(&mock, &cert, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    mock.stop().await;
}

#[tokio::test]
async fn alpn_is_added_to_a_config_without_it() {
    let cert = test_cert();
    let dir = cert.dir.path();
    let given = tls_config_from_files(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    let mut bare = (*given).clone();
    bare.alpn_protocols.clear();
    let mock = start_with(MockOptions::default(), Some(Arc::new(bare))).await;
    let tls = tls_connect(&mock, &cert, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    mock.stop().await;
}

#[test]
fn certificate_errors_name_the_file() {
    let cert = test_cert();
    let dir = cert.dir.path();
    let missing = dir.join("missing.pem");
    let err = tls_config_from_files(&missing, &dir.join("key.pem")).unwrap_err();
    assert!(matches!(err, MockError::Certificates { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    // A key file holds no certificate; a certificate file holds no key.
    let err = tls_config_from_files(&dir.join("key.pem"), &dir.join("key.pem")).unwrap_err();
    assert!(matches!(err, MockError::NoCertificate { .. }), "{err:?}");
    let err = tls_config_from_files(&dir.join("cert.pem"), &dir.join("cert.pem")).unwrap_err();
    assert!(matches!(err, MockError::PrivateKey { .. }), "{err:?}");
    // A key that does not match the certificate.
    let other = test_cert();
    let err = tls_config_from_files(&dir.join("cert.pem"), &other.dir.path().join("key.pem"))
        .unwrap_err();
    assert!(matches!(err, MockError::Tls(_)), "{err:?}");
}

#[tokio::test]
async fn shutdown_returns_with_a_stream_open() {
    let mock = start(MockOptions {
        stream_chunk_delay: Duration::from_millis(200),
        ..MockOptions::default()
    })
    .await;
    let client = super::http1();
    let request = Request::post(format!("http://{}/v1/chat/completions", mock.addr))
        .body(Full::new(Bytes::from(BODY)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    mock.stop().await;
    assert!(started.elapsed() < Duration::from_secs(8));
    let _ = response.into_body().collect().await;
}

#[tokio::test]
async fn a_name_that_is_no_header_value_is_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let opts = MockOptions {
        name: "bad\nname".to_owned(),
        ..MockOptions::default()
    };
    let err = crate::mock_provider::serve(listener, None, opts, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
