//! The template language of AVP's `jsonPath` modifier: Kubernetes client-go `util/jsonpath`, as
//! used by `kubectl -o jsonpath`, with `AllowMissingKeys(false)`.
//!
//! Owns parsing and evaluating such templates against a `serde_json::Value` and printing the
//! result the way client-go does (scalars bare, maps and lists as compact JSON with sorted keys,
//! several results of one action joined by a space). Supported: literal text, `{.a.b}`, `$`,
//! `@`, `['key']`, `[i]`, `[start:end:step]`, `[*]`, `.*`, `[a,b]` unions, `..` recursive
//! descent, `[?(@.x == "y")]` filters, quoted text `{'...'}`, and `{range ...}...{end}`.
//!
//! Error messages name template text, types and counts only, never values of the data: the
//! data is a secret. That includes regular expressions in `=~` filters whose pattern comes from
//! the data (an invalid one is reported without its text) and object keys of the data.
//!
//! Deliberate differences from client-go (all cases where client-go errors or surprises):
//! - `['a.b']` is the key `a.b`; client-go splits it into fields `a` and `b`.
//! - Numbers print as JSON numbers (`1000000`), not Go `%v` floats (`1e+06`).
//! - `null` prints as `null`, not `<nil>`.
//! - Filters compare numbers by value; client-go refuses float vs int.
//! - `.*` on a string yields nothing instead of its bytes; `..` treats strings as leaves.
//! - A range over nothing skips its body without evaluating it.
//! - Templates nested deeper than [`MAX_DEPTH`] are rejected, so no input can exhaust the stack.

use std::cmp::Ordering;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

/// Nesting limit for unions, filters and ranges in one template.
const MAX_DEPTH: usize = 32;

static SLICE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(-?[0-9]*)(:-?[0-9]*)?(:-?[0-9]*)?$").expect("slice regex is valid")
});
static DICT_KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^'([^']*)'$").expect("dict key regex is valid"));
static FILTER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([^!<>=]+)([!<>=~]+)(.+?)$").expect("filter regex is valid"));

/// Renders `template` against `data`. `Err` holds a value-free message.
#[cfg(test)]
fn render(template: &str, data: &Value) -> Result<String, String> {
    render_parsed(&parse(template)?, data)
}

/// Renders an already parsed template against `data`. `Err` holds a value-free message.
pub(crate) fn render_parsed(items: &[Item], data: &Value) -> Result<String, String> {
    let mut out = String::new();
    execute(items, data, &mut out)?;
    Ok(out)
}

/// Parses a template without evaluating it, so syntax errors surface before the data is used.
pub(crate) fn parse(template: &str) -> Result<Vec<Item>, String> {
    let mut parser = Parser::new(template, 0);
    let mut stack: Vec<(Vec<Node>, Vec<Item>)> = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    loop {
        let rest = &parser.input[parser.pos..];
        let Some(open) = rest.find('{') else {
            if !rest.is_empty() {
                items.push(Item::Text(rest.to_owned()));
            }
            break;
        };
        if open > 0 {
            items.push(Item::Text(rest[..open].to_owned()));
        }
        parser.pos += open + 1;
        let mut nodes = parser.parse_action()?;
        match nodes.first() {
            Some(Node::Range) => {
                if stack.len() >= MAX_DEPTH {
                    return Err("jsonpath template is nested too deeply".to_owned());
                }
                nodes.remove(0);
                stack.push((nodes, std::mem::take(&mut items)));
            }
            Some(Node::End) if nodes.len() == 1 => {
                let Some((expr, outer)) = stack.pop() else {
                    return Err("not in range, nothing to end".to_owned());
                };
                let body = std::mem::replace(&mut items, outer);
                items.push(Item::Range { expr, body });
            }
            _ => items.push(Item::Action(nodes)),
        }
    }
    // client-go runs an unclosed range to the end of the template.
    while let Some((expr, outer)) = stack.pop() {
        let body = std::mem::replace(&mut items, outer);
        items.push(Item::Range { expr, body });
    }
    Ok(items)
}

