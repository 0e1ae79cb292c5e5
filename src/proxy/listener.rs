//! The proxy port: accept under a connection limit, read the first request head with a
//! deadline, then dispatch: `CONNECT` to [`super::connect`], anything else to hyper's
//! HTTP/1.1 server (absolute-form proxy requests and gateway requests).

use std::sync::Arc;

use bytes::BytesMut;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cancel::Cancellable;
use super::connect;
use super::pipeline::{self, Ctx, Origin};
use super::rewind::Rewind;
use super::workers::Spread;
use crate::error::{Code, ProxyError};
use crate::App;

/// Accepts until `stop_accepting` fires; connections are tracked by `tracker` for
/// draining and are cut when `kill` fires (after the drain deadline).
/// `limit` bounds concurrent connections (shared by all workers); `spread` hands each
/// accepted connection to the worker serving the fewest.
pub async fn serve_until(
    listener: TcpListener,
    app: Arc<App>,
    limit: Arc<tokio::sync::Semaphore>,
    stop_accepting: CancellationToken,
    spread: Spread,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                // Another worker took it first (they share the socket).
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop_accepting.cancelled() => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            app.metrics.refused(Code::Overloaded);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        spread.dispatch(Accepted {
            app: app.clone(),
            stream,
            peer,
            permit,
        });
    }
}

/// A connection accepted under the limit, not yet served.
pub struct Accepted {
    app: Arc<App>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
}

// === impl Accepted ===

impl Accepted {
    /// Serves the connection on the calling worker, tracked by `tracker`; `kill` cuts it.
    pub fn serve(self, tracker: &TaskTracker, kill: CancellationToken, done: impl Send + 'static) {
        let Accepted {
            app,
            stream,
            peer,
            permit,
        } = self;
        tracker.spawn(async move {
            // Ends with the connection, or cuts it when `kill` fires.
            let _ = Cancellable::new(Box::pin(connection(app, stream, peer)), kill).await;
            drop((permit, done));
        });
    }

    /// Detaches the socket from this worker's reactor, to be served by another.
    pub fn into_std(self) -> std::io::Result<AcceptedStd> {
        Ok(AcceptedStd {
            app: self.app,
            stream: self.stream.into_std()?,
            peer: self.peer,
            permit: self.permit,
        })
    }
}

/// An [`Accepted`] connection on its way to another worker.
pub struct AcceptedStd {
    app: Arc<App>,
    stream: std::net::TcpStream,
    peer: std::net::SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
}

// === impl AcceptedStd ===

impl AcceptedStd {
    /// Registers the socket with the calling worker's reactor.
    pub fn register(self) -> std::io::Result<Accepted> {
        Ok(Accepted {
            app: self.app,
            stream: TcpStream::from_std(self.stream)?,
            peer: self.peer,
            permit: self.permit,
        })
    }
}

/// Reads a request head (up to the limit, within the deadline) and dispatches it.
async fn connection(app: Arc<App>, mut stream: TcpStream, peer: std::net::SocketAddr) {
    let limits = app.policy.load().limits.clone();
    let mut buf = BytesMut::with_capacity(1024);
    let head = tokio::time::timeout(limits.header_read_timeout, async {
        loop {
            if stream.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let connect = req.method == Some("CONNECT");
                    let target = req.path.unwrap_or_default().to_owned();
                    return Some((connect, target, n));
                }
                Ok(httparse::Status::Partial) if buf.len() < limits.max_header_size => continue,
                // Too large or malformed: let hyper answer it properly below.
                _ => return Some((false, String::new(), 0)),
            }
        }
    })
    .await;
    let Ok(Some((is_connect, target, head_len))) = head else {
        return;
    };
    if is_connect {
        let rest = buf.split_off(head_len).freeze();
        connect::handle(app, Rewind::new(rest, stream), &target, peer).await;
        return;
    }
    plain_http(app, Rewind::new(buf.freeze(), stream), peer).await;
}

/// Serves plain HTTP/1.1: absolute-form proxy requests and origin-form gateway requests.
async fn plain_http(app: Arc<App>, stream: Rewind<TcpStream>, peer: std::net::SocketAddr) {
    let limits = app.policy.load().limits.clone();
    let app_stop = app.stopping.clone();
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move {
            if req.method() == hyper::Method::CONNECT {
                let e = ProxyError::new(
                    Code::BadRequest,
                    "CONNECT must be the first request on a connection",
                );
                return Ok(e
                    .response::<http_body_util::Full<bytes::Bytes>>("")
                    .map(|b| {
                        use http_body_util::BodyExt;
                        b.map_err(|never| match never {}).boxed_unsync()
                    }));
            }
            let origin = if req.uri().scheme().is_some() {
                Origin::Absolute
            } else {
                Origin::Gateway
            };
            pipeline::handle(app, Arc::new(Ctx { peer, origin }), req).await
        }
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_size.max(8192))
        .writev(false)
        .keep_alive(true);
    let conn = b.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let res = match Cancellable::new(conn.as_mut(), app_stop).await {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        tracing::debug!("plain connection ended: {e}");
    }
}
