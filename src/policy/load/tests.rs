//! Loading: directory rules, merge rules, parse errors with exact locations.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::*;

fn write(dir: &Path, name: &str, text: &str) {
    if let Some(parent) = dir.join(name).parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
    }
    fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{e}"));
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

/// The errors of loading `dir`, with `dir/` cut from file names.
fn errors(dir: &Path) -> Vec<String> {
    match load(dir) {
        Ok(_) => Vec::new(),
        Err(e) => {
            let prefix = format!("{}/", dir.display());
            e.0.iter()
                .map(|e| e.to_string().replace(&prefix, ""))
                .collect()
        }
    }
}

fn allow(name: &str) -> String {
    format!("[[allow]]\nname = \"{name}\"\nbase_url = \"https://{name}.example/v1\"\n")
}

#[test]
fn directory_rules() {
    let d = tmp();
    let p = d.path();
    write(p, "20-b.toml", &allow("b"));
    write(
        p,
        "10-a.json",
        r#"{"allow": [{"name": "a", "base_url": "https://a.example"}]}"#,
    );
    write(p, ".hidden.toml", "not toml at all [");
    write(p, "README.md", "not a policy");
    write(p, "examples/x.toml", "not read either [");
    write(p, "..2026_11_24_a/30-c.toml", &allow("c"));
    symlink("..2026_11_24_a", p.join("..data")).unwrap_or_else(|e| panic!("{e}"));
    symlink("..data/30-c.toml", p.join("30-c.toml")).unwrap_or_else(|e| panic!("{e}"));
    symlink("nowhere.toml", p.join("40-dangling.toml")).unwrap_or_else(|e| panic!("{e}"));
    let loaded = load(p).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<_> = loaded.model.allow.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let files: Vec<_> = loaded
        .files
        .iter()
        .filter_map(|f| f.file_name()?.to_str())
        .collect();
    assert_eq!(files, ["10-a.json", "20-b.toml", "30-c.toml"]);
}

#[test]
fn empty_directory_is_an_error() {
    let d = tmp();
    write(d.path(), "examples/routing.toml", &allow("a"));
    let errs = errors(d.path());
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].contains(&format!("no policy files in {}", d.path().display())),
        "{errs:?}"
    );
    assert!(
        errs[0].contains("hint: a policy directory needs"),
        "{errs:?}"
    );
    let missing = load(&d.path().join("nope"));
    assert!(missing.is_err_and(|e| e.0[0].message.starts_with("cannot read policy path")));
}

#[test]
fn single_file_and_relative_paths() {
    let d = tmp();
    let text = "[[allow]]\nname = \"a\"\nbase_url = \"https://a.example\"\nroots = [\"ca/root.pem\", \"/abs/root.pem\"]\n\
                [upstream]\nextra_roots = [\"extra.pem\"]\n\
                [[provider]]\nname = \"p\"\nbase_url = \"https://a.example\"\napi_key = { file = \"keys/p.key\" }\n\
                [protect]\nkeys = [{ id = \"k1\", file = \"protect.key\" }, { id = \"k2\", env = \"K\" }]\n";
    write(d.path(), "sub/policy.toml", text);
    let loaded = load(&d.path().join("sub/policy.toml")).unwrap_or_else(|e| panic!("{e}"));
    let base = std::path::absolute(d.path().join("sub")).unwrap_or_else(|e| panic!("{e}"));
    let abs = |p: &str| base.join(p).to_string_lossy().into_owned();
    let m = &loaded.model;
    assert_eq!(
        m.allow[0].roots,
        Some(vec![abs("ca/root.pem"), "/abs/root.pem".into()])
    );
    assert_eq!(
        m.upstream.as_ref().map(|u| u.extra_roots.clone()),
        Some(vec![abs("extra.pem")])
    );
    assert_eq!(
        m.provider[0].api_key,
        Some(SecretSource::File {
            file: abs("keys/p.key")
        })
    );
    let keys = &m
        .protect
        .as_ref()
        .map(|p| p.keys.clone())
        .unwrap_or_default();
    assert_eq!(keys[0].file, Some(abs("protect.key")));
    assert_eq!(keys[1].env.as_deref(), Some("K"));
}

