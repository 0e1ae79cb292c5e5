//! Recording and the control paths.

use base64::Engine;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::{h2c, http1, start};
use crate::mock_provider::MockOptions;

#[tokio::test]
async fn records_headers_and_bodies() {
    let mock = start(MockOptions::default()).await;
    let secret =
        json!({"model": "m", "messages": [{"role": "user", "content": "alice@example.com"}]});
    let headers = [("authorization", "Bearer sk-test"), ("x-custom", "one")];
    let answer = mock
        .post_with("/v1/chat/completions?trace=1", &headers, secret.clone())
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let binary = vec![0xff, 0xfe, 0x00, 0x41];
    let client = h2c();
    mock.send(&client, Method::POST, "/v1/embeddings", &[], binary.clone())
        .await;
    // Control paths are not recorded.
    mock.get("/__mock/stats").await;

    let records = mock.get("/__mock/requests").await.json();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    let first = &records[0];
    assert_eq!(first["index"], 0);
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/v1/chat/completions?trace=1");
    assert_eq!(first["version"], "HTTP/1.1");
    let pairs = first["headers"].as_array().unwrap();
    assert!(
        pairs.contains(&json!(["authorization", "Bearer sk-test"])),
        "{pairs:?}"
    );
    assert!(pairs.contains(&json!(["x-custom", "one"])));
    let body: Value = serde_json::from_str(first["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, secret);
    assert!(first.get("body_base64").is_none());

    let second = &records[1];
    assert_eq!(second["index"], 1);
    assert_eq!(second["version"], "HTTP/2");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(second["body_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, binary);

    let stats = mock.get("/__mock/stats").await.json();
    assert_eq!(stats["total"], 2);
    assert_eq!(stats["by_path"]["/v1/chat/completions"], 1);
    assert_eq!(stats["by_status"]["200"], 1);
    assert_eq!(stats["by_status"]["400"], 1);

    let cleared = mock
        .send(&http1(), Method::DELETE, "/__mock/requests", &[], "")
        .await;
    assert_eq!(cleared.json()["cleared"], 2);
    assert_eq!(mock.get("/__mock/requests").await.json(), json!([]));
    mock.send(&http1(), Method::DELETE, "/__mock/stats", &[], "")
        .await;
    assert_eq!(mock.get("/__mock/stats").await.json()["total"], 0);
    assert_eq!(mock.get("/__mock/health").await.json()["status"], "ok");
    assert_eq!(mock.get("/__mock/nope").await.status, StatusCode::NOT_FOUND);
    mock.stop().await;
}

#[tokio::test]
async fn recording_is_bounded_and_can_be_off() {
    let mock = start(MockOptions {
        record_limit: 3,
        ..MockOptions::default()
    })
    .await;
    for i in 0..5 {
        mock.post("/v1/embeddings", json!({"input": format!("n{i}")}))
            .await;
    }
    let records = mock.get("/__mock/requests").await.json();
    let indexes: Vec<u64> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [2, 3, 4]);
    assert_eq!(records[0]["body"], r#"{"input":"n2"}"#);
    let stats = mock.get("/__mock/stats").await.json();
    assert_eq!(stats["dropped"], 2);
    assert_eq!(stats["total"], 5);
    mock.stop().await;

    let mock = start(MockOptions {
        record: false,
        ..MockOptions::default()
    })
    .await;
    mock.post("/v1/embeddings", json!({"input": "x"})).await;
    assert_eq!(mock.get("/__mock/requests").await.json(), json!([]));
    assert_eq!(mock.get("/__mock/stats").await.json()["total"], 1);
    mock.stop().await;
}
