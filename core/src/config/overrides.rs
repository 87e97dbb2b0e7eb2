//! `-o key=value` overrides with PaddleDetection's syntax: a dotted key into
//! nested sections, and a value in YAML/Python flow syntax: numbers, booleans,
//! bare or quoted strings (a URL is a bare string), `None`/`null`, lists
//! `[a, 'b', "c"]` and flow maps `{key: value}`.

use std::path::Path;

use pulsefocus_formats::Error;

use super::tree::{MergeRule, Node, MAX_NESTING};

/// One parsed `-o` argument.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The dotted key split at the dots: `TrainReader.batch_size` -> 2 parts.
    pub key: Vec<String>,
    pub value: Node,
    /// The argument as the user wrote it, for error messages.
    pub text: String,
}

impl Override {
    pub fn parse(text: &str) -> Result<Override, Error> {
        let bad = |msg: &str| Error::at(Path::new("-o"), text, msg);
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| bad("expected key=value"))?;
        let key: Vec<String> = key.trim().split('.').map(str::to_string).collect();
        if key.iter().any(|k| k.is_empty()) {
            return Err(bad("empty part in the dotted key"));
        }
        let value = parse_value(value.trim()).map_err(|msg| bad(&msg))?;
        Ok(Override {
            key,
            value,
            text: text.to_string(),
        })
    }

    /// Sets the value in the tree, creating missing sections on the way. An
    /// unknown key is caught later, when the typed config is built.
    pub fn apply(&self, root: &mut Node) -> Result<(), Error> {
        let mut node = root;
        for (depth, part) in self.key.iter().enumerate() {
            let Node::Struct { fields, .. } = node else {
                return Err(Error::at(
                    Path::new("-o"),
                    &self.text,
                    format!(
                        "'{}' is a value, not a section",
                        self.key[..depth].join(".")
                    ),
                ));
            };
            let i = match fields.iter().position(|(k, _)| k == part) {
                Some(i) => i,
                None => {
                    let empty = Node::Struct {
                        name: None,
                        fields: Vec::new(),
                    };
                    fields.push((part.clone(), empty));
                    fields.len() - 1
                }
            };
            node = &mut fields[i].1;
        }
        // A flow map merges into the section it names, key by key (as a
        // section of a file merges over its base); anything else replaces.
        match (&self.value, &*node) {
            (Node::Struct { name: None, .. }, Node::Struct { .. }) => {
                node.merge_from(self.value.clone(), MergeRule::SameNameMerges)
            }
            _ => *node = retyped_like(self.value.clone(), node),
        }
        Ok(())
    }
}

/// YAML has no enums: a bare word that replaces an enum unit variant (such as
/// `None`) or a bare identifier stays an identifier.
fn retyped_like(value: Node, old: &Node) -> Node {
    match (value, old) {
        (Node::Str(s), Node::Ident(_)) if is_identifier(&s) => Node::Ident(s),
        (value, _) => value,
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One flow value.
pub fn parse_value(text: &str) -> Result<Node, String> {
    parse_nested(text, 0)
}

/// A value inside `depth` lists or maps, at most `MAX_NESTING` (the parse
/// recurses once per level: a hostile `-o` must not overflow the stack).
fn parse_nested(text: &str, depth: usize) -> Result<Node, String> {
    if depth > MAX_NESTING {
        return Err(format!("values nested more than {MAX_NESTING} levels deep"));
    }
    let t = text.trim();
    if let Some(inner) = t.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| format!("list '{t}' has no closing ']'"))?;
        return split_items(inner)?
            .iter()
            .map(|item| parse_nested(item, depth + 1))
            .collect::<Result<_, _>>()
            .map(Node::List);
    }
    if let Some(inner) = t.strip_prefix('{') {
        let inner = inner
            .strip_suffix('}')
            .ok_or_else(|| format!("map '{t}' has no closing '}}'"))?;
        let mut fields = Vec::new();
        for item in split_items(inner)? {
            let (k, v) = item
                .split_once(':')
                .ok_or_else(|| format!("map entry '{item}' has no ':'"))?;
            fields.push((unquote(k.trim())?.to_string(), parse_nested(v, depth + 1)?));
        }
        return Ok(Node::Struct { name: None, fields });
    }
    if t.starts_with('\'') || t.starts_with('"') {
        return unquote(t).map(Node::Str);
    }
    match t {
        "true" | "True" => return Ok(Node::Bool(true)),
        "false" | "False" => return Ok(Node::Bool(false)),
        "None" | "null" | "~" => return Ok(Node::Ident("None".into())),
        _ => {}
    }
    if let Some(number) = number(t) {
        return Ok(number);
    }
    Ok(Node::Str(t.to_string()))
}

