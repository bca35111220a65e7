//! YAML ⇄ `serde_json::Value` with the scalar meaning Argo CD's Go side gives the same text.
//!
//! The repo-server (and kubectl) read YAML with sigs.k8s.io/yaml over gopkg.in/yaml.v2: YAML 1.1
//! resolution, so unquoted `yes`/`on`/`y` are booleans and `0777` is octal. Every Rust YAML crate
//! resolves scalars differently (or is archived), so we take events from the pure-Rust
//! `saphyr-parser` and resolve plain scalars ourselves with yaml.v2's rules. Tags `!!str`,
//! `!!int`, `!!float`, `!!bool`, `!!null` are honoured; other tags are ignored, as yaml.v2 does
//! when decoding into untyped values.
//!
//! The emitter writes YAML whose every scalar means the same under yaml.v2 and YAML 1.2: a string
//! is written plain only when no resolver could read it as anything else.
//!
//! Owns no I/O. Never panics on input: aliases are capped (billion laughs) and nesting is
//! limited so hostile documents cannot exhaust memory or the stack.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, Tag};
use serde_json::{Map, Number, Value};

/// Cap on nodes produced from one input, counting alias expansions.
const MAX_NODES: usize = 1_000_000;
/// Cap on nesting of collections.
const MAX_DEPTH: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum YamlError {
    /// The text is not YAML.
    #[error("yaml: line {line}, column {col}: {message}")]
    Syntax {
        line: usize,
        col: usize,
        message: String,
    },
    /// Aliases expand to more nodes than allowed.
    #[error("yaml: document expands to more than {MAX_NODES} nodes (alias bomb?)")]
    TooManyNodes,
    /// Collections nested deeper than allowed.
    #[error("yaml: line {line}: nesting deeper than {MAX_DEPTH} levels")]
    TooDeep { line: usize },
    /// An alias to an anchor that was not defined before.
    #[error("yaml: line {line}: unknown anchor referenced")]
    UnknownAnchor { line: usize },
    /// A mapping key that is a mapping or sequence (JSON cannot hold it).
    #[error("yaml: line {line}: mapping keys must be scalars")]
    ComplexKey { line: usize },
    /// A null key; sigs.k8s.io/yaml rejects it as well.
    #[error("yaml: line {line}: null mapping key")]
    NullKey { line: usize },
    /// `.inf`/`.nan`: JSON has no such numbers (Go's json.Marshal fails the same way).
    #[error("yaml: line {line}: {text:?} is not representable in JSON")]
    NonFinite { line: usize, text: String },
    /// A value whose explicit tag it cannot satisfy (`!!int abc`).
    #[error("yaml: line {line}: cannot decode {text:?} as {tag}")]
    BadTag {
        line: usize,
        text: String,
        tag: String,
    },
    /// `<<` whose value is not a mapping or a list of mappings.
    #[error("yaml: line {line}: map merge requires map or sequence of maps as the value")]
    BadMerge { line: usize },
}

impl From<ScanError> for YamlError {
    fn from(e: ScanError) -> Self {
        YamlError::Syntax {
            line: e.marker().line(),
            col: e.marker().col() + 1,
            message: e.info().to_owned(),
        }
    }
}

/// All documents of a YAML stream, in order. An empty document (only `---` or comments) is
/// `Value::Null`; callers decide whether to skip it.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, YamlError> {
    let mut b = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        nodes: 0,
    };
    let mut docs = Vec::new();
    loop {
        let (event, span) = b.next()?;
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => return Ok(docs),
            Event::DocumentStart(_) => {
                b.anchors.clear();
                let (event, span) = b.next()?;
                if matches!(event, Event::DocumentEnd) {
                    docs.push(Value::Null);
                } else {
                    docs.push(b.node(event, span, 0)?.value);
                }
            }
            _ => {
                return Err(YamlError::Syntax {
                    line: span.start.line(),
                    col: span.start.col() + 1,
                    message: "unexpected event outside a document".to_owned(),
                });
            }
        }
    }
}

