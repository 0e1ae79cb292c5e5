//! Where a setting was written: maps a path in the merged policy model (`allow[3].pins[1]`)
//! back to the file, line and column it came from, so every error can point at it.
//!
//! Each policy file is parsed a second time into a small tree of byte spans: TOML through
//! `toml_edit` (which keeps spans for keys, values, headers, inline tables and arrays), JSON
//! through the walker in `locate/json.rs`. Merging a directory concatenates `[[allow]]`,
//! `[[provider]]` and `[[route]]`, so the locator keeps, for each merged index, the file and
//! the index it had in that file.

mod json;
mod toml_spans;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::policy::load::PolicyError;

/// One step of a [`FieldPath`]: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSeg {
    /// A key of a table (TOML) or object (JSON).
    Key(String),
    /// A position in an array (0-based).
    Index(usize),
}

/// A path into the policy model, e.g. `allow[2].pins[1]` or `upstream.resolve."a.com:443"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(pub Vec<PathSeg>);

// === impl FieldPath ===

impl FieldPath {
    /// The empty path: the whole policy.
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// This path followed by a table key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.0.push(PathSeg::Key(key.into()));
        self
    }

    /// This path followed by an array index.
    pub fn index(mut self, index: usize) -> Self {
        self.0.push(PathSeg::Index(index));
        self
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                PathSeg::Index(n) => write!(f, "[{n}]")?,
                PathSeg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A parsed value with its byte span in the source text.
#[derive(Debug, Clone)]
pub(crate) struct SpanNode {
    /// Where the value starts (for a TOML table: its `[header]`).
    pub(crate) start: usize,
    /// Where the value ends (exclusive); equals `start` when unknown.
    pub(crate) end: usize,
    /// Children, if any.
    pub(crate) kids: Kids,
}

/// The children of a [`SpanNode`].
#[derive(Debug, Clone)]
pub(crate) enum Kids {
    /// A scalar.
    Leaf,
    /// A table or object, in source order.
    Map(Vec<SpanEntry>),
    /// An array (or a TOML array of tables).
    List(Vec<SpanNode>),
}

/// One key of a table with the span of the key itself.
#[derive(Debug, Clone)]
pub(crate) struct SpanEntry {
    pub(crate) key: String,
    pub(crate) key_start: usize,
    pub(crate) value: SpanNode,
}

// === impl SpanNode ===

impl SpanNode {
    /// Builds the span tree of a TOML text; `None` if it does not parse.
    pub(crate) fn from_toml(text: &str) -> Option<SpanNode> {
        toml_spans::parse(text)
    }

    /// Builds the span tree of a JSON text; `None` if it is not well-formed JSON.
    pub(crate) fn from_json(text: &str) -> Option<SpanNode> {
        json::parse(text)
    }

    /// The offset of the deepest node along `segs` that exists.
    fn anchor(&self, segs: &[PathSeg]) -> usize {
        let mut node = self;
        for seg in segs {
            match (&node.kids, seg) {
                (Kids::Map(entries), PathSeg::Key(k)) => {
                    match entries.iter().find(|e| &e.key == k) {
                        Some(e) => node = &e.value,
                        None => break,
                    }
                }
                (Kids::List(items), PathSeg::Index(i)) => match items.get(*i) {
                    Some(n) => node = n,
                    None => break,
                },
                _ => break,
            }
        }
        node.start
    }

    /// The innermost key or value whose span holds `offset`: its start, the name of the
    /// key it belongs to, and whether it is a key or scalar (rather than a table or
    /// array). Used to sharpen parser errors that only carry an offset.
    pub(crate) fn innermost(&self, offset: usize) -> (usize, Option<&str>, bool) {
        let mut best = (self.start, None);
        let mut node = self;
        loop {
            let next = match &node.kids {
                Kids::Leaf => return (best.0, best.1, true),
                Kids::List(items) => items.iter().find(|n| n.holds(offset)).map(|n| (n, None)),
                Kids::Map(entries) => {
                    let mut found = None;
                    for e in entries {
                        if offset >= e.key_start && offset < e.value.start {
                            return (e.key_start, Some(e.key.as_str()), true);
                        }
                        if e.value.holds(offset) {
                            found = Some((&e.value, Some(e.key.as_str())));
                            break;
                        }
                    }
                    found
                }
            };
            match next {
                Some((n, key)) => {
                    best = (n.start, key.or(best.1));
                    node = n;
                }
                None => return (best.0, best.1, false),
            }
        }
    }

    fn holds(&self, offset: usize) -> bool {
        offset >= self.start && offset < self.end.max(self.start + 1)
    }
}

/// One policy file as the locator knows it.
#[derive(Clone)]
pub(crate) struct SourceFile {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
    pub(crate) tree: Option<SpanNode>,
}

// === impl SourceFile ===

impl SourceFile {
    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.text, offset)
    }
}

