//! Reading policy files: one file, or a directory of them merged in name order
//! (PRODUCT.md §3). Every failure is a [`PolicyError`] with file, line, column and, where
//! we can tell, a hint; nothing here panics on input.
//!
//! A directory contributes its top-level `*.toml` and `*.json` files only: subdirectories
//! (such as `policies/examples/`), dotfiles and `..`-prefixed entries (Kubernetes'
//! `..data`) are not read. Symlinks to files are followed, which is how a ConfigMap volume
//! presents its keys.

mod merge;
mod parse;

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::policy::locate::{Locator, SourceFile};
use crate::policy::model::{PolicyFile, SecretSource};

/// A policy read from disk, merged, with relative paths made absolute.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    /// The merged model. Every relative file path inside (`allow.roots`,
    /// `upstream.extra_roots`, `provider.api_key.file`, `protect.keys[].file`) has been
    /// made absolute against the directory of the file it came from.
    pub model: PolicyFile,
    /// Hex SHA-256 over the (file name, content) pairs in merge order.
    pub hash: String,
    /// The files read, in merge order.
    pub files: Vec<PathBuf>,
    /// Maps paths of `model` back to file, line and column.
    pub locator: Locator,
}

/// One mistake in a policy, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file the mistake is in (or the directory, for directory-level errors).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when we can tell.
    pub hint: Option<String>,
}

// === impl PolicyError ===

