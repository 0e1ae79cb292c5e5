//! The upstream side: a connector that resolves, checks and pins, and the pooled client
//! built on it — per proxy worker, a list of idle HTTP/1.1 connections (the default), or
//! hyper-util's client when `[upstream] http2` lets an upstream choose h2.
//!
//! One [`Connector`] (and so one connection pool) exists per upstream host, port, address
//! policy and TLS-settings hash. The policy compiler reuses the client of the previous
//! policy when that key is unchanged, so pools survive reloads, while a change of roots,
//! pins or `resolve` gets fresh connections: a pooled connection never outlives the
//! policy that vetted it.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::client::conn::http1;
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::verify::{find_pin_mismatch, PinMismatch};
use crate::addr;

/// Error type carried in bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of a request sent upstream: the bytes the proxy read (and maybe rewrote), or
/// the client's body streamed through. An enum, not a boxed body: no allocation and no
/// dynamic call per request.
#[derive(Debug)]
pub enum ReqBody {
    /// Whole; taken when sent.
    Full(Option<Bytes>),
    /// The client's own, frame by frame.
    Stream(hyper::body::Incoming),
}

// === impl ReqBody ===

impl ReqBody {
    /// A whole body (an empty one sends no frame).
    pub fn full(b: Bytes) -> Self {
        Self::Full(Some(b).filter(|b| !b.is_empty()))
    }
}

impl http_body::Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(http_body::Frame::data(b)))),
            Self::Stream(s) => Pin::new(s).poll_frame(cx).map_err(BoxError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.is_none(),
            Self::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Full(b) => {
                http_body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            Self::Stream(s) => s.size_hint(),
        }
    }
}

/// The pooled upstream client of one host. Pools are per proxy worker
/// ([`crate::proxy::workers`]), so a request uses connections driven by its own thread.
#[derive(Clone)]
pub struct UpstreamClient(Arc<Pools>);

enum Pools {
    /// HTTP/1.1 only (the default): each worker keeps its idle connections in a list of
    /// its own — no lock contention, no hashing of a pool key.
    H1 {
        connector: Connector,
        idle: Box<[Mutex<Vec<Idle>>]>,
        /// Whether a worker runs the task that closes its expired idle connections.
        reaping: Box<[AtomicBool]>,
    },
    /// `[upstream] http2 = true`: hyper-util's pooled client, which multiplexes h2.
    Pooled(Box<[Client<Connector, ReqBody>]>),
}

/// An idle HTTP/1.1 connection, ready for a request.
struct Idle {
    tx: http1::SendRequest<ReqBody>,
    since: Instant,
}

impl Idle {
    /// Still open, not taken by another request, and not expired.
    fn usable(&self) -> bool {
        self.tx.is_ready() && self.since.elapsed() < IDLE_TIMEOUT
    }
}

