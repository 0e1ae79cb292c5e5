//! Property tests: protect∘restore is the identity, a stream restores the same whatever
//! the delta splits, and restored values stay valid JSON wherever they land.

use proptest::prelude::*;
use serde_json::json;

use super::tests::{config, protector, K1, K2};
use super::*;

/// A valid card number: 16 digits, Luhn check digit computed, printed in one of the usual
/// ways.
fn card() -> impl Strategy<Value = String> {
    (4u8..=5, prop::collection::vec(0u8..10, 14), 0..3usize).prop_map(|(first, rest, style)| {
        let mut d = vec![first];
        d.extend(rest);
        let check = (0..10u8).find(|c| {
            let mut all = d.clone();
            all.push(*c);
            numeric::luhn(&all)
        });
        d.push(check.unwrap_or(0));
        let s: String = d.iter().map(|x| char::from(b'0' + x)).collect();
        let groups: Vec<&str> = (0..4).map(|i| &s[i * 4..i * 4 + 4]).collect();
        match style {
            0 => s.clone(),
            1 => groups.join(" "),
            _ => groups.join("-"),
        }
    })
}

/// A valid German IBAN with a computed check number, compact or grouped by four.
fn iban() -> impl Strategy<Value = String> {
    (prop::collection::vec(0u8..10, 18), any::<bool>()).prop_map(|(bban, spaced)| {
        let bban: String = bban.iter().map(|x| char::from(b'0' + x)).collect();
        // DE = 13 14; check = 98 - (bban || "131400") mod 97.
        let r = format!("{bban}131400")
            .bytes()
            .fold(0u32, |r, c| (r * 10 + u32::from(c - b'0')) % 97);
        let compact = format!("DE{:02}{bban}", 98 - r);
        if spaced {
            let chunks: Vec<String> = compact
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            chunks.join(" ")
        } else {
            compact
        }
    })
}

fn pii() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9._]{0,10}[a-z0-9]@[a-z]{2,10}\\.(com|org|de|io)",
        "\\+[2-9][0-9] [0-9]{3} [0-9]{3} [0-9]{4}",
        "\\+1 [2-9][0-9]{2} [2-9][0-9]{2}-[0-9]{4}",
        "\\([2-9][0-9]{2}\\) [2-9][0-9]{2}-[0-9]{4}",
        "0[1-9] [0-9]{2} [0-9]{2} [0-9]{2} [0-9]{2}",
        "CUST-[0-9]{8}",
        card(),
        iban(),
    ]
}

/// Noise: letters, punctuation, quotes, backslashes, control characters, non-ASCII, and
/// the beginnings of token shapes; no digits, `@` or `+`, so it cannot merge with a
/// neighbouring value into something else.
fn noise() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ a-zA-Z,.;:!?()\"'\\\\\n\té漢🙂P_-]{0,12}",
        Just("PII.".to_owned()),
        Just("PII.k1.email.".to_owned()),
        Just("PII.k1.email.AAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned()),
        Just("PII.k9.phone.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB".to_owned()),
    ]
}

pub(super) fn text() -> impl Strategy<Value = (String, Vec<String>)> {
    prop::collection::vec((noise(), pii()), 0..6).prop_map(|parts| {
        let mut s = String::new();
        let mut values = Vec::new();
        for (n, v) in parts {
            s.push_str(&n);
            s.push_str(" | ");
            s.push_str(&v);
            s.push_str(" | ");
            values.push(v);
        }
        (s, values)
    })
}

/// Cuts `s` at the given fractions, moved back to character boundaries.
fn split_at_fractions(s: &str, cuts: &[f64]) -> Vec<String> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|f| {
            let mut i = ((s.len() as f64) * f) as usize;
            while !s.is_char_boundary(i) {
                i -= 1;
            }
            i
        })
        .collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for i in at.into_iter().chain([s.len()]) {
        out.push(s[last..i].to_owned());
        last = i;
    }
    out
}