/// A built node and its size (for alias accounting) and whether it is yaml.v2's merge key.
struct Node {
    value: Value,
    size: usize,
    merge_key: bool,
}

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, (Value, usize)>,
    nodes: usize,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), YamlError> {
        match self.parser.next_event() {
            Some(r) => Ok(r?),
            None => Ok((Event::StreamEnd, Span::default())),
        }
    }

    fn count(&mut self, n: usize) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            Err(YamlError::TooManyNodes)
        } else {
            Ok(())
        }
    }

    fn anchor(&mut self, id: usize, node: &Node) {
        if id > 0 {
            self.anchors.insert(id, (node.value.clone(), node.size));
        }
    }

    fn node(&mut self, event: Event<'a>, span: Span, depth: usize) -> Result<Node, YamlError> {
        let line = span.start.line();
        if depth > MAX_DEPTH {
            return Err(YamlError::TooDeep { line });
        }
        let node = match event {
            Event::Alias(id) => {
                let (value, size) = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or(YamlError::UnknownAnchor { line })?;
                self.count(size)?;
                return Ok(Node {
                    value,
                    size,
                    merge_key: false,
                });
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1)?;
                let merge_key = style == ScalarStyle::Plain && tag.is_none() && text == "<<";
                let node = Node {
                    value: scalar(&text, style, tag.as_deref(), line)?,
                    size: 1,
                    merge_key,
                };
                self.anchor(anchor, &node);
                node
            }
            Event::SequenceStart(anchor, _) => {
                self.count(1)?;
                let mut items = Vec::new();
                let mut size = 1;
                loop {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    let item = self.node(event, span, depth + 1)?;
                    size += item.size;
                    items.push(item.value);
                }
                let node = Node {
                    value: Value::Array(items),
                    size,
                    merge_key: false,
                };
                self.anchor(anchor, &node);
                node
            }
            Event::MappingStart(anchor, _) => {
                self.count(1)?;
                let mut map = Map::new();
                let mut size = 1;
                loop {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::MappingEnd) {
                        break;
                    }
                    let key_line = span.start.line();
                    let key = self.node(event, span, depth + 1)?;
                    let (event, span) = self.next()?;
                    let value = self.node(event, span, depth + 1)?;
                    size += key.size + value.size;
                    if key.merge_key {
                        merge(&mut map, value.value, key_line)?;
                        continue;
                    }
                    map.insert(key_string(key.value, key_line)?, value.value);
                }
                let node = Node {
                    value: Value::Object(map),
                    size,
                    merge_key: false,
                };
                self.anchor(anchor, &node);
                node
            }
            _ => {
                return Err(YamlError::Syntax {
                    line,
                    col: span.start.col() + 1,
                    message: "unexpected event".to_owned(),
                });
            }
        };
        Ok(node)
    }
}

/// yaml.v2's merge: a map's keys are set into `into` at the position of `<<` (later explicit
/// keys override them); for a list of maps, earlier maps win.
fn merge(into: &mut Map<String, Value>, value: Value, line: usize) -> Result<(), YamlError> {
    match value {
        Value::Object(m) => {
            into.extend(m);
            Ok(())
        }
        Value::Array(items) => {
            for item in items.into_iter().rev() {
                match item {
                    Value::Object(m) => into.extend(m),
                    _ => return Err(YamlError::BadMerge { line }),
                }
            }
            Ok(())
        }
        _ => Err(YamlError::BadMerge { line }),
    }
}

