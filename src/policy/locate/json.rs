//! A span-keeping JSON walker: just enough of a parser to know where each key and value
//! starts and ends. It runs on text that `serde_json` reads too, and gives up (`None`) on
//! anything that is not well-formed JSON, so it never has to be more lenient than that.

use super::{Kids, SpanEntry, SpanNode};

/// Deeper than any policy; serde_json stops at 128 too.
const MAX_DEPTH: usize = 128;

/// The span tree of `text`, or `None` if it is not one well-formed JSON value.
pub(super) fn parse(text: &str) -> Option<SpanNode> {
    let mut w = Walker {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    let root = w.value(0)?;
    w.skip_ws();
    (w.pos == w.bytes.len()).then_some(root)
}

struct Walker<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

// === impl Walker ===

impl Walker<'_> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.skip_ws();
        (self.peek()? == b).then(|| self.pos += 1)
    }

    fn value(&mut self, depth: usize) -> Option<SpanNode> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_ws();
        let start = self.pos;
        let kids = match self.peek()? {
            b'{' => Kids::Map(self.object(depth)?),
            b'[' => Kids::List(self.array(depth)?),
            b'"' => {
                self.string()?;
                Kids::Leaf
            }
            _ => {
                self.scalar()?;
                Kids::Leaf
            }
        };
        Some(SpanNode {
            start,
            end: self.pos,
            kids,
        })
    }

    fn object(&mut self, depth: usize) -> Option<Vec<SpanEntry>> {
        self.pos += 1; // '{'
        let mut entries = Vec::new();
        self.skip_ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(entries);
        }
        loop {
            self.skip_ws();
            let key_start = self.pos;
            let key = self.string()?;
            self.eat(b':')?;
            let value = self.value(depth + 1)?;
            entries.push(SpanEntry {
                key,
                key_start,
                value,
            });
            self.skip_ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(entries);
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<Vec<SpanNode>> {
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(items);
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(items);
                }
                _ => return None,
            }
        }
    }

    /// A string starting at `pos`; returns its decoded value. Scanning byte by byte is
    /// safe in UTF-8: no byte of a multi-byte character equals `"` or `\`.
    fn string(&mut self) -> Option<String> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.peek()? {
                b'\\' => self.pos += 2,
                b'"' => {
                    self.pos += 1;
                    break;
                }
                _ => self.pos += 1,
            }
        }
        let raw = self.text.get(start..self.pos)?;
        serde_json::from_str(raw).ok()
    }

    /// A number, `true`, `false` or `null`.
    fn scalar(&mut self) -> Option<()> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.pos += 1;
        }
        let raw = self.text.get(start..self.pos)?;
        serde_json::from_str::<serde_json::Value>(raw)
            .ok()
            .filter(|v| !v.is_object() && !v.is_array() && !v.is_string())
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: &SpanNode) -> Vec<(String, usize, usize)> {
        match &n.kids {
            Kids::Map(e) => e
                .iter()
                .map(|e| (e.key.clone(), e.key_start, e.value.start))
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn spans_of_keys_and_values() {
        let text = r#" { "a" : [1, {"b\"}": "x,]"}], "c":null } "#;
        let root = parse(text).unwrap_or_else(|| panic!("parse"));
        assert_eq!(root.start, 1);
        assert_eq!(root.end, text.len() - 1);
        let k = keys(&root);
        assert_eq!(k[0], ("a".into(), 3, 9));
        assert_eq!(k[1].0, "c");
        assert_eq!(&text[k[1].2..k[1].2 + 4], "null");
        let Kids::Map(entries) = &root.kids else {
            panic!("map")
        };
        let Kids::List(items) = &entries[0].value.kids else {
            panic!("list")
        };
        let inner = keys(&items[1]);
        assert_eq!(inner[0].0, "b\"}");
        assert_eq!(&text[inner[0].2..inner[0].2 + 5], "\"x,]\"");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "{",
            "[1,]",
            "{\"a\" 1}",
            "{\"a\":1} x",
            "tru",
            "\"abc",
            "{\"a\":}",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(&deep).is_none());
    }

    #[test]
    fn unicode_and_escapes() {
        let text = "{\"é\\u00e9\": \"ü\"}";
        let root = parse(text).unwrap_or_else(|| panic!("parse"));
        assert_eq!(keys(&root)[0].0, "éé");
    }
}