/// YAML/Python numbers in the form RON reads: integers as written, floats
/// through Rust's shortest round-trip formatting (`.5` -> `0.5`, `5e-4` -> `0.0005`).
fn number(t: &str) -> Option<Node> {
    let first = t.chars().next()?;
    if !(first.is_ascii_digit() || "+-.".contains(first)) {
        return None;
    }
    if let Ok(i) = t.parse::<i64>() {
        return Some(Node::Number(i.to_string()));
    }
    let f = t.parse::<f64>().ok().filter(|f| f.is_finite())?;
    let mut s = format!("{f:?}");
    if !s.contains('.') && !s.contains('e') {
        s.push_str(".0");
    }
    Some(Node::Number(s))
}

/// A quoted string without its quotes; `\'`, `\"` and `\\` escapes.
fn unquote(t: &str) -> Result<String, String> {
    let mut chars = t.chars();
    let Some(quote @ ('\'' | '"')) = chars.next() else {
        return Ok(t.to_string());
    };
    let mut out = String::new();
    loop {
        match chars.next() {
            None => return Err(format!("unclosed quote in {t}")),
            Some('\\') => out.push(chars.next().ok_or(format!("unclosed quote in {t}"))?),
            Some(c) if c == quote => break,
            Some(c) => out.push(c),
        }
    }
    if chars.next().is_some() {
        return Err(format!("text after the closing quote in {t}"));
    }
    Ok(out)
}

