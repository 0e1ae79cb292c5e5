//! Fault injection, from `--faults` and from the `x-mock-fault` header.

use std::io::Read;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::{h2c, http1, sse_data, sse_json, start, Answer, Mock};
use crate::mock_provider::MockOptions;

fn faulty(spec: &str) -> MockOptions {
    MockOptions {
        faults: Some(spec.parse().unwrap()),
        ..MockOptions::default()
    }
}

fn chat(stream: bool) -> Value {
    json!({"model": "m", "stream": stream,
        "messages": [{"role": "user", "content": "one two three four five"}]})
}

async fn with_fault(mock: &Mock, spec: &str, stream: bool) -> Answer {
    let headers = [("x-mock-fault", spec)];
    mock.post_with("/v1/chat/completions", &headers, chat(stream))
        .await
}

#[tokio::test]
async fn status_faults_use_each_body_shape() {
    let mock = start(MockOptions::default()).await;
    let answer = with_fault(&mock, "status=500", false).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.json()["error"]["type"], "server_error");

    let answer = with_fault(&mock, "status=529,body=anthropic", false).await;
    assert_eq!(answer.status.as_u16(), 529);
    let body = answer.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "overloaded_error");

    let answer = with_fault(&mock, "status=429;body=gemini;retry_after=2", false).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.header("retry-after"), Some("2"));
    assert_eq!(answer.json()[0]["error"]["status"], "RESOURCE_EXHAUSTED");

    let answer = with_fault(&mock, "status=502;body=html", true).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.header("content-type"), Some("text/html"));
    assert!(answer.text().contains("<title>502 Bad Gateway</title>"));

    let answer = with_fault(&mock, "status=503;body=text", false).await;
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(answer.text().starts_with("upstream error: 503"));

    let answer = with_fault(&mock, "status=504;body=empty", false).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(answer.bytes().is_empty());
    assert_eq!(answer.header("content-type"), None);

    // retry_after alone decorates a normal answer.
    let answer = with_fault(&mock, "retry_after=7", false).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("retry-after"), Some("7"));
    mock.stop().await;
}

#[tokio::test]
async fn bad_fault_header_names_the_item() {
    let mock = start(MockOptions::default()).await;
    let answer = with_fault(&mock, "status=500;colour=red", false).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("`colour=red`"), "{message}");
    mock.stop().await;
}

#[tokio::test]
async fn cut_after_truncates_the_stream() {
    let mock = start(MockOptions::default()).await;
    for client in [http1(), h2c()] {
        let headers = [("x-mock-fault", "cut_after=2")];
        let body = chat(true).to_string();
        let path = "/v1/chat/completions";
        let answer = mock.send(&client, Method::POST, path, &headers, body).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            answer.body.is_err(),
            "{:?}: {:?}",
            answer.version,
            answer.body
        );
    }
    // What arrived before the cut: role chunk and two content deltas, no finish, no [DONE].
    let events = collect_until_error(&mock, "cut_after=2").await;
    assert_eq!(
        sse_data(&events).len(),
        3,
        "{:?}",
        String::from_utf8_lossy(&events)
    );
    // A JSON body is cut after N bytes.
    let answer = with_fault(&mock, "cut_after=10", false).await;
    assert!(answer.body.is_err());
    mock.stop().await;
}

/// Reads frames until the body fails, returning what came before.
async fn collect_until_error(mock: &Mock, spec: &str) -> Vec<u8> {
    use http_body_util::{BodyExt, Full};
    let request = http::Request::post(format!("http://{}/v1/chat/completions", mock.addr))
        .header("x-mock-fault", spec)
        .body(Full::new(Bytes::from(chat(true).to_string())))
        .unwrap();
    let mut body = http1().request(request).await.unwrap().into_body();
    let mut received = Vec::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => received.extend_from_slice(&frame.into_data().unwrap()),
            Some(Err(_)) => return received,
            None => panic!("the body ended cleanly"),
        }
    }
}

#[tokio::test]
async fn end_early_after_ends_without_done() {
    let mock = start(MockOptions::default()).await;
    let answer = with_fault(&mock, "end_early_after=3", true).await;
    let data = sse_data(answer.bytes());
    assert_eq!(data.len(), 4, "{data:?}");
    assert!(!data
        .iter()
        .any(|d| d == "[DONE]" || d.contains("\"finish_reason\":\"stop\"")));
    let answer = with_fault(&mock, "end_early_after=5", false).await;
    assert_eq!(answer.bytes().len(), 5);
    mock.stop().await;
}

