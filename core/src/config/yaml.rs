//! PaddleDetection's own YAML configs, read into the same untyped tree as
//! RON (`tree::Node`), exactly as `ppdet.core.workspace.load_config` reads
//! them with PyYAML's `yaml.Loader`:
//! - a `!Tag` on a mapping (`!COCODataSet {...}`, `!PiecewiseDecay` with
//!   keys below it) or on an empty value (`!NormalizeBox {}`, `- !Permute`)
//!   makes the named object, `Node::Struct` with `name: Some(tag)`;
//! - plain scalars are typed by YAML 1.1's rules as PyYAML applies them:
//!   `true`/`yes`/`on` are booleans, `0.` and `.5` are floats but `1e-4` (no
//!   dot) is a string, `0x1f` and `017` (octal) are integers, `~`, `null`
//!   and an empty value are `None`; quoted scalars are always strings;
//! - anchors and aliases copy the anchored value; a repeated key keeps the
//!   last value, as PyYAML does.
//!
//! The parser is yaml-rust2's event parser: it reports tags, scalar styles
//! and positions, which a value-level YAML crate would hide. The tree is
//! built on an explicit stack and nesting is bounded, so no input can
//! overflow the stack.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use pulsefocus_formats::Error;
use regex_automata::meta::Regex;
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::tree::{Node, MAX_NESTING};

/// A mapping or sequence being filled, with the key waiting for its value.
enum Open {
    Map {
        name: Option<String>,
        fields: Vec<(String, Node)>,
        key: Option<String>,
        anchor: usize,
    },
    Seq {
        items: Vec<Node>,
        anchor: usize,
    },
}

/// Parses one YAML config file's text.
pub fn parse(file: &Path, text: &str) -> Result<Node, Error> {
    let at = |mark: &Marker, message: String| {
        Error::at(
            file,
            format!("line {}, column {}", mark.line(), mark.col() + 1),
            message,
        )
    };
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Open> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    loop {
        let (event, mark) = parser
            .next_token()
            .map_err(|e| at(e.marker(), e.info().to_string()))?;
        // The value this event completes, with its anchor.
        let complete: (Node, usize) = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::DocumentStart => {
                if root.is_some() {
                    return Err(at(&mark, "a config is one YAML document".into()));
                }
                continue;
            }
            Event::MappingStart(anchor, tag) => {
                let name = object_name(tag.as_ref()).map_err(|m| at(&mark, m))?;
                push(
                    &mut stack,
                    Open::Map {
                        name,
                        fields: Vec::new(),
                        key: None,
                        anchor,
                    },
                )
                .map_err(|m| at(&mark, m))?;
                continue;
            }
            Event::SequenceStart(anchor, tag) => {
                if let Some(tag) = tag.filter(|t| !is_core(t, "seq")) {
                    return Err(at(&mark, format!("a list cannot be tagged {}", show(&tag))));
                }
                push(
                    &mut stack,
                    Open::Seq {
                        items: Vec::new(),
                        anchor,
                    },
                )
                .map_err(|m| at(&mark, m))?;
                continue;
            }
            Event::MappingEnd => match stack.pop() {
                Some(Open::Map {
                    name,
                    fields,
                    key: None,
                    anchor,
                }) => (Node::Struct { name, fields }, anchor),
                _ => return Err(at(&mark, "unbalanced mapping".into())),
            },
            Event::SequenceEnd => match stack.pop() {
                Some(Open::Seq { items, anchor }) => (Node::List(items), anchor),
                _ => return Err(at(&mark, "unbalanced list".into())),
            },
            Event::Scalar(value, style, anchor, tag) => {
                // A key is the scalar's text, whatever it would resolve to.
                if let Some(Open::Map {
                    key: key @ None, ..
                }) = stack.last_mut()
                {
                    *key = Some(value);
                    continue;
                }
                let node = scalar(&value, style, tag.as_ref()).map_err(|m| at(&mark, m))?;
                (node, anchor)
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(node) => (node.clone(), 0),
                None => return Err(at(&mark, "alias of an unknown anchor".into())),
            },
        };
        let (node, anchor) = complete;
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Open::Seq { items, .. }) => items.push(node),
            Some(Open::Map { fields, key, .. }) => {
                let Some(key) = key.take() else {
                    return Err(at(&mark, "a key must be a plain value".into()));
                };
                match fields.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, existing)) => *existing = node,
                    None => fields.push((key, node)),
                }
            }
        }
    }
    match root {
        Some(node @ Node::Struct { name: None, .. }) => Ok(node),
        // An empty file configures nothing.
        None | Some(Node::Ident(_)) => Ok(Node::Struct {
            name: None,
            fields: Vec::new(),
        }),
        Some(_) => Err(Error::new(file, "a config is a mapping of keys to values")),
    }
}