#[test]
fn single_table_in_two_files() {
    let d = tmp();
    write(d.path(), "00.toml", "[audit]\nlog_allowed = false\n");
    write(
        d.path(),
        "10.toml",
        &format!("{}\n# more\n[audit]\nlog_allowed = true\n", allow("a")),
    );
    let errs = errors(d.path());
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("10.toml:6:1: [audit] is defined in two files: here and in 00.toml\n"),
        "{errs:?}"
    );
    assert!(errs[0].contains("(first at 00.toml:1:1)"), "{errs:?}");
}

#[test]
fn duplicate_names_across_files() {
    let d = tmp();
    write(d.path(), "00.toml", &allow("openai"));
    write(d.path(), "10.json", "{\n  \"allow\": [\n    {\"name\": \"openai\", \"base_url\": \"https://x.example\"}\n  ]\n}\n");
    let errs = errors(d.path());
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(
            "10.json:3:14: duplicate [[allow]] name \"openai\"; first defined at 00.toml:2:8"
        ),
        "{errs:?}"
    );
}

#[test]
fn toml_errors_are_located() {
    let d = tmp();
    let p = d.path();
    // Unknown key, with a suggestion and the valid keys.
    write(
        p,
        "a.toml",
        "[[allow]]\nname = \"a\"\nbase_url = \"https://a.example\"\npinz = []\n",
    );
    // A bad duration inside an inline table.
    write(p, "b.toml", "[[provider]]\nname = \"p\"\nbase_url = \"https://a.example\"\ntimeouts = { connect = \"5 sec\" }\n");
    // A TOML syntax error.
    write(p, "c.toml", "[breaker\nwindow = \"30s\"\n");
    // A duration written as a number.
    write(p, "d.toml", "[breaker]\nwindow = 30\n");
    // [[allow]] written as [allow].
    write(p, "e.toml", "[allow]\nname = \"a\"\n");
    // A missing required key points at the entry's header.
    write(p, "f.toml", "\n[[route]]\nname = \"r\"\n");
    let errs = errors(p);
    assert_eq!(errs.len(), 6, "{errs:#?}");
    assert!(errs[0].starts_with("a.toml:4:1: unknown key `pinz`\n  hint: did you mean `pins`? valid keys here: name, base_url, methods, mode, pins, roots"), "{}", errs[0]);
    assert!(
        errs[1].starts_with("b.toml:4:24: duration \"5 sec\" has unknown unit \" sec\""),
        "{}",
        errs[1]
    );
    assert!(errs[2].starts_with("c.toml:1:9: "), "{}", errs[2]);
    assert!(errs[3].starts_with("d.toml:2:10: invalid type: integer `30`, expected a string\n  hint: durations are strings"), "{}", errs[3]);
    assert!(
        errs[4].contains("hint: write [[allow]] with double brackets"),
        "{}",
        errs[4]
    );
    assert!(
        errs[5].starts_with("f.toml:2:1: missing required key `targets`"),
        "{}",
        errs[5]
    );
}

