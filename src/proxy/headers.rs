//! Header hygiene between the legs (PRODUCT.md §9.2, PITFALLS.md "Hop-by-hop headers").

use http::header::{self, HeaderMap, HeaderName};

/// Headers that belong to one connection and never cross the proxy.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

/// Removes hop-by-hop headers, every header named in `Connection`, and
/// `Proxy-Authorization`. Used on requests going up and responses coming down.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names present instead of a
    // hashed lookup for each of the ten names, twice per request.
    let present = |k: &HeaderName| {
        k == header::CONNECTION || k == header::PROXY_AUTHORIZATION || HOP_BY_HOP.contains(k)
    };
    if h.keys().any(present) {
        remove_hop_by_hop(h);
    }
}

/// The removal itself: every header named in `Connection`, the hop-by-hop set and
/// `Proxy-Authorization`.
fn remove_hop_by_hop(h: &mut HeaderMap) {
    if let Some(conn) = h.get(header::CONNECTION) {
        let named: Vec<HeaderName> = conn
            .to_str()
            .unwrap_or_default()
            .split(',')
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
    h.remove(header::PROXY_AUTHORIZATION);
}

/// Removes the `x-llm-egress-*` control headers (consumed, never forwarded) and
/// returns whether any were present.
pub fn strip_control(h: &mut HeaderMap) -> bool {
    let names: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-llm-egress-"))
        .cloned()
        .collect();
    let any = !names.is_empty();
    for n in names {
        h.remove(n);
    }
    any
}

/// True when a request carries both `Content-Length` and `Transfer-Encoding`, or
/// several differing `Content-Length` values: framing a smuggler could exploit.
pub fn conflicting_framing(h: &HeaderMap) -> bool {
    let mut cls = h.get_all(header::CONTENT_LENGTH).iter();
    let first = cls.next();
    if first.is_some() && h.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    cls.any(|v| Some(v) != first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_hop_by_hop_and_named() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic abc"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        h.insert("x-llm-egress-route", HeaderValue::from_static("r"));
        strip_hop_by_hop(&mut h);
        assert!(strip_control(&mut h));
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn framing_conflicts() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(!conflicting_framing(&h));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(conflicting_framing(&h));
    }

    proptest::proptest! {
        /// The fast path changes nothing: the result is what removing every name gives.
        #[test]
        fn strip_hop_by_hop_is_removing_every_name(
            picks in proptest::collection::vec((0usize..14, 0usize..4), 0..10)
        ) {
            const NAMES: [&str; 14] = [
                "connection", "keep-alive", "proxy-connection", "te", "trailer",
                "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-authorization",
                "content-type", "authorization", "x-request-id", "x-a", "accept",
            ];
            const VALUES: [&str; 4] = ["close", "x-a, accept", "1", "keep-alive, te"];
            let mut h = HeaderMap::new();
            for (n, v) in picks {
                h.append(
                    HeaderName::from_static(NAMES[n]),
                    HeaderValue::from_static(VALUES[v]),
                );
            }
            let mut reference = h.clone();
            remove_hop_by_hop(&mut reference);
            strip_hop_by_hop(&mut h);
            proptest::prop_assert_eq!(h, reference);
        }
    }
}