fn push(stack: &mut Vec<Open>, open: Open) -> Result<(), String> {
    if stack.len() >= MAX_NESTING {
        return Err(format!("nested more than {MAX_NESTING} levels deep"));
    }
    stack.push(open);
    Ok(())
}

/// `!Name` names an object; YAML's own `!!map` names nothing.
fn object_name(tag: Option<&Tag>) -> Result<Option<String>, String> {
    match tag {
        None => Ok(None),
        Some(t) if is_core(t, "map") => Ok(None),
        Some(t) if t.handle == "!" && !t.suffix.is_empty() => Ok(Some(t.suffix.clone())),
        Some(t) => Err(format!("unsupported tag {}", show(t))),
    }
}

/// `!!name`: a tag of YAML's core schema.
fn is_core(tag: &Tag, name: &str) -> bool {
    tag.handle == "tag:yaml.org,2002:" && tag.suffix == name
}

fn show(tag: &Tag) -> String {
    match tag.handle.as_str() {
        "tag:yaml.org,2002:" => format!("!!{}", tag.suffix),
        handle => format!("{handle}{}", tag.suffix),
    }
}

/// One scalar value, typed as PyYAML types it.
fn scalar(value: &str, style: TScalarStyle, tag: Option<&Tag>) -> Result<Node, String> {
    if let Some(tag) = tag {
        if tag.handle == "!" {
            // `- !NormalizeBox` with nothing after it: an object of defaults.
            if value.is_empty() && !tag.suffix.is_empty() {
                return Ok(Node::Struct {
                    name: Some(tag.suffix.clone()),
                    fields: Vec::new(),
                });
            }
            return Err(format!(
                "{} takes keys and values, not '{value}'",
                show(tag)
            ));
        }
        let wanted = if tag.handle == "tag:yaml.org,2002:" {
            tag.suffix.as_str()
        } else {
            ""
        };
        let resolved = resolve_plain(value);
        return match (wanted, resolved) {
            ("str", _) => Ok(Node::Str(value.to_string())),
            ("int", n @ Node::Number(_)) if !value.contains('.') => Ok(n),
            ("float", n @ Node::Number(_)) => Ok(n),
            ("bool", b @ Node::Bool(_)) => Ok(b),
            ("null", n @ Node::Ident(_)) => Ok(n),
            _ => Err(format!("'{value}' is not a valid {}", show(tag))),
        };
    }
    Ok(match style {
        TScalarStyle::Plain => resolve_plain(value),
        _ => Node::Str(value.to_string()),
    })
}

struct Resolvers {
    boolean: Regex,
    int: Regex,
    float: Regex,
    null: Regex,
}

/// YAML 1.1's implicit types, as PyYAML's resolver spells them.
fn resolvers() -> &'static Resolvers {
    static RESOLVERS: OnceLock<Resolvers> = OnceLock::new();
    RESOLVERS.get_or_init(|| Resolvers {
        boolean: Regex::new(r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$")
            .unwrap(),
        int: Regex::new(
            r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
        )
        .unwrap(),
        float: Regex::new(
            r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        )
        .unwrap(),
        null: Regex::new(r"^(?:~|null|Null|NULL|)$").unwrap(),
    })
}

