//! End-to-end tests of the mock provider: `serve` on `127.0.0.1:0`, real hyper clients.

mod api;
mod faults;
mod record;
mod transport;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{serve, MockOptions};

/// A running mock; stopped (and its `serve` result checked) by [`Mock::stop`].
pub(super) struct Mock {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

/// A response as the tests see it; `body` is `Err` when reading the body failed.
#[derive(Debug)]
pub(super) struct Answer {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Result<Bytes, String>,
}

pub(super) type TestClient = Client<HttpConnector, Full<Bytes>>;

/// Starts a plain-HTTP mock.
pub(super) async fn start(opts: MockOptions) -> Mock {
    start_with(opts, None).await
}

/// Starts a mock, with TLS when `tls` is given.
pub(super) async fn start_with(
    opts: MockOptions,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, tls, opts, async move {
        let _ = rx.await;
    }));
    Mock {
        addr,
        shutdown: Some(tx),
        task,
    }
}

/// An HTTP/1.1 client.
pub(super) fn http1() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client with prior knowledge (h2c).
pub(super) fn h2c() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

impl Mock {
    /// Sends a request and reads the whole response.
    pub(super) async fn send(
        &self,
        client: &TestClient,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).unwrap();
        let response = client.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: body
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .map_err(|err| err.to_string()),
        }
    }

    /// POSTs JSON over HTTP/1.1 with extra headers.
    pub(super) async fn post_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        json: Value,
    ) -> Answer {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        let body = json.to_string();
        self.send(&http1(), Method::POST, path, &all, body).await
    }

    /// POSTs JSON over HTTP/1.1.
    pub(super) async fn post(&self, path: &str, json: Value) -> Answer {
        self.post_with(path, &[], json).await
    }

    /// GETs over HTTP/1.1.
    pub(super) async fn get(&self, path: &str) -> Answer {
        self.send(&http1(), Method::GET, path, &[], Bytes::new())
            .await
    }

    /// Stops the mock and checks that `serve` returned `Ok`.
    pub(super) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let result = tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.task)
            .await
            .expect("serve did not return after shutdown")
            .unwrap();
        result.unwrap();
    }
}

impl Answer {
    /// The body, which must have been read completely.
    pub(super) fn bytes(&self) -> &Bytes {
        match &self.body {
            Ok(bytes) => bytes,
            Err(err) => panic!("body failed: {err}"),
        }
    }

    /// The body as text.
    pub(super) fn text(&self) -> &str {
        std::str::from_utf8(self.bytes()).unwrap()
    }

    /// The body as JSON.
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(self.bytes()).unwrap()
    }

    /// A header as text.
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// The `data:` payloads of an SSE body, in order (`[DONE]` included as a string).
pub(super) fn sse_data(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "unterminated: {text:?}"
    );
    text.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            let data = event.lines().find_map(|line| line.strip_prefix("data: "));
            data.unwrap_or_else(|| panic!("no data in {event:?}"))
                .to_owned()
        })
        .collect()
}

/// The JSON events of an SSE body, with `[DONE]` checked to be last (when `done`) and removed.
pub(super) fn sse_json(body: &[u8], done: bool) -> Vec<Value> {
    let mut data = sse_data(body);
    if done {
        assert_eq!(data.pop().as_deref(), Some("[DONE]"));
    }
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    data.iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}
