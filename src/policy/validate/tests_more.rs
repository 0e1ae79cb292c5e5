//! The shipped policy and examples validate; programmatic models get path-only issues.

use std::fs;
use std::path::{Path, PathBuf};

use super::tests::{check, fake_env, tmp, write};
use super::{load_and_validate, load_and_validate_with_env, validate_with_env};
use crate::policy::model::{AllowEntry, PolicyFile};

/// The repository's `policies/` directory (works from the main crate and from a crate
/// whose `policies` is a link to it).
fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn example(name: &str) -> String {
    fs::read_to_string(policies().join("examples").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

const EXAMPLES: [&str; 4] = [
    "routing.toml",
    "protect.toml",
    "pins.toml",
    "local-ollama.toml",
];

#[test]
fn shipped_default_policy_validates() {
    let loaded = load_and_validate(&policies()).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<_> = loaded.model.allow.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "openai",
            "anthropic",
            "gemini",
            "mistral",
            "groq",
            "deepseek",
            "openrouter"
        ]
    );
    assert_eq!(loaded.model.audit.map(|a| a.log_allowed), Some(false));
    // examples/ is a subdirectory: not merged.
    let files: Vec<_> = loaded
        .files
        .iter()
        .filter_map(|f| f.file_name()?.to_str())
        .collect();
    assert_eq!(files, ["00-default.toml"]);
}

#[test]
fn every_example_validates_on_its_own() {
    for name in EXAMPLES {
        let d = tmp();
        write(d.path(), name, &example(name));
        assert_eq!(check(d.path()), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn examples_merge_with_the_default_policy() {
    let default =
        fs::read_to_string(policies().join("00-default.toml")).unwrap_or_else(|e| panic!("{e}"));
    for name in ["routing.toml", "protect.toml", "local-ollama.toml"] {
        let d = tmp();
        write(d.path(), "00-default.toml", &default);
        write(d.path(), &format!("50-{name}"), &example(name));
        assert_eq!(check(d.path()), Vec::<String>::new(), "{name}");
    }
    // pins.toml says why it must not be copied beside the default as is.
    let d = tmp();
    write(d.path(), "00-default.toml", &default);
    write(d.path(), "50-pins.toml", &example("pins.toml"));
    let errs = check(d.path());
    assert_eq!(errs.len(), 2, "{errs:?}");
    for e in &errs {
        assert!(e.starts_with("50-pins.toml:"), "{errs:?}");
        assert!(e.ends_with("pins differ from those of [[allow]] \"openai\" for the same https://api.openai.com:443"), "{errs:?}");
    }
}

#[test]
fn examples_say_which_variables_they_need() {
    let d = tmp();
    write(d.path(), "routing.toml", &example("routing.toml"));
    let no_env = |_: &str| None;
    let errs = load_and_validate_with_env(d.path(), &no_env)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        errs.contains("environment variable OPENAI_API_KEY is not set"),
        "{errs}"
    );
    assert!(
        errs.contains("environment variable MISTRAL_API_KEY is not set"),
        "{errs}"
    );
}

#[test]
fn programmatic_models_get_paths() {
    let entry = |name: &str| AllowEntry {
        name: name.into(),
        base_url: "https://a.example".into(),
        ..AllowEntry::default()
    };
    let model = PolicyFile {
        allow: vec![entry("a"), entry("a"), entry(" ")],
        ..PolicyFile::default()
    };
    let issues = validate_with_env(&model, &fake_env);
    let got: Vec<_> = issues
        .iter()
        .map(|i| format!("{}: {}", i.path, i.message))
        .collect();
    assert_eq!(
        got,
        [
            "allow[1].name: duplicate [[allow]] name \"a\" (first used by allow[0])",
            "allow[2].name: [[allow]] name is empty",
        ]
    );
}

const JSON_SAMPLE: &str = r#"{
  "allow": [
    {"name": "a", "base_url": "https://api.openai.com/v1", "methods": ["GET", "POST"]}
  ],
  "provider": [
    {"name": "p", "base_url": "https://api.openai.com/v1", "api_key": {"env": "OPENAI_API_KEY"},
     "timeouts": {"connect": "5s"}, "pricing": {"input_per_mtok": 0.1, "output_per_mtok": 0.2}}
  ],
  "route": [{"name": "r", "strategy": "cheapest", "targets": [{"provider": "p", "quality": 2}]}],
  "upstream": {"resolve": {"api.openai.com:443": "[::1]:9443"}},
  "proxy": {"max_request_body": "32MiB"}
}
"#;

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(160))]

    /// A typo anywhere is an error with a sane location, never a panic.
    #[test]
    fn arbitrary_edits_never_panic(
        at in 0usize..4000,
        delete in 0usize..6,
        insert in "[ -~\n\u{e9}]{0,6}",
        json in proptest::bool::ANY,
    ) {
        let (name, base) = if json {
            ("p.json", JSON_SAMPLE.to_owned())
        } else {
            ("p.toml", example("routing.toml"))
        };
        let chars: Vec<char> = base.chars().collect();
        let at = at % (chars.len() + 1);
        let end = (at + delete).min(chars.len());
        let text: String = chars[..at].iter().chain(insert.chars().collect::<Vec<_>>().iter()).chain(chars[end..].iter()).collect();
        let d = tmp();
        write(d.path(), name, &text);
        if let Err(errors) = load_and_validate_with_env(d.path(), &fake_env) {
            let lines = text.lines().count() + 1;
            for e in errors.0 {
                proptest::prop_assert!(e.line >= 1 && e.line <= lines, "{e}");
                proptest::prop_assert!(e.column >= 1, "{e}");
                proptest::prop_assert!(e.file.ends_with(name), "{e}");
            }
        }
    }
}

#[test]
fn json_sample_validates() {
    let d = tmp();
    write(d.path(), "p.json", JSON_SAMPLE);
    assert_eq!(check(d.path()), Vec::<String>::new());
}
