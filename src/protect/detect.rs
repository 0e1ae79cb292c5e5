//! Detectors: find the sensitive spans of a text. Regexes are compiled once per policy
//! load; a call runs one pass per detector family (email, numeric runs for phone and card,
//! IBAN, secrets as one alternation, each custom pattern), skipping families whose
//! trigger byte (`@`, a digit) is absent, then resolves overlaps: `secret` wins, then the
//! longer span, then the earlier one.

use std::collections::BTreeMap;
use std::ops::Range;

use regex::{Regex, RegexBuilder};

use super::error::ProtectError;
use super::numeric;
use super::token::valid_detector_name;

/// The built-in detectors, in the order of the policy documentation.
pub const DETECTORS: &[&str] = &["email", "phone", "credit_card", "iban", "secret"];

const EMAIL: &str = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}";
const NUMERIC: &str = r"[+(]?[0-9](?:[0-9]|[ .\-]\(?[0-9]|\([0-9]|\)[ .\-]?\(?[0-9])*\)?";
const IBAN: &str = r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,32}";
const SECRETS: &str = concat!(
    r"(?-u:\b)sk-[A-Za-z0-9_\-]{20,}",
    r"|(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)",
    r"|(?-u:\b)gh[pousr]_[A-Za-z0-9]{36,}",
    r"|(?-u:\b)github_pat_[A-Za-z0-9_]{22,}",
    r"|(?-u:\b)xox[baprs]-[A-Za-z0-9\-]{10,}",
    r"|(?-u:\b)AIza[0-9A-Za-z_\-]{35}",
    r"|(?-u:\b)[sr]k_(?:live|test)_[A-Za-z0-9]{16,}",
    r"|(?-u:\b)hf_[A-Za-z0-9]{30,}",
    r"|(?-u:\b)eyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*",
    r"|-----BEGIN[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----(?:(?s:.*?)-----END[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|(?s:.*))",
    r"|(?-u:\b)[Bb]earer[ \t]+[A-Za-z0-9\-._~+/]{20,}=*",
);

/// One detected span: byte range in the text and the detector's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub range: Range<usize>,
    pub det: usize,
}

/// The compiled detectors of one policy.
pub(crate) struct Detectors {
    names: Vec<String>,
    secret: Option<usize>,
    email: Option<(usize, Regex)>,
    numeric: Option<Regex>,
    phone: Option<usize>,
    card: Option<usize>,
    iban: Option<(usize, Regex)>,
    secrets: Option<Regex>,
    patterns: Vec<(usize, Regex)>,
}

// === impl Detectors ===

impl Detectors {
    /// Compiles the built-in `detectors` and the custom `patterns` (`name`, `regex`).
    pub(crate) fn new(
        detectors: &[String],
        patterns: &[(String, String)],
    ) -> Result<Self, ProtectError> {
        let mut d = Detectors {
            names: Vec::new(),
            secret: None,
            email: None,
            numeric: None,
            phone: None,
            card: None,
            iban: None,
            secrets: None,
            patterns: Vec::new(),
        };
        for name in DETECTORS {
            if !detectors.iter().any(|n| n == name) {
                continue;
            }
            let idx = d.names.len();
            d.names.push((*name).to_owned());
            match *name {
                "email" => d.email = Some((idx, compile(name, EMAIL)?)),
                "phone" => d.phone = Some(idx),
                "credit_card" => d.card = Some(idx),
                "iban" => d.iban = Some((idx, compile(name, IBAN)?)),
                _ => {
                    d.secret = Some(idx);
                    d.secrets = Some(compile(name, SECRETS)?);
                }
            }
        }
        if let Some(unknown) = detectors.iter().find(|n| !DETECTORS.contains(&n.as_str())) {
            return Err(ProtectError::UnknownDetector {
                name: unknown.clone(),
            });
        }
        if d.phone.is_some() || d.card.is_some() {
            d.numeric = Some(compile("phone", NUMERIC)?);
        }
        for (name, re) in patterns {
            let taken = DETECTORS.contains(&name.as_str()) || d.names.contains(name);
            if !valid_detector_name(name) || taken {
                return Err(ProtectError::InvalidPatternName { name: name.clone() });
            }
            let idx = d.names.len();
            d.names.push(name.clone());
            d.patterns.push((idx, compile(name, re)?));
        }
        Ok(d)
    }