/// How long an idle upstream connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most idle connections a worker keeps per upstream host.
const MAX_IDLE: usize = 256;

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made (the cause is the source).
    #[error("{0}")]
    Connect(#[source] ConnectError),
    /// The HTTP/1.1 exchange failed.
    #[error("{0}")]
    Http(#[source] hyper::Error),
    /// The pooled (h2-capable) client failed.
    #[error("{0}")]
    Pooled(#[source] hyper_util::client::legacy::Error),
}

// === impl UpstreamClient ===

impl UpstreamClient {
    /// Sends `req` (absolute URI) over the calling worker's pool.
    pub async fn request(
        &self,
        req: hyper::Request<ReqBody>,
    ) -> Result<hyper::Response<UpBody>, UpstreamError> {
        let w = crate::proxy::workers::current();
        match &*self.0 {
            Pools::Pooled(c) => c[w % c.len()]
                .request(req)
                .await
                .map(|r| r.map(|inner| UpBody { inner, back: None }))
                .map_err(UpstreamError::Pooled),
            Pools::H1 {
                connector, idle, ..
            } => self.send_h1(connector, w % idle.len(), req).await,
        }
    }

    /// HTTP/1.1: an idle connection of this worker (newest first), else a new one. A
    /// request that a closing idle connection never sent goes out on the next one.
    async fn send_h1(
        &self,
        connector: &Connector,
        w: usize,
        mut req: hyper::Request<ReqBody>,
    ) -> Result<hyper::Response<UpBody>, UpstreamError> {
        let target = origin_form(&mut req);
        loop {
            let (mut tx, reused) = match self.take_idle(w) {
                Some(tx) => (tx, true),
                None => (connect_h1(connector, &target).await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    // Back to the list once the answer has been read (see `UpBody`).
                    let back = Some((self.clone(), w, tx));
                    return Ok(resp.map(|inner| UpBody { inner, back }));
                }
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => req = r,
                    _ => return Err(UpstreamError::Http(e.into_error())),
                },
            }
        }
    }

    fn take_idle(&self, w: usize) -> Option<http1::SendRequest<ReqBody>> {
        let Pools::H1 { idle, .. } = &*self.0 else {
            return None;
        };
        let mut list = idle[w].lock().unwrap_or_else(|p| p.into_inner());
        std::iter::from_fn(|| list.pop())
            .find(Idle::usable)
            .map(|i| i.tx)
    }

    fn put_idle(&self, w: usize, tx: http1::SendRequest<ReqBody>) {
        let Pools::H1 { idle, reaping, .. } = &*self.0 else {
            return;
        };
        {
            let mut list = idle[w].lock().unwrap_or_else(|p| p.into_inner());
            if list.len() < MAX_IDLE {
                list.push(Idle {
                    tx,
                    since: Instant::now(),
                });
            }
        }
        if !reaping[w].swap(true, Ordering::Relaxed) {
            tokio::spawn(reap(Arc::downgrade(&self.0), w));
        }
    }
}

/// An upstream answer's body. Once it has been read to the end (or dropped), its HTTP/1.1
/// connection goes back to the worker's idle list — at once when the connection is already
/// idle, as it usually is by then, else by a task that waits for it.
pub struct UpBody {
    inner: hyper::body::Incoming,
    back: Option<(UpstreamClient, usize, http1::SendRequest<ReqBody>)>,
}

// === impl UpBody ===

impl UpBody {
    fn give_back(&mut self) {
        let Some((client, w, mut tx)) = self.back.take() else {
            return;
        };
        if tx.is_ready() {
            return client.put_idle(w, tx);
        }
        // Not yet idle (or never again): wait for it where a runtime runs; else close it.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if tx.ready().await.is_ok() {
                    client.put_idle(w, tx);
                }
            });
        }
    }
}

impl http_body::Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = r {
            self.give_back();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpBody {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// Closes this worker's idle connections once they are expired (or already closed by the
/// upstream), until the client is dropped (a reload that changed its host's settings).
async fn reap(pools: std::sync::Weak<Pools>, w: usize) {
    let mut tick = tokio::time::interval(IDLE_TIMEOUT / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(pools) = pools.upgrade() else {
            return;
        };
        if let Pools::H1 { idle, .. } = &*pools {
            let mut list = idle[w].lock().unwrap_or_else(|p| p.into_inner());
            list.retain(Idle::usable);
        }
    }
}

/// Turns `req` into origin form for HTTP/1.1 (with a `Host` when it has none) and returns
/// the absolute URI to connect to.
fn origin_form(req: &mut hyper::Request<ReqBody>) -> Uri {
    let uri = std::mem::take(req.uri_mut());
    if let Some(a) = uri.authority() {
        if !req.headers().contains_key(hyper::header::HOST) {
            if let Ok(h) = hyper::header::HeaderValue::from_str(a.as_str()) {
                req.headers_mut().insert(hyper::header::HOST, h);
            }
        }
    }
    *req.uri_mut() = uri
        .path_and_query()
        .cloned()
        .map_or_else(|| Uri::from_static("/"), Uri::from);
    uri
}

/// A new HTTP/1.1 connection to `target`'s host, driven by a task on this worker.
async fn connect_h1(
    connector: &Connector,
    target: &Uri,
) -> Result<http1::SendRequest<ReqBody>, UpstreamError> {
    use tower_service::Service;
    let io = connector
        .clone()
        .call(target.clone())
        .await
        .map_err(UpstreamError::Connect)?;
    let (tx, conn) = http1::Builder::new()
        .writev(false)
        .handshake(io)
        .await
        .map_err(UpstreamError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("upstream connection ended: {e}");
        }
    });
    Ok(tx)
}

