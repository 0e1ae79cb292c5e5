//! Policies from the templates in `benches/policies/`, and the optional-feature runs: each
//! feature is one policy file added to the base policy; a feature whose policy
//! `llm-egress check` rejects, or whose effect a probe request does not show, is reported
//! "not available" and not measured.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::client::{self, ReqSpec, Route, Tls};
use super::procs::Proxy;

/// The base (full) policy template.
pub const BASE: &str = include_str!("../policies/base.toml");
/// One extra `[[allow]]` per leaf-minting host.
pub const MINT_HOST: &str = include_str!("../policies/mint-host.toml");
/// Reload state A (allows /v2).
pub const RELOAD_ALLOW: &str = include_str!("../policies/reload-allow.toml");
/// Reload state B (blocks /v2).
pub const RELOAD_BLOCK: &str = include_str!("../policies/reload-block.toml");

/// The environment variable the routing feature's provider key comes from.
pub const PROVIDER_KEY_ENV: &str = "LLM_EGRESS_BENCH_PROVIDER_KEY";

/// Replaces each `@NAME@` in `t`.
pub fn fill(t: &str, vars: &[(&str, String)]) -> String {
    let mut s = t.to_owned();
    for (k, v) in vars {
        s = s.replace(&format!("@{k}@"), v);
    }
    s
}

/// An optional feature's run.
pub struct Feature {
    /// Short key (`routing`, ...).
    pub key: &'static str,
    /// For the report.
    pub title: &'static str,
    /// Its policy file.
    pub template: &'static str,
    /// Whether §11's "each optional feature costs ≤ 15 %" applies.
    pub in_target: bool,
}

/// Every feature run, in report order.
pub const FEATURES: [Feature; 4] = [
    Feature {
        key: "routing",
        title: "routing (catch-all route, model rewrite, provider key)",
        template: include_str!("../policies/feature-routing.toml"),
        in_target: true,
    },
    Feature {
        key: "protect",
        title: "protection (tokenize email/phone/card/IBAN/secret)",
        template: include_str!("../policies/feature-protect.toml"),
        in_target: true,
    },
    Feature {
        key: "tools",
        title: "tool validation (validate, reject)",
        template: include_str!("../policies/feature-tools.toml"),
        in_target: true,
    },
    Feature {
        key: "audit",
        title: "audit every allowed request (`log_allowed`)",
        template: include_str!("../policies/feature-audit.toml"),
        in_target: false,
    },
];

/// A small non-streaming chat completion.
pub fn chat(text: &str) -> serde_json::Value {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
    })
}

fn with_tools(text: &str) -> serde_json::Value {
    let mut v = chat(text);
    v["tools"] = serde_json::json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"]
            }
        }
    }]);
    v
}

/// The request measured with and without `feature` (the same request both times).
pub fn request(feature: &str) -> ReqSpec {
    let path = "/v1/chat/completions";
    match feature {
        "protect" => ReqSpec::post(
            path,
            chat("Please draft a reply to alice@example.com about invoice 1042"),
        ),
        "tools" => ReqSpec::post(path, with_tools("call get_weather {\"city\":\"Paris\"}")),
        _ => ReqSpec::post(path, chat("hello")),
    }
}

/// The plain chat request of section 1, with a system message of `prompt_bytes` bytes of
/// ordinary prose first when asked for (the mock echoes only the last user message, so
/// the answer keeps its size).
pub fn plain(prompt_bytes: usize) -> ReqSpec {
    let mut body = chat("hello");
    if prompt_bytes > 0 {
        const PROSE: &str = "You are a careful assistant. Answer in plain words and cite the \
                             policy section you rely on. ";
        let text: String = PROSE.chars().cycle().take(prompt_bytes).collect();
        body["messages"] = serde_json::json!([
            {"role": "system", "content": text},
            {"role": "user", "content": "hello"},
        ]);
    }
    ReqSpec::post("/v1/chat/completions", body)
}

/// A prompt whose secrets any working protection changes before the mock echoes it.
const PROTECT_PROBE: &str = "mail alice@example.com, call +1 415 555 0100, card 4111 1111 1111 1111, \
key sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCd, aws AKIAIOSFODNN7EXAMPLE, \
-----BEGIN PRIVATE KEY-----MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA-----END PRIVATE KEY-----";

/// Does `feature` act on `proxy`? Err(reason) when its effect is absent.
pub async fn probe(feature: &str, proxy: &Proxy, tls: &Tls) -> Result<(), String> {
    let route = Route::Connect {
        proxy: proxy.addr,
        host: "api.bench.test".into(),
        inspect: true,
    };
    let send = |req: ReqSpec| {
        let (route, tls) = (route.clone(), tls.clone());
        async move {
            let mut tx = client::connect(&route, &tls).await?;
            let (st, body) = client::exchange(&mut tx, req.build(&route.host_header())?).await?;
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            anyhow::Ok((st.as_u16(), v))
        }
    };
    let e = |e: anyhow::Error| format!("probe failed: {e:#}");
    match feature {
        "routing" => {
            let (st, v) = send(request("routing")).await.map_err(e)?;
            match v["model"].as_str() {
                Some("bench-routed") if st == 200 => Ok(()),
                m => Err(format!("policy accepted, but the answer's model is `{}` (status {st}), not the route's `bench-routed`: routes are not applied in this build", m.unwrap_or("none"))),
            }
        }
        "protect" => {
            let (st, v) = send(ReqSpec::post("/v1/chat/completions", chat(PROTECT_PROBE)))
                .await
                .map_err(e)?;
            let content = v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default();
            if st == 200 && content == format!("echo: {PROTECT_PROBE}") {
                Err("policy accepted, but secrets reach the upstream unchanged: protection is not applied in this build".into())
            } else {
                Ok(())
            }
        }
        "tools" => {
            let (st, v) = send(ReqSpec::post(
                "/v1/chat/completions",
                with_tools("call rm_rf {}"),
            ))
            .await
            .map_err(e)?;
            if st == 200 {
                Err("policy accepted, but a call to an undeclared tool passes: tool validation is not applied in this build".into())
            } else if v["error"]["code"] == "tool_call_invalid" {
                Ok(())
            } else {
                Err(format!(
                    "unexpected answer to an invalid tool call: {st} {v}"
                ))
            }
        }
        "audit" => {
            let before = proxy.audit_count("allowed");
            send(request("audit")).await.map_err(e)?;
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(3) {
                if proxy.audit_count("allowed") > before {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err("policy accepted, but no `allowed` audit line appears".into())
        }
        _ => Err("unknown feature".into()),
    }
}

/// Gateway mode: a plain origin-form request on the proxy port. Err(reason) when the
/// build answers otherwise than 200.
pub async fn probe_gateway(proxy: &Proxy, tls: &Tls) -> Result<(), String> {
    let route = Route::Gateway { proxy: proxy.addr };
    let r = async {
        let mut tx = client::connect(&route, tls).await?;
        let (st, body) =
            client::exchange(&mut tx, request("gateway").build(&route.host_header())?).await?;
        anyhow::Ok((st, body))
    }
    .await;
    match r {
        Ok((st, _)) if st.is_success() => Ok(()),
        Ok((st, body)) => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let code = v["error"]["code"].as_str().unwrap_or("?").to_owned();
            Err(format!(
                "the proxy answers {} `{code}` to an origin-form request",
                st.as_u16()
            ))
        }
        Err(e) => Err(format!("gateway request failed: {e:#}")),
    }
}
