//! The untyped form of a config: a tree of RON values that keeps struct and
//! enum names (`COCODataSet(...)`), so base files can be deep-merged and `-o`
//! overrides applied before the typed structs are built.
//!
//! The parser reads the RON subset configs use: named or unnamed structs
//! `Name(key: value, ...)`, tuples `Name(a, b)` / `Some(x)`, lists `[...]`,
//! strings, numbers, booleans, bare identifiers (unit variants, `None`) and
//! `//` / `/* */` comments. The renderer writes a tree back as RON with every
//! struct field and list element on its own line and remembers which dotted key
//! each line holds, so an error that ron reports by line names the key.

use std::path::Path;

use pulsefocus_formats::Error;

/// How a named object in a file meets the base's value under the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeRule {
    SameNameMerges,
    NamedReplaces,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Struct {
        name: Option<String>,
        fields: Vec<(String, Node)>,
    },
    Tuple {
        name: Option<String>,
        items: Vec<Node>,
    },
    /// A bare identifier: an enum unit variant or `None`.
    Ident(String),
    List(Vec<Node>),
    Str(String),
    /// Kept as written so integers stay integers.
    Number(String),
    Bool(bool),
}

impl Node {
    pub fn field(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Struct { fields, .. } => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Removes and returns a field of a struct.
    pub fn take_field(&mut self, key: &str) -> Option<Node> {
        match self {
            Node::Struct { fields, .. } => {
                let i = fields.iter().position(|(k, _)| k == key)?;
                Some(fields.remove(i).1)
            }
            _ => None,
        }
    }

    /// Deep merge of a file over its base: sections (unnamed structs) merge
    /// key by key; any other value, lists included, replaces the base's.
    /// A named object (`VOCDataSet(...)`, YAML's `!VOCDataSet`) merges into
    /// one of the same name under `MergeRule::SameNameMerges` (RON files) and
    /// replaces it whole under `MergeRule::NamedReplaces`, as
    /// PaddleDetection's `dict_merge` replaces a tagged object (YAML files).
    pub fn merge_from(&mut self, over: Node, rule: MergeRule) {
        match (self, over) {
            (
                Node::Struct { name, fields },
                Node::Struct {
                    name: over_name,
                    fields: over_fields,
                },
            ) if over_name.is_none()
                || (rule == MergeRule::SameNameMerges
                    && (*name == over_name || name.is_none())) =>
            {
                if over_name.is_some() {
                    *name = over_name;
                }
                for (key, value) in over_fields {
                    match fields.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, existing)) => existing.merge_from(value, rule),
                        None => fields.push((key, value)),
                    }
                }
            }
            (this, over) => *this = over,
        }
    }
}

/// The deepest lists, structs and tuples may nest (real configs reach 4).
/// The parser, merging, rendering and ron's own parser all recurse once per
/// level: about 16,000 levels overflowed the stack and aborted. ron refuses
/// more than 128 levels itself; the rendered tree stays well under that.
pub const MAX_NESTING: usize = 64;

/// Parses one config file's text.
pub fn parse(file: &Path, text: &str) -> Result<Node, Error> {
    let mut p = Parser {
        file,
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
        col: 1,
        depth: 0,
    };
    p.skip_space()?;
    let node = p.value()?;
    p.skip_space()?;
    if p.pos < p.chars.len() {
        return Err(p.error("unexpected text after the config's closing bracket"));
    }
    Ok(node)
}

