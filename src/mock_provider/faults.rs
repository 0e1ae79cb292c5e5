//! The fault grammar (`--faults SPEC`, header `x-mock-fault: SPEC`) and when a fault fires.
//!
//! A spec is a list of items separated by `;` or `,`, e.g. `status=529;body=anthropic;rate=0.5`.
//! Parsing is strict: an unknown key, a bad value or a key given twice is an error that quotes
//! the offending item, so a typo in a test never silently turns into "no fault".

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The keys the grammar knows, for error messages.
const KEYS: &str = "status, body, retry_after, latency, first_byte, chunk_delay, cut_after, \
                    end_early_after, disconnect, gzip, rate, every, mock, none";
/// The longest duration a fault may ask for.
const MAX_DURATION: Duration = Duration::from_secs(3600);
/// How many distinct specs keep an `every=N` counter before the counters start over.
const MAX_COUNTERS: usize = 256;

/// Which provider's error body a status fault sends (`body=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorShape {
    /// `{"error":{"message","type","param","code"}}`.
    OpenAi,
    /// `{"type":"error","error":{"type","message"}}`.
    Anthropic,
    /// `[{"error":{"code","message","status"}}]`, as Gemini's OpenAI-compatible endpoint sends.
    Gemini,
    /// An nginx-style HTML error page.
    Html,
    /// A line of plain text.
    Text,
    /// No body at all.
    Empty,
}

/// Where a response stops early, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Abort after this many content events (or body bytes): the client sees a broken body.
    CutAfter(usize),
    /// End cleanly after this many content events (or body bytes).
    EndAfter(usize),
}

/// A parsed fault specification; see `docs/mock-provider.md` for the grammar.
///
/// Built with [`str::parse`]; its `Display` form is the normalized spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSpec {
    pub(crate) status: Option<u16>,
    pub(crate) body: Option<ErrorShape>,
    pub(crate) retry_after: Option<u64>,
    pub(crate) latency: Option<Duration>,
    pub(crate) first_byte: Option<Duration>,
    pub(crate) chunk_delay: Option<Duration>,
    pub(crate) stop: Option<Stop>,
    pub(crate) disconnect: bool,
    pub(crate) gzip: bool,
    pub(crate) rate: Option<f64>,
    pub(crate) every: Option<u64>,
    /// `mock=NAME`: the spec applies only on the mock of that name.
    pub(crate) mock: Option<String>,
    /// The items as given, joined with `;`: the key of the `every` counter and the display form.
    source: String,
}

/// A fault spec that does not parse; the message names the offending item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault item `{item}`: {reason}")]
pub struct FaultSpecError {
    /// The item as written.
    pub item: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Decides whether a spec with `rate` / `every` fires for the current request.
#[derive(Debug, Default)]
pub(crate) struct Triggers {
    /// Requests seen per spec text, for `every=N`.
    counters: Mutex<HashMap<String, u64>>,
}

// === impl FaultSpec ===

impl FaultSpec {
    /// Whether the spec replaces the normal answer with an error response.
    pub(crate) fn is_error(&self) -> bool {
        self.status.is_some() || self.body.is_some()
    }

    /// The status an error response uses: `status=`, or 500 when only `body=` was given.
    pub(crate) fn error_status(&self) -> u16 {
        self.status.unwrap_or(500)
    }

    /// The error body shape: `body=`, or OpenAI's.
    pub(crate) fn error_shape(&self) -> ErrorShape {
        self.body.unwrap_or(ErrorShape::OpenAi)
    }

    /// Whether the spec applies on the mock called `name`: it names no mock, or this one.
    pub(crate) fn aimed_at(&self, name: &str) -> bool {
        self.mock.as_deref().is_none_or(|mock| mock == name)
    }

    /// Whether the spec does nothing (empty, or `none`).
    pub(crate) fn is_noop(&self) -> bool {
        self.source.is_empty()
    }

