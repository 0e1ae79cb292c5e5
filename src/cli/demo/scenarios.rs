//! What the demo sends through the proxy, and what each answer must look like. Every
//! scenario checks its own outcome, so the demo doubles as an end-to-end self-test.

use std::net::SocketAddr;

use anyhow::Result;
use serde_json::json;

use super::client::{Answer, Client};

/// The address the demo's prompt-protection scenario puts in its prompt.
pub const EMAIL: &str = "jane.doe@example.com";

/// One line of the demo's table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What is being shown.
    pub scenario: &'static str,
    /// The request, in short.
    pub request: String,
    /// The HTTP status the app got.
    pub status: u16,
    /// `error.code` of the answer, or "-".
    pub code: String,
    /// What happened, in a few words.
    pub outcome: String,
    /// Whether that is what the policy should have done.
    pub ok: bool,
}

/// Where the mocks are, for reading alpha's record.
pub struct Mocks {
    /// The `alpha` mock (healthy, pinned).
    pub alpha: SocketAddr,
}

fn chat(model: &str, prompt: &str) -> serde_json::Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": prompt }] })
}

fn row(scenario: &'static str, request: String, a: &Answer) -> Row {
    let code = a.error_code();
    Row {
        scenario,
        request,
        status: a.status,
        code: if code.is_empty() { "-".into() } else { code },
        outcome: String::new(),
        ok: false,
    }
}

/// A row for an answer that must be the error `code` with `status`.
fn refused(
    scenario: &'static str,
    request: String,
    a: &Answer,
    (status, code): (u16, &str),
    outcome: &str,
) -> Row {
    let mut r = row(scenario, request, a);
    r.ok = a.status == status && r.code == code;
    r.outcome = outcome.into();
    r
}

