//! A JSON value with ordered keys, written exactly as Python's `json.dumps`
//! writes it (`, ` and `: ` separators, or `indent=4`; `ensure_ascii`; float
//! `repr`), so x2coco output can be compared byte for byte with
//! `tools/x2coco.py`'s.

use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq)]
pub enum Py {
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Py>),
    Dict(Vec<(&'static str, Py)>),
}

impl Py {
    /// A JSON number as Python would have loaded it: integers stay integers.
    pub fn number(n: &serde_json::Number) -> Py {
        match n.as_i64() {
            Some(i) => Py::Int(i),
            None => Py::Float(n.as_f64().unwrap_or(f64::NAN)),
        }
    }

    /// `json.dumps(value)` (`indent = None`) or `json.dump(value, indent=4)`.
    pub fn dumps(&self, indent: Option<usize>) -> String {
        let mut out = String::new();
        self.write(&mut out, indent, 0);
        out
    }

    fn write(&self, out: &mut String, indent: Option<usize>, depth: usize) {
        match self {
            Py::Int(i) => write!(out, "{i}").unwrap(),
            Py::Float(f) => out.push_str(&float_repr(*f)),
            Py::Str(s) => write_string(out, s),
            Py::List(items) => write_container(
                out,
                ('[', ']'),
                items.iter().map(|v| (None, v)),
                indent,
                depth,
            ),
            Py::Dict(entries) => write_container(
                out,
                ('{', '}'),
                entries.iter().map(|(k, v)| (Some(*k), v)),
                indent,
                depth,
            ),
        }
    }
}

fn write_container<'a>(
    out: &mut String,
    (open, close): (char, char),
    items: impl ExactSizeIterator<Item = (Option<&'a str>, &'a Py)>,
    indent: Option<usize>,
    depth: usize,
) {
    out.push(open);
    // Python writes empty containers as `[]` / `{}` even when indenting.
    let empty = items.len() == 0;
    for (i, (key, value)) in items.enumerate() {
        match indent {
            Some(n) => {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                out.push_str(&" ".repeat(n * (depth + 1)));
            }
            None if i > 0 => out.push_str(", "),
            None => {}
        }
        if let Some(key) = key {
            write_string(out, key);
            out.push_str(": ");
        }
        value.write(out, indent, depth + 1);
    }
    if let (Some(n), false) = (indent, empty) {
        out.push('\n');
        out.push_str(&" ".repeat(n * depth));
    }
    out.push(close);
}

/// `ensure_ascii=True`: everything outside printable ASCII becomes `\uXXXX`
/// (UTF-16 surrogate pairs above U+FFFF).
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(out, "\\u{unit:04x}").unwrap();
                }
            }
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: the shortest digits that round-trip, in fixed
/// notation for exponents -4..16 (with `.0` when integral), otherwise
/// scientific with a signed exponent of at least two digits.
pub fn float_repr(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: "-1.2345e2".
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let body = if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                format!("{digits}{}.0", "0".repeat(int_len - digits.len()))
            } else {
                format!("{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        };
        format!("{sign}{body}")
    } else {
        let frac = if digits.len() > 1 {
            format!(".{}", &digits[1..])
        } else {
            String::new()
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{}{frac}e{exp_sign}{:02}", &digits[..1], exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python_repr() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (375.0, "375.0"),
            (0.1, "0.1"),
            (123.456, "123.456"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123456789012345.6, "123456789012345.6"),
            (2.5e20, "2.5e+20"),
            (-42.75, "-42.75"),
        ];
        for (v, want) in cases {
            assert_eq!(float_repr(v), want, "{v}");
        }
    }

    #[test]
    fn dumps_matches_python_layout() {
        let v = Py::Dict(vec![
            ("a", Py::List(vec![Py::Int(1), Py::Float(2.0)])),
            ("b", Py::List(vec![])),
            ("c", Py::Str("é\"\n".into())),
        ]);
        assert_eq!(
            v.dumps(None),
            r#"{"a": [1, 2.0], "b": [], "c": "\u00e9\"\n"}"#
        );
        assert_eq!(
            v.dumps(Some(4)),
            "{\n    \"a\": [\n        1,\n        2.0\n    ],\n    \"b\": [],\n    \"c\": \"\\u00e9\\\"\\n\"\n}"
        );
    }
}