    fn apply(&mut self, item: &str) -> Result<(), String> {
        let (key, value) = match item.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim())),
            None => (item, None),
        };
        match key {
            "gzip" | "disconnect" | "none" => {
                if value.is_some() {
                    return Err(format!("`{key}` takes no value"));
                }
                let flag = match key {
                    "gzip" => &mut self.gzip,
                    "disconnect" => &mut self.disconnect,
                    _ => return Ok(()),
                };
                if *flag {
                    return Err(format!("`{key}` is given twice"));
                }
                *flag = true;
                return Ok(());
            }
            _ => {}
        }
        let Some(value) = value else {
            return Err(format!(
                "`{key}` needs a value, as in `{key}=...` (keys: {KEYS})"
            ));
        };
        match key {
            "status" => set(&mut self.status, key, parse_status(value)?),
            "body" => set(&mut self.body, key, parse_shape(value)?),
            "retry_after" => set(&mut self.retry_after, key, parse_number(value)?),
            "latency" => set(&mut self.latency, key, parse_duration(value)?),
            "first_byte" => set(&mut self.first_byte, key, parse_duration(value)?),
            "chunk_delay" => set(&mut self.chunk_delay, key, parse_duration(value)?),
            "cut_after" | "end_early_after" => {
                let n = usize::try_from(parse_number(value)?).map_err(|_| "too large")?;
                let stop = if key == "cut_after" {
                    Stop::CutAfter(n)
                } else {
                    Stop::EndAfter(n)
                };
                if self.stop.is_some() {
                    return Err("only one of `cut_after` and `end_early_after` may be given".into());
                }
                self.stop = Some(stop);
                Ok(())
            }
            "rate" => set(&mut self.rate, key, parse_rate(value)?),
            "mock" if value.is_empty() => Err("`mock` needs the name of a mock".into()),
            "mock" => set(&mut self.mock, key, value.to_owned()),
            "every" => match parse_number(value)? {
                0 => Err("`every` must be at least 1".into()),
                n => set(&mut self.every, key, n),
            },
            _ => Err(format!("unknown fault `{key}` (keys: {KEYS})")),
        }
    }
}

impl FromStr for FaultSpec {
    type Err = FaultSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut parsed = FaultSpec::default();
        let mut items: Vec<&str> = Vec::new();
        for item in spec.split([';', ',']).map(str::trim) {
            if item.is_empty() {
                continue;
            }
            parsed.apply(item).map_err(|reason| FaultSpecError {
                item: item.to_owned(),
                reason,
            })?;
            items.push(item);
        }
        if items.len() > 1 && items.contains(&"none") {
            return Err(FaultSpecError {
                item: "none".to_owned(),
                reason: "`none` cannot be combined with other faults".to_owned(),
            });
        }
        if items != ["none"] {
            parsed.source = items.join(";");
        }
        Ok(parsed)
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.source.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&self.source)
        }
    }
}

fn set<T>(slot: &mut Option<T>, key: &str, value: T) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("`{key}` is given twice"));
    }
    *slot = Some(value);
    Ok(())
}

fn parse_number(value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("`{value}` is not a non-negative integer"))
}

fn parse_status(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(status @ 200..=599) => Ok(status),
        _ => Err(format!("`{value}` is not an HTTP status from 200 to 599")),
    }
}

fn parse_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("`{value}` is not a probability from 0 to 1")),
    }
}

fn parse_shape(value: &str) -> Result<ErrorShape, String> {
    Ok(match value {
        "openai" => ErrorShape::OpenAi,
        "anthropic" => ErrorShape::Anthropic,
        "gemini" => ErrorShape::Gemini,
        "html" => ErrorShape::Html,
        "text" => ErrorShape::Text,
        "empty" => ErrorShape::Empty,
        _ => {
            return Err(format!(
                "unknown body `{value}` (one of openai, anthropic, gemini, html, text, empty)"
            ))
        }
    })
}

/// Parses `250ms`, `2s`, `1.5s`, `100us`, `1m` (at most an hour).
pub(crate) fn parse_duration(value: &str) -> Result<Duration, String> {
    let bad = || format!("`{value}` is not a duration like 300ms, 2s, 1.5s, 100us or 1m");
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "us" | "µs" => number / 1_000_000.0,
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        _ => return Err(bad()),
    };
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if duration <= MAX_DURATION => Ok(duration),
        _ => Err(format!("`{value}` is out of range (at most 1h)")),
    }
}

// === impl Triggers ===