/// JSON object key for a resolved YAML key, as sigs.k8s.io/yaml converts it.
fn key_string(key: Value, line: usize) -> Result<String, YamlError> {
    match key {
        Value::String(s) => Ok(s),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() => go_float_key(f),
            _ => n.to_string(),
        }),
        Value::Null => Err(YamlError::NullKey { line }),
        Value::Array(_) | Value::Object(_) => Err(YamlError::ComplexKey { line }),
    }
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 32)`: shortest digits, exponent form from 1e21 or
/// below 1e-4 (Go switches at 21 digits for shortest 'g').
fn go_float_key(f: f64) -> String {
    let f = f as f32;
    let exp = if f == 0.0 {
        0
    } else {
        f.abs().log10().floor() as i32
    };
    if !(-4..21).contains(&exp) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
                format!("{m}e{sign}{digits:0>2}")
            }
            None => s,
        }
    } else {
        format!("{f}")
    }
}

fn scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    line: usize,
) -> Result<Value, YamlError> {
    let core_tag = tag
        .filter(|t| t.is_yaml_core_schema())
        .map(|t| t.suffix.as_str());
    let plain = style == ScalarStyle::Plain;
    let bad = |tag: &str| YamlError::BadTag {
        line,
        text: truncate(text),
        tag: format!("!!{tag}"),
    };
    match core_tag {
        Some("str") | Some("binary") | Some("timestamp") => Ok(Value::String(text.to_owned())),
        Some(t @ ("int" | "float" | "bool" | "null")) => {
            let v = resolve_plain(text);
            let ok = matches!(
                (t, &v),
                ("int", Resolved::Int(_))
                    | ("float", Resolved::Int(_) | Resolved::Float(_))
                    | ("bool", Resolved::Bool(_))
                    | ("null", Resolved::Null)
            );
            if !ok {
                return Err(bad(t));
            }
            let v = match (t, v) {
                ("float", Resolved::Int(i)) => Resolved::Float(i.as_f64()),
                (_, v) => v,
            };
            to_json(v, text, line)
        }
        // Non-plain scalars are strings; so are plain ones with a tag we do not know.
        _ if !plain => Ok(Value::String(text.to_owned())),
        _ => to_json(resolve_plain(text), text, line),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// What yaml.v2 makes of a plain scalar.
#[derive(Debug, PartialEq)]
enum Resolved {
    Null,
    Bool(bool),
    Int(IntValue),
    Float(f64),
    Str,
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum IntValue {
    Signed(i64),
    Unsigned(u64),
}

impl IntValue {
    fn as_f64(self) -> f64 {
        match self {
            IntValue::Signed(i) => i as f64,
            IntValue::Unsigned(u) => u as f64,
        }
    }
}

fn to_json(r: Resolved, text: &str, line: usize) -> Result<Value, YamlError> {
    Ok(match r {
        Resolved::Null => Value::Null,
        Resolved::Bool(b) => Value::Bool(b),
        Resolved::Int(IntValue::Signed(i)) => Value::Number(i.into()),
        Resolved::Int(IntValue::Unsigned(u)) => Value::Number(u.into()),
        Resolved::Float(f) => {
            Value::Number(Number::from_f64(f).ok_or_else(|| YamlError::NonFinite {
                line,
                text: truncate(text),
            })?)
        }
        Resolved::Str => Value::String(text.to_owned()),
    })
}

/// gopkg.in/yaml.v2 `resolve()` for an untagged plain scalar.
fn resolve_plain(s: &str) -> Resolved {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Resolved::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Resolved::Bool(false);
        }
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        _ => {}
    }
    match s.as_bytes()[0] {
        b'.' => {
            // Only a float can start with '.': Go's ParseFloat on the text as is.
            if is_decimal_float(s)
                && let Ok(f) = s.parse::<f64>()
            {
                return Resolved::Float(f);
            }
            Resolved::Str
        }
        b'0'..=b'9' | b'+' | b'-' => {
            let plain: String = s.chars().filter(|&c| c != '_').collect();
            if let Some(i) = go_parse_int(&plain) {
                return Resolved::Int(i);
            }
            if is_decimal_float(&plain)
                && let Ok(f) = plain.parse::<f64>()
            {
                return Resolved::Float(f);
            }
            Resolved::Str
        }
        _ => Resolved::Str,
    }
}

/// yaml.v2's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_decimal_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            digits(&mut i);
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseInt(s, 0, 64)`, falling back to `ParseUint(s, 0, 64)` as yaml.v2 does:
/// optional sign, then `0x`, `0o`, `0b` or a leading `0` (octal) prefix, else decimal.
fn go_parse_int(s: &str) -> Option<IntValue> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) =
        if let Some(d) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
            (16, d)
        } else if let Some(d) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
            (8, d)
        } else if let Some(d) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
            (2, d)
        } else if body.len() > 1 && body.starts_with('0') {
            (8, &body[1..])
        } else {
            (10, body)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        if magnitude <= i64::MAX as u64 + 1 {
            Some(IntValue::Signed((magnitude as i64).wrapping_neg()))
        } else {
            None
        }
    } else if magnitude <= i64::MAX as u64 {
        Some(IntValue::Signed(magnitude as i64))
    } else if s.starts_with('+') {
        None // ParseUint takes no sign
    } else {
        Some(IntValue::Unsigned(magnitude))
    }
}

