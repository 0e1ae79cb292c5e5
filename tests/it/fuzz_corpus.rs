//! Replays every file of the fuzz corpus (`fuzz/corpus/<target>/`) through the checks the
//! fuzz targets run, on the stable toolchain: the corpus doubles as a regression suite,
//! and a crash found by fuzzing stays fixed once its input is added to the corpus.

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// A fuzz target's checks: panics when an invariant breaks.
type Check = fn(&[u8]);

/// The checks of each fuzz target, by corpus directory name.
const TARGETS: [(&str, Check); 6] = [
    ("sse_decode", checks::check_sse_decode),
    ("request_parse", checks::check_request_parse),
    ("policy_file", checks::check_policy_file),
    ("url_path", checks::check_url),
    ("token_restore", checks::check_token_restore),
    ("protect_raw", checks::check_protect_raw),
];

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
}

/// The files of one directory, sorted so failures are reported in a stable order.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, check: Check) {
    let files = files_in(&corpus_root().join(target));
    assert!(!files.is_empty(), "no corpus files for {target}");
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            catch_unwind(AssertUnwindSafe(|| check(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: invariants broken by {failed:#?}"
    );
}

#[test]
fn sse_decode_corpus() {
    replay("sse_decode", checks::check_sse_decode);
}

#[test]
fn request_parse_corpus() {
    replay("request_parse", checks::check_request_parse);
}

#[test]
fn policy_file_corpus() {
    replay("policy_file", checks::check_policy_file);
}

#[test]
fn url_path_corpus() {
    replay("url_path", checks::check_url);
}

#[test]
fn token_restore_corpus() {
    replay("token_restore", checks::check_token_restore);
}

#[test]
fn protect_raw_corpus() {
    replay("protect_raw", checks::check_protect_raw);
}

#[test]
fn every_corpus_directory_has_a_target() {
    let dirs = fs::read_dir(corpus_root()).unwrap_or_else(|e| panic!("fuzz/corpus: {e}"));
    for dir in dirs.filter_map(Result::ok).filter(|d| d.path().is_dir()) {
        let name = dir.file_name().to_string_lossy().into_owned();
        assert!(
            TARGETS.iter().any(|(target, _)| *target == name),
            "fuzz/corpus/{name} has no replay; add it to TARGETS"
        );
    }
}