#[tokio::test]
async fn every_third_request_fails() {
    let mock = start(faulty("status=503;every=3")).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            mock.post("/v1/chat/completions", chat(false))
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 503, 200, 200, 503]);
    // The header overrides the global spec; `none` turns faults off for one request.
    let answer = with_fault(&mock, "none", false).await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = with_fault(&mock, "status=418;rate=1", false).await;
    assert_eq!(answer.status.as_u16(), 418);
    let answer = with_fault(&mock, "status=418;rate=0", false).await;
    assert_eq!(answer.status, StatusCode::OK);
    mock.stop().await;
}

#[tokio::test]
async fn a_fault_aimed_at_another_mock_is_ignored() {
    let mock = start(MockOptions {
        name: "secondary".to_owned(),
        ..faulty("status=503;every=2")
    })
    .await;
    let answer = with_fault(&mock, "status=500;mock=secondary", false).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    // Aimed elsewhere: as if the header were absent, so `--faults` (every 2nd) applies.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let answer = with_fault(&mock, "status=500;mock=primary", false).await;
        statuses.push(answer.status.as_u16());
    }
    assert_eq!(statuses, [200, 503, 200, 503]);
    // A `--faults` spec aimed at another mock never fires here.
    let other = start(MockOptions {
        name: "secondary".to_owned(),
        ..faulty("status=500;mock=primary")
    })
    .await;
    let answer = other.post("/v1/chat/completions", chat(false)).await;
    assert_eq!(answer.status, StatusCode::OK);
    other.stop().await;
    mock.stop().await;
}

#[tokio::test]
async fn latency_first_byte_and_chunk_delay() {
    let mock = start(MockOptions::default()).await;
    let started = Instant::now();
    let answer = with_fault(&mock, "latency=150ms", false).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let started = Instant::now();
    let request = http::Request::post(format!("http://{}/v1/chat/completions", mock.addr))
        .header("x-mock-fault", "first_byte=300ms")
        .body(http_body_util::Full::new(Bytes::from(
            chat(false).to_string(),
        )))
        .unwrap();
    let response = http1().request(request).await.unwrap();
    let headers_after = started.elapsed();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    assert!(
        headers_after < Duration::from_millis(250),
        "{headers_after:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        serde_json::from_slice::<Value>(&body.to_bytes()).unwrap()["object"],
        "chat.completion"
    );

    let answer = with_fault(&mock, "chunk_delay=40ms", true).await;
    let stamps: Vec<u64> = sse_json(answer.bytes(), true)
        .iter()
        .map(|e| e["mock_ts_us"].as_u64().unwrap())
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[1] - w[0] >= 35_000),
        "{stamps:?}"
    );
    mock.stop().await;
}

#[tokio::test]
async fn disconnect_drops_the_connection() {
    let mock = start(MockOptions::default()).await;
    let request = http::Request::post(format!("http://{}/v1/chat/completions", mock.addr))
        .header("x-mock-fault", "disconnect")
        .body(http_body_util::Full::new(Bytes::from(
            chat(false).to_string(),
        )))
        .unwrap();
    assert!(http1().request(request).await.is_err());
    let stats = mock.get("/__mock/stats").await.json();
    assert_eq!(stats["disconnected"], 1);
    mock.stop().await;
}

#[tokio::test]
async fn gzip_only_when_on_and_accepted() {
    let mock = start(MockOptions::default()).await;
    let gunzip = |bytes: &[u8]| {
        let mut text = String::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    let accept = ("accept-encoding", "gzip, br");
    let fault = ("x-mock-fault", "gzip");
    let answer = mock
        .post_with("/v1/chat/completions", &[accept, fault], chat(false))
        .await;
    assert_eq!(answer.header("content-encoding"), Some("gzip"));
    let body: Value = serde_json::from_str(&gunzip(answer.bytes())).unwrap();
    assert_eq!(body["object"], "chat.completion");

    let answer = mock
        .post_with("/v1/chat/completions", &[accept, fault], chat(true))
        .await;
    assert_eq!(answer.header("content-encoding"), Some("gzip"));
    let text = gunzip(answer.bytes());
    assert_eq!(
        sse_data(text.as_bytes()).last().map(String::as_str),
        Some("[DONE]")
    );

    // Not accepted, or fault off: identity.
    let answer = mock
        .post_with("/v1/chat/completions", &[fault], chat(false))
        .await;
    assert_eq!(answer.header("content-encoding"), None);
    assert_eq!(answer.json()["object"], "chat.completion");
    let answer = mock
        .post_with("/v1/chat/completions", &[accept], chat(false))
        .await;
    assert_eq!(answer.header("content-encoding"), None);
    mock.stop().await;
}