/// One document as block-style YAML (2-space indent, trailing newline, no `---`).
pub fn to_yaml_string(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => emit_map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => emit_seq(a, 0, &mut out),
        scalar => {
            out.push_str(&inline_scalar(scalar, 0));
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn emit_map(m: &Map<String, Value>, indent: usize, out: &mut String) {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            pad(out, indent);
        }
        out.push_str(&quote_if_needed(k));
        out.push(':');
        emit_value(v, indent, out);
    }
}

fn emit_seq(a: &[Value], indent: usize, out: &mut String) {
    for (i, v) in a.iter().enumerate() {
        if i > 0 {
            pad(out, indent);
        }
        out.push('-');
        match v {
            Value::Object(m) if !m.is_empty() => {
                out.push(' ');
                emit_map(m, indent + 2, out);
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push(' ');
                emit_seq(inner, indent + 2, out);
            }
            scalar => {
                out.push(' ');
                out.push_str(&inline_scalar(scalar, indent + 2));
                out.push('\n');
            }
        }
    }
}

/// The value after `key:`.
fn emit_value(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            pad(out, indent + 2);
            emit_map(m, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            pad(out, indent);
            emit_seq(a, indent, out);
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline_scalar(scalar, indent + 2));
            out.push('\n');
        }
    }
}

/// A scalar (or empty collection) on the current line; block scalars continue at `indent`.
fn inline_scalar(v: &Value, indent: usize) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => match block_scalar(s, indent) {
            Some(block) => block,
            None => quote_if_needed(s),
        },
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// A literal block (`|` / `|-`) for multi-line text that survives it unchanged.
fn block_scalar(s: &str, indent: usize) -> Option<String> {
    if !s.contains('\n') || s.starts_with([' ', '\n', '\t']) || s.ends_with("\n\n") {
        return None;
    }
    if s.chars().any(|c| c != '\n' && !is_printable(c)) || s.contains('\r') {
        return None;
    }
    // A line of only spaces before content would be read as indentation: avoid.
    if s.lines().any(|l| !l.is_empty() && l.trim().is_empty()) {
        return None;
    }
    let (header, body) = match s.strip_suffix('\n') {
        Some(body) => ("|", body),
        None => ("|-", s),
    };
    let mut out = header.to_owned();
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.extend(std::iter::repeat_n(' ', indent));
            out.push_str(line);
        }
    }
    Some(out)
}

