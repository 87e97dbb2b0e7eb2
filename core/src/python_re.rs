//! Python `re` patterns (the syntax of PaddleDetection's
//! `finetune_exclude_pretrained_params`) checked the way Python 3.11 checks
//! them and rewritten in the syntax of the `regex` crates, so that a pattern
//! matches the names Python's `re.match` matches.
//!
//! A pattern Python rejects is an error with Python's reason and position.
//! Constructs the regex engine lacks (lookaround, backreferences,
//! conditionals, atomic groups, possessive quantifiers) and the flags whose
//! meaning would differ (`a`, `x`, `L`, `t`) are errors naming the construct.
//!
//! Every literal character is written escaped, so nothing means more in the
//! output than it did in the input: `\<`, `a{,3}`, `[a&&b]` and `(?<n>x)`
//! each mean something else to the regex crates than to Python.
//!
//! `$` is written as it is: the regex crates' `$` is the end of the name,
//! Python's is the end or just before a final newline, and no parameter name
//! ends in a newline.

/// What the last item written can take: a quantifier needs something to
/// repeat, and Python refuses a quantifier on an anchor or on a quantifier.
#[derive(Clone, Copy, PartialEq)]
enum Last {
    Nothing,
    Anchor,
    Atom,
    Repeat,
}

struct Translator {
    chars: Vec<char>,
    pos: usize,
    out: String,
    /// Positions of the `(` of the groups still open.
    open: Vec<usize>,
    last: Last,
    group_names: Vec<String>,
    /// Anything but global flags and comments written yet (Python wants
    /// global flags at the very start).
    started: bool,
}

/// The regex-crate form of a Python pattern, or why it cannot be one (a
/// message that names the construct and its position).
pub fn translate(pattern: &str) -> Result<String, String> {
    let mut t = Translator {
        chars: pattern.chars().collect(),
        pos: 0,
        out: String::new(),
        open: Vec::new(),
        last: Last::Nothing,
        group_names: Vec::new(),
        started: false,
    };
    while let Some(c) = t.next() {
        let start = t.pos - 1;
        match c {
            '\\' => t.escape(start)?,
            '[' => t.class(start)?,
            '(' => t.group(start)?,
            ')' => {
                if t.open.pop().is_none() {
                    return Err(at("unbalanced parenthesis", start));
                }
                t.write(")", Last::Atom);
            }
            '|' => t.write("|", Last::Nothing),
            '^' => t.write("^", Last::Anchor),
            '$' => t.write("$", Last::Anchor),
            '.' => t.write(".", Last::Atom),
            '*' | '+' | '?' => t.repeat(start, c.to_string())?,
            '{' => match t.counted_repeat(start)? {
                Some(count) => t.repeat(start, count)?,
                None => t.literal('{'),
            },
            _ => t.literal(c),
        }
    }
    if let Some(&open) = t.open.last() {
        return Err(at("missing ), unterminated subpattern", open));
    }
    Ok(t.out)
}

fn at(what: &str, position: usize) -> String {
    format!("{what} at position {position}")
}

fn unsupported(construct: &str, position: usize) -> String {
    format!("{construct} at position {position} is not supported (the regex engine has none)")
}

/// Characters with a meaning of their own in the regex crates' syntax.
const RUST_META: &str = "\\.+*?()|[]{}^$#&-~";