#[test]
fn json_errors_are_located() {
    let d = tmp();
    let p = d.path();
    write(p, "a.json", "{\n  \"allow\": [\n    {\"name\": \"a\", \"base_url\": \"https://a.example\", \"pinz\": []}\n  ]\n}\n");
    write(
        p,
        "b.json",
        "{\n  \"allow\": [\n    {\"name\": \"a\"}\n  ]\n}\n",
    );
    write(p, "c.json", "{\n  \"breaker\": {\"window\": \"30\"}\n}\n");
    write(p, "d.json", "{\n  \"breaker\": {\"window\": \"30s\",}\n}\n");
    write(p, "e.json", "{\"proxy\": {\"max_request_body\": \"12XB\"}}");
    let errs = errors(p);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert!(
        errs[0].starts_with("a.json:3:52: unknown key `pinz`\n  hint: did you mean `pins`?"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("b.json:3:5: missing required key `base_url`"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].starts_with("c.json:2:25: duration \"30\" lacks a unit"),
        "{}",
        errs[2]
    );
    assert!(
        errs[3].starts_with("d.json:2:31: trailing comma"),
        "{}",
        errs[3]
    );
    assert!(
        errs[4].starts_with("e.json:1:32: size \"12XB\" has unknown unit"),
        "{}",
        errs[4]
    );
}

#[test]
fn secret_source_needs_exactly_one() {
    let d = tmp();
    write(d.path(), "a.toml", "[[provider]]\nname = \"p\"\nbase_url = \"https://a.example\"\napi_key = { env = \"A\", file = \"b\" }\n");
    let errs = errors(d.path());
    assert!(
        errs[0].starts_with("a.toml:4:11: a key source must have exactly one of `env` or `file`"),
        "{errs:?}"
    );
}

#[test]
fn odd_bytes_are_errors_not_crashes() {
    let d = tmp();
    fs::write(d.path().join("a.toml"), b"name = \"\xff\"\n").unwrap_or_else(|e| panic!("{e}"));
    write(d.path(), "b.toml", &format!("\u{feff}{}", allow("b")));
    write(
        d.path(),
        "c.toml",
        "[proxy]\nmax_request_body = \"99999999999999999999GiB\"\n",
    );
    write(
        d.path(),
        "d.toml",
        "[breaker]\nwindow = \"99999999999999999999999h\"\n",
    );
    let errs = errors(d.path());
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with("a.toml:1:9: the file is not valid UTF-8"),
        "{}",
        errs[0]
    );
    assert!(errs[1].starts_with("c.toml:2:20: size"), "{}", errs[1]);
    assert!(errs[2].starts_with("d.toml:2:10: duration"), "{}", errs[2]);
}

#[test]
fn a_bom_is_no_column() {
    // Found by the policy_file fuzz target: the UTF-8 error counted the BOM as column 1.
    let error = |bytes: &[u8]| match load_bytes(Path::new("p.toml"), bytes) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    };
    let plain = error(b"name = \"\xff\"\n");
    assert!(
        plain.starts_with("p.toml:1:9: the file is not valid UTF-8"),
        "{plain}"
    );
    assert_eq!(error(b"\xef\xbb\xbfname = \"\xff\"\n"), plain);
    assert!(error(b"\xef\xbb\xbf[x\n").starts_with("p.toml:1:3: "));
}

#[test]
fn hash_follows_names_and_contents() {
    let d = tmp();
    write(d.path(), "00.toml", &allow("a"));
    let h1 = load(d.path()).map(|l| l.hash).unwrap_or_default();
    assert_eq!(h1.len(), 64);
    assert_eq!(fingerprint(d.path()), h1);
    write(d.path(), "00.toml", &allow("b"));
    let h2 = load(d.path()).map(|l| l.hash).unwrap_or_default();
    assert_ne!(h1, h2);
    fs::rename(d.path().join("00.toml"), d.path().join("01.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let h3 = load(d.path()).map(|l| l.hash).unwrap_or_default();
    assert_ne!(h2, h3);
    assert_eq!(fingerprint(d.path()), h3);
}

#[test]
fn merged_locator_points_into_the_right_file() {
    let d = tmp();
    write(
        d.path(),
        "00.toml",
        &format!("{}{}", allow("a"), allow("b")),
    );
    write(d.path(), "10.toml", &format!("\n\n{}", allow("c")));
    let loaded = load(d.path()).unwrap_or_else(|e| panic!("{e}"));
    let path = crate::policy::locate::FieldPath::root()
        .key("allow")
        .index(2)
        .key("base_url");
    let (file, line, col) = loaded.locator.locate(&path);
    assert_eq!((file, line, col), (d.path().join("10.toml"), 5, 12));
    let first = crate::policy::locate::FieldPath::root()
        .key("allow")
        .index(1);
    assert_eq!(
        loaded.locator.locate(&first),
        (d.path().join("00.toml"), 4, 1)
    );
}

#[test]
fn display_format() {
    let e = PolicyError {
        file: "p/00.toml".into(),
        line: 3,
        column: 7,
        message: "bad".into(),
        hint: Some("fix it\nlike this".into()),
    };
    assert_eq!(
        e.to_string(),
        "p/00.toml:3:7: bad\n  hint: fix it\n        like this"
    );
    let all = PolicyErrors(vec![e.clone(), PolicyError { hint: None, ..e }]);
    assert_eq!(all.to_string().lines().count(), 4);
}