fn is_printable(c: char) -> bool {
    matches!(c, '\t' | '\u{20}'..='\u{7E}' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
        && c != '\u{FEFF}'
}

/// Plain when no resolver (yaml.v2 or YAML 1.2) could read it as anything but this string,
/// else double-quoted.
fn quote_if_needed(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_owned()
    } else {
        double_quoted(s)
    }
}

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphanumeric() || first == '/' || first == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " _./-:@+=,()".contains(c))
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
        && resolve_plain(s) == Resolved::Str
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_printable(c) => out.push(c),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Value {
        let mut docs = parse_documents(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(docs.len(), 1, "{text:?}");
        docs.remove(0)
    }

    fn check(scalar: &str, want: Value) {
        assert_eq!(one(&format!("v: {scalar}\n"))["v"], want, "{scalar:?}");
    }

    #[test]
    fn yaml11_plain_scalars() {
        for t in [
            "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
        ] {
            check(t, json!(true));
        }
        for f in [
            "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
        ] {
            check(f, json!(false));
        }
        for n in ["~", "null", "Null", "NULL", ""] {
            check(n, Value::Null);
        }
        check("0777", json!(511));
        check("0x1F", json!(31));
        check("-0x1F", json!(-31));
        check("0b101", json!(5));
        check("-0b101", json!(-5));
        check("0o17", json!(15));
        check("1_000", json!(1000));
        check("+12", json!(12));
        check("-7", json!(-7));
        check("08", json!(8.0));
        check("1e3", json!(1000.0));
        check("1.5", json!(1.5));
        check(".5", json!(0.5));
        check("-.5", json!(-0.5));
        check("1.", json!(1.0));
        check("18446744073709551615", json!(18446744073709551615u64));
        check("9223372036854775807", json!(i64::MAX));
        check("-9223372036854775808", json!(i64::MIN));
        check("99999999999999999999", json!(1e20));
        for s in [
            "yes please",
            "2001-12-14",
            "1.2.3",
            "0x",
            "+",
            "0xZZ",
            "1e",
            "_1",
            "e3",
            "YeS",
            "nO",
            "12:30:00",
            "190:20:30",
            "v1",
        ] {
            check(s, json!(s));
        }
    }

    #[test]
    fn quoted_and_block_scalars_are_strings() {
        check("\"on\"", json!("on"));
        check("'0777'", json!("0777"));
        check("'~'", json!("~"));
        assert_eq!(one("v: |\n  a\n  b\n")["v"], "a\nb\n");
        assert_eq!(one("v: |-\n  a\n  b\n")["v"], "a\nb");
        assert_eq!(one("v: |+\n  a\n\n")["v"], "a\n\n");
        assert_eq!(one("v: >\n  a\n  b\n")["v"], "a b\n");
        assert_eq!(one("v: 'it''s'\n")["v"], "it's");
    }

    #[test]
    fn tags() {
        check("!!str on", json!("on"));
        check("!!str 0777", json!("0777"));
        check("!!int \"12\"", json!(12));
        check("!!float 3", json!(3.0));
        check("!!bool \"yes\"", json!(true));
        check("!!binary aGVsbG8=", json!("aGVsbG8="));
        check("!custom 12", json!(12));
        assert!(matches!(
            parse_documents("v: !!int abc\n"),
            Err(YamlError::BadTag { .. })
        ));
    }

    #[test]
    fn non_finite_floats_are_errors() {
        for s in [".inf", "-.inf", ".nan", "+.INF"] {
            assert!(
                matches!(
                    parse_documents(&format!("v: {s}\n")),
                    Err(YamlError::NonFinite { .. })
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn anchors_aliases_merge_and_duplicates() {
        let v =
            one("base: &b {a: 1, b: 2}\nx:\n  <<: *b\n  b: 3\nlist: [&s hi, *s]\ndup: 1\ndup: 2\n");
        assert_eq!(v["x"], json!({"a": 1, "b": 3}));
        assert_eq!(v["list"], json!(["hi", "hi"]));
        assert_eq!(v["dup"], json!(2));
        let v = one("a: &a {k: 1}\nb: &b {k: 2, j: 2}\nc:\n  <<: [*a, *b]\n");
        assert_eq!(v["c"], json!({"k": 1, "j": 2}));
        assert!(matches!(
            parse_documents("a: {<<: 1}\n"),
            Err(YamlError::BadMerge { .. })
        ));
        assert!(matches!(
            parse_documents("a: *nope\n"),
            Err(YamlError::Syntax { .. } | YamlError::UnknownAnchor { .. })
        ));
    }

    #[test]
    fn keys_converted_like_sigs_k8s_yaml() {
        let v = one("1: a\ntrue: b\n1.5: c\n0x10: d\non: e\n");
        assert_eq!(
            v,
            json!({"1": "a", "true": "b", "1.5": "c", "16": "d"})
                .as_object()
                .map(|m| {
                    let mut m = m.clone();
                    m.insert("true".into(), json!("e"));
                    Value::Object(m)
                })
                .unwrap_or_default()
        );
        assert!(matches!(
            parse_documents("? [a]\n: b\n"),
            Err(YamlError::ComplexKey { .. })
        ));
        assert!(matches!(
            parse_documents("~: b\n"),
            Err(YamlError::NullKey { .. })
        ));
        assert_eq!(go_float_key(1e21), "1e+21");
        assert_eq!(go_float_key(0.5), "0.5");
    }

    #[test]
    fn documents() {
        let docs = parse_documents("# c\n---\n---\na: 1\n--- b\n...\n---\n# only a comment\n")
            .expect("ok");
        assert_eq!(
            docs,
            vec![Value::Null, json!({"a": 1}), json!("b"), Value::Null]
        );
        assert_eq!(parse_documents("").expect("ok"), Vec::<Value>::new());
        assert_eq!(
            parse_documents("a: 1\n").expect("ok"),
            vec![json!({"a": 1})]
        );
        assert_eq!(
            one("{a: [1, {b: c}], d: []}"),
            json!({"a": [1, {"b": "c"}], "d": []})
        );
    }

    #[test]
    fn errors_carry_line_numbers() {
        let err = parse_documents("a: 1\nb: [unclosed\nc: 2\n").expect_err("invalid");
        let YamlError::Syntax { line, .. } = err else {
            panic!("{err:?}");
        };
        assert!(line >= 2, "{line}");
        assert!(err.to_string().starts_with("yaml: line "));
    }

    #[test]
    fn alias_bomb_and_depth_bounded() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..12 {
            let prev = if i == 0 {
                "a".to_owned()
            } else {
                format!("l{}", i - 1)
            };
            bomb.push_str(&format!("l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        assert_eq!(parse_documents(&bomb), Err(YamlError::TooManyNodes));
        let deep = "[".repeat(10_000);
        assert!(parse_documents(&deep).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 12345;
        let alphabet = b"ab:- \n\t[]{}&*!|>'\"%@`#?,.0x~<";
        for _ in 0..2000 {
            let s: String = (0..40)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    alphabet[(x as usize) % alphabet.len()] as char
                })
                .collect();
            let _ = parse_documents(&s);
        }
    }

    #[test]
    fn emitter_round_trips_tricky_strings() {
        let strings = [
            "on",
            "yes",
            "y",
            "NO",
            "~",
            "null",
            "0777",
            "1e3",
            ".5",
            "- x",
            "a: b",
            "#x",
            "x #y",
            "",
            " lead",
            "trail ",
            "multi\nline",
            "multi\nline\n",
            "tab\there",
            "\"quoted\"",
            "'single'",
            "*alias",
            "&anchor",
            "!tag",
            "%",
            "@",
            "`",
            "{",
            "[",
            "?",
            ">",
            "|",
            "ünïcødé",
            "2001-12-14",
            "<<",
            "12:30",
            "0o17",
            "1_000",
            "x:",
            "a,b",
            "https://example.com/a?b=c#d",
            "plain words",
            "a\n\nb",
            "\n",
            "line\n  indented\n",
            "\u{7f}del",
            "\u{feff}bom",
            "-",
            ".",
            "..",
            "...",
            "---",
            "=",
            "+1",
            "true",
            "False",
            "a\r\nb",
        ];
        for s in strings {
            let v = json!({"k": s, "list": [s], s: 1});
            let text = to_yaml_string(&v);
            assert_eq!(
                parse_documents(&text).expect(&text),
                vec![v],
                "{s:?} ->\n{text}"
            );
        }
    }

    #[test]
    fn emitter_round_trips_structures() {
        let v = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "x", "labels": {}, "annotations": null},
            "data": {"a": "on", "cert": "-----BEGIN-----\nabc\n-----END-----\n"},
            "list": [1, -2.5, true, null, [], {}, [1, [2, 3]], {"a": {"b": [ {"c": "d"} ]}}],
            "big": 18446744073709551615u64,
        });
        let text = to_yaml_string(&v);
        assert_eq!(parse_documents(&text).expect(&text), vec![v], "{text}");
        assert!(text.contains("cert: |\n"), "{text}");
        for scalar in [json!(1), json!("x"), json!(null), json!([]), json!({})] {
            let text = to_yaml_string(&scalar);
            assert_eq!(parse_documents(&text).expect(&text), vec![scalar]);
        }
    }
}