struct Parser<'a> {
    file: &'a Path,
    chars: Vec<char>,
    pos: usize,
    line: usize,
    col: usize,
    /// Sequences open around the current position.
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> Error {
        Error::at(
            self.file,
            format!("line {}, column {}", self.line, self.col),
            message,
        )
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn skip_space(&mut self) -> Result<(), Error> {
        loop {
            match (self.peek(), self.chars.get(self.pos + 1)) {
                (Some(c), _) if c.is_whitespace() => {
                    self.bump();
                }
                (Some('/'), Some('/')) => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                (Some('/'), Some('*')) => {
                    let start = self.error("unclosed /* comment");
                    self.bump();
                    self.bump();
                    loop {
                        match self.bump() {
                            None => return Err(start),
                            Some('*') if self.peek() == Some('/') => {
                                self.bump();
                                break;
                            }
                            Some(_) => {}
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn expect(&mut self, want: char) -> Result<(), Error> {
        self.skip_space()?;
        match self.peek() {
            Some(c) if c == want => {
                self.bump();
                Ok(())
            }
            Some(c) => Err(self.error(format!("expected '{want}', found '{c}'"))),
            None => Err(self.error(format!("expected '{want}', found the end of the file"))),
        }
    }

    fn ident(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_') {
            s.push(c);
            self.bump();
        }
        s
    }

    fn value(&mut self) -> Result<Node, Error> {
        self.skip_space()?;
        match self.peek() {
            None => Err(self.error("expected a value, found the end of the file")),
            Some('"') => self.string().map(Node::Str),
            Some('[') => {
                self.bump();
                let mut items = Vec::new();
                self.sequence(']', |p| {
                    items.push(p.value()?);
                    Ok(())
                })?;
                Ok(Node::List(items))
            }
            Some('(') => self.parenthesised(None),
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let mut s = String::new();
                while let Some(c) = self
                    .peek()
                    .filter(|c| c.is_ascii_alphanumeric() || "+-._".contains(*c))
                {
                    s.push(c);
                    self.bump();
                }
                Ok(Node::Number(s))
            }
            Some(c) if c.is_alphabetic() || c == '_' => {
                let name = self.ident();
                self.skip_space()?;
                match name.as_str() {
                    "true" => Ok(Node::Bool(true)),
                    "false" => Ok(Node::Bool(false)),
                    _ if self.peek() == Some('(') => self.parenthesised(Some(name)),
                    _ => Ok(Node::Ident(name)),
                }
            }
            Some(c) => Err(self.error(format!("expected a value, found '{c}'"))),
        }
    }

    /// After an optional name: `(key: v, ...)` is a struct, `(a, b)` a tuple.
    fn parenthesised(&mut self, name: Option<String>) -> Result<Node, Error> {
        self.expect('(')?;
        self.skip_space()?;
        // A struct starts with `identifier :`; look ahead without consuming.
        let save = (self.pos, self.line, self.col);
        let key = self.ident();
        self.skip_space()?;
        let is_struct = !key.is_empty() && self.peek() == Some(':');
        (self.pos, self.line, self.col) = save;
        if is_struct || self.peek() == Some(')') {
            let mut fields: Vec<(String, Node)> = Vec::new();
            self.sequence(')', |p| {
                p.skip_space()?;
                let key = p.ident();
                if key.is_empty() {
                    return Err(p.error("expected a key"));
                }
                if fields.iter().any(|(k, _)| *k == key) {
                    return Err(p.error(format!("key '{key}' given twice")));
                }
                p.expect(':')?;
                fields.push((key, p.value()?));
                Ok(())
            })?;
            Ok(Node::Struct { name, fields })
        } else {
            let mut items = Vec::new();
            self.sequence(')', |p| {
                items.push(p.value()?);
                Ok(())
            })?;
            Ok(Node::Tuple { name, items })
        }
    }

    /// Comma-separated elements up to `close` (a trailing comma is allowed),
    /// at most `MAX_NESTING` sequences deep.
    fn sequence(
        &mut self,
        close: char,
        element: impl FnMut(&mut Self) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if self.depth == MAX_NESTING {
            return Err(self.error(format!("values nested more than {MAX_NESTING} levels deep")));
        }
        self.depth += 1;
        let result = self.elements(close, element);
        self.depth -= 1;
        result
    }

    fn elements(
        &mut self,
        close: char,
        mut element: impl FnMut(&mut Self) -> Result<(), Error>,
    ) -> Result<(), Error> {
        loop {
            self.skip_space()?;
            if self.peek() == Some(close) {
                self.bump();
                return Ok(());
            }
            element(self)?;
            self.skip_space()?;
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(c) if c == close => {}
                Some(c) => {
                    return Err(self.error(format!("expected ',' or '{close}', found '{c}'")))
                }
                None => {
                    return Err(self.error(format!("expected '{close}', found the end of the file")))
                }
            }
        }
    }

    fn string(&mut self) -> Result<String, Error> {
        let start = self.error("unclosed string");
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                None => return Err(start),
                Some('"') => return Ok(s),
                Some('\\') => match self.bump() {
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('r') => s.push('\r'),
                    Some('0') => s.push('\0'),
                    Some(c @ ('\\' | '"' | '\'')) => s.push(c),
                    Some(c) => return Err(self.error(format!("unknown escape '\\{c}'"))),
                    None => return Err(start),
                },
                Some(c) => s.push(c),
            }
        }
    }
}

/// RON text of a tree plus, for each line (0-based), the dotted key it holds.
pub struct Rendered {
    pub text: String,
    pub line_keys: Vec<String>,
}

pub fn render(node: &Node) -> Rendered {
    let mut r = Rendered {
        text: String::new(),
        line_keys: vec![String::new()],
    };
    write_node(&mut r, node, "");
    r
}

fn newline(r: &mut Rendered, key: &str) {
    r.text.push('\n');
    r.line_keys.push(key.to_string());
}

fn write_node(r: &mut Rendered, node: &Node, key: &str) {
    match node {
        Node::Struct { name, fields } => {
            r.text.push_str(name.as_deref().unwrap_or(""));
            r.text.push('(');
            for (k, v) in fields {
                let path = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                newline(r, &path);
                r.text.push_str(k);
                r.text.push_str(": ");
                write_node(r, v, &path);
                r.text.push(',');
            }
            newline(r, key);
            r.text.push(')');
        }
        Node::Tuple { name, items } => {
            r.text.push_str(name.as_deref().unwrap_or(""));
            r.text.push('(');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    r.text.push_str(", ");
                }
                write_node(r, item, key);
            }
            r.text.push(')');
        }
        Node::List(items) => {
            r.text.push('[');
            for (i, item) in items.iter().enumerate() {
                let path = format!("{key}[{i}]");
                newline(r, &path);
                write_node(r, item, &path);
                r.text.push(',');
            }
            newline(r, key);
            r.text.push(']');
        }
        Node::Ident(s) | Node::Number(s) => r.text.push_str(s),
        Node::Bool(b) => r.text.push_str(if *b { "true" } else { "false" }),
        Node::Str(s) => {
            r.text.push('"');
            for c in s.chars() {
                match c {
                    '"' => r.text.push_str("\\\""),
                    '\\' => r.text.push_str("\\\\"),
                    '\n' => r.text.push_str("\\n"),
                    '\t' => r.text.push_str("\\t"),
                    '\r' => r.text.push_str("\\r"),
                    c => r.text.push(c),
                }
            }
            r.text.push('"');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Node {
        parse(Path::new("t.ron"), text).unwrap()
    }

    #[test]
    fn parses_the_config_subset() {
        let n = p(r#"// comment
            (a: 1, /* block */ b: [COCODataSet(dir: "x\"y"), Some(2.5), None], c: true, d: (-1, 2),)"#);
        assert_eq!(n.field("a"), Some(&Node::Number("1".into())));
        let Some(Node::List(b)) = n.field("b") else {
            panic!("{n:?}")
        };
        assert_eq!(
            b[0],
            Node::Struct {
                name: Some("COCODataSet".into()),
                fields: vec![("dir".into(), Node::Str("x\"y".into()))]
            }
        );
        assert_eq!(b[2], Node::Ident("None".into()));
        assert_eq!(n.field("c"), Some(&Node::Bool(true)));
        assert!(matches!(n.field("d"), Some(Node::Tuple { items, .. }) if items.len() == 2));
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let err = parse(Path::new("x.ron"), "(\n  a: 1\n  b: 2)").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.ron (line 3, column 3): expected ',' or ')', found 'b'"
        );
        let err = parse(Path::new("x.ron"), "(a: \"open)").unwrap_err();
        assert!(err.to_string().contains("unclosed string"), "{err}");
        let err = parse(Path::new("x.ron"), "(a: 1, a: 2)").unwrap_err();
        assert!(err.to_string().contains("'a' given twice"), "{err}");
    }

    /// About 16,000 levels overflowed the stack (SIGABRT); any depth is now
    /// an error naming the line, well before the stack runs out.
    #[test]
    fn deep_nesting_is_an_error_naming_the_line() {
        for (open, close) in [("(", ")"), ("[", "]"), ("(a: ", ")")] {
            let text = format!("\n{}1{}", open.repeat(100_000), close.repeat(100_000));
            let err = parse(Path::new("x.ron"), &text).unwrap_err().to_string();
            assert!(
                err.starts_with("x.ron (line 2, column ")
                    && err.ends_with("values nested more than 64 levels deep"),
                "{err}"
            );
        }
        let ok = format!("{}1{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        let node = parse(Path::new("x.ron"), &ok).unwrap();
        assert!(render(&node).text.contains('1'));
    }

    #[test]
    fn merge_is_deep_for_sections_and_replaces_the_rest() {
        let mut base = p(r#"(R: (batch: 8, ds: VOCDataSet(dir: "a", bg: false)), l: [1, 2])"#);
        base.merge_from(
            p(r#"(R: (ds: VOCDataSet(dir: "b")), l: [3])"#),
            MergeRule::SameNameMerges,
        );
        assert_eq!(
            base,
            p(r#"(R: (batch: 8, ds: VOCDataSet(dir: "b", bg: false)), l: [3])"#)
        );
        base.merge_from(
            p(r#"(R: (ds: COCODataSet(dir: "c")))"#),
            MergeRule::SameNameMerges,
        );
        assert_eq!(
            base.field("R").unwrap().field("ds"),
            Some(&p(r#"COCODataSet(dir: "c")"#))
        );
        // PaddleDetection's rule: a named object replaces even its namesake.
        base.merge_from(
            p(r#"(R: (ds: COCODataSet(anno: "x")))"#),
            MergeRule::NamedReplaces,
        );
        assert_eq!(
            base.field("R").unwrap().field("ds"),
            Some(&p(r#"COCODataSet(anno: "x")"#))
        );
        assert!(base.field("R").unwrap().field("batch").is_some());
    }

    #[test]
    fn render_parses_back_and_maps_lines_to_keys() {
        let n = p(r#"(a: (b: [X(c: "q\\"), 2]), d: Some(1))"#);
        let r = render(&n);
        assert_eq!(p(&r.text), n);
        let line = r.text.lines().position(|l| l.starts_with("c:")).unwrap();
        assert_eq!(r.line_keys[line], "a.b[0].c");
    }

    /// Small trees of sections, named objects, lists and scalars under a few
    /// shared keys, so that merges meet the same keys often.
    fn tree_strategy() -> impl proptest::strategy::Strategy<Value = Node> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            (0i32..5).prop_map(|n| Node::Number(n.to_string())),
            "[a-c]".prop_map(Node::Str),
            any::<bool>().prop_map(Node::Bool),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Node::List),
                (
                    proptest::option::of(prop_oneof![Just("VOC"), Just("COCO")]),
                    proptest::collection::vec(
                        (prop_oneof![Just("a"), Just("b"), Just("c")], inner),
                        0..3
                    ),
                )
                    .prop_map(|(name, fields)| Node::Struct {
                        name: name.map(str::to_string),
                        fields: first_of_each_key(
                            fields
                                .into_iter()
                                .map(|(k, v)| (k.to_string(), v))
                                .collect(),
                        ),
                    }),
            ]
        })
    }

    /// A struct holds each key once: the first of repeated keys is kept.
    fn first_of_each_key(fields: Vec<(String, Node)>) -> Vec<(String, Node)> {
        let mut unique: Vec<(String, Node)> = Vec::new();
        for (k, v) in fields {
            if !unique.iter().any(|(u, _)| *u == k) {
                unique.push((k, v));
            }
        }
        unique
    }

    fn section(fields: Vec<(String, Node)>) -> Node {
        Node::Struct {
            name: None,
            fields: first_of_each_key(fields),
        }
    }

    proptest::proptest! {
        /// What a file says wins, what it leaves out is inherited: every key
        /// of the file's section is in the result, with the file's scalar,
        /// list or (PaddleDetection's rule) named object as written; every
        /// key only the base has keeps the base's value; and an empty file
        /// changes nothing.
        #[test]
        fn merge_keeps_the_files_values_and_inherits_the_rest(
            base in proptest::collection::vec(("[a-d]", tree_strategy()), 0..4),
            over in proptest::collection::vec(("[a-d]", tree_strategy()), 0..4),
            named_replaces in proptest::bool::ANY,
        ) {
            let (base, over) = (section(base), section(over));
            let rule = if named_replaces { MergeRule::NamedReplaces } else { MergeRule::SameNameMerges };
            let mut merged = base.clone();
            merged.merge_from(over.clone(), rule);
            let Node::Struct { fields: over_fields, .. } = &over else { unreachable!() };
            let Node::Struct { fields: base_fields, .. } = &base else { unreachable!() };
            for (key, value) in over_fields {
                let got = merged.field(key).unwrap();
                let replaces = match value {
                    Node::Struct { name: None, .. } => false,
                    Node::Struct { name, .. } => {
                        rule == MergeRule::NamedReplaces
                            || !matches!(base.field(key), Some(Node::Struct { name: b, .. }) if b == name || b.is_none())
                    }
                    _ => true,
                };
                if replaces {
                    proptest::prop_assert_eq!(got, value);
                }
            }
            for (key, value) in base_fields {
                if over.field(key).is_none() {
                    proptest::prop_assert_eq!(merged.field(key), Some(value));
                }
            }
            let mut unchanged = base.clone();
            unchanged.merge_from(section(Vec::new()), rule);
            proptest::prop_assert_eq!(unchanged, base);
        }
    }
}