impl Translator {
    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied()?;
        self.pos += 1;
        Some(c)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        let found = self.peek() == Some(c);
        self.pos += found as usize;
        found
    }

    fn write(&mut self, text: &str, last: Last) {
        self.out.push_str(text);
        self.last = last;
        self.started = true;
    }

    fn literal(&mut self, c: char) {
        if RUST_META.contains(c) {
            self.out.push('\\');
        }
        self.out.push(c);
        self.last = Last::Atom;
        self.started = true;
    }

    /// After `\` outside a class.
    fn escape(&mut self, start: usize) -> Result<(), String> {
        let Some(c) = self.next() else {
            return Err(at("bad escape (end of pattern)", start));
        };
        match c {
            'A' | 'b' | 'B' => self.write(&format!("\\{c}"), Last::Anchor),
            'Z' => self.write("\\z", Last::Anchor),
            'd' | 'D' | 's' | 'S' | 'w' | 'W' => self.write(&format!("\\{c}"), Last::Atom),
            '1'..='9' => {
                let octal = |c: Option<&char>| c.is_some_and(|c| ('0'..='7').contains(c));
                let three_octal = c <= '7'
                    && octal(self.chars.get(self.pos))
                    && octal(self.chars.get(self.pos + 1));
                if !three_octal {
                    return Err(unsupported("backreference", start));
                }
                let ch = self.octal(c, start)?;
                self.literal(ch);
            }
            _ => {
                let ch = self.escaped_char(c, start)?;
                self.literal(ch);
            }
        }
        Ok(())
    }

    /// The character an escape stands for, in or out of a class (`c` follows
    /// the `\` at `start`); the escapes of anchors and sets are handled before.
    fn escaped_char(&mut self, c: char, start: usize) -> Result<char, String> {
        let code = match c {
            'a' => 0x07,
            'f' => 0x0c,
            'n' => 0x0a,
            'r' => 0x0d,
            't' => 0x09,
            'v' => 0x0b,
            'x' => self.hex(2, start)?,
            'u' => self.hex(4, start)?,
            'U' => self.hex(8, start)?,
            '0'..='7' => return self.octal(c, start),
            'N' => return Err(unsupported("named character escape \\N", start)),
            c if c.is_ascii_alphanumeric() => return Err(at(&format!("bad escape \\{c}"), start)),
            c => return Ok(c),
        };
        char::from_u32(code)
            .ok_or_else(|| at("escape of a code point that is not a character", start))
    }

    /// Up to three octal digits, the first already read.
    fn octal(&mut self, first: char, start: usize) -> Result<char, String> {
        let mut value = first.to_digit(8).unwrap_or(0);
        for _ in 0..2 {
            match self.peek().and_then(|c| c.to_digit(8)) {
                Some(d) => {
                    value = value * 8 + d;
                    self.pos += 1;
                }
                None => break,
            }
        }
        if value > 0o377 {
            return Err(at("octal escape value outside of range 0-0o377", start));
        }
        Ok(char::from_u32(value).unwrap_or_default())
    }

    /// Exactly `digits` hex digits.
    fn hex(&mut self, digits: usize, start: usize) -> Result<u32, String> {
        let mut value = 0u32;
        for _ in 0..digits {
            match self.peek().and_then(|c| c.to_digit(16)) {
                Some(d) => {
                    value = value.saturating_mul(16).saturating_add(d);
                    self.pos += 1;
                }
                None => return Err(at("incomplete escape", start)),
            }
        }
        Ok(value)
    }

    /// `[...]`, each literal written as `\x{..}` (the regex crates give
    /// `[`, `&&`, `--` and `~~` a meaning inside classes; Python does not).
    fn class(&mut self, start: usize) -> Result<(), String> {
        let mut class = String::from("[");
        if self.eat('^') {
            class.push('^');
        }
        let first = self.pos;
        let unterminated = || at("unterminated character set", start);
        loop {
            let item_start = self.pos;
            let c = self.next().ok_or_else(unterminated)?;
            // A `]` first is a literal.
            if c == ']' && item_start != first {
                break;
            }
            let low = self.class_item(c, item_start)?;
            if !self.eat('-') {
                class.push_str(&low);
                continue;
            }
            let c = self.next().ok_or_else(unterminated)?;
            if c == ']' {
                class.push_str(&low);
                class.push_str("\\x{2d}");
                break;
            }
            let high = self.class_item(c, self.pos - 1)?;
            let range = match (range_end(&low), range_end(&high)) {
                (Some(l), Some(h)) if l <= h => format!("{low}-{high}"),
                _ => return Err(at("bad character range", item_start)),
            };
            class.push_str(&range);
        }
        class.push(']');
        self.write(&class, Last::Atom);
        Ok(())
    }

    /// One class member: a set (`\d`) as written, a character as `\x{..}`.
    fn class_item(&mut self, c: char, start: usize) -> Result<String, String> {
        let c = match c {
            '\\' => match self.next() {
                None => return Err(at("unterminated character set", start)),
                Some(set @ ('d' | 'D' | 's' | 'S' | 'w' | 'W')) => return Ok(format!("\\{set}")),
                Some('b') => '\u{8}',
                Some(d @ ('8' | '9')) => return Err(at(&format!("bad escape \\{d}"), start)),
                Some(e) => self.escaped_char(e, start)?,
            },
            c => c,
        };
        Ok(format!("\\x{{{:x}}}", c as u32))
    }

    /// After `(`.
    fn group(&mut self, start: usize) -> Result<(), String> {
        if !self.eat('?') {
            self.open_group(start, "(");
            return Ok(());
        }
        match self.next() {
            Some(':') => self.open_group(start, "(?:"),
            Some('P') => match self.next() {
                Some('<') => {
                    let name_start = self.pos;
                    let Some(len) = self.chars[name_start..].iter().position(|&c| c == '>') else {
                        return Err(at("missing >, unterminated name", name_start));
                    };
                    let name: String = self.chars[name_start..name_start + len].iter().collect();
                    self.pos += len + 1;
                    if name.is_empty() {
                        return Err(at("missing group name", name_start));
                    }
                    if !is_python_identifier(&name) {
                        return Err(at(
                            &format!("bad character in group name {name:?}"),
                            name_start,
                        ));
                    }
                    if self.group_names.contains(&name) {
                        return Err(at(
                            &format!("redefinition of group name {name:?}"),
                            name_start,
                        ));
                    }
                    self.group_names.push(name);
                    // The name does not change what matches.
                    self.open_group(start, "(");
                }
                Some('=') => return Err(unsupported("backreference (?P=...)", start)),
                _ => return Err(at("unknown extension ?P", start)),
            },
            Some('#') => {
                let Some(len) = self.chars[self.pos..].iter().position(|&c| c == ')') else {
                    return Err(at("missing ), unterminated comment", start));
                };
                self.pos += len + 1;
            }
            Some('=' | '!') => return Err(unsupported("lookahead", start)),
            Some('<') => match self.next() {
                Some('=' | '!') => return Err(unsupported("lookbehind", start)),
                _ => return Err(at("unknown extension ?<", start)),
            },
            Some('(') => return Err(unsupported("conditional group (?(...)...)", start)),
            Some('>') => return Err(unsupported("atomic group (?>...)", start)),
            Some(c) if PYTHON_FLAGS.contains(c) || c == '-' => self.flags(start, c)?,
            Some(c) => return Err(at(&format!("unknown extension ?{c}"), start)),
            None => return Err(at("unexpected end of pattern", start)),
        }
        Ok(())
    }

    fn open_group(&mut self, start: usize, text: &str) {
        self.open.push(start);
        self.write(text, Last::Nothing);
    }

    /// `(?flags)` at the start of the pattern or `(?on-off:...)`; `first` is
    /// the character after `?`.
    fn flags(&mut self, start: usize, first: char) -> Result<(), String> {
        let mut on = String::new();
        let mut off = String::new();
        let mut c = Some(first);
        let mut turning_off = false;
        loop {
            match c {
                Some(')') if !turning_off => break,
                Some(':') => break,
                Some('-') if !turning_off => turning_off = true,
                Some(f) if PYTHON_FLAGS.contains(f) => {
                    match f {
                        'i' | 'm' | 's' => {}
                        'u' if !turning_off => {}
                        'u' | 'a' | 'L' if turning_off => {
                            return Err(at(
                                "bad inline flags: cannot turn off flags 'a', 'u' and 'L'",
                                start,
                            ));
                        }
                        'L' => {
                            return Err(at(
                                "bad inline flags: cannot use 'L' flag with a str pattern",
                                start,
                            ));
                        }
                        'a' => return Err(unsupported("ASCII-only flag (?a)", start)),
                        'x' => return Err(unsupported("verbose flag (?x)", start)),
                        _ => return Err(unsupported(&format!("flag (?{f})"), start)),
                    }
                    let set = if turning_off { &mut off } else { &mut on };
                    if f != 'u' && !set.contains(f) {
                        set.push(f);
                    }
                }
                Some(other) if other.is_alphabetic() => return Err(at("unknown flag", start)),
                _ if turning_off => return Err(at("missing :", start)),
                _ => return Err(at("missing -, : or )", start)),
            }
            c = self.next();
        }
        if turning_off && off.is_empty() {
            return Err(at("missing flag", start));
        }
        if on.chars().any(|f| off.contains(f)) {
            return Err(at("bad inline flags: flag turned on and off", start));
        }
        if c == Some(')') {
            // Global flags: Python takes them only before anything else.
            if self.started || !self.open.is_empty() {
                return Err(at("global flags not at the start of the expression", start));
            }
            if !on.is_empty() {
                self.out.push_str(&format!("(?{on})"));
            }
            return Ok(());
        }
        let dash = if off.is_empty() { "" } else { "-" };
        self.open_group(start, &format!("(?{on}{dash}{off}:"));
        Ok(())
    }

    /// After `{` at `start`: the quantifier in the regex crates' form, or
    /// `None` (and nothing read) when Python takes the `{` as a literal.
    fn counted_repeat(&mut self, start: usize) -> Result<Option<String>, String> {
        let save = self.pos;
        let low = self.digits();
        let high = if self.eat(',') {
            Some(self.digits())
        } else {
            None
        };
        if !self.eat('}') || (low.is_empty() && high.is_none()) {
            self.pos = save;
            return Ok(None);
        }
        // Python's limit (MAXREPEAT); the regex crates' size limit is lower.
        let number = |text: &str| match text {
            "" => Ok(None),
            t => t
                .parse::<u32>()
                .ok()
                .filter(|&n| n < u32::MAX)
                .map(Some)
                .ok_or_else(|| at("the repetition number is too large", start)),
        };
        let low = number(&low)?.unwrap_or(0);
        Ok(Some(match high {
            None => format!("{{{low}}}"),
            Some(high) => match number(&high)? {
                Some(high) if high < low => {
                    return Err(at("min repeat greater than max repeat", start));
                }
                Some(high) => format!("{{{low},{high}}}"),
                None => format!("{{{low},}}"),
            },
        }))
    }

    fn digits(&mut self) -> String {
        let from = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.chars[from..self.pos].iter().collect()
    }

    /// A quantifier (`rust` in the regex crates' form) with its optional
    /// lazy `?`.
    fn repeat(&mut self, start: usize, rust: String) -> Result<(), String> {
        match self.last {
            Last::Nothing | Last::Anchor => return Err(at("nothing to repeat", start)),
            Last::Repeat => return Err(at("multiple repeat", start)),
            Last::Atom => {}
        }
        self.out.push_str(&rust);
        if self.eat('?') {
            self.out.push('?');
        } else if self.peek() == Some('+') {
            return Err(unsupported("possessive quantifier", start));
        }
        self.last = Last::Repeat;
        Ok(())
    }
}