/// One top-level piece of a template.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Item {
    /// Text outside `{}`, printed as is.
    Text(String),
    /// `{...}`: evaluated against the current value, results printed.
    Action(Vec<Node>),
    /// `{range expr}body{end}`: body rendered once per result of `expr`.
    Range { expr: Vec<Node>, body: Vec<Item> },
}

/// One step inside an action.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    /// Quoted text: yields itself once, whatever the input.
    Text(String),
    /// Number or bool literal: yields itself once per input value.
    Constant(Value),
    Field(String),
    Wildcard,
    Recursive,
    Slice([SliceParam; 3]),
    Union(Vec<Vec<Node>>),
    Filter {
        left: Vec<Node>,
        right: Vec<Node>,
        op: FilterOp,
    },
    /// `range` keyword; only valid first in an action.
    Range,
    /// `end` keyword; only valid alone in an action.
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SliceParam {
    known: bool,
    value: i128,
    /// The end of `[i]`, derived as `i + 1`.
    derived: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FilterOp {
    Exists,
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Match,
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str, depth: usize) -> Self {
        Parser {
            input,
            pos: 0,
            depth,
        }
    }

    fn rest(&self) -> &'a str {
        &self.input[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Parses the inside of `{...}` up to and including the closing `}`.
    fn parse_action(&mut self) -> Result<Vec<Node>, String> {
        let mut nodes = Vec::new();
        loop {
            let rest = self.rest();
            if rest.starts_with('}') {
                self.pos += 1;
                return Ok(nodes);
            }
            if rest.starts_with("[?(") {
                self.pos += 3;
                nodes.push(self.parse_filter()?);
                continue;
            }
            if rest.starts_with("..") {
                if nodes.last() == Some(&Node::Recursive) {
                    return Err("invalid multiple recursive descent".to_owned());
                }
                self.pos += 2;
                nodes.push(Node::Recursive);
                if self.peek().is_some_and(is_alphanumeric) {
                    nodes.push(self.parse_field());
                }
                continue;
            }
            let Some(c) = self.next() else {
                return Err("unclosed action".to_owned());
            };
            match c {
                '\r' | '\n' => return Err("unclosed action".to_owned()),
                ' ' | '@' | '$' => {}
                '[' => nodes.push(self.parse_bracket()?),
                '"' | '\'' => nodes.push(self.parse_quote(c)?),
                '.' => nodes.push(self.parse_field()),
                '+' | '-' | '0'..='9' => {
                    self.pos -= 1;
                    nodes.push(self.parse_number()?);
                }
                c if is_alphanumeric(c) => {
                    self.pos -= c.len_utf8();
                    nodes.push(self.parse_identifier()?);
                }
                c => {
                    return Err(format!(
                        "unrecognized character in action: U+{:04X} '{c}'",
                        u32::from(c)
                    ));
                }
            }
        }
    }

    /// A field name runs to the next unescaped terminator; backslashes are dropped (`a\.b`).
    fn parse_field(&mut self) -> Node {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == '\\' {
                self.next();
                self.next();
            } else if is_terminator(c) {
                break;
            } else {
                self.next();
            }
        }
        let raw = &self.input[start..self.pos];
        if raw == "*" {
            Node::Wildcard
        } else {
            Node::Field(raw.replace('\\', ""))
        }
    }

    fn parse_identifier(&mut self) -> Result<Node, String> {
        let start = self.pos;
        while self.peek().is_some_and(|c| !is_terminator(c)) {
            self.next();
        }
        match &self.input[start..self.pos] {
            "range" => Ok(Node::Range),
            "end" => Ok(Node::End),
            "true" => Ok(Node::Constant(Value::Bool(true))),
            "false" => Ok(Node::Constant(Value::Bool(false))),
            other => Err(format!("unrecognized identifier {other}")),
        }
    }

    fn parse_number(&mut self) -> Result<Node, String> {
        let start = self.pos;
        if matches!(self.peek(), Some('+' | '-')) {
            self.next();
        }
        while self.peek().is_some_and(|c| c == '.' || c.is_ascii_digit()) {
            self.next();
        }
        let text = &self.input[start..self.pos];
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Node::Constant(Value::from(i)));
        }
        match text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            Some(n) => Ok(Node::Constant(Value::Number(n))),
            None => Err(format!("cannot parse number {text}")),
        }
    }

    fn parse_quote(&mut self, quote: char) -> Result<Node, String> {
        let start = self.pos - 1;
        loop {
            match self.next() {
                None | Some('\n') => return Err("unterminated quoted string".to_owned()),
                Some(c) if c == quote && self.input.as_bytes()[self.pos - 2] != b'\\' => break,
                Some(_) => {}
            }
        }
        let quoted = &self.input[start..self.pos];
        unquote(quoted, quote)
            .map(Node::Text)
            .ok_or_else(|| format!("unquote string {quoted} error invalid syntax"))
    }

    /// `[...]` after the `[`: union, quoted key, index or slice.
    fn parse_bracket(&mut self) -> Result<Node, String> {
        let start = self.pos;
        loop {
            match self.next() {
                None | Some('\n') => return Err("unterminated array".to_owned()),
                Some(']') => break,
                Some(_) => {}
            }
        }
        let mut text = &self.input[start..self.pos - 1];
        if text == "*" {
            text = ":";
        }
        if text.contains(',') {
            let parts = text
                .split(',')
                .map(|part| self.parse_sub(&format!("[{}]", part.trim_matches(' '))))
                .collect::<Result<_, _>>()?;
            return Ok(Node::Union(parts));
        }
        if let Some(caps) = DICT_KEY.captures(text) {
            let key = caps.get(1).map_or("", |m| m.as_str());
            return Ok(Node::Field(key.replace('\\', "")));
        }
        let Some(caps) = SLICE.captures(text) else {
            return Err(format!("invalid array index {text}"));
        };
        let mut params = [SliceParam {
            known: false,
            value: 0,
            derived: false,
        }; 3];
        for i in 0..3 {
            let raw = caps.get(i + 1).map_or("", |m| m.as_str());
            if raw.is_empty() {
                if i == 1 {
                    params[1] = SliceParam {
                        known: true,
                        value: params[0].value + 1,
                        derived: true,
                    };
                }
                continue;
            }
            let digits = if i > 0 { &raw[1..] } else { raw };
            if i > 0 && digits.is_empty() {
                continue;
            }
            let value = digits
                .parse::<i64>()
                .map_err(|_| format!("array index {digits} is not a number"))?;
            params[i] = SliceParam {
                known: true,
                value: i128::from(value),
                derived: false,
            };
        }
        Ok(Node::Slice(params))
    }

    /// `[?(left op right)]` after the `[?(`.
    fn parse_filter(&mut self) -> Result<Node, String> {
        let start = self.pos;
        let mut open_quote: Option<char> = None;
        let mut closed = false;
        loop {
            match self.next() {
                None | Some('\n') => return Err("unterminated filter".to_owned()),
                Some(c @ ('"' | '\'')) => match open_quote {
                    None => open_quote = Some(c),
                    Some(q) if q == c && self.input.as_bytes()[self.pos - 2] != b'\\' => {
                        closed = true;
                    }
                    Some(_) => {}
                },
                Some(')') if open_quote.is_some() == closed => break,
                Some(_) => {}
            }
        }
        if self.next() != Some(']') {
            return Err("unclosed array expect ]".to_owned());
        }
        let text = &self.input[start..self.pos - 2];
        match FILTER.captures(text) {
            None => Ok(Node::Filter {
                left: self.parse_sub(text)?,
                right: Vec::new(),
                op: FilterOp::Exists,
            }),
            Some(caps) => {
                let part = |i| caps.get(i).map_or("", |m: regex::Match<'_>| m.as_str());
                let op = match part(2) {
                    "==" => FilterOp::Eq,
                    "!=" => FilterOp::Ne,
                    "<" => FilterOp::Lt,
                    ">" => FilterOp::Gt,
                    "<=" => FilterOp::Le,
                    ">=" => FilterOp::Ge,
                    "=~" => FilterOp::Match,
                    other => return Err(format!("unrecognized filter operator {other}")),
                };
                Ok(Node::Filter {
                    left: self.parse_sub(part(1))?,
                    right: self.parse_sub(part(3))?,
                    op,
                })
            }
        }
    }

    /// Parses `text` as the inside of one action, like client-go's `parseAction`.
    fn parse_sub(&self, text: &str) -> Result<Vec<Node>, String> {
        if self.depth >= MAX_DEPTH {
            return Err("jsonpath template is nested too deeply".to_owned());
        }
        let source = format!("{text}}}");
        let mut sub = Parser::new(&source, self.depth + 1);
        let nodes = sub.parse_action()?;
        if nodes.iter().any(|n| matches!(n, Node::Range | Node::End)) {
            return Err("range and end are not allowed here".to_owned());
        }
        Ok(nodes)
    }
}