impl PolicyError {
    /// An error about a whole file or directory (reported at 1:1).
    pub fn at_file(file: &Path, message: impl Into<String>, hint: Option<String>) -> Self {
        PolicyError {
            file: file.to_path_buf(),
            line: 1,
            column: 1,
            message: message.into(),
            hint,
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (file, line, col) = (self.file.display(), self.line, self.column);
        write!(f, "{file}:{line}:{col}: {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {}", hint.replace('\n', "\n        "))?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

/// All the mistakes found in one load, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

impl From<PolicyError> for PolicyErrors {
    fn from(e: PolicyError) -> Self {
        PolicyErrors(vec![e])
    }
}

/// Reads, parses and merges the policy at `path` (a file or a directory). Cross-field
/// checks are in [`crate::policy::validate`]; use `load_and_validate` to run both.
pub fn load(path: &Path) -> Result<LoadedPolicy, PolicyErrors> {
    let files = policy_files(path)?;
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    let mut hasher = Sha256::new();
    for file in &files {
        let bytes = match read_small(file, MAX_POLICY_FILE) {
            Ok(b) => b,
            Err(e) => {
                errors.push(PolicyError::at_file(
                    file,
                    format!("cannot read: {e}"),
                    None,
                ));
                continue;
            }
        };
        hash_entry(&mut hasher, file, &bytes);
        match parse_one(file, &bytes) {
            Ok(one) => parsed.push(one),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(PolicyErrors(errors));
    }
    let (model, locator) = merge::merge(parsed).map_err(PolicyErrors)?;
    Ok(LoadedPolicy {
        model,
        hash: hex::encode(hasher.finalize()),
        files,
        locator,
    })
}

/// Parses the content of one policy file, exactly as [`load`] parses each file it reads,
/// without touching the filesystem: `file` only names the file in errors, picks the format
/// (JSON for `*.json`, TOML otherwise) and is the directory relative paths inside are made
/// absolute against. Every error carries a 1-based line and column inside `bytes` (after a
/// leading BOM). Cross-field checks are in [`crate::policy::validate::validate_loaded`].
pub fn load_bytes(file: &Path, bytes: &[u8]) -> Result<LoadedPolicy, PolicyErrors> {
    let one = parse_one(file, bytes)?;
    let (model, locator) = merge::merge(vec![one]).map_err(PolicyErrors)?;
    let mut hasher = Sha256::new();
    hash_entry(&mut hasher, file, bytes);
    Ok(LoadedPolicy {
        model,
        hash: hex::encode(hasher.finalize()),
        files: vec![file.to_path_buf()],
        locator,
    })
}

/// Parses one file's bytes and makes its relative paths absolute.
fn parse_one(file: &Path, bytes: &[u8]) -> Result<(PolicyFile, SourceFile), PolicyError> {
    let (mut model, source) = parse::parse_file(file, bytes)?;
    absolutize(&mut model, &base_dir(file));
    Ok((model, source))
}

/// The policy files `path` stands for, in merge order: the file itself, or a directory's
/// top-level `*.toml` / `*.json` files (symlinks followed; dotfiles, `..`-entries and
/// subdirectories skipped), sorted by name.
pub fn policy_files(path: &Path) -> Result<Vec<PathBuf>, PolicyErrors> {
    let meta = std::fs::metadata(path).map_err(|e| {
        PolicyError::at_file(
            path,
            format!("cannot read policy path: {e}"),
            Some("--policy takes a policy file or a directory of *.toml / *.json files".into()),
        )
    })?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !meta.is_dir() {
        return Err(PolicyError::at_file(path, "not a regular file or a directory", None).into());
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| PolicyError::at_file(path, format!("cannot list directory: {e}"), None))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| PolicyError::at_file(path, format!("cannot list directory: {e}"), None))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let policy_ext = name.ends_with(".toml") || name.ends_with(".json");
        // Kubernetes' `..data` and `..2026_...` start with '.', like every dotfile.
        if name.starts_with('.') || !policy_ext {
            continue;
        }
        // `metadata` follows symlinks: a ConfigMap key is `name -> ..data/name`.
        if std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            names.push(name.to_owned());
        }
    }
    if names.is_empty() {
        return Err(PolicyError::at_file(
            path,
            format!("no policy files in {}", path.display()),
            Some("a policy directory needs at least one top-level *.toml or *.json file; subdirectories are not read".into()),
        )
        .into());
    }
    names.sort();
    Ok(names.into_iter().map(|n| path.join(n)).collect())
}

/// A hash of what `path` holds now, cheap enough to poll: the same as
/// [`LoadedPolicy::hash`] when the files are readable, something else when they are not.
pub fn fingerprint(path: &Path) -> String {
    let mut hasher = Sha256::new();
    match policy_files(path) {
        Ok(files) => {
            for file in files {
                match read_small(&file, MAX_POLICY_FILE) {
                    Ok(bytes) => hash_entry(&mut hasher, &file, &bytes),
                    Err(e) => hasher.update(format!("unreadable {}: {e}", file.display())),
                }
            }
        }
        Err(e) => hasher.update(format!("error: {e}")),
    }
    hex::encode(hasher.finalize())
}

/// Largest policy file we read.
const MAX_POLICY_FILE: u64 = 16 * 1024 * 1024;

/// Reads a regular file of at most `max` bytes. Anything else (a device, a FIFO, a huge
/// file) is an error rather than a hang or an out-of-memory crash.
pub(crate) fn read_small(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(bytes)
}

/// Feeds one (file name, content) pair, length-prefixed so pairs cannot run together.
fn hash_entry(hasher: &mut Sha256, file: &Path, bytes: &[u8]) {
    let name = file
        .file_name()
        .map(|n| n.as_encoded_bytes())
        .unwrap_or_default();
    hasher.update((name.len() as u64).to_be_bytes());
    hasher.update(name);
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// The absolute directory a file's relative paths resolve against.
fn base_dir(file: &Path) -> PathBuf {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Makes the file paths of one file's model absolute against `dir`.
fn absolutize(model: &mut PolicyFile, dir: &Path) {
    let fix = |p: &mut String| {
        if !p.is_empty() && Path::new(p.as_str()).is_relative() {
            *p = dir.join(&*p).to_string_lossy().into_owned();
        }
    };
    for entry in &mut model.allow {
        entry.roots.iter_mut().flatten().for_each(fix);
    }
    if let Some(up) = &mut model.upstream {
        up.extra_roots.iter_mut().for_each(fix);
    }
    for p in &mut model.provider {
        if let Some(SecretSource::File { file }) = &mut p.api_key {
            fix(file);
        }
    }
    if let Some(protect) = &mut model.protect {
        protect
            .keys
            .iter_mut()
            .filter_map(|k| k.file.as_mut())
            .for_each(fix);
    }
}

#[cfg(test)]
mod tests;
