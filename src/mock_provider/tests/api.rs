//! The OpenAI-shaped answers.

use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::{http1, sse_json, start};
use crate::mock_provider::MockOptions;

fn named(name: &str) -> MockOptions {
    MockOptions {
        name: name.to_owned(),
        ..MockOptions::default()
    }
}

fn chat(content: &str, stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": content},
        ],
    })
}

#[tokio::test]
async fn chat_completion_has_openai_shape_and_echoes() {
    let mock = start(named("alpha")).await;
    let answer = mock
        .post(
            "/v1/chat/completions",
            chat("my card is 4111 1111 1111 1111", false),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("x-mock-name"), Some("alpha"));
    let body = answer.json();
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["system_fingerprint"], "alpha");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(
        choice["message"]["content"],
        "echo: my card is 4111 1111 1111 1111"
    );
    // Words: prompt "be brief" + 7; answer 8.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17})
    );
    mock.stop().await;
}

#[tokio::test]
async fn chat_stream_order_without_usage() {
    let mock = start(MockOptions::default()).await;
    let answer = mock
        .post("/v1/chat/completions", chat("hello big world", true))
        .await;
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    let events = sse_json(answer.bytes(), true);
    assert_eq!(events.len(), 1 + 4 + 1, "{events:?}");
    let delta = |i: usize| &events[i]["choices"][0]["delta"];
    assert_eq!(delta(0)["role"], "assistant");
    let text: String = (1..5)
        .map(|i| delta(i)["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "echo: hello big world");
    assert_eq!(events[5]["choices"][0]["finish_reason"], "stop");
    for event in &events {
        assert_eq!(event["object"], "chat.completion.chunk");
        assert_eq!(event["model"], "gpt-4o-mini");
        assert!(event.get("usage").is_none(), "{event}");
        assert!(event["mock_ts_us"].as_u64().unwrap() > 1_600_000_000_000_000);
    }
    assert!(events[..5]
        .iter()
        .all(|e| e["choices"][0]["finish_reason"].is_null()));
    mock.stop().await;
}

#[tokio::test]
async fn chat_stream_with_include_usage() {
    let mock = start(MockOptions::default()).await;
    let mut request = chat("one two", true);
    request["stream_options"] = json!({"include_usage": true});
    let answer = mock.post("/v1/chat/completions", request).await;
    let events = sse_json(answer.bytes(), true);
    let (last, chunks) = events.split_last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7})
    );
    for chunk in chunks {
        assert!(
            chunk["usage"].is_null() && chunk.get("usage").is_some(),
            "{chunk}"
        );
    }
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    mock.stop().await;
}

fn tool_request(prompt: &str, stream: bool) -> Value {
    json!({
        "model": "gpt-4o",
        "stream": stream,
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
        "messages": [{"role": "user", "content": prompt}],
    })
}

#[tokio::test]
async fn tool_calls_json_and_streamed() {
    let mock = start(MockOptions::default()).await;
    let args = r#"{"city": "Zürich", "unit":"celsius"}"#;
    let prompt = format!("call get_weather {args}");
    let body = mock
        .post("/v1/chat/completions", tool_request(&prompt, false))
        .await
        .json();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], args);

    let answer = mock
        .post("/v1/chat/completions", tool_request(&prompt, true))
        .await;
    let events = sse_json(answer.bytes(), true);
    let deltas: Vec<&Value> = events[1..events.len() - 1]
        .iter()
        .map(|e| &e["choices"][0]["delta"]["tool_calls"][0])
        .collect();
    assert!(deltas.len() > 3, "arguments should span several deltas");
    assert_eq!(deltas[0]["index"], 0);
    assert_eq!(deltas[0]["type"], "function");
    assert_eq!(deltas[0]["function"]["name"], "get_weather");
    assert!(deltas[0]["id"].as_str().unwrap().starts_with("call_"));
    let joined: String = deltas
        .iter()
        .map(|d| d["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(joined, args);
    assert!(deltas[1..]
        .iter()
        .all(|d| d.get("id").is_none() && d["index"] == 0));
    assert_eq!(
        events.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // Without declared tools the same prompt is echoed; after a tool result, the result is.
    let mut plain = tool_request(&prompt, false);
    plain.as_object_mut().unwrap().remove("tools");
    let body = mock.post("/v1/chat/completions", plain).await.json();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("echo: {prompt}")
    );
    let mut after = tool_request(&prompt, false);
    after["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "tool", "tool_call_id": "call_1", "content": "18C"}));
    let body = mock.post("/v1/chat/completions", after).await.json();
    assert_eq!(body["choices"][0]["message"]["content"], "echo: 18C");
    mock.stop().await;
}

#[tokio::test]
async fn legacy_completions() {
    let mock = start(MockOptions::default()).await;
    let request = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "say hi"});
    let body = mock.post("/v1/completions", request).await.json();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "echo: say hi");
    assert_eq!(body["usage"]["total_tokens"], 2 + 3);
    let request = json!({"model": "m", "prompt": "a b", "stream": true,
        "stream_options": {"include_usage": true}});
    let answer = mock.post("/v1/completions", request).await;
    let events = sse_json(answer.bytes(), true);
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "echo: a b");
    assert_eq!(events.last().unwrap()["usage"]["completion_tokens"], 3);
    mock.stop().await;
}

