//! Which `[[route]]` takes a request (PRODUCT.md §7): the first whose `match` fits.
//!
//! Every criterion a route states must hold; criteria it leaves out are not checked, so a
//! route with an empty `match` takes everything.
//!
//! - `model`: the request's model is one of the listed names (exact, case-sensitive); a
//!   request without a model does not match.
//! - `min_prompt_tokens` / `max_prompt_tokens`: the prompt-token estimate lies within the
//!   bounds (inclusive). When there is no estimate (a body that was not parsed), a route
//!   with a token bound does **not** match: a bound usually guards a context window or a
//!   price, and a request of unknown size must not slip past it; the next route (often an
//!   unbounded catch-all) takes it.
//! - `path`: the request path (query string ignored) ends with one of the listed suffixes,
//!   e.g. `/chat/completions` matches `/v1/chat/completions`. Suffixes start with `/`, so
//!   they match whole segments.
//! - `header`: the `x-llm-egress-route` header equals the value (surrounding whitespace
//!   ignored); a request without the header does not match.

use crate::policy::model::{RouteEntry, RouteMatch};

/// What routing looks at in a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteRequest<'a> {
    /// The body's `model`, if any.
    pub model: Option<&'a str>,
    /// The prompt-token estimate, if the body was parsed.
    pub prompt_tokens: Option<u64>,
    /// The request path (after the allowed base URL's prefix, or whole).
    pub path_suffix: &'a str,
    /// The `x-llm-egress-route` header, if present.
    pub route_header: Option<&'a str>,
}

/// The first route whose `match` fits `req`, with its index.
pub fn find_route<'a>(
    routes: &'a [RouteEntry],
    req: &RouteRequest<'_>,
) -> Option<(usize, &'a RouteEntry)> {
    routes
        .iter()
        .enumerate()
        .find(|(_, r)| matches(&r.matcher, req))
}

/// Whether one `match` table fits `req`.
pub fn matches(m: &RouteMatch, req: &RouteRequest<'_>) -> bool {
    if let Some(models) = &m.model {
        if !req
            .model
            .is_some_and(|model| models.iter().any(|x| x == model))
        {
            return false;
        }
    }
    if m.min_prompt_tokens.is_some() || m.max_prompt_tokens.is_some() {
        let Some(tokens) = req.prompt_tokens else {
            return false;
        };
        if m.min_prompt_tokens.is_some_and(|min| tokens < min)
            || m.max_prompt_tokens.is_some_and(|max| tokens > max)
        {
            return false;
        }
    }
    if let Some(paths) = &m.path {
        let path = req.path_suffix.split('?').next().unwrap_or_default();
        if !paths.iter().any(|p| path.ends_with(p.as_str())) {
            return false;
        }
    }
    if let Some(want) = &m.header {
        if req.route_header.map(str::trim) != Some(want.trim()) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, matcher: RouteMatch) -> RouteEntry {
        RouteEntry {
            name: name.into(),
            matcher,
            ..RouteEntry::default()
        }
    }

    fn req(model: Option<&'static str>, tokens: Option<u64>) -> RouteRequest<'static> {
        RouteRequest {
            model,
            prompt_tokens: tokens,
            path_suffix: "/v1/chat/completions",
            route_header: None,
        }
    }

    fn summaries() -> RouteMatch {
        RouteMatch {
            model: Some(vec!["gpt-4o-mini".into(), "summarize".into()]),
            max_prompt_tokens: Some(8000),
            ..RouteMatch::default()
        }
    }

    fn name(found: Option<(usize, &RouteEntry)>) -> Option<&str> {
        found.map(|(_, r)| r.name.as_str())
    }

    #[test]
    fn first_fitting_route_wins() {
        let routes = vec![
            route("summaries", summaries()),
            route("all", RouteMatch::default()),
        ];
        assert_eq!(
            find_route(&routes, &req(Some("summarize"), Some(100))).map(|f| f.0),
            Some(0)
        );
        assert_eq!(
            name(find_route(&routes, &req(Some("summarize"), Some(9000)))),
            Some("all")
        );
        assert_eq!(
            name(find_route(&routes, &req(Some("gpt-4o"), Some(100)))),
            Some("all")
        );
        assert_eq!(
            name(find_route(&routes, &req(None, Some(100)))),
            Some("all")
        );
        assert_eq!(name(find_route(&routes[..1], &req(Some("o3"), None))), None);
        assert_eq!(name(find_route(&[], &req(Some("o3"), None))), None);
    }

    #[test]
    fn token_bounds_are_inclusive_and_need_an_estimate() {
        let m = RouteMatch {
            min_prompt_tokens: Some(1000),
            max_prompt_tokens: Some(8000),
            ..RouteMatch::default()
        };
        assert!(matches(&m, &req(None, Some(1000))));
        assert!(matches(&m, &req(None, Some(8000))));
        assert!(!matches(&m, &req(None, Some(999))));
        assert!(!matches(&m, &req(None, Some(8001))));
        assert!(!matches(&m, &req(None, None)));
        assert!(matches(&RouteMatch::default(), &req(None, None)));
    }

    #[test]
    fn path_suffixes_and_header() {
        let m = RouteMatch {
            path: Some(vec!["/embeddings".into(), "/chat/completions".into()]),
            header: Some("batch".into()),
            ..RouteMatch::default()
        };
        let mut r = req(Some("x"), None);
        assert!(!matches(&m, &r), "header missing");
        r.route_header = Some(" batch ");
        assert!(matches(&m, &r));
        r.route_header = Some("Batch");
        assert!(!matches(&m, &r));
        r.route_header = Some("batch");
        r.path_suffix = "/embeddings?x=1";
        assert!(matches(&m, &r));
        r.path_suffix = "/v1/completions";
        assert!(!matches(&m, &r));
        r.path_suffix = "/v1/my-embeddings";
        assert!(!matches(&m, &r), "suffixes match whole segments");
    }
}