    /// The detector names, by index.
    pub(crate) fn name(&self, det: usize) -> &str {
        self.names.get(det).map_or("unknown", String::as_str)
    }

    /// Is this the `secret` detector (always redacted)?
    pub(crate) fn is_secret(&self, det: usize) -> bool {
        self.secret == Some(det)
    }

    /// All enabled detector names.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// The non-overlapping spans of `text`, in text order.
    pub(crate) fn find(&self, text: &str) -> Vec<Hit> {
        let mut hits = Vec::new();
        let digits = text.bytes().any(|b| b.is_ascii_digit());
        if let Some((det, re)) = &self.email {
            if memchr::memchr(b'@', text.as_bytes()).is_some() {
                for m in re.find_iter(text) {
                    if let Some(range) = email(text, m.range()) {
                        hits.push(Hit { range, det: *det });
                    }
                }
            }
        }
        if let (Some(re), true) = (&self.numeric, digits) {
            for m in re.find_iter(text) {
                let Some(run) = numeric::numeric_run(text, m.range()) else {
                    continue;
                };
                if let Some(det) = self.phone {
                    numeric::phones(text, run.clone(), |range| hits.push(Hit { range, det }));
                }
                if let Some(det) = self.card {
                    numeric::cards(text, run, |range| hits.push(Hit { range, det }));
                }
            }
        }
        if let (Some((det, re)), true) = (&self.iban, digits) {
            for m in re.find_iter(text) {
                if let Some(range) = numeric::iban(text, m.range()) {
                    hits.push(Hit { range, det: *det });
                }
            }
        }
        if let (Some(det), Some(re)) = (self.secret, &self.secrets) {
            for m in re.find_iter(text) {
                hits.push(Hit {
                    range: bearer_value(text, m.range()),
                    det,
                });
            }
        }
        for (det, re) in &self.patterns {
            for m in re.find_iter(text).filter(|m| !m.is_empty()) {
                hits.push(Hit {
                    range: m.range(),
                    det: *det,
                });
            }
        }
        self.resolve(hits)
    }

    /// Keeps a set of non-overlapping hits: secrets first, then longer, then earlier.
    fn resolve(&self, mut hits: Vec<Hit>) -> Vec<Hit> {
        if hits.len() < 2 {
            return hits;
        }
        hits.sort_by_key(|h| {
            (
                !self.is_secret(h.det),
                std::cmp::Reverse(h.range.len()),
                h.range.start,
                h.det,
            )
        });
        let mut kept: BTreeMap<usize, Hit> = BTreeMap::new();
        for h in hits {
            let clash_before = kept
                .range(..h.range.end)
                .next_back()
                .is_some_and(|(_, k)| k.range.end > h.range.start);
            if !clash_before {
                kept.insert(h.range.start, h);
            }
        }
        kept.into_values().collect()
    }
}

fn compile(name: &str, re: &str) -> Result<Regex, ProtectError> {
    RegexBuilder::new(re)
        .size_limit(4 << 20)
        .build()
        .map_err(|e| ProtectError::InvalidPattern {
            name: name.to_owned(),
            reason: e
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_owned(),
        })
}

/// Trims an email match: no leading punctuation in the local part, nothing alphanumeric
/// glued to the end (a too-long top-level domain).
fn email(text: &str, m: Range<usize>) -> Option<Range<usize>> {
    let lead = text[m.clone()]
        .bytes()
        .take_while(|b| b"._%+-".contains(b))
        .count();
    let r = m.start + lead..m.end;
    let at = text[r.clone()].find('@')?;
    let after = text[r.end..].chars().next();
    (at > 0 && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')).then_some(r)
}

/// For `Bearer <token>`, the span is the token: the word `Bearer` stays for the model.
fn bearer_value(text: &str, m: Range<usize>) -> Range<usize> {
    let s = &text[m.clone()];
    if s.starts_with("Bearer") || s.starts_with("bearer") {
        let rest = &s[6..];
        let ws = rest.len() - rest.trim_start_matches([' ', '\t']).len();
        return m.start + 6 + ws..m.end;
    }
    m
}