/// The assistant's text of a chat completion, or "".
fn content(a: &Answer) -> String {
    a.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn usage(a: &Answer) -> String {
    let u = &a.json()["usage"];
    format!(
        "{} + {} tokens",
        u["prompt_tokens"].as_u64().unwrap_or(0),
        u["completion_tokens"].as_u64().unwrap_or(0)
    )
}

/// Runs every scenario in order.
pub async fn run(c: &Client, mocks: &Mocks) -> Result<Vec<Row>> {
    const CHAT: &str = "/v1/chat/completions";
    let mut rows = Vec::new();

    let a = c
        .post(
            "alpha.demo.test",
            CHAT,
            &chat("gpt-4o-mini", "Say hello"),
            &[],
        )
        .await?;
    let mut r = row("allowed", format!("alpha.demo.test{CHAT}"), &a);
    r.ok = a.status == 200 && a.header("x-mock-name") == "alpha";
    r.outcome = format!("answered by alpha: {:?}, {}", content(&a), usage(&a));
    rows.push(r);

    let mut body = chat("gpt-4o-mini", "Count to five");
    body["stream"] = json!(true);
    let a = c.post("alpha.demo.test", CHAT, &body, &[]).await?;
    let text = String::from_utf8_lossy(&a.body);
    let events = text.matches("data: ").count();
    let mut r = row("streamed", format!("alpha.demo.test{CHAT} (stream)"), &a);
    r.ok = a.status == 200 && text.trim_end().ends_with("data: [DONE]");
    r.outcome = format!("{events} SSE events forwarded as they came, usage counted");
    rows.push(r);

    let a = c
        .post(
            "api.unknown-llm.example",
            CHAT,
            &chat("gpt-4o-mini", "hi"),
            &[],
        )
        .await?;
    rows.push(refused(
        "host not allowed",
        format!("api.unknown-llm.example{CHAT}"),
        &a,
        (403, "endpoint_not_allowed"),
        "CONNECT refused before any byte left; audited",
    ));

    let a = c
        .post("alpha.demo.test", "/admin/export", &json!({}), &[])
        .await?;
    rows.push(refused(
        "path not allowed",
        "alpha.demo.test/admin/export".into(),
        &a,
        (403, "endpoint_not_allowed"),
        "outside the allowed base URL /v1; audited",
    ));

    let a = c
        .post("gamma.demo.test", CHAT, &chat("gpt-4o-mini", "hi"), &[])
        .await?;
    rows.push(refused(
        "pin mismatch",
        format!("gamma.demo.test{CHAT}"),
        &a,
        (502, "certificate_pin_mismatch"),
        "upstream chain lacks the pinned key; audited",
    ));

    let a = c
        .post(
            "alpha.demo.test",
            CHAT,
            &chat("demo-smart", "Which provider are you?"),
            &[("x-mock-fault", "status=503;mock=beta")],
        )
        .await?;
    let mut r = row("failover", "model demo-smart (beta answers 503)".into(), &a);
    r.ok = a.status == 200 && a.header("x-mock-name") == "alpha";
    r.outcome = format!(
        "route `smart`: beta failed, answered by {}",
        a.header("x-mock-name")
    );
    rows.push(r);

    rows.push(protected(c, mocks).await?);

    let mut body = chat("gpt-4o-mini", r#"call get_weather {"city": 42}"#);
    body["tools"] = json!([{ "type": "function", "function": {
        "name": "get_weather",
        "parameters": { "type": "object", "properties": { "city": { "type": "string" } },
                        "required": ["city"] } } }]);
    let a = c.post("alpha.demo.test", CHAT, &body, &[]).await?;
    rows.push(refused(
        "invalid tool call",
        "get_weather(city: 42), schema wants a string".into(),
        &a,
        (502, "tool_call_invalid"),
        "the model's call broke its schema: not passed on; audited",
    ));
    Ok(rows)
}

/// A prompt with an email address: the upstream must see a token, the app the address.
async fn protected(c: &Client, mocks: &Mocks) -> Result<Row> {
    let prompt = format!("Send the invoice to {EMAIL}");
    let a = c
        .post(
            "alpha.demo.test",
            "/v1/chat/completions",
            &chat("gpt-4o-mini", &prompt),
            &[],
        )
        .await?;
    let seen = c
        .get_direct(mocks.alpha, "alpha.demo.test", "/__mock/requests")
        .await?;
    let last = seen
        .json()
        .as_array()
        .and_then(|list| list.last().cloned())
        .unwrap_or_default();
    let upstream_body = last["body"].as_str().unwrap_or_default().to_owned();
    let token = upstream_body
        .find("PII.")
        .map(|i| {
            let t: String = upstream_body[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
                .collect();
            format!("{}…", &t[..t.len().min(24)])
        })
        .unwrap_or_default();
    let mut r = row("protected", "a prompt holding an email address".into(), &a);
    r.ok = a.status == 200
        && !token.is_empty()
        && !upstream_body.contains(EMAIL)
        && content(&a).contains(EMAIL);
    r.outcome = format!("upstream saw {token}, the app got the address back");
    Ok(r)
}

/// The rows as an aligned text table.
pub fn table(rows: &[Row]) -> String {
    let head = ["", "scenario", "request", "status", "code", "what happened"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                if r.ok { "ok" } else { "FAIL" }.to_owned(),
                r.scenario.to_owned(),
                r.request.clone(),
                r.status.to_string(),
                r.code.clone(),
                r.outcome.clone(),
            ]
        })
        .collect();
    let mut width = head.map(|h| h.chars().count());
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in c.iter().zip(width).enumerate() {
            if i + 1 == c.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(&head.map(str::to_owned));
    out += &line(&width.map(|w| "-".repeat(w)));
    for c in &cells {
        out += &line(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_columns_and_marks_failures() {
        let rows = vec![
            Row {
                scenario: "allowed",
                request: "a/v1".into(),
                status: 200,
                code: "-".into(),
                outcome: "fine".into(),
                ok: true,
            },
            Row {
                scenario: "pin mismatch",
                request: "gamma/v1/chat".into(),
                status: 502,
                code: "certificate_pin_mismatch".into(),
                outcome: "blocked".into(),
                ok: false,
            },
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        let col = |l: &str| l.find("status").or_else(|| l.find("200")).or(l.find("502"));
        assert_eq!(col(lines[0]), col(lines[2]));
        assert_eq!(col(lines[2]), col(lines[3]));
        assert!(lines[2].starts_with("ok "));
        assert!(lines[3].starts_with("FAIL "));
    }
}