impl Triggers {
    /// Whether `spec` applies to this request: its `every` counter hits a multiple of N
    /// (counted per spec text) and its `rate` coin comes up. Specs with neither always fire.
    pub(crate) fn fires(&self, spec: &FaultSpec) -> bool {
        if let Some(every) = spec.every {
            let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
            let count = match counters.get_mut(&spec.source) {
                Some(count) => count,
                None => {
                    if counters.len() >= MAX_COUNTERS {
                        counters.clear();
                    }
                    counters.entry(spec.source.clone()).or_insert(0)
                }
            };
            *count += 1;
            if *count % every != 0 {
                return false;
            }
        }
        match spec.rate {
            Some(rate) => rand::random::<f64>() < rate,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(spec: &str) -> FaultSpecError {
        match spec.parse::<FaultSpec>() {
            Ok(parsed) => panic!("`{spec}` parsed as {parsed:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn parses_combined_items() {
        let spec: FaultSpec = "status=529, body=anthropic; retry_after=2;latency=300ms;rate=0.5"
            .parse()
            .unwrap();
        assert_eq!(spec.status, Some(529));
        assert_eq!(spec.body, Some(ErrorShape::Anthropic));
        assert_eq!(spec.retry_after, Some(2));
        assert_eq!(spec.latency, Some(Duration::from_millis(300)));
        assert_eq!(spec.rate, Some(0.5));
        assert_eq!(
            spec.to_string(),
            "status=529;body=anthropic;retry_after=2;latency=300ms;rate=0.5"
        );
        let spec: FaultSpec = "cut_after=3;gzip;first_byte=1.5s;chunk_delay=100us;every=3"
            .parse()
            .unwrap();
        assert_eq!(spec.stop, Some(Stop::CutAfter(3)));
        assert!(spec.gzip);
        assert_eq!(spec.first_byte, Some(Duration::from_millis(1500)));
        assert_eq!(spec.chunk_delay, Some(Duration::from_micros(100)));
        assert_eq!(spec.every, Some(3));
    }

    #[test]
    fn mock_aims_a_spec_at_one_mock() {
        let spec: FaultSpec = "status=500; mock=primary".parse().unwrap();
        assert_eq!(spec.mock.as_deref(), Some("primary"));
        assert!(spec.aimed_at("primary"));
        assert!(!spec.aimed_at("secondary"));
        assert_eq!(spec.to_string(), "status=500;mock=primary");
        let everywhere: FaultSpec = "status=500".parse().unwrap();
        assert!(everywhere.aimed_at("primary") && everywhere.aimed_at("secondary"));
    }

    #[test]
    fn none_and_empty_do_nothing() {
        for text in ["", "none", " ; "] {
            let spec: FaultSpec = text.parse().unwrap();
            assert!(spec.is_noop(), "{text}");
            assert_eq!(spec.to_string(), "none");
        }
    }

    #[test]
    fn errors_name_the_bad_item() {
        let cases = [
            ("statu=500", "statu=500", "unknown fault `statu`"),
            (
                "status=500;body=azure",
                "body=azure",
                "unknown body `azure`",
            ),
            ("status=99", "status=99", "not an HTTP status"),
            ("latency=5", "latency=5", "not a duration"),
            ("latency=2h", "latency=2h", "not a duration"),
            ("rate=1.5", "rate=1.5", "probability"),
            ("every=0", "every=0", "at least 1"),
            ("cut_after=-1", "cut_after=-1", "non-negative integer"),
            ("status=500;status=502", "status=502", "given twice"),
            ("gzip=yes", "gzip=yes", "takes no value"),
            ("status", "status", "needs a value"),
            (
                "cut_after=1;end_early_after=2",
                "end_early_after=2",
                "only one of",
            ),
            ("none;status=500", "none", "cannot be combined"),
            ("status=500;mock=", "mock=", "needs the name of a mock"),
            ("mock=a;mock=b", "mock=b", "given twice"),
        ];
        for (spec, item, reason) in cases {
            let err = error_of(spec);
            assert_eq!(err.item, item, "{spec}");
            assert!(err.reason.contains(reason), "{spec}: {}", err.reason);
            assert!(err.to_string().contains(&format!("`{item}`")), "{err}");
        }
    }

    #[test]
    fn every_counts_per_spec() {
        let triggers = Triggers::default();
        let every3: FaultSpec = "status=500;every=3".parse().unwrap();
        let fired: Vec<bool> = (0..7).map(|_| triggers.fires(&every3)).collect();
        assert_eq!(fired, [false, false, true, false, false, true, false]);
        let always: FaultSpec = "status=500".parse().unwrap();
        assert!(triggers.fires(&always));
        let never: FaultSpec = "status=500;rate=0".parse().unwrap();
        assert!(!(0..50).any(|_| triggers.fires(&never)));
        let certain: FaultSpec = "status=500;rate=1".parse().unwrap();
        assert!((0..50).all(|_| triggers.fires(&certain)));
    }
}
