//! The client side, by hand: TCP (+ `CONNECT`) + rustls + hyper's `client::conn::http1`,
//! one keep-alive connection per concurrency slot.
//!
//! * direct: TCP + TLS to the mock, trusting the test root;
//! * inspect: TCP to the proxy, `CONNECT host:443`, then TLS with SNI = host trusting the
//!   proxy CA (the proxy's minted leaf);
//! * tunnel: the same `CONNECT`, but the client sees the mock's own certificate;
//! * gateway: plain HTTP to the proxy port, origin-form requests.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Any byte stream a connection can run on.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// How a client reaches the mock.
#[derive(Clone, Debug)]
pub enum Route {
    /// Straight to the mock at `addr`, TLS with SNI `host`.
    Direct {
        /// The mock.
        addr: SocketAddr,
        /// SNI and Host.
        host: String,
    },
    /// Through the proxy's `CONNECT`, TLS inside. `proxy_tls` picks the proxy CA (inspect)
    /// or the test root (tunnel: the mock's certificate comes through).
    Connect {
        /// The proxy.
        proxy: SocketAddr,
        /// CONNECT host (port 443), SNI and Host.
        host: String,
        /// true: trust the proxy CA; false: trust the test root.
        inspect: bool,
    },
    /// Plain HTTP to the proxy port (gateway mode).
    Gateway {
        /// The proxy.
        proxy: SocketAddr,
    },
}

impl Route {
    /// The `Host` header for requests on this route.
    pub fn host_header(&self) -> String {
        match self {
            Route::Direct { host, .. } | Route::Connect { host, .. } => host.clone(),
            Route::Gateway { proxy } => proxy.to_string(),
        }
    }
}

/// The two client TLS configurations.
#[derive(Clone)]
pub struct Tls {
    /// Trusts the test root (direct, tunnel).
    pub test_root: Arc<ClientConfig>,
    /// Trusts the proxy CA (inspect).
    pub proxy_ca: Arc<ClientConfig>,
}

/// A client config trusting the certificates in `pem` only; HTTP/1.1; no resumption, so
/// every new connection pays a full handshake (as the first one to a host does).
pub fn client_config(pem: &[u8]) -> Result<Arc<ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(pem)? {
        roots.add(c)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

fn rustls_pemfile_certs(pem: &[u8]) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject;
    let v: Result<Vec<_>, _> = rustls_pki_types::CertificateDer::pem_slice_iter(pem).collect();
    let v = v.context("parsing PEM certificates")?;
    if v.is_empty() {
        bail!("no certificate in PEM");
    }
    Ok(v)
}

/// TCP to the proxy, `CONNECT host:443`, and the `200` read (nothing beyond it).
pub async fn connect_tunnel(proxy: SocketAddr, host: &str) -> Result<TcpStream> {
    let mut s = TcpStream::connect(proxy).await?;
    s.set_nodelay(true)?;
    let head = format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n");
    s.write_all(head.as_bytes()).await?;
    let mut buf = Vec::with_capacity(128);
    let mut byte = [0u8; 256];
    while !buf.ends_with(b"\r\n\r\n") {
        // The proxy sends nothing after its answer until our ClientHello, so reading
        // whole chunks cannot swallow TLS bytes; an error answer is followed by close.
        let n = s.read(&mut byte).await?;
        if n == 0 {
            bail!(
                "proxy closed during CONNECT: {}",
                String::from_utf8_lossy(&buf)
            );
        }
        buf.extend_from_slice(&byte[..n]);
        if buf.len() > 16 * 1024 {
            bail!("CONNECT answer too long");
        }
    }
    let status_ok = buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200");
    if !status_ok || !buf.ends_with(b"\r\n\r\n") {
        bail!("CONNECT refused: {}", String::from_utf8_lossy(&buf));
    }
    Ok(s)
}

/// A TLS handshake over `io` with SNI `host`.
pub async fn tls_over<S: Io>(io: S, cfg: &Arc<ClientConfig>, host: &str) -> Result<impl Io> {
    let name = ServerName::try_from(host.to_owned())?;
    let c = tokio_rustls::TlsConnector::from(cfg.clone());
    Ok(c.connect(name, io).await?)
}

/// Opens the byte stream of `route` (TCP, CONNECT and TLS as the route needs).
pub async fn open(route: &Route, tls: &Tls) -> Result<Box<dyn Io>> {
    Ok(match route {
        Route::Direct { addr, host } => {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Box::new(tls_over(s, &tls.test_root, host).await?)
        }
        Route::Connect {
            proxy,
            host,
            inspect,
        } => {
            let s = connect_tunnel(*proxy, host).await?;
            let cfg = if *inspect {
                &tls.proxy_ca
            } else {
                &tls.test_root
            };
            Box::new(tls_over(s, cfg, host).await?)
        }
        Route::Gateway { proxy } => {
            let s = TcpStream::connect(proxy).await?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
    })
}

/// An HTTP/1.1 client connection; the connection task runs in the background.
pub async fn handshake(io: Box<dyn Io>) -> Result<SendRequest<Full<Bytes>>> {
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(tx)
}

/// Opens `route` and returns a ready HTTP/1.1 sender.
pub async fn connect(route: &Route, tls: &Tls) -> Result<SendRequest<Full<Bytes>>> {
    handshake(open(route, tls).await?).await
}

/// One request to send repeatedly.
#[derive(Clone, Debug)]
pub struct ReqSpec {
    /// Origin-form path.
    pub path: String,
    /// JSON body.
    pub body: Bytes,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
}

impl ReqSpec {
    /// A `POST` of `body` (JSON) to `path`.
    pub fn post(path: &str, body: serde_json::Value) -> ReqSpec {
        ReqSpec {
            path: path.to_owned(),
            body: Bytes::from(body.to_string()),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, k: &str, v: &str) -> ReqSpec {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }

    /// The request with `Host: host`.
    pub fn build(&self, host: &str) -> Result<Request<Full<Bytes>>> {
        let mut b = Request::post(self.path.as_str())
            .header("host", host)
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-bench-0000")
            .header("content-length", self.body.len());
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        Ok(b.body(Full::new(self.body.clone()))?)
    }
}

/// Sends one request and reads the whole body.
pub async fn exchange(
    tx: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes)> {
    tx.ready().await?;
    let resp: Response<hyper::body::Incoming> = tx.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A plain-HTTP GET (admin port); returns status and body.
pub async fn admin_get(admin: SocketAddr, path: &str) -> Result<(StatusCode, Bytes)> {
    let s = TcpStream::connect(admin).await?;
    let mut tx = handshake(Box::new(s)).await?;
    let req = Request::get(path)
        .header("host", admin.to_string())
        .body(Full::new(Bytes::new()))?;
    exchange(&mut tx, req).await
}