/// A plain scalar: boolean, integer, float, `None` or string.
fn resolve_plain(value: &str) -> Node {
    let r = resolvers();
    if r.null.is_match(value) {
        Node::Ident("None".into())
    } else if r.boolean.is_match(value) {
        Node::Bool(
            matches!(value.as_bytes()[0], b'y' | b'Y' | b't' | b'T')
                || value.eq_ignore_ascii_case("on"),
        )
    } else if r.int.is_match(value) {
        int_value(value).map_or_else(|| Node::Str(value.into()), |v| Node::Number(v.to_string()))
    } else if r.float.is_match(value) {
        Node::Number(float_text(value))
    } else {
        Node::Str(value.to_string())
    }
}

/// An integer in any of YAML 1.1's notations; `None` past i128.
fn int_value(value: &str) -> Option<i128> {
    let text: String = value.chars().filter(|&c| c != '_').collect();
    let (negative, digits) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, &text[..]),
    };
    let magnitude = if let Some(bin) = digits.strip_prefix("0b") {
        i128::from_str_radix(bin, 2).ok()?
    } else if let Some(hex) = digits.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()?
    } else if digits.contains(':') {
        // Base 60: 1:30 is 90.
        digits.split(':').try_fold(0i128, |acc, part| {
            acc.checked_mul(60)?.checked_add(part.parse::<i128>().ok()?)
        })?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i128::from_str_radix(digits, 8).ok()?
    } else {
        digits.parse().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// A float in a form RON reads back: `0.` becomes `0.0`, `.5` becomes `0.5`.
fn float_text(value: &str) -> String {
    let text: String = value.chars().filter(|&c| c != '_').collect();
    let lower = text.to_ascii_lowercase();
    if lower.ends_with("inf") {
        return if lower.starts_with('-') {
            "-inf"
        } else {
            "inf"
        }
        .into();
    }
    if lower.ends_with("nan") {
        return "NaN".into();
    }
    let parsed: f64 = if text.contains(':') {
        let negative = text.starts_with('-');
        let body = text.trim_start_matches(['-', '+']);
        let v = body.split(':').fold(0.0, |acc, part| {
            acc * 60.0 + part.parse::<f64>().unwrap_or(0.0)
        });
        if negative {
            -v
        } else {
            v
        }
    } else {
        text.parse().unwrap_or(0.0)
    };
    format!("{parsed:?}")
}

/// Writes a tree as PaddleDetection writes its configs: block mappings,
/// `!Name` on the line before a named object's keys, short lists of plain
/// values in flow style, and strings quoted only where PyYAML would read
/// them as something else.
pub fn render(node: &Node) -> String {
    let mut out = String::new();
    if let Node::Struct { fields, .. } = node {
        write_fields(&mut out, fields, 0);
    }
    out
}

fn write_fields(out: &mut String, fields: &[(String, Node)], indent: usize) {
    for (key, value) in fields {
        out.push_str(&" ".repeat(indent));
        out.push_str(key);
        out.push(':');
        write_value(out, value, indent);
    }
}

/// A value after `key:` or `- `, ending its last line.
fn write_value(out: &mut String, value: &Node, indent: usize) {
    match value {
        Node::Struct { name, fields } => match (name, fields.is_empty()) {
            (Some(name), true) => out.push_str(&format!(" !{name} {{}}\n")),
            (None, true) => out.push_str(" {}\n"),
            (Some(name), false) => {
                out.push_str(&format!("\n{}!{name}\n", " ".repeat(indent + 2)));
                write_fields(out, fields, indent + 2);
            }
            (None, false) => {
                out.push('\n');
                write_fields(out, fields, indent + 2);
            }
        },
        Node::List(items) if items.iter().any(|i| matches!(i, Node::Struct { .. })) => {
            out.push('\n');
            for item in items {
                out.push_str(&" ".repeat(indent));
                out.push('-');
                match item {
                    Node::Struct {
                        name: Some(name),
                        fields,
                    } if !fields.is_empty() => {
                        out.push_str(&format!(" !{name}\n"));
                        write_fields(out, fields, indent + 2);
                    }
                    other => write_value(out, other, indent + 2),
                }
            }
        }
        other => {
            out.push(' ');
            out.push_str(&flow(other));
            out.push('\n');
        }
    }
}

/// A value on one line.
fn flow(node: &Node) -> String {
    match node {
        Node::List(items) | Node::Tuple { items, .. } => {
            let items: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", items.join(", "))
        }
        Node::Struct { name, fields } => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{k}: {}", flow(v)))
                .collect();
            let tag = name.as_ref().map_or(String::new(), |n| format!("!{n} "));
            format!("{tag}{{{}}}", fields.join(", "))
        }
        Node::Ident(word) if word == "None" => "null".into(),
        Node::Ident(word) => quoted_if_needed(word),
        Node::Number(n) => yaml_number(n),
        Node::Bool(b) => b.to_string(),
        Node::Str(s) => quoted_if_needed(s),
    }
}