#[tokio::test]
async fn embeddings_models_and_errors() {
    let mock = start(MockOptions::default()).await;
    let request = json!({"model": "text-embedding-3-small", "input": ["a b", "c"]});
    let first = mock.post("/v1/embeddings", request.clone()).await.json();
    assert_eq!(first, mock.post("/v1/embeddings", request).await.json());
    assert_eq!(first["object"], "list");
    assert_eq!(first["data"][1]["index"], 1);
    assert_eq!(first["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(
        first["usage"],
        json!({"prompt_tokens": 3, "total_tokens": 3})
    );
    let request = json!({"input": "c", "encoding_format": "base64", "dimensions": 4});
    let encoded = mock.post("/v1/embeddings", request).await.json();
    let b64 = encoded["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(b64.len(), 24, "4 f32 = 16 bytes");

    let models = mock.get("/v1/models").await.json();
    assert_eq!(models["object"], "list");
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "gpt-4o-mini"));
    let model = mock.get("/v1/models/org/custom-model").await.json();
    assert_eq!(model["id"], "org/custom-model");

    let missing = mock.get("/v2/nothing").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"]["code"], "unknown_url");
    let wrong = mock.get("/v1/chat/completions").await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    let client = http1();
    let bad = mock
        .send(
            &client,
            Method::POST,
            "/v1/chat/completions",
            &[],
            "{not json",
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["error"]["type"], "invalid_request_error");
    // Any base path works, as for providers mounted under /openai/v1 or /v1beta/openai.
    let prefixed = mock
        .post("/v1beta/openai/chat/completions", chat("x", false))
        .await;
    assert_eq!(
        prefixed.json()["choices"][0]["message"]["content"],
        "echo: x"
    );
    mock.stop().await;
}

#[tokio::test]
async fn responses_api_json_and_streamed() {
    let mock = start(MockOptions::default()).await;
    let request = json!({"model": "gpt-4o", "instructions": "be nice",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi there"}]}]});
    let body = mock.post("/v1/responses", request).await.json();
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(body["output"][0]["content"][0]["text"], "echo: hi there");
    assert_eq!(body["usage"]["input_tokens"], 4);

    let request = json!({"model": "gpt-4o", "input": "a b", "stream": true});
    let answer = mock.post("/v1/responses", request).await;
    let text = answer.text();
    assert!(
        text.starts_with("event: response.created\ndata: "),
        "{text}"
    );
    let events = sse_json(answer.bytes(), false);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    let deltas: String = (events.iter())
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "echo: a b");
    let sequence: Vec<u64> = events
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(sequence, (0..events.len() as u64).collect::<Vec<_>>());
    let done = events.last().unwrap();
    assert_eq!(
        done["response"]["output"][0]["content"][0]["text"],
        "echo: a b"
    );
    assert!(events.iter().all(|e| e["mock_ts_us"].is_u64()));
    mock.stop().await;
}