/// Why an upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// DNS answered only private addresses.
    #[error("{host} resolves only to private addresses ({addrs}); set allow_private_addresses or a resolve entry")]
    PrivateAddress {
        /// The host.
        host: String,
        /// The refused answers.
        addrs: String,
    },
    /// DNS or TCP failure.
    #[error("cannot reach {host}: {message}")]
    Unreachable {
        /// The host.
        host: String,
        /// What failed.
        message: String,
    },
    /// Connect took longer than the connect timeout.
    #[error("connecting to {0} timed out")]
    Timeout(String),
    /// The upstream chain carries no pinned key.
    #[error("{0}")]
    PinMismatch(PinMismatch),
    /// TLS failed (unknown CA, wrong name, expired, protocol error).
    #[error("TLS with {host} failed: {message}")]
    Tls {
        /// The host.
        host: String,
        /// What failed.
        message: String,
    },
}

/// Where the connector may connect for its host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AddrPolicy {
    /// A `resolve` entry: always this address (the operator's explicit choice).
    Fixed(SocketAddr),
    /// An IP literal or `localhost` the operator wrote in a base URL: trusted as is.
    Trusted,
    /// Ordinary DNS; private answers dropped unless allowed.
    Dns {
        /// `allow_private_addresses`.
        allow_private: bool,
    },
}

/// Observes connection setup times (for the timing watch).
pub trait ConnectObserver: Send + Sync {
    /// A TLS handshake with `host:port` took `elapsed`.
    fn handshake(&self, host: &str, port: u16, elapsed: Duration);
}

struct Inner {
    tls: Option<Arc<ClientConfig>>,
    addr: AddrPolicy,
    connect_timeout: Duration,
    observer: Option<Arc<dyn ConnectObserver>>,
}

/// A hyper-util connector for one upstream: resolve, check, connect, TLS + pins.
#[derive(Clone)]
pub struct Connector(Arc<Inner>);

// === impl Connector ===

impl Connector {
    /// A connector; `tls` is None for `http://` upstreams.
    pub fn new(
        tls: Option<Arc<ClientConfig>>,
        addr: AddrPolicy,
        connect_timeout: Duration,
        observer: Option<Arc<dyn ConnectObserver>>,
    ) -> Self {
        Connector(Arc::new(Inner {
            tls,
            addr,
            connect_timeout,
            observer,
        }))
    }

    /// Builds the pooled client over this connector, one pool per proxy worker: idle
    /// lists of HTTP/1.1 connections, or hyper-util's client when `http2` may be offered.
    pub fn into_client(self, http2: bool) -> UpstreamClient {
        let n = crate::proxy::workers::count();
        if !http2 {
            return UpstreamClient(Arc::new(Pools::H1 {
                connector: self,
                idle: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
                reaping: (0..n).map(|_| AtomicBool::new(false)).collect(),
            }));
        }
        let pools: Vec<_> = (0..n)
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(IDLE_TIMEOUT)
                    .pool_max_idle_per_host(MAX_IDLE)
                    .http2_adaptive_window(true)
                    .build(self.clone())
            })
            .collect();
        UpstreamClient(Arc::new(Pools::Pooled(pools.into())))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_owned();
            let port = uri
                .port_u16()
                .unwrap_or(if inner.tls.is_some() { 443 } else { 80 });
            let timeout = inner.connect_timeout;
            match tokio::time::timeout(timeout, connect(&inner, &host, port)).await {
                Ok(r) => r.map(TokioIo::new),
                Err(_) => Err(ConnectError::Timeout(format!("{host}:{port}"))),
            }
        })
    }
}

