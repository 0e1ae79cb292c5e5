//! Checks of `[[route]]` entries: targets name known providers that have their own key
//! (PRODUCT.md §7: credentials never cross providers), strategies have what they need,
//! retry settings are sane.

use super::provider::priced;
use super::Ctx;
use crate::policy::locate::FieldPath;
use crate::policy::model::{PolicyFile, RouteEntry, Strategy};

/// Checks every `[[route]]`.
pub(super) fn check(cx: &mut Ctx<'_>, model: &PolicyFile) {
    cx.names("route", model.route.iter().map(|r| r.name.as_str()));
    for (i, r) in model.route.iter().enumerate() {
        let at = FieldPath::root().key("route").index(i);
        targets(cx, model, &at, r);
        strategy(cx, model, &at, r);
        matcher(cx, &at, r);
        if let Some(retry) = &r.retry {
            let rat = at.clone().key("retry");
            cx.positive_n(rat.clone().key("attempts"), retry.attempts.map(u64::from));
            for (j, status) in retry.on.iter().flatten().enumerate() {
                if !(100..=599).contains(status) {
                    cx.push(
                        rat.clone().key("on").index(j),
                        format!("{status} is not an HTTP status"),
                        Some(
                            "statuses are 100 to 599, e.g. on = [429, 500, 502, 503, 504, 529]"
                                .into(),
                        ),
                    );
                }
            }
            cx.positive(rat.clone().key("backoff"), retry.backoff);
            cx.positive(rat.clone().key("max_backoff"), retry.max_backoff);
            cx.positive(rat.clone().key("deadline"), retry.deadline);
            if let (Some(b), Some(m)) = (retry.backoff, retry.max_backoff) {
                if b > m {
                    cx.push(
                        rat.key("max_backoff"),
                        format!("max_backoff {m} is below backoff {b}"),
                        None,
                    );
                }
            }
        }
    }
}

fn targets(cx: &mut Ctx<'_>, model: &PolicyFile, at: &FieldPath, r: &RouteEntry) {
    if r.targets.is_empty() {
        cx.push(
            at.clone().key("targets"),
            format!("route \"{}\" has no targets", r.name),
            Some("e.g. targets = [{ provider = \"openai\", model = \"gpt-4o-mini\" }]".into()),
        );
    }
    for (j, t) in r.targets.iter().enumerate() {
        let tat = at.clone().key("targets").index(j).key("provider");
        let Some(p) = model.provider.iter().find(|p| p.name == t.provider) else {
            let known: Vec<&str> = model.provider.iter().map(|p| p.name.as_str()).collect();
            let hint = if known.is_empty() {
                format!("define a [[provider]] named \"{}\"", t.provider)
            } else {
                format!(
                    "known providers: {}; or define a [[provider]] named \"{}\"",
                    known.join(", "),
                    t.provider
                )
            };
            cx.push(
                tat,
                format!("unknown provider \"{}\"", t.provider),
                Some(hint),
            );
            continue;
        };
        if p.api_key.is_none() {
            cx.push(
                tat,
                format!("route \"{}\" targets provider \"{}\", which has no api_key", r.name, p.name),
                Some(format!(
                    "credentials never cross providers: a routed request carries the target provider's own key, \
                     never the client's; add api_key = {{ env = \"...\" }} to [[provider]] \"{}\"",
                    p.name
                )),
            );
        }
        if let Some(m) = &t.model {
            if m.trim().is_empty() {
                cx.push(
                    at.clone().key("targets").index(j).key("model"),
                    "model is empty",
                    Some("remove `model` to keep the client's model name".into()),
                );
            }
        }
    }
}

fn strategy(cx: &mut Ctx<'_>, model: &PolicyFile, at: &FieldPath, r: &RouteEntry) {
    match r.strategy {
        Strategy::Cheapest => {
            let floor = r.min_quality.unwrap_or(0);
            let reachable = r.targets.iter().any(|t| t.quality.unwrap_or(0) >= floor);
            if !r.targets.is_empty() && !reachable {
                cx.push(
                    at.clone().key("min_quality"),
                    format!("no target of route \"{}\" has quality >= {floor}", r.name),
                    Some("lower min_quality or give a target a higher quality (absent quality counts as 0)".into()),
                );
            }
            for (j, t) in r.targets.iter().enumerate() {
                let p = model.provider.iter().find(|p| p.name == t.provider);
                if p.is_some_and(|p| !priced(p)) {
                    cx.push(
                        at.clone().key("targets").index(j).key("provider"),
                        format!("strategy \"cheapest\" needs pricing, but provider \"{}\" has none", t.provider),
                        Some("add pricing = { input_per_mtok = ..., output_per_mtok = ... } (or per_mchar) to that provider".into()),
                    );
                }
            }
        }
        Strategy::Weighted => {
            let total: u64 = r
                .targets
                .iter()
                .map(|t| u64::from(t.weight.unwrap_or(1)))
                .sum();
            if !r.targets.is_empty() && total == 0 {
                cx.push(
                    at.clone().key("targets"),
                    format!("every target of weighted route \"{}\" has weight 0", r.name),
                    Some(
                        "give at least one target a weight above 0 (absent weight counts as 1)"
                            .into(),
                    ),
                );
            }
        }
        Strategy::Fallback | Strategy::Fastest => {}
    }
    if r.reprobe_after.is_some() && r.strategy != Strategy::Fastest {
        cx.push(
            at.clone().key("reprobe_after"),
            format!(
                "reprobe_after applies only to strategy \"fastest\"; route \"{}\" uses another",
                r.name
            ),
            Some("remove reprobe_after, or set strategy = \"fastest\"".into()),
        );
    }
    cx.positive(at.clone().key("reprobe_after"), r.reprobe_after);
}

fn matcher(cx: &mut Ctx<'_>, at: &FieldPath, r: &RouteEntry) {
    let m = &r.matcher;
    let mat = at.clone().key("match");
    for (j, model) in m.model.iter().flatten().enumerate() {
        if model.trim().is_empty() {
            cx.push(
                mat.clone().key("model").index(j),
                "model name is empty",
                None,
            );
        }
    }
    for (j, p) in m.path.iter().flatten().enumerate() {
        if !p.starts_with('/') {
            cx.push(
                mat.clone().key("path").index(j),
                format!("path {p:?} does not start with '/'"),
                Some("e.g. path = [\"/chat/completions\"]".into()),
            );
        }
    }
    if let (Some(lo), Some(hi)) = (m.min_prompt_tokens, m.max_prompt_tokens) {
        if lo > hi {
            cx.push(
                mat.clone().key("min_prompt_tokens"),
                format!("min_prompt_tokens {lo} is above max_prompt_tokens {hi}"),
                Some("this route could never match".into()),
            );
        }
    }
    if m.header.as_deref().is_some_and(|h| h.trim().is_empty()) {
        cx.push(mat.key("header"), "header value is empty", None);
    }
}