fn is_terminator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\r' | '\n' | '.' | ',' | '[' | ']' | '$' | '@' | '{' | '}'
    )
}

fn is_alphanumeric(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Go `strconv.Unquote`, extended to single-quoted strings as client-go does.
fn unquote(quoted: &str, quote: char) -> Option<String> {
    let inner = quoted.strip_prefix(quote)?.strip_suffix(quote)?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == quote {
            return None;
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let escaped = match chars.next()? {
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\u{b}',
            '\\' => '\\',
            c @ ('\'' | '"') if c == quote => c,
            c @ ('x' | 'u' | 'U') => {
                let width = match c {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = chars.by_ref().take(width).collect();
                if hex.len() != width {
                    return None;
                }
                char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
            }
            _ => return None,
        };
        out.push(escaped);
    }
    Some(out)
}

fn execute(items: &[Item], data: &Value, out: &mut String) -> Result<(), String> {
    for item in items {
        match item {
            Item::Text(text) => out.push_str(text),
            Item::Action(nodes) => print_results(&eval_list(vec![data.clone()], nodes)?, out),
            Item::Range { expr, body } => {
                for value in eval_list(vec![data.clone()], expr)? {
                    execute(body, &value, out)?;
                }
            }
        }
    }
    Ok(())
}

fn eval_list(mut values: Vec<Value>, nodes: &[Node]) -> Result<Vec<Value>, String> {
    for node in nodes {
        values = eval(values, node)?;
    }
    Ok(values)
}

fn eval(input: Vec<Value>, node: &Node) -> Result<Vec<Value>, String> {
    match node {
        Node::Text(text) => Ok(vec![Value::String(text.clone())]),
        Node::Constant(c) => Ok(vec![c.clone(); input.len()]),
        Node::Field(name) => {
            if input.is_empty() {
                return Ok(input);
            }
            let found: Vec<Value> = input
                .into_iter()
                .filter_map(|v| match v {
                    Value::Object(mut map) => map.shift_remove(name),
                    _ => None,
                })
                .collect();
            if found.is_empty() {
                return Err(format!("{name} is not found"));
            }
            Ok(found)
        }
        Node::Wildcard => Ok(input.into_iter().flat_map(children).collect()),
        Node::Recursive => Ok(descendants(input)),
        Node::Slice(params) => {
            let mut out = Vec::new();
            for value in input {
                match value {
                    Value::Null => {}
                    Value::Array(items) => {
                        let Some((start, end, step)) = slice_bounds(*params, items.len())? else {
                            continue;
                        };
                        out.extend(items.into_iter().take(end).skip(start).step_by(step));
                    }
                    other => return Err(format!("{} is not array or slice", type_name(&other))),
                }
            }
            Ok(out)
        }
        Node::Union(parts) => {
            let mut out = Vec::new();
            for part in parts {
                out.extend(eval_list(input.clone(), part)?);
            }
            Ok(out)
        }
        Node::Filter { left, right, op } => {
            let mut out = Vec::new();
            for value in input {
                let Value::Array(items) = value else {
                    return Err(format!(
                        "{} is not array or slice and cannot be filtered",
                        type_name(&value)
                    ));
                };
                for item in items {
                    if filter_passes(&item, left, right, *op)? {
                        out.push(item);
                    }
                }
            }
            Ok(out)
        }
        Node::Range | Node::End => Err("range and end are not allowed here".to_owned()),
    }
}

/// Resolves slice parameters like client-go's `evalArray`; `None` selects nothing.
fn slice_bounds(
    mut p: [SliceParam; 3],
    len: usize,
) -> Result<Option<(usize, usize, usize)>, String> {
    let len_i = i128::try_from(len).map_err(|_| "array too long".to_owned())?;
    if !p[0].known {
        p[0].value = 0;
    }
    if p[0].value < 0 {
        p[0].value += len_i;
    }
    if !p[1].known {
        p[1].value = len_i;
    }
    if p[1].value < 0 || (p[1].value == 0 && p[1].derived) {
        p[1].value += len_i;
    }
    let (start, end) = (p[0].value, p[1].value);
    if start == end {
        return Ok(None);
    }
    if start >= len_i || start < 0 {
        return Err(format!(
            "array index out of bounds: index {start}, length {len}"
        ));
    }
    if end > len_i || end < 0 {
        return Err(format!(
            "array index out of bounds: index {}, length {len}",
            end - 1
        ));
    }
    if start > end {
        return Err(format!(
            "starting index {start} is greater than ending index {end}"
        ));
    }
    let step = if p[2].known {
        if p[2].value <= 0 {
            return Err("step must be > 0".to_owned());
        }
        p[2].value
    } else {
        1
    };
    // All three are within 0..=len or checked positive above, so they fit in usize.
    let to_usize = |v: i128| usize::try_from(v).map_err(|_| "array index too large".to_owned());
    Ok(Some((to_usize(start)?, to_usize(end)?, to_usize(step)?)))
}

fn children(value: Value) -> Vec<Value> {
    match value {
        Value::Object(map) => map.into_iter().map(|(_, v)| v).collect(),
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

/// `..`: every container among the inputs and their descendants, in pre-order. Iterative so
/// deep data cannot exhaust the stack.
fn descendants(input: Vec<Value>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut stack: Vec<Value> = input.into_iter().rev().collect();
    while let Some(value) = stack.pop() {
        let kids = children(value.clone());
        if kids.is_empty() {
            continue;
        }
        out.push(value);
        stack.extend(kids.into_iter().rev());
    }
    out
}

fn filter_passes(
    item: &Value,
    left: &[Node],
    right: &[Node],
    op: FilterOp,
) -> Result<bool, String> {
    let lefts = eval_list(vec![item.clone()], left);
    if op == FilterOp::Exists {
        return Ok(lefts.is_ok_and(|l| !l.is_empty()));
    }
    let Some(l) = single(lefts?)? else {
        return Ok(false);
    };
    let Some(r) = single(eval_list(vec![item.clone()], right)?)? else {
        return Ok(false);
    };
    match op {
        FilterOp::Exists => Ok(true),
        FilterOp::Eq => equal(&l, &r),
        FilterOp::Ne => equal(&l, &r).map(|eq| !eq),
        FilterOp::Lt => order(&l, &r).map(Ordering::is_lt),
        FilterOp::Gt => order(&l, &r).map(Ordering::is_gt),
        FilterOp::Le => order(&l, &r).map(Ordering::is_le),
        FilterOp::Ge => order(&l, &r).map(Ordering::is_ge),
        FilterOp::Match => match (&l, &r) {
            (Value::String(text), Value::String(pattern)) => Regex::new(pattern)
                .map(|re| re.is_match(text))
                .map_err(|e| regex_error(&e, right)),
            _ => Err("regexp search only supports strings".to_owned()),
        },
    }
}

/// Why the pattern right of `=~` does not compile. The regex crate's message quotes the whole
/// pattern, so it is shown only when the pattern is quoted text of the template (the tenant's
/// own, pre-substitution text); a pattern taken from the data is a secret value and is never
/// quoted, nor is any part of it.
fn regex_error(error: &regex::Error, right: &[Node]) -> String {
    // A quoted text node yields itself whatever its input, so when it comes last the pattern
    // is exactly that template text.
    if let Some(Node::Text(_)) = right.last() {
        format!("invalid regular expression in filter: {error}")
    } else {
        "invalid regular expression in filter: the pattern right of =~ comes from the value and \
         is not shown"
            .to_owned()
    }
}

fn single(mut values: Vec<Value>) -> Result<Option<Value>, String> {
    match values.len() {
        0 => Ok(None),
        1 => Ok(values.pop()),
        _ => Err("can only compare one element at a time".to_owned()),
    }
}

fn equal(l: &Value, r: &Value) -> Result<bool, String> {
    match (l, r) {
        (Value::Number(_), Value::Number(_)) => order(l, r).map(Ordering::is_eq),
        (Value::String(a), Value::String(b)) => Ok(a == b),
        (Value::Bool(a), Value::Bool(b)) => Ok(a == b),
        _ => Err(comparison_error(l, r)),
    }
}

fn order(l: &Value, r: &Value) -> Result<Ordering, String> {
    match (l, r) {
        (Value::Number(a), Value::Number(b)) => {
            if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
                return Ok(x.cmp(&y));
            }
            if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
                return Ok(x.cmp(&y));
            }
            let (x, y) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            x.partial_cmp(&y)
                .ok_or_else(|| "invalid type for comparison".to_owned())
        }
        (Value::String(a), Value::String(b)) => Ok(a.cmp(b)),
        _ => Err(comparison_error(l, r)),
    }
}

fn comparison_error(l: &Value, r: &Value) -> String {
    let scalar = |v: &Value| matches!(v, Value::Bool(_) | Value::Number(_) | Value::String(_));
    if scalar(l) && scalar(r) && type_name(l) != type_name(r) {
        "incompatible types for comparison".to_owned()
    } else {
        "invalid type for comparison".to_owned()
    }
}

/// JSON type name used in error messages instead of the value.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn print_results(results: &[Value], out: &mut String) {
    for (i, value) in results.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match value {
            Value::String(s) => out.push_str(s),
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(&n.to_string()),
            Value::Array(_) | Value::Object(_) => write_go_json(value, out),
        }
    }
}

