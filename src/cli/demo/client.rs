//! The demo's HTTPS client. It does what an app with `HTTPS_PROXY` set does: `CONNECT
//! host:443` to the proxy, TLS inside the tunnel trusting the proxy's CA, then one HTTP/1.1
//! request. It can also talk to a mock directly (for its record of what arrived upstream).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Longest a demo request may take (the slowest one fails over once).
const TIMEOUT: Duration = Duration::from_secs(20);

/// A response as the demo app saw it.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status (of the `CONNECT` when the proxy refused the tunnel).
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// `error.code` of an OpenAI-shaped error body, or "".
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A response header as text, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// The app side of the demo.
pub struct Client {
    proxy: SocketAddr,
    tls: tokio_rustls::TlsConnector,
}

impl Client {
    /// A client of the proxy at `proxy` that trusts the certificates in `roots` (PEM files).
    pub fn new(proxy: SocketAddr, roots: &[&Path]) -> Result<Client> {
        let mut store = rustls::RootCertStore::empty();
        for path in roots {
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading {}", path.display()))?
            {
                store.add(cert.with_context(|| format!("parsing {}", path.display()))?)?;
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Client {
            proxy,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// `POST https://{host}{path}` with a JSON body, through the proxy.
    pub async fn post(
        &self,
        host: &str,
        path: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> Result<Answer> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, "Bearer sk-demo-app-key");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        tokio::time::timeout(TIMEOUT, self.through_proxy(host, req))
            .await
            .with_context(|| format!("no answer from {host} within {TIMEOUT:?}"))?
    }

    /// `GET https://{host}{path}` straight to `addr`, not through the proxy.
    pub async fn get_direct(&self, addr: SocketAddr, host: &str, path: &str) -> Result<Answer> {
        let tcp = TcpStream::connect(addr).await?;
        let req = Request::get(path)
            .header(header::HOST, host)
            .body(Full::new(Bytes::new()))?;
        tokio::time::timeout(TIMEOUT, self.over_tls(tcp, host, req))
            .await
            .context("the mock did not answer")?
    }

    async fn through_proxy(&self, host: &str, req: Request<Full<Bytes>>) -> Result<Answer> {
        let tcp = TcpStream::connect(self.proxy)
            .await
            .with_context(|| format!("connecting to the proxy at {}", self.proxy))?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn.with_upgrades());
        let target = format!("{host}:443");
        let connect = Request::connect(target.as_str())
            .header(header::HOST, target.as_str())
            .body(Empty::<Bytes>::new())?;
        let resp = tx.send_request(connect).await?;
        if !resp.status().is_success() {
            // The proxy refused the tunnel: its answer is the error.
            let (parts, body) = resp.into_parts();
            return Ok(Answer {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: body.collect().await?.to_bytes(),
            });
        }
        let tunnel = hyper::upgrade::on(resp).await?;
        self.over_tls(TokioIo::new(tunnel), host, req).await
    }

    async fn over_tls<T>(&self, io: T, host: &str, req: Request<Full<Bytes>>) -> Result<Answer>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let name = ServerName::try_from(host.to_owned())?;
        let tls = self
            .tls
            .connect(name, io)
            .await
            .with_context(|| format!("TLS with {host}"))?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let resp = tx.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.collect().await?.to_bytes(),
        })
    }
}
