//! Merging the files of a policy directory (PRODUCT.md §3): `[[allow]]`, `[[provider]]`
//! and `[[route]]` concatenate in file order; a single table defined in two files, or
//! two entries with the same `name`, is an error that names both places.

use std::collections::HashMap;
use std::path::Path;

use crate::policy::load::PolicyError;
use crate::policy::locate::{FieldPath, Locator, PathSeg, SourceFile};
use crate::policy::model::PolicyFile;

/// Merges parsed files (in merge order) into one model and its locator.
pub(super) fn merge(
    parsed: Vec<(PolicyFile, SourceFile)>,
) -> Result<(PolicyFile, Locator), Vec<PolicyError>> {
    let (models, sources): (Vec<_>, Vec<_>) = parsed.into_iter().unzip();
    let mut loc = Locator::new(sources);
    let mut merged = PolicyFile::default();
    let mut errors = Vec::new();
    let mut firsts: Vec<(&'static str, usize)> = Vec::new();

    for (fi, m) in models.into_iter().enumerate() {
        for li in 0..m.allow.len() {
            loc.add_array_entry("allow", fi, li);
        }
        for li in 0..m.provider.len() {
            loc.add_array_entry("provider", fi, li);
        }
        for li in 0..m.route.len() {
            loc.add_array_entry("route", fi, li);
        }
        merged.allow.extend(m.allow);
        merged.provider.extend(m.provider);
        merged.route.extend(m.route);

        let mut single = |name: &'static str, present: bool| -> bool {
            if !present {
                return false;
            }
            match firsts.iter().find(|(n, _)| *n == name) {
                Some(&(_, first)) => {
                    errors.push(twice_defined(&loc, name, first, fi));
                    false
                }
                None => {
                    firsts.push((name, fi));
                    loc.set_single(name, fi);
                    true
                }
            }
        };
        if single("proxy", m.proxy.is_some()) {
            merged.proxy = m.proxy;
        }
        if single("upstream", m.upstream.is_some()) {
            merged.upstream = m.upstream;
        }
        if single("breaker", m.breaker.is_some()) {
            merged.breaker = m.breaker;
        }
        if single("protect", m.protect.is_some()) {
            merged.protect = m.protect;
        }
        if single("tool_calls", m.tool_calls.is_some()) {
            merged.tool_calls = m.tool_calls;
        }
        if single("audit", m.audit.is_some()) {
            merged.audit = m.audit;
        }
        if single("limits", m.limits.is_some()) {
            merged.limits = m.limits;
        }
    }

    let allow: Vec<&str> = merged.allow.iter().map(|e| e.name.as_str()).collect();
    let provider: Vec<&str> = merged.provider.iter().map(|e| e.name.as_str()).collect();
    let route: Vec<&str> = merged.route.iter().map(|e| e.name.as_str()).collect();
    duplicate_names(&loc, "allow", &allow, &mut errors);
    duplicate_names(&loc, "provider", &provider, &mut errors);
    duplicate_names(&loc, "route", &route, &mut errors);

    if errors.is_empty() {
        Ok((merged, loc))
    } else {
        Err(errors)
    }
}

fn twice_defined(loc: &Locator, name: &str, first: usize, second: usize) -> PolicyError {
    let seg = [PathSeg::Key(name.to_owned())];
    let (f1, l1, c1) = loc.locate_in(first, &seg);
    let (file, line, column) = loc.locate_in(second, &seg);
    PolicyError {
        message: format!("[{name}] is defined in two files: here and in {}", display_name(&f1)),
        hint: Some(format!(
            "a single table may appear in only one file of a policy directory (first at {}:{l1}:{c1}); \
             move its keys into one file",
            f1.display()
        )),
        file,
        line,
        column,
    }
}

/// Reports every entry whose non-empty `name` an earlier entry of `section` already has.
fn duplicate_names(loc: &Locator, section: &str, names: &[&str], errors: &mut Vec<PolicyError>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, &name) in names.iter().enumerate() {
        if name.is_empty() {
            continue; // validation reports empty names
        }
        match seen.get(name) {
            Some(&first) => {
                let first_path = FieldPath::root().key(section).index(first).key("name");
                let (f, l, c) = loc.locate(&first_path);
                let path = FieldPath::root().key(section).index(i).key("name");
                errors.push(loc.error(
                    &path,
                    format!(
                        "duplicate [[{section}]] name \"{name}\"; first defined at {}:{l}:{c}",
                        f.display()
                    ),
                    Some("names must be unique across all files of the policy; rename one of them".into()),
                ));
            }
            None => {
                seen.insert(name, i);
            }
        }
    }
}

fn display_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