/// Resolves `host:port` under `policy`, checks the answers, and connects to the first
/// checked address that answers (the one that was checked: no second lookup).
pub async fn dial(policy: &AddrPolicy, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
    let addrs = resolve(policy, host, port).await?;
    let mut last_err = None;
    for a in &addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(ConnectError::Unreachable {
        host: host.to_owned(),
        message: last_err.map_or_else(|| "no addresses".into(), |e| e.to_string()),
    })
}

async fn connect(inner: &Inner, host: &str, port: u16) -> Result<Stream, ConnectError> {
    let tcp = dial(&inner.addr, host, port).await?;
    let Some(cfg) = &inner.tls else {
        return Ok(Stream::Plain(tcp));
    };
    let name = ServerName::try_from(host.to_owned()).map_err(|e| ConnectError::Tls {
        host: host.to_owned(),
        message: e.to_string(),
    })?;
    let started = Instant::now();
    let tls = tokio_rustls::TlsConnector::from(cfg.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| match find_pin_mismatch(&e) {
            Some(p) => ConnectError::PinMismatch(p),
            None => ConnectError::Tls {
                host: host.to_owned(),
                message: tls_message(&e),
            },
        })?;
    if let Some(obs) = &inner.observer {
        obs.handshake(host, port, started.elapsed());
    }
    Ok(Stream::Tls(Box::new(tls)))
}

fn tls_message(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(r) => r.to_string(),
        None => e.to_string(),
    }
}

/// Resolves and checks the addresses to connect to (the checked ones, no re-resolution).
async fn resolve(
    policy: &AddrPolicy,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, ConnectError> {
    match policy {
        AddrPolicy::Fixed(a) => Ok(vec![*a]),
        AddrPolicy::Trusted | AddrPolicy::Dns { .. } => {
            if let Ok(ip) = host.parse::<IpAddr>() {
                let ok = matches!(
                    policy,
                    AddrPolicy::Trusted
                        | AddrPolicy::Dns {
                            allow_private: true
                        }
                ) || !addr::is_private(ip);
                return if ok {
                    Ok(vec![SocketAddr::new(ip, port)])
                } else {
                    Err(ConnectError::PrivateAddress {
                        host: host.to_owned(),
                        addrs: ip.to_string(),
                    })
                };
            }
            let answers: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| ConnectError::Unreachable {
                    host: host.to_owned(),
                    message: format!("DNS: {e}"),
                })?
                .collect();
            let allow_all = matches!(
                policy,
                AddrPolicy::Trusted
                    | AddrPolicy::Dns {
                        allow_private: true
                    }
            );
            let (ok, refused): (Vec<_>, Vec<_>) = answers
                .into_iter()
                .partition(|a| allow_all || !addr::is_private(a.ip()));
            if ok.is_empty() {
                if refused.is_empty() {
                    return Err(ConnectError::Unreachable {
                        host: host.to_owned(),
                        message: "DNS returned no addresses".into(),
                    });
                }
                return Err(ConnectError::PrivateAddress {
                    host: host.to_owned(),
                    addrs: refused
                        .iter()
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            Ok(ok)
        }
    }
}

/// Finds a [`ConnectError`] in an error's source chain.
pub fn find_connect_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a ConnectError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return Some(c);
        }
        cur = e.source();
    }
    None
}

/// A plain or TLS upstream stream.
pub enum Stream {
    /// `http://` upstream.
    Plain(TcpStream),
    /// `https://` upstream.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(_) => Connected::new(),
            Stream::Tls(t) => {
                if t.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, b),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A client TLS config trusting `verifier`, offering http/1.1, and h2 first when `http2`.
pub fn client_config(
    verifier: Arc<super::verify::PinnedVerifier>,
    http2: bool,
) -> Arc<ClientConfig> {
    let mut cfg = ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Arc::new(cfg)
}