/// Compact JSON as Go's `json.Marshal` writes a decoded value: object keys sorted bytewise and
/// `<`, `>`, `&`, U+2028, U+2029 escaped. Maps and lists printed by client-go look like this.
pub(crate) fn write_go_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_go_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(key, out);
                out.push(':');
                write_go_json(item, out);
            }
            out.push('}');
        }
    }
}

fn write_go_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn data() -> Value {
        json!({
            "service": { "enableTLS": true, "ports": [80, 8080] },
            "deployment": {
                "replicas": 2,
                "image": { "name": "json-test", "tag": "latest" }
            },
            "items": [
                { "name": "a", "port": 1, "labels": { "tier": "web" } },
                { "name": "b", "port": 2, "labels": { "tier": "db" } },
                { "name": "c", "port": 3 }
            ],
            "annotations": { "kubernetes.io/change-cause": "dot key", "a": { "b": "nested" } },
            "empty": [],
            "nothing": null,
            "html": "<b>&</b>",
            "big": 1000000,
            "float": 2.5
        })
    }

    #[test]
    fn renders_templates() {
        let cases = [
            ("{.deployment.replicas}", "2"),
            ("{$.deployment.replicas}", "2"),
            (
                "{.deployment.image.name}:{.deployment.image.tag}",
                "json-test:latest",
            ),
            ("{.service.enableTLS}", "true"),
            ("{.service.ports}", "[80,8080]"),
            ("{.service.ports[0]}", "80"),
            ("{.service.ports[-1]}", "8080"),
            ("{.service.ports[*]}", "80 8080"),
            ("{.service.ports[0:1]}", "80"),
            ("{.service.ports[0:-1:1]}", "80"),
            ("{.service.ports[1:]}", "8080"),
            ("{.service.ports[0,1]}", "80 8080"),
            ("{.items[*].name}", "a b c"),
            ("{.items[1].labels.tier}", "db"),
            ("{.items[?(@.name==\"b\")].port}", "2"),
            ("{.items[?(@.port > 1)].name}", "b c"),
            ("{.items[?(@.port<=2)].name}", "a b"),
            ("{.items[?(@.name != 'a')].name}", "b c"),
            ("{.items[?(@.labels)].name}", "a b"),
            ("{.items[?(@.name =~ \"^[ab]$\")].name}", "a b"),
            (
                "{.deployment.image}",
                r#"{"name":"json-test","tag":"latest"}"#,
            ),
            ("{.annotations['kubernetes.io/change-cause']}", "dot key"),
            ("{.annotations.kubernetes\\.io/change-cause}", "dot key"),
            ("{.annotations['a'].b}", "nested"),
            ("{..tier}", "web db"),
            (
                "{.deployment.*}",
                r#"2 {"name":"json-test","tag":"latest"}"#,
            ),
            ("{.empty[*]}", ""),
            ("{.empty[0:0]}", ""),
            ("{.nothing}", "null"),
            ("{.html}", "<b>&</b>"),
            ("{.items[2]}", r#"{"name":"c","port":3}"#),
            ("{.annotations.a}", r#"{"b":"nested"}"#),
            ("{.big}", "1000000"),
            ("{.float}", "2.5"),
            ("{'['}{.deployment.replicas}{']'}", "[2]"),
            ("{\"x\\ty\"}", "x\ty"),
            ("{range .items[*]}{.name}={.port};{end}", "a=1;b=2;c=3;"),
            (
                "{range .items[0:2]}[{range .labels.*}{@}{end}]{end}",
                "[web][db]",
            ),
            ("{range .service.ports[*]}{@},", "80,8080,"),
            (
                "prefix-{.deployment.image.tag}-suffix",
                "prefix-latest-suffix",
            ),
            ("no actions at all", "no actions at all"),
            ("{5}{true}", "5true"),
        ];
        for (template, want) in cases {
            assert_eq!(
                render(template, &data()).as_deref(),
                Ok(want),
                "template {template}"
            );
        }
    }

    #[test]
    fn go_json_escapes_html_and_sorts_keys() {
        let mut out = String::new();
        write_go_json(&json!({"z": "<a&b>", "a": ["\u{2028}", "\n"]}), &mut out);
        assert_eq!(out, r#"{"a":["\u2028","\n"],"z":"\u003ca\u0026b\u003e"}"#);
    }

    #[test]
    fn avp_fixture_ports_template() {
        // fixtures/input/nonempty/modifers.yaml, after strings.Fields + join.
        let template = concat!(
            r#"{'['} {range .service.ports[0:-1:1]} {'{"protocol":"TCP",'} {'"port":'}{@} "#,
            r#"{',"targetPort":'}{@} {'},'} {end} {'{"protocol":"TCP",'} "#,
            r#"{'"port":'}{.service.ports[-1]} {',"targetPort":'}{.service.ports[-1]} {'}]'}"#
        );
        let out = render(template, &data()).expect("renders");
        let parsed: Value = serde_json::from_str(&out).expect("valid json");
        assert_eq!(
            parsed,
            json!([
                {"protocol": "TCP", "port": 80, "targetPort": 80},
                {"protocol": "TCP", "port": 8080, "targetPort": 8080}
            ])
        );
    }

    #[test]
    fn errors() {
        let cases = [
            ("{.missingPath}", "missingPath is not found"),
            ("{.deployment.nope}", "nope is not found"),
            (
                "{!invalidPath}",
                "unrecognized character in action: U+0021 '!'",
            ),
            (
                "{.service.ports[5]}",
                "array index out of bounds: index 5, length 2",
            ),
            (
                "{.service.ports[0:5]}",
                "array index out of bounds: index 4, length 2",
            ),
            (
                "{.service.ports[1:0]}",
                "starting index 1 is greater than ending index 0",
            ),
            ("{.service.ports[::0]}", "step must be > 0"),
            ("{.service.ports[x]}", "invalid array index x"),
            ("{.service.ports[-]}", "array index - is not a number"),
            ("{.deployment[0]}", "object is not array or slice"),
            (
                "{.deployment[?(@.a)]}",
                "object is not array or slice and cannot be filtered",
            ),
            (
                "{.items[?(@.name == 1)]}",
                "incompatible types for comparison",
            ),
            ("{.items[?(@.labels == 1)]}", "invalid type for comparison"),
            ("{.items[?(@.port = 1)]}", "unrecognized filter operator ="),
            ("{.a", "unclosed action"),
            ("{.a[0}", "unterminated array"),
            ("{'abc}", "unterminated quoted string"),
            ("{.a[?(@.b}", "unterminated filter"),
            ("{end}", "not in range, nothing to end"),
            ("{foo}", "unrecognized identifier foo"),
            ("{....a}", "invalid multiple recursive descent"),
            ("{1.2.3}", "cannot parse number 1.2.3"),
            ("{'a\\qb'}", "unquote string 'a\\qb' error invalid syntax"),
        ];
        for (template, want) in cases {
            assert_eq!(
                render(template, &data()),
                Err(want.to_owned()),
                "template {template}"
            );
        }
    }

    #[test]
    fn invalid_regex_from_the_data_is_not_quoted() {
        let secret = json!({"items": [{"n": "a", "pw": "TOPSECRET(x"}]});
        for template in [
            "{.items[?(@.n =~ @.pw)].n}",
            "{.items[?(@.n=~@.pw)]}",
            "{.items[?(@.pw =~ @.pw)].n}",
        ] {
            assert_eq!(
                render(template, &secret),
                Err(
                    "invalid regular expression in filter: the pattern right of =~ comes from \
                     the value and is not shown"
                        .to_owned()
                ),
                "{template}"
            );
        }
    }

    #[test]
    fn invalid_regex_from_the_template_is_quoted() {
        // The pattern is the tenant's own template text; the matched data is not shown.
        let secret = json!({"items": [{"n": "TOPSECRET"}]});
        let err = render("{.items[?(@.n =~ '(x')].n}", &secret).expect_err("invalid regex");
        assert!(
            err.starts_with("invalid regular expression in filter: "),
            "{err}"
        );
        assert!(err.contains("(x"), "{err}");
        assert!(!err.contains("TOPSECRET"), "{err}");
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowing() {
        let deep = format!("{{.a{}}}", "[?(@".repeat(10_000));
        assert!(render(&deep, &data()).is_err());
        let ranges = "{range @}".repeat(10_000);
        assert_eq!(
            render(&ranges, &data()),
            Err("jsonpath template is nested too deeply".to_owned())
        );
    }

    #[test]
    fn error_messages_never_contain_data() {
        let secret = json!({"s": "TOPSECRET-VALUE", "list": ["TOPSECRET-ITEM"]});
        for template in [
            "{.s[0]}",
            "{.s[?(@.x)]}",
            "{.list[?(@ == 1)]}",
            "{.list[?(@ > 1)]}",
            "{.list[9]}",
            "{.missing}",
            "{.list[?(@ =~ '(')]}",
        ] {
            let err = render(template, &secret).expect_err(template);
            assert!(!err.contains("TOPSECRET"), "{template}: {err}");
        }
    }
}