fn stream(p: &Protector, kind: ChannelKind, parts: &[String]) -> (String, RestoreStats) {
    let mut rs = RestoreStats::default();
    let mut r = p.stream_restorer(kind);
    let mut out = String::new();
    for part in parts {
        out.push_str(&r.push(part, &mut rs));
        assert!(r.held() < MAX_TOKEN_LEN, "held {}", r.held());
    }
    out.push_str(&r.finish(&mut rs));
    (out, rs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The fast path of the response step is safe: whenever restoring a JSON answer
    /// would change it, `may_hold_tokens` says so on the raw bytes (however the provider
    /// escapes the text), and when it says no, restoring changes nothing.
    #[test]
    fn an_answer_without_the_token_marker_needs_no_restore(
        (text, _values) in text(),
        ascii_only in any::<bool>(),
        escape_p in any::<bool>(),
        noise in "[ -~\u{e9}\u{1f600}\n\"\\\\]{0,40}",
    ) {
        let p = protector();
        let mut st = ProtectStats::default();
        let protected = p.protect_text(&text, &mut st).unwrap();
        for content in [protected, text.clone(), noise.clone(), format!("{noise}{text}")] {
            let body = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]});
            let raw = if ascii_only {
                // Like Python's json.dumps: every non-ASCII character as \uXXXX.
                serde_json::to_string(&body).unwrap().chars().fold(String::new(), |mut o, c| {
                    if c.is_ascii() { o.push(c) } else {
                        let mut b = [0u16; 2];
                        for u in c.encode_utf16(&mut b) { o.push_str(&format!("\\u{u:04x}")); }
                    }
                    o
                })
            } else {
                serde_json::to_string(&body).unwrap()
            };
            // A provider may escape any character, even the token's own letters.
            let raw = if escape_p { raw.replace('P', "\\u0050") } else { raw };
            let mut v: serde_json::Value = serde_json::from_str(&raw).unwrap();
            let before = v.clone();
            let rs = p.restore_response(&mut v);
            if !Protector::may_hold_tokens(raw.as_bytes()) {
                prop_assert_eq!(&v, &before);
                prop_assert_eq!(rs.restored + rs.failed, 0);
            }
        }
    }

    #[test]
    fn protect_then_restore_is_identity((text, values) in text()) {
        let p = protector();
        let mut st = ProtectStats::default();
        let protected = p.protect_text(&text, &mut st).unwrap();
        for v in &values {
            prop_assert!(!protected.contains(v.as_str()), "{v:?} left in {protected:?}");
        }
        prop_assert_eq!(st.total(), values.len() as u64);
        let mut rs = RestoreStats::default();
        prop_assert_eq!(&p.restore_text(&protected, &mut rs), &text);
        prop_assert_eq!(rs.restored, values.len() as u64);
        // Rotation: the same text opens under [k2, k1].
        let rotated = Protector::new(&config(&[("k2", K2), ("k1", K1)])).unwrap();
        let mut rs2 = RestoreStats::default();
        prop_assert_eq!(rotated.restore_text(&protected, &mut rs2), text);
    }

    #[test]
    fn stream_restore_ignores_split_points(
        (text, _) in text(),
        cuts in prop::collection::vec(0.0f64..1.0, 0..12),
    ) {
        let p = protector();
        let mut st = ProtectStats::default();
        let protected = p.protect_text(&text, &mut st).unwrap();
        let parts = split_at_fractions(&protected, &cuts);
        for kind in [ChannelKind::Content, ChannelKind::ToolArguments] {
            let mut whole_stats = RestoreStats::default();
            let whole = p.restore_text_as(&protected, kind, &mut whole_stats);
            let (streamed, stream_stats) = stream(&p, kind, &parts);
            prop_assert_eq!(&streamed, &whole);
            prop_assert_eq!(stream_stats, whole_stats);
            // Byte by byte (char by char) too.
            let chars: Vec<String> = protected.chars().map(String::from).collect();
            prop_assert_eq!(stream(&p, kind, &chars).0, whole);
        }
    }

    #[test]
    fn restored_values_stay_valid_json(
        inner in prop::collection::vec(
            prop_oneof![Just('"'), Just('\\'), Just('\n'), Just('\u{1}'), Just('é'), Just('🙂'), Just('/'), "[a-z ]".prop_map(|s| s.chars().next().unwrap_or('a'))],
            1..14,
        ),
        cuts in prop::collection::vec(0.0f64..1.0, 0..6),
    ) {
        let p = protector();
        let value = format!("<<{}>>", inner.iter().collect::<String>());
        let args = json!({"note": value, "mail": "jane@example.com"}).to_string();
        let mut body = json!({"messages": [
            {"role": "user", "content": value},
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": args}}]}
        ]});
        p.protect_request(&mut body).unwrap();
        let content = body["messages"][0]["content"].as_str().unwrap_or_default().to_owned();
        let protected_args = body["messages"][1]["tool_calls"][0]["function"]["arguments"]
            .as_str().unwrap_or_default().to_owned();
        prop_assert!(!protected_args.contains("jane@"));
        // Non-streaming: the model echoes both; serde re-encodes the outer level.
        let mut resp = json!({"choices": [{"message": {"content": content,
            "tool_calls": [{"function": {"name": "f", "arguments": protected_args}}]}}]});
        let rs = p.restore_response(&mut resp);
        prop_assert_eq!(rs.restored, 3);
        let wire = resp.to_string();
        let back: serde_json::Value = serde_json::from_str(&wire).unwrap();
        prop_assert_eq!(back["choices"][0]["message"]["content"].as_str(), Some(value.as_str()));
        let a = back["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap_or_default();
        let a: serde_json::Value = serde_json::from_str(a).unwrap();
        prop_assert_eq!(&a["note"], &json!(value));
        prop_assert_eq!(&a["mail"], &json!("jane@example.com"));
        // Streaming: argument deltas through a ToolArguments restorer give the same text.
        let (streamed, _) = stream(&p, ChannelKind::ToolArguments, &split_at_fractions(&protected_args, &cuts));
        let a: serde_json::Value = serde_json::from_str(&streamed).unwrap();
        prop_assert_eq!(&a["note"], &json!(value));
    }

    #[test]
    fn arbitrary_text_never_panics_and_round_trips(
        text in "[0-9 +().,:/@a-zA-Z_\\-\"é🙂\n]{0,80}",
        cuts in prop::collection::vec(0.0f64..1.0, 0..4),
    ) {
        let p = protector();
        let mut st = ProtectStats::default();
        let protected = p.protect_text(&text, &mut st).unwrap();
        let mut rs = RestoreStats::default();
        let restored = p.restore_text(&protected, &mut rs);
        if !protected.contains("[redacted:") {
            prop_assert_eq!(&restored, &text);
        }
        prop_assert_eq!(rs.failed, 0);
        let (streamed, _) = stream(&p, ChannelKind::Content, &split_at_fractions(&protected, &cuts));
        prop_assert_eq!(streamed, restored);
    }
}
