//! Cross-field checks of a merged policy: everything serde cannot see (URLs, pins, files
//! that must exist, references between sections, §7's credential rule). Each problem is an
//! [`Issue`] at a [`FieldPath`]; [`load_and_validate`] turns them into located errors.
//!
//! Validation reads the filesystem (trust roots, key files) and the process environment
//! (provider and protection keys given as `{ env = "..." }`): a policy whose keys are not
//! there is refused when it loads rather than failing every request later.

mod allow;
mod endpoint;
mod provider;
mod route;
mod settings;

use std::collections::HashMap;
use std::path::Path;

use crate::policy::load::{load, LoadedPolicy, PolicyErrors};
use crate::policy::locate::FieldPath;
use crate::policy::model::{BreakerSection, Dur, PolicyFile};

/// One problem found by [`validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Where, in the merged model.
    pub path: FieldPath,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// Reads an environment variable; injectable so tests and tools need not touch the
/// process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Checks a merged policy against the process environment.
pub fn validate(model: &PolicyFile) -> Vec<Issue> {
    validate_with_env(model, &|name| std::env::var(name).ok())
}

/// Checks a merged policy, reading environment variables through `env`.
pub fn validate_with_env(model: &PolicyFile, env: EnvLookup<'_>) -> Vec<Issue> {
    let mut cx = Ctx {
        issues: Vec::new(),
        env,
    };
    allow::check(&mut cx, model);
    provider::check(&mut cx, model);
    route::check(&mut cx, model);
    settings::check(&mut cx, model);
    cx.issues
}

/// [`load`] then [`validate`]; issues become errors with file, line and column, in file
/// order.
pub fn load_and_validate(path: &Path) -> Result<LoadedPolicy, PolicyErrors> {
    load_and_validate_with_env(path, &|name| std::env::var(name).ok())
}

/// [`load_and_validate`] with environment variables read through `env`.
pub fn load_and_validate_with_env(
    path: &Path,
    env: EnvLookup<'_>,
) -> Result<LoadedPolicy, PolicyErrors> {
    validate_loaded(load(path)?, env)
}

/// [`validate_with_env`] on a policy already loaded (by [`load`] or
/// [`crate::policy::load::load_bytes`]): the policy back when it has no issues, else
/// the issues as errors with file, line and column, in file order.
pub fn validate_loaded(
    loaded: LoadedPolicy,
    env: EnvLookup<'_>,
) -> Result<LoadedPolicy, PolicyErrors> {
    let issues = validate_with_env(&loaded.model, env);
    if issues.is_empty() {
        return Ok(loaded);
    }
    let mut errors: Vec<_> = issues
        .into_iter()
        .map(|i| {
            let file = loaded.locator.file_index(&i.path);
            (file, loaded.locator.error(&i.path, i.message, i.hint))
        })
        .collect();
    errors.sort_by_key(|(file, e)| (*file, e.line, e.column));
    Err(PolicyErrors(errors.into_iter().map(|(_, e)| e).collect()))
}

/// Collects issues while the checks run.
pub(crate) struct Ctx<'a> {
    issues: Vec<Issue>,
    env: EnvLookup<'a>,
}

// === impl Ctx ===

impl Ctx<'_> {
    /// Records a problem.
    pub(crate) fn push(
        &mut self,
        path: FieldPath,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.issues.push(Issue {
            path,
            message: message.into(),
            hint,
        });
    }

    /// The value of an environment variable, if set.
    pub(crate) fn env(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// `name` must be non-empty and unique within `section` (`allow`, `provider`, `route`).
    pub(crate) fn names<'m>(&mut self, section: &str, names: impl Iterator<Item = &'m str>) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.enumerate() {
            let path = FieldPath::root().key(section).index(i).key("name");
            if name.trim().is_empty() {
                self.push(
                    path,
                    format!("[[{section}]] name is empty"),
                    Some(
                        "give every entry a unique name; it appears in audit lines and errors"
                            .into(),
                    ),
                );
            } else if let Some(first) = seen.insert(name, i) {
                seen.insert(name, first);
                self.push(
                    path,
                    format!("duplicate [[{section}]] name \"{name}\" (first used by {section}[{first}])"),
                    Some("names must be unique across all files of the policy".into()),
                );
            }
        }
    }

    /// A duration that must be greater than zero.
    pub(crate) fn positive(&mut self, path: FieldPath, d: Option<Dur>) {
        if d.is_some_and(|d| d.0.is_zero()) {
            self.push(
                path,
                "must be greater than zero",
                Some("e.g. \"250ms\" or \"30s\"".into()),
            );
        }
    }

    /// A count that must be greater than zero.
    pub(crate) fn positive_n(&mut self, path: FieldPath, n: Option<u64>) {
        if n == Some(0) {
            self.push(path, "must be greater than zero", None);
        }
    }

    /// `[breaker]`, or a provider's own `breaker` table, at `at`.
    pub(crate) fn breaker(&mut self, at: FieldPath, b: &BreakerSection) {
        if let Some(rate) = b.failure_rate {
            if !(rate > 0.0 && rate <= 1.0) {
                self.push(
                    at.clone().key("failure_rate"),
                    format!("failure_rate {rate} is outside (0, 1]"),
                    Some("a fraction of failed requests, e.g. 0.5 for half".into()),
                );
            }
        }
        self.positive_n(
            at.clone().key("consecutive_failures"),
            b.consecutive_failures.map(u64::from),
        );
        self.positive_n(
            at.clone().key("min_requests"),
            b.min_requests.map(u64::from),
        );
        self.positive(at.clone().key("window"), b.window);
        self.positive(at.clone().key("p99_latency"), b.p99_latency);
        self.positive(at.key("open_for"), b.open_for);
    }
}

/// Whether `name` is a valid environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_more;