/// 1-based line and column (in characters) of a byte offset into `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Maps paths of the merged model back to where they were written.
#[derive(Clone, Default)]
pub struct Locator {
    files: Vec<SourceFile>,
    /// For `allow`, `provider`, `route`: merged index → (file index, index in that file).
    arrays: Vec<(&'static str, Vec<(usize, usize)>)>,
    /// For single tables (`proxy`, `breaker`, ...): the file that defined it.
    singles: Vec<(&'static str, usize)>,
}

// === impl Locator ===

impl Locator {
    pub(crate) fn new(files: Vec<SourceFile>) -> Self {
        Locator {
            files,
            arrays: Vec::new(),
            singles: Vec::new(),
        }
    }

    pub(crate) fn add_array_entry(&mut self, section: &'static str, file: usize, local: usize) {
        match self.arrays.iter_mut().find(|(s, _)| *s == section) {
            Some((_, v)) => v.push((file, local)),
            None => self.arrays.push((section, vec![(file, local)])),
        }
    }

    pub(crate) fn set_single(&mut self, section: &'static str, file: usize) {
        self.singles.push((section, file));
    }

    /// File, 1-based line and 1-based column of `path`; of its nearest existing parent
    /// when the item itself is absent (a required key that is missing points at its table).
    pub fn locate(&self, path: &FieldPath) -> (PathBuf, usize, usize) {
        let (file, local) = self.resolve(path);
        self.locate_in(file, &local)
    }

    /// File, line and column of `segs` inside the file with index `file` (no merge
    /// mapping: the path is as written in that file).
    pub(crate) fn locate_in(&self, file: usize, segs: &[PathSeg]) -> (PathBuf, usize, usize) {
        match self.files.get(file) {
            None => (PathBuf::from("<policy>"), 1, 1),
            Some(src) => {
                let offset = src.tree.as_ref().map_or(0, |t| t.anchor(segs));
                let (line, col) = src.line_col(offset);
                (src.path.clone(), line, col)
            }
        }
    }

    /// A [`PolicyError`] located at `path`.
    pub fn error(
        &self,
        path: &FieldPath,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> PolicyError {
        let (file, line, column) = self.locate(path);
        PolicyError {
            file,
            line,
            column,
            message: message.into(),
            hint,
        }
    }

    /// Index of the file that `path` points into (for sorting errors in file order).
    pub(crate) fn file_index(&self, path: &FieldPath) -> usize {
        self.resolve(path).0
    }

    /// Which file `path` lives in, and the path inside that file.
    fn resolve(&self, path: &FieldPath) -> (usize, Vec<PathSeg>) {
        let segs = path.0.clone();
        let Some(PathSeg::Key(first)) = segs.first() else {
            return (0, segs);
        };
        if let Some((_, entries)) = self.arrays.iter().find(|(s, _)| s == first) {
            return match segs.get(1) {
                Some(PathSeg::Index(i)) => match entries.get(*i) {
                    Some(&(file, local)) => {
                        let mut local_segs = segs;
                        local_segs[1] = PathSeg::Index(local);
                        (file, local_segs)
                    }
                    None => (0, segs),
                },
                _ => (entries.first().map_or(0, |e| e.0), segs),
            };
        }
        if let Some((_, file)) = self.singles.iter().find(|(s, _)| s == first) {
            return (*file, segs);
        }
        (0, segs)
    }
}

impl fmt::Debug for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paths: Vec<&Path> = self.files.iter().map(|s| s.path.as_path()).collect();
        f.debug_struct("Locator").field("files", &paths).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locator(name: &str, text: &str) -> Locator {
        let tree = if name.ends_with(".json") {
            SpanNode::from_json(text)
        } else {
            SpanNode::from_toml(text)
        };
        let mut loc = Locator::new(vec![SourceFile {
            path: PathBuf::from(name),
            text: text.to_owned(),
            tree,
        }]);
        for i in 0..3 {
            loc.add_array_entry("allow", 0, i);
        }
        loc.set_single("upstream", 0);
        loc
    }

    fn at(loc: &Locator, p: FieldPath) -> (usize, usize) {
        let (_, l, c) = loc.locate(&p);
        (l, c)
    }

    #[test]
    fn display_quotes_odd_keys() {
        let p = FieldPath::root().key("allow").index(2).key("pins").index(1);
        assert_eq!(p.to_string(), "allow[2].pins[1]");
        let p = FieldPath::root()
            .key("upstream")
            .key("resolve")
            .key("a.com:443");
        assert_eq!(p.to_string(), "upstream.resolve.\"a.com:443\"");
    }

    #[test]
    fn toml_paths() {
        let text =
            "# x\n[[allow]]\nname = \"a\"\n\n[[allow]]\nname = \"b\"\npins = [\"p1\", \"p2\"]\n\
                    t = { k = 1 }\n[upstream.resolve]\n\"a.com:443\" = \"1.2.3.4:1\"\n";
        let loc = locator("p.toml", text);
        let allow = || FieldPath::root().key("allow");
        assert_eq!(at(&loc, allow().index(0)), (2, 1));
        assert_eq!(at(&loc, allow().index(1).key("name")), (6, 8));
        assert_eq!(at(&loc, allow().index(1).key("pins").index(1)), (7, 15));
        assert_eq!(at(&loc, allow().index(1).key("t").key("k")), (8, 11));
        // Missing key: the entry's header.
        assert_eq!(at(&loc, allow().index(1).key("base_url")), (5, 1));
        let r = FieldPath::root()
            .key("upstream")
            .key("resolve")
            .key("a.com:443");
        assert_eq!(at(&loc, r), (10, 15));
    }

    #[test]
    fn json_paths() {
        let text = "{\n  \"allow\": [\n    {\"name\": \"a\"},\n    {\"name\": \"b\\\"c\", \"pins\": [\"p1\", \"p2\"]}\n  ]\n}\n";
        let loc = locator("p.json", text);
        let allow = || FieldPath::root().key("allow");
        assert_eq!(at(&loc, allow().index(0)), (3, 5));
        assert_eq!(at(&loc, allow().index(1).key("pins").index(1)), (4, 37));
        assert_eq!(at(&loc, allow().index(1).key("base_url")), (4, 5));
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_col("é = 1\nab", 8), (2, 2));
        assert_eq!(line_col("éx", 3), (1, 3));
        assert_eq!(line_col("é", 1), (1, 1));
    }
}
