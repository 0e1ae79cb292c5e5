//! Checks of `[[provider]]` entries: base URL covered by an inspect `[[allow]]`, the key
//! source present and readable, pricing and timeouts sane.

use std::path::Path;

use super::endpoint::Endpoint;
use super::{is_env_name, Ctx};
use crate::policy::load::read_small;
use crate::policy::locate::FieldPath;
use crate::policy::model::{Mode, PolicyFile, Pricing, ProviderEntry, SecretSource};

/// Checks every `[[provider]]`.
pub(super) fn check(cx: &mut Ctx<'_>, model: &PolicyFile) {
    cx.names("provider", model.provider.iter().map(|p| p.name.as_str()));
    for (i, p) in model.provider.iter().enumerate() {
        let at = FieldPath::root().key("provider").index(i);
        match Endpoint::parse(&p.base_url) {
            Ok(ep) => coverage(cx, model, &at, p, &ep),
            Err((msg, hint)) => cx.push(at.clone().key("base_url"), msg, Some(hint)),
        }
        if let Some(key) = &p.api_key {
            secret(cx, at.clone().key("api_key"), key);
        }
        if let Some(pricing) = &p.pricing {
            pricing_check(cx, at.clone().key("pricing"), pricing);
        }
        if let Some(t) = &p.timeouts {
            let tat = at.clone().key("timeouts");
            cx.positive(tat.clone().key("connect"), t.connect);
            cx.positive(tat.clone().key("first_byte"), t.first_byte);
            cx.positive(tat.key("idle"), t.idle);
        }
        if let Some(b) = &p.breaker {
            cx.breaker(at.key("breaker"), b);
        }
    }
}

/// A provider's base URL must fall under an inspect-mode `[[allow]]`.
fn coverage(
    cx: &mut Ctx<'_>,
    model: &PolicyFile,
    at: &FieldPath,
    p: &ProviderEntry,
    ep: &Endpoint,
) {
    let allows: Vec<_> = model
        .allow
        .iter()
        .filter_map(|a| Endpoint::parse(&a.base_url).ok().map(|e| (a, e)))
        .collect();
    if allows
        .iter()
        .any(|(a, e)| a.mode == Mode::Inspect && e.covers(ep))
    {
        return;
    }
    let path = at.clone().key("base_url");
    if let Some((a, _)) = allows.iter().find(|(_, e)| e.covers(ep)) {
        cx.push(
            path,
            format!("provider \"{}\" is covered only by the tunnel entry [[allow]] \"{}\"", p.name, a.name),
            Some("routing rewrites requests, so its provider needs an [[allow]] with mode = \"inspect\"".into()),
        );
        return;
    }
    let near = allows
        .iter()
        .find(|(_, e)| e.same_origin(ep))
        .map(|(a, e)| {
            format!(
                " ([[allow]] \"{}\" has this host, but its path {:?} is not a prefix of {:?})",
                a.name, e.path, ep.path
            )
        })
        .unwrap_or_default();
    cx.push(
        path,
        format!(
            "provider \"{}\" base_url {} is not covered by any [[allow]]{near}",
            p.name, p.base_url
        ),
        Some(format!(
            "add an entry such as\n[[allow]]\nname = \"{}\"\nbase_url = \"{}\"",
            p.name, p.base_url
        )),
    );
}

/// A key source: a valid, set environment variable, or a readable non-empty file.
pub(super) fn secret(cx: &mut Ctx<'_>, at: FieldPath, key: &SecretSource) {
    match key {
        SecretSource::Env { env } => {
            let at = at.key("env");
            if !is_env_name(env) {
                cx.push(at, format!("{env:?} is not a valid environment variable name"), Some("letters, digits and '_', not starting with a digit, e.g. \"OPENAI_API_KEY\"".into()));
            } else if cx.env(env).is_none_or(|v| v.trim().is_empty()) {
                cx.push(
                    at,
                    format!("environment variable {env} is not set"),
                    Some("set it in the proxy's environment (systemd: EnvironmentFile=; Kubernetes: env from a Secret); a policy whose keys are missing is refused rather than failing every request".into()),
                );
            }
        }
        SecretSource::File { file } => match read_small(Path::new(file), 64 * 1024) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {
                cx.push(at.key("file"), format!("key file {file} is empty"), None);
            }
            Ok(_) => {}
            Err(e) => cx.push(
                at.key("file"),
                format!("cannot read key file {file}: {e}"),
                Some("relative paths resolve against the directory of the policy file".into()),
            ),
        },
    }
}

fn pricing_check(cx: &mut Ctx<'_>, at: FieldPath, p: &Pricing) {
    let prices = [
        ("input_per_mtok", p.input_per_mtok),
        ("output_per_mtok", p.output_per_mtok),
        ("input_per_mchar", p.input_per_mchar),
        ("output_per_mchar", p.output_per_mchar),
    ];
    for (key, v) in prices {
        non_negative(cx, at.clone().key(key), v);
    }
    if let Some(d) = p.committed_discount {
        if !(0.0..=1.0).contains(&d) {
            cx.push(
                at.clone().key("committed_discount"),
                format!("committed_discount {d} is outside [0, 1]"),
                Some("a fraction off list price, e.g. 0.2 for 20 % off".into()),
            );
        }
    }
    for (j, tier) in p.tiers.iter().enumerate() {
        let tat = at.clone().key("tiers").index(j);
        non_negative(cx, tat.clone().key("input_per_mtok"), tier.input_per_mtok);
        non_negative(cx, tat.clone().key("output_per_mtok"), tier.output_per_mtok);
        if tier.input_per_mtok.is_none() && tier.output_per_mtok.is_none() {
            cx.push(
                tat.clone(),
                "a pricing tier sets no price",
                Some("set input_per_mtok and/or output_per_mtok".into()),
            );
        }
        if p.tiers[..j]
            .iter()
            .any(|t| t.above_prompt_tokens == tier.above_prompt_tokens)
        {
            cx.push(
                tat.key("above_prompt_tokens"),
                format!(
                    "two tiers start above {} prompt tokens",
                    tier.above_prompt_tokens
                ),
                None,
            );
        }
    }
}

fn non_negative(cx: &mut Ctx<'_>, at: FieldPath, v: Option<f64>) {
    if let Some(v) = v.filter(|v| !(v.is_finite() && *v >= 0.0)) {
        cx.push(at, format!("price {v} is not a non-negative number"), None);
    }
}

/// Whether `cheapest` can price a request on this provider: an input and an output price.
pub(super) fn priced(p: &ProviderEntry) -> bool {
    p.pricing.as_ref().is_some_and(|p| {
        (p.input_per_mtok.is_some() || p.input_per_mchar.is_some())
            && (p.output_per_mtok.is_some() || p.output_per_mchar.is_some())
    })
}