/// The inline flags Python 3.11 knows.
const PYTHON_FLAGS: &str = "iLmsxatu";

/// The code point of a class member written as `\x{..}` (`None` for a set).
fn range_end(item: &str) -> Option<u32> {
    let hex = item.strip_prefix("\\x{")?.strip_suffix('}')?;
    u32::from_str_radix(hex, 16).ok()
}

/// Python's `str.isidentifier`, close enough for group names (which only
/// need to be valid, not used).
fn is_python_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translations() {
        for (python, rust) in [
            ("yolo_output", "yolo_output"),
            ("a|b", "a|b"),
            ("x|", "x|"),
            ("(?i)abc", "(?i)abc"),
            ("(?P<n>a)b", "(a)b"),
            ("a\\Z", "a\\z"),
            ("a{,3}", "a{0,3}"),
            ("a{2,}?", "a{2,}?"),
            ("a{x}", "a\\{x\\}"),
            ("a{}", "a\\{\\}"),
            ("\\<", "<"),
            ("[a&&b]", "[\\x{61}\\x{26}\\x{26}\\x{62}]"),
            ("[]a-c-]", "[\\x{5d}\\x{61}-\\x{63}\\x{2d}]"),
            ("[^\\d.]", "[^\\d\\x{2e}]"),
            ("a(?#note)*", "a*"),
            ("(?i-s:a.)", "(?i-s:a.)"),
            ("\\x41\\101\\0", "AA\u{0}"),
        ] {
            assert_eq!(translate(python).as_deref(), Ok(rust), "{python:?}");
        }
    }

    #[test]
    fn errors_name_reason_and_position() {
        for (python, message) in [
            ("zzz)|(bn", "unbalanced parenthesis at position 3"),
            ("(a", "missing ), unterminated subpattern at position 0"),
            ("*a", "nothing to repeat at position 0"),
            ("a**", "multiple repeat at position 2"),
            ("^*", "nothing to repeat at position 1"),
            ("[a", "unterminated character set at position 0"),
            ("[b-a]", "bad character range at position 1"),
            (
                "a(?i)",
                "global flags not at the start of the expression at position 1",
            ),
            ("\\q", "bad escape \\q at position 0"),
            ("a{3,2}", "min repeat greater than max repeat at position 1"),
            (
                "(?P<a>x)(?P<a>y)",
                "redefinition of group name \"a\" at position 12",
            ),
        ] {
            assert_eq!(translate(python), Err(message.to_string()), "{python:?}");
        }
        for (python, construct) in [
            ("a(?=b)", "lookahead"),
            ("(?<!a)b", "lookbehind"),
            ("(a)\\1", "backreference"),
            ("(?P<n>a)(?P=n)", "backreference (?P=...)"),
            ("a*+", "possessive quantifier"),
            ("(?>a)", "atomic group"),
            ("(?x)a b", "verbose flag"),
            ("(?a)\\w", "ASCII-only flag"),
        ] {
            let message = translate(python).unwrap_err();
            assert!(
                message.contains(construct) && message.contains("not supported"),
                "{python:?}: {message}"
            );
        }
    }
}