/// A number as PyYAML reads it back as one: an exponent needs a dot before
/// it and a sign (`1e-5` would be a string there, `1.0e-5` is a float).
fn yaml_number(n: &str) -> String {
    let Some((mantissa, exponent)) = n
        .split_once(['e', 'E'])
        .filter(|_| n.parse::<f64>().is_ok())
    else {
        return n.to_string();
    };
    let mantissa = if mantissa.contains('.') {
        mantissa.to_string()
    } else {
        format!("{mantissa}.0")
    };
    let exponent = if exponent.starts_with(['-', '+']) {
        exponent.to_string()
    } else {
        format!("+{exponent}")
    };
    format!("{mantissa}e{exponent}")
}

/// A string plain where PyYAML reads it back as the same string, else in
/// single quotes.
fn quoted_if_needed(s: &str) -> String {
    let special_start = s.starts_with(|c: char| "[]{}#&*!|>'\"%@`,?:-".contains(c) || c == ' ');
    let plain = !s.is_empty()
        && !special_start
        && !s.ends_with(' ')
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.contains(['\n', '\t', ',', '[', ']', '{', '}'])
        && resolve_plain(s) == Node::Str(s.to_string());
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Node {
        parse(Path::new("t.yml"), text).unwrap()
    }

    fn value(text: &str) -> Node {
        parse_ok(&format!("k: {text}")).field("k").unwrap().clone()
    }

    #[test]
    fn plain_scalars_are_typed_as_pyyaml_types_them() {
        let num = |s: &str| Node::Number(s.into());
        let string = |s: &str| Node::Str(s.into());
        assert_eq!(value("3"), num("3"));
        assert_eq!(value("-1"), num("-1"));
        assert_eq!(value("0x1f"), num("31"));
        assert_eq!(value("017"), num("15"));
        assert_eq!(value("1_000"), num("1000"));
        assert_eq!(value("0."), num("0.0"));
        assert_eq!(value(".5"), num("0.5"));
        assert_eq!(value("0.00001"), num("1e-5"));
        assert_eq!(value("1.0e-4"), num("0.0001"));
        // YAML 1.1 floats need a dot: PyYAML reads these as strings.
        assert_eq!(value("1e-4"), string("1e-4"));
        assert_eq!(value("yes"), Node::Bool(true));
        assert_eq!(value("Off"), Node::Bool(false));
        assert_eq!(value("True"), Node::Bool(true));
        assert_eq!(value("~"), Node::Ident("None".into()));
        assert_eq!(value(""), Node::Ident("None".into()));
        assert_eq!(value("'3'"), string("3"));
        assert_eq!(value("\"true\""), string("true"));
        assert_eq!(value("output/model_final"), string("output/model_final"));
        assert_eq!(value("!!str 3"), string("3"));
        assert_eq!(value("!!float 3"), num("3"));
    }

    #[test]
    fn tags_make_named_objects() {
        let tree = parse_ok(
            "dataset:\n  !VOCDataSet\n  dataset_dir: d\n  anno_path: a.txt\n\
             sample_transforms:\n- !DecodeImage\n  to_rgb: true\n- !NormalizeBox {}\n- !Permute\n",
        );
        let dataset = tree.field("dataset").unwrap();
        assert!(matches!(dataset, Node::Struct { name: Some(n), .. } if n == "VOCDataSet"));
        assert_eq!(dataset.field("anno_path"), Some(&Node::Str("a.txt".into())));
        let Some(Node::List(items)) = tree.field("sample_transforms") else {
            panic!("{tree:?}")
        };
        let names: Vec<_> = items
            .iter()
            .map(|n| match n {
                Node::Struct { name: Some(n), .. } => n.as_str(),
                _ => "?",
            })
            .collect();
        assert_eq!(names, ["DecodeImage", "NormalizeBox", "Permute"]);
    }

    #[test]
    fn anchors_repeated_keys_and_flow_style() {
        let tree = parse_ok("a: &x [1, 2]\nb: *x\nc: 1\nc: 2\nd: {e: [[1, 2], [3]]}\n");
        assert_eq!(tree.field("b"), tree.field("a"));
        assert_eq!(tree.field("c"), Some(&Node::Number("2".into())));
        assert!(tree.field("d").unwrap().field("e").is_some());
    }

    #[test]
    fn bad_yaml_is_one_line_error_with_line() {
        for (text, expect) in [
            ("a:\n\tb: 1\n", "line 2"),
            (
                "a: !!python/object:os.system {}\n",
                "unsupported tag !!python/object:os.system",
            ),
            ("a: !Decode 3\n", "!Decode takes keys and values"),
            ("a: [1, 2\n", "line"),
            ("- 1\n- 2\n", "mapping of keys"),
            ("a: *nothing\n", "line 1"),
        ] {
            let e = parse(Path::new("t.yml"), text).unwrap_err().to_string();
            assert!(e.starts_with("t.yml"), "{e}");
            assert!(e.contains(expect), "{text:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        // yaml-rust2 stops flow nesting on its own past 128 levels.
        let deep = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let e = parse(Path::new("t.yml"), &deep).unwrap_err().to_string();
        assert!(e.contains("line 1") && !e.contains('\n'), "{e}");
        let nested = format!(
            "a: {}{}\n",
            "[".repeat(MAX_NESTING + 1),
            "]".repeat(MAX_NESTING + 1)
        );
        let e = parse(Path::new("t.yml"), &nested).unwrap_err().to_string();
        assert!(e.contains("nested more than"), "{e}");
        let ok = format!(
            "a: {}{}\n",
            "[".repeat(MAX_NESTING - 2),
            "]".repeat(MAX_NESTING - 2)
        );
        parse_ok(&ok);
    }

    #[test]
    fn render_reads_back_as_the_same_tree() {
        let text = "architecture: YOLOv3\nweights: null\nname: '1e-4'\nyes_word: 'yes'\n\
            quote: \"it's: odd\"\nlr:\n  base_lr: 0.001\n  schedulers:\n  - !PiecewiseDecay\n    \
            gamma: 0.1\n    milestones: [1, 2]\n  - !LinearWarmup {}\nTrainReader:\n  dataset:\n    \
            !VOCDataSet\n    dataset_dir: d\n  fields: ['image', 'gt_bbox']\n  nested: [[1, 2], [3]]\n";
        let tree = parse_ok(text);
        let rendered = render(&tree);
        assert_eq!(parse_ok(&rendered), tree, "{rendered}");
        assert!(rendered.contains("  - !PiecewiseDecay\n"), "{rendered}");
        // Numbers with an exponent are written as PyYAML reads floats.
        assert_eq!(yaml_number("1e-5"), "1.0e-5");
        assert_eq!(yaml_number("2.5E7"), "2.5e+7");
        assert_eq!(yaml_number("0.001"), "0.001");
        // PyYAML reads 1e-4 as a string, so it needs no quotes; `yes` does.
        assert!(rendered.contains("name: 1e-4\n"), "{rendered}");
        assert!(rendered.contains("yes_word: 'yes'\n"), "{rendered}");
    }
}