/// Splits a list's inside at top-level commas, respecting quotes and brackets.
fn split_items(inner: &str) -> Result<Vec<String>, String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in inner.chars() {
        if let Some(q) = quote {
            current.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(format!("unbalanced brackets in [{inner}]"));
        }
        current.push(c);
    }
    if quote.is_some() {
        return Err(format!("unclosed quote in [{inner}]"));
    }
    if depth != 0 {
        return Err(format!("unbalanced brackets in [{inner}]"));
    }
    items.push(current);
    // `[]` and a trailing comma leave one empty item.
    if items.last().is_some_and(|s| s.trim().is_empty()) {
        items.pop();
    }
    if items.iter().any(|s| s.trim().is_empty()) {
        return Err(format!("empty item in [{inner}]"));
    }
    Ok(items.into_iter().map(|s| s.trim().to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn str_node(s: &str) -> Node {
        Node::Str(s.into())
    }

    #[test]
    fn paddle_detection_examples() {
        let o = Override::parse("TrainReader.batch_size=4").unwrap();
        assert_eq!(o.key, ["TrainReader", "batch_size"]);
        assert_eq!(o.value, Node::Number("4".into()));
        let o = Override::parse("LearningRate.base_lr=0.0005").unwrap();
        assert_eq!(o.value, Node::Number("0.0005".into()));
        let o = Override::parse("finetune_exclude_pretrained_params=['cls_score','bbox_pred']")
            .unwrap();
        assert_eq!(
            o.value,
            Node::List(vec![str_node("cls_score"), str_node("bbox_pred")])
        );
        let url = "https://paddlemodels.bj.bcebos.com/object_detection/faster_rcnn_r50_1x.tar";
        let o = Override::parse(&format!("pretrain_weights={url}")).unwrap();
        assert_eq!(o.value, str_node(url));
        assert_eq!(
            parse_value("[\"a,b\", 'c']").unwrap(),
            Node::List(vec![str_node("a,b"), str_node("c")])
        );
        assert_eq!(parse_value("5e-4").unwrap(), Node::Number("0.0005".into()));
        assert_eq!(parse_value("True").unwrap(), Node::Bool(true));
        assert_eq!(
            parse_value("[[6, 7], []]").unwrap(),
            Node::List(vec![
                Node::List(vec![Node::Number("6".into()), Node::Number("7".into())]),
                Node::List(vec![]),
            ])
        );
        assert_eq!(
            parse_value("{dataset_dir: d, with_background: false}").unwrap(),
            Node::Struct {
                name: None,
                fields: vec![
                    ("dataset_dir".into(), str_node("d")),
                    ("with_background".into(), Node::Bool(false))
                ]
            }
        );
    }

    #[test]
    fn malformed_overrides_are_errors() {
        for bad in [
            "no_equals",
            "a..b=1",
            "a=[1, 2",
            "a='open",
            "a=[1,,2]",
            "a=['x'y]",
        ] {
            let err = Override::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        // As deep as a command line allows (128 KiB): an error, not a stack
        // overflow, and no quadratic splitting either.
        for (open, close) in [("[", "]"), ("{a: ", "}")] {
            let deep = format!("a={}1{}", open.repeat(30_000), close.repeat(30_000));
            let err = Override::parse(&deep).unwrap_err().to_string();
            assert!(
                err.ends_with("values nested more than 64 levels deep"),
                "{err}"
            );
        }
        let ok = format!("a={}1{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        assert!(Override::parse(&ok).is_ok());
    }

    #[test]
    fn apply_descends_creates_and_keeps_enum_words() {
        let mut root = super::super::tree::parse(
            Path::new("t"),
            "(R: (ds: VOCDataSet(dir: \"a\")), weights: None, n: 1)",
        )
        .unwrap();
        Override::parse("R.ds.dir=b")
            .unwrap()
            .apply(&mut root)
            .unwrap();
        Override::parse("R.new.x=1")
            .unwrap()
            .apply(&mut root)
            .unwrap();
        Override::parse("weights=out/model")
            .unwrap()
            .apply(&mut root)
            .unwrap();
        let ds = root.field("R").unwrap().field("ds").unwrap();
        assert_eq!(ds.field("dir"), Some(&str_node("b")));
        assert!(matches!(ds, Node::Struct { name: Some(n), .. } if n == "VOCDataSet"));
        assert_eq!(
            root.field("R").unwrap().field("new").unwrap().field("x"),
            Some(&Node::Number("1".into()))
        );
        assert_eq!(root.field("weights"), Some(&str_node("out/model")));
        let err = Override::parse("n.x=1")
            .unwrap()
            .apply(&mut root)
            .unwrap_err();
        assert!(err.to_string().contains("'n' is a value"), "{err}");
    }

    /// Writes a value in the override syntax, quoting strings with `quote`.
    fn write_value(node: &Node, quote: char) -> String {
        match node {
            Node::Str(s) => format!("{quote}{s}{quote}"),
            Node::Number(n) => n.clone(),
            Node::Bool(b) => b.to_string(),
            Node::List(items) => {
                let inner: Vec<String> = items.iter().map(|i| write_value(i, quote)).collect();
                format!("[{}]", inner.join(", "))
            }
            other => panic!("not generated: {other:?}"),
        }
    }

    fn scalar() -> impl Strategy<Value = Node> {
        prop_oneof![
            "[a-zA-Z0-9_./:, -]{0,12}".prop_map(Node::Str),
            any::<i32>().prop_map(|i| Node::Number(i.to_string())),
            (-1e6f64..1e6).prop_map(|f| Node::Number(format!("{f:?}"))),
            any::<bool>().prop_map(Node::Bool),
        ]
    }

    fn value() -> impl Strategy<Value = Node> {
        prop_oneof![
            scalar(),
            prop::collection::vec(scalar(), 0..5).prop_map(Node::List),
            prop::collection::vec(
                prop::collection::vec(scalar(), 0..3).prop_map(Node::List),
                0..3
            )
            .prop_map(Node::List),
        ]
    }

    proptest! {
        #[test]
        fn overrides_parse_back_to_what_was_written(
            key in prop::collection::vec("[A-Za-z_][A-Za-z0-9_]{0,8}", 1..4),
            value in value(),
            double in any::<bool>(),
        ) {
            let quote = if double { '"' } else { '\'' };
            let text = format!("{}={}", key.join("."), write_value(&value, quote));
            let parsed = Override::parse(&text).unwrap();
            prop_assert_eq!(parsed.key, key);
            prop_assert_eq!(parsed.value, value);
        }

        #[test]
        fn bare_words_are_strings(word in "[a-z][a-z0-9_/.:-]{0,20}") {
            prop_assume!(!["true", "false", "null"].contains(&word.as_str()));
            prop_assert_eq!(parse_value(&word).unwrap(), Node::Str(word));
        }
    }
}
