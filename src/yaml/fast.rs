//! A line-based reader for the part of YAML that tools print, meaning exactly what the slow
//! path (saphyr-parser events + [`super::Loader`]) reads from the same text.
//!
//! saphyr-parser scans char by char and allocates every token: on rendered manifests that alone
//! takes about two thirds of the parse time and keeps `generate` far below the rate of the rest
//! of the pipeline. kustomize, helm and kubectl print a small part of YAML: block mappings and
//! sequences, one-line plain and quoted scalars, `[]`/`{}` and simple flow lists, comments on
//! their own line. This module reads that part and gives up on a document ([`document`] returns
//! `None`) at the first thing outside it (anchors, tags, block scalars, multi-line scalars,
//! tabs, trailing comments, merge keys, keys JSON cannot hold, ...), and the caller then parses
//! that document with saphyr. Scalars are resolved by the slow path's own functions, so only the
//! structure is read twice; the differential tests below hold the two together.

use serde_json::{Map, Value};

use super::{Key, Node, into_key, into_value, resolve_plain_non_string};

/// Deeper documents are left to the slow path (rendered manifests nest ~10 levels), which has
/// its own bound and error; the recursion here stays far from any stack limit.
const MAX_DEPTH: usize = 100;

/// Longer keys are left to the slow path: YAML limits implicit keys to 1024 characters.
const MAX_KEY_BYTES: usize = 1000;

/// A document of a stream, as found by [`split`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// `text[start..end]` is one document: its `---` line (if `explicit`) and `body`. Its first
    /// line is line `line` (0-based) of the stream.
    Document {
        start: usize,
        body: usize,
        end: usize,
        line: usize,
        explicit: bool,
    },
    /// From `start` (line `line`, 0-based) on, the stream holds something only the slow path
    /// reads right when it sees the whole rest (directives, `...`, content on a `---` line).
    Rest { start: usize, line: usize },
}

/// Cuts a stream into documents at its `---` lines.
///
/// saphyr-parser takes `---` at column 0 followed by a blank or a line break for a document
/// start wherever it stands, so a well-formed document never spans one and each piece parses on
/// its own as it does in the stream. Directives and `...` end documents in ways that depend on
/// what came before, so from the first of those on the rest goes to the slow path in one piece.
/// The implicit document before the first `---` is returned too, even without content.
pub(super) fn split(text: &str) -> Vec<Chunk> {
    // Most texts are one document (the manifest splitter passes them one by one): `contains`
    // finds that out faster than going line by line.
    if !["---", "...", "%"]
        .iter()
        .any(|start| text.starts_with(start))
        && !["\n---", "\n...", "\n%"]
            .iter()
            .any(|start| text.contains(start))
    {
        return vec![Chunk::Document {
            start: 0,
            body: 0,
            end: text.len(),
            line: 0,
            explicit: false,
        }];
    }
    let mut chunks = Vec::new();
    let (mut start, mut body, mut line, mut explicit) = (0, 0, 0, false);
    let mut offset = 0;
    for (line_no, raw) in text.split_inclusive('\n').enumerate() {
        let bytes = raw.as_bytes();
        if raw.starts_with("---")
            && matches!(
                bytes.get(3),
                None | Some(b' ' | b'\t' | b'\r' | b'\n' | b'\0')
            )
        {
            chunks.push(Chunk::Document {
                start,
                body,
                end: offset,
                line,
                explicit,
            });
            (start, body, line, explicit) = (offset, offset + raw.len(), line_no, true);
            let after = raw[3..].trim_end_matches('\n').trim_start_matches(' ');
            if !(after.is_empty() || after.starts_with('#')) || after.contains(['\t', '\r', '\0']) {
                chunks.push(Chunk::Rest { start, line });
                return chunks;
            }
        } else if raw.starts_with("...") || raw.starts_with('%') {
            chunks.push(Chunk::Rest { start, line });
            return chunks;
        }
        offset += raw.len();
    }
    chunks.push(Chunk::Document {
        start,
        body,
        end: text.len(),
        line,
        explicit,
    });
    chunks
}

/// Reads a document's body (the text after its `---` line): `Some(Some(value))`, `Some(None)`
/// if it holds only blank and comment lines, `None` if it is not in the part this module reads.
pub(super) fn document(body: &str) -> Option<Option<Value>> {
    // Tabs (indentation rules), CR (line breaks), other controls, and characters saphyr or YAML
    // treat specially (BOM, NEL, line separators) are left to the slow path. Both checks run
    // without early exit, which the compiler turns into a fast loop over the whole text.
    let bytes = body.as_bytes();
    let controls = bytes.iter().fold(false, |found, &b| {
        found | ((b < 0x20 && b != b'\n') || b == 0x7f)
    });
    if controls || (!body.is_ascii() && !body.chars().all(|c| c == '\n' || super::is_printable(c)))
    {
        return None;
    }
    let mut lines = Vec::with_capacity(bytes.len() / 32 + 1);
    let mut start = 0;
    while let Some(i) = bytes[start..].iter().position(|&b| b == b'\n') {
        push_line(&mut lines, &body[start..start + i]);
        start += i + 1;
    }
    push_line(&mut lines, &body[start..]);
    let Some(first) = lines.first() else {
        return Some(None);
    };
    let indent = first.indent;
    let mut reader = Reader {
        lines,
        pos: 0,
        entries: Vec::new(),
        items: Vec::new(),
    };
    let value = reader.node(indent, 0)?;
    (reader.pos == reader.lines.len()).then_some(Some(value))
}

/// Keeps a line with content; blank and comment lines are dropped.
fn push_line<'a>(lines: &mut Vec<Line<'a>>, raw: &'a str) {
    let text = raw.trim_start_matches(' ');
    let indent = raw.len() - text.len();
    let text = text.trim_end_matches(' ');
    if !text.is_empty() && !text.starts_with('#') {
        lines.push(Line { indent, text });
    }
}

/// A line with content: its indentation and its text without the indentation and trailing
/// spaces.
#[derive(Clone, Copy)]
struct Line<'a> {
    indent: usize,
    text: &'a str,
}

/// `entries` and `items` hold the entries and items of the collections being read, innermost
/// last: each collection is moved into an exactly sized map or vector when it ends, instead of
/// growing its own step by step.
struct Reader<'a> {
    lines: Vec<Line<'a>>,
    pos: usize,
    entries: Vec<(String, Value)>,
    items: Vec<Value>,
}

impl<'a> Reader<'a> {
    /// The block collection whose first line is the current one, at `indent`.
    fn node(&mut self, indent: usize, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        let line = self.lines.get(self.pos)?;
        if is_entry_dash(line.text) {
            self.seq(indent, depth)
        } else {
            self.map(indent, depth, None)
        }
    }

    /// The value of a `key:` or `-` with nothing after it: the block collection on the next
    /// lines, or null. A mapping's value may be a sequence at the key's own indentation.
    fn nested(&mut self, indent: usize, in_map: bool, depth: usize) -> Option<Value> {
        match self.lines.get(self.pos) {
            Some(next) if next.indent > indent => self.node(next.indent, depth + 1),
            Some(next) if in_map && next.indent == indent && is_entry_dash(next.text) => {
                self.seq(indent, depth + 1)
            }
            _ => Some(Value::Null),
        }
    }

    /// After a value on the current line: a more indented line would continue a multi-line
    /// scalar (or be an error), which only the slow path reads.
    fn end_of_value(&self, indent: usize) -> Option<()> {
        match self.lines.get(self.pos) {
            Some(next) if next.indent > indent => None,
            _ => Some(()),
        }
    }

    fn seq(&mut self, indent: usize, depth: usize) -> Option<Value> {
        let first = self.items.len();
        while let Some(&line) = self.lines.get(self.pos) {
            if line.indent != indent || !is_entry_dash(line.text) {
                if line.indent > indent {
                    return None;
                }
                break;
            }
            let after_dash = &line.text[1..];
            let content = after_dash.trim_start_matches(' ');
            let item = if content.is_empty() {
                self.pos += 1;
                self.nested(indent, false, depth)?
            } else if is_entry_dash(content) {
                // `- - x`: a sequence in a sequence on one line.
                return None;
            } else if let Some(first_entry) = entry(content) {
                // `- key: value`: a mapping whose keys stand at the column of the first one.
                let column = indent + 1 + (after_dash.len() - content.len());
                self.pos += 1;
                self.map(column, depth + 1, Some(first_entry))?
            } else {
                let item = inline_value(content)?;
                self.pos += 1;
                self.end_of_value(indent)?;
                item
            };
            self.items.push(item);
        }
        Some(Value::Array(self.items.drain(first..).collect()))
    }

    /// A block mapping at `indent`; `first_entry`: its first line, already read after a `- `.
    fn map(
        &mut self,
        indent: usize,
        depth: usize,
        mut first_entry: Option<(String, &'a str)>,
    ) -> Option<Value> {
        let first = self.entries.len();
        loop {
            let (key, rest) = match first_entry.take() {
                Some(read) => read,
                None => {
                    let Some(&line) = self.lines.get(self.pos) else {
                        break;
                    };
                    if line.indent < indent {
                        break;
                    }
                    if line.indent > indent || is_entry_dash(line.text) {
                        return None;
                    }
                    let read = entry(line.text)?;
                    self.pos += 1;
                    read
                }
            };
            let value = if rest.is_empty() {
                self.nested(indent, true, depth)?
            } else {
                let value = inline_value(rest)?;
                self.end_of_value(indent)?;
                value
            };
            self.entries.push((key, value));
        }
        // Duplicate keys: the last one wins, in the place of the first, as in the slow path.
        let mut map = Map::with_capacity(self.entries.len() - first);
        map.extend(self.entries.drain(first..));
        Some(Value::Object(map))
    }
}

/// `-` alone or followed by a space: a block sequence entry.
fn is_entry_dash(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// A `key: value` (or `key:`) line: the key as the slow path turns it into a JSON key, and the
/// value's text (empty if none). `None` for anything else, and for keys left to the slow path
/// (merge keys, null keys, ...).
fn entry(text: &str) -> Option<(String, &str)> {
    let (name, rest) = if text.starts_with(['"', '\'']) {
        let (key, after) = quoted(text)?;
        let after = after.strip_prefix(':')?;
        if !(after.is_empty() || after.starts_with(' ')) {
            return None;
        }
        (key, after)
    } else {
        let (key, rest) = match find_colon_space(text) {
            Some(i) => (&text[..i], &text[i + 1..]),
            None => (text.strip_suffix(':')?, ""),
        };
        if key.len() > MAX_KEY_BYTES || !is_plain(key, false) || key == "<<" {
            return None;
        }
        let name = match resolve_plain_non_string(key) {
            None => key.to_owned(),
            Some(scalar) => match into_key(Node::Scalar(scalar)).ok()? {
                Key::Name(name) => name,
                Key::Merge => return None,
            },
        };
        (name, rest)
    };
    if text.len() > MAX_KEY_BYTES + rest.len() {
        return None;
    }
    Some((name, rest.trim_start_matches(' ')))
}

/// The value written after `key: ` or `- ` on the same line.
fn inline_value(text: &str) -> Option<Value> {
    match text.as_bytes().first()? {
        b'"' | b'\'' => {
            let (s, after) = quoted(text)?;
            after.is_empty().then_some(Value::String(s))
        }
        b'[' => flow_seq(text),
        b'{' => (text == "{}").then(|| Value::Object(Map::new())),
        _ => plain_value(text, false),
    }
}

fn plain_value(text: &str, in_flow: bool) -> Option<Value> {
    if !is_plain(text, in_flow) {
        return None;
    }
    match resolve_plain_non_string(text) {
        None => Some(Value::String(text.to_owned())),
        Some(scalar) => into_value(Node::Scalar(scalar)).ok(),
    }
}

/// `[a, "b", 'c']` on one line, items plain or quoted scalars.
fn flow_seq(text: &str) -> Option<Value> {
    let mut items = Vec::new();
    let mut rest = text[1..].trim_start_matches(' ');
    if let Some(after) = rest.strip_prefix(']') {
        return after.is_empty().then_some(Value::Array(items));
    }
    loop {
        let after = if rest.starts_with(['"', '\'']) {
            let (s, after) = quoted(rest)?;
            items.push(Value::String(s));
            after
        } else {
            let end = rest.find([',', ']'])?;
            items.push(plain_value(rest[..end].trim_end_matches(' '), true)?);
            &rest[end..]
        };
        let after = after.trim_start_matches(' ');
        if let Some(next) = after.strip_prefix(',') {
            rest = next.trim_start_matches(' ');
            // `[a, ]` and `[a,,b]` are left to the slow path.
            if rest.is_empty() || rest.starts_with([',', ']']) {
                return None;
            }
        } else {
            return after
                .strip_prefix(']')?
                .is_empty()
                .then_some(Value::Array(items));
        }
    }
}

/// Whether `text` is a whole one-line plain scalar: it does not start with an indicator, holds
/// no `: ` or ` #` and does not end with `:` (which would make it a key, a comment or an error),
/// and in a flow list holds no flow indicator, `:` or `#` at all. One pass over the bytes: this
/// runs on every key and value.
fn is_plain(text: &str, in_flow: bool) -> bool {
    let bytes = text.as_bytes();
    let Some(&first) = bytes.first() else {
        return false;
    };
    let first_ok = match first {
        b'-' | b'?' | b':' => bytes.get(1).is_some_and(|&c| c != b' '),
        b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|' | b'>' | b'\''
        | b'"' | b'%' | b'@' | b'`' => false,
        _ => true,
    };
    if !first_ok {
        return false;
    }
    let mut previous = 0;
    for &b in bytes {
        match b {
            b' ' if previous == b':' => return false,
            b'#' if previous == b' ' => return false,
            b',' | b'[' | b']' | b'{' | b'}' | b':' | b'#' if in_flow => return false,
            _ => {}
        }
        previous = b;
    }
    !matches!(previous, b':' | b' ')
}

/// The byte offset of the first `: ` in `text`.
fn find_colon_space(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = bytes[from..].iter().position(|&b| b == b':') {
        let at = from + i;
        if bytes.get(at + 1) == Some(&b' ') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// A quoted scalar that ends on this line: its value and the text after the closing quote.
fn quoted(text: &str) -> Option<(String, &str)> {
    if let Some(body) = text.strip_prefix('\'') {
        single_quoted(body)
    } else {
        double_quoted(text.strip_prefix('"')?)
    }
}

fn single_quoted(mut rest: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    loop {
        let i = rest.bytes().position(|b| b == b'\'')?;
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        match rest.strip_prefix('\'') {
            Some(after) => {
                out.push('\'');
                rest = after;
            }
            None => return Some((out, rest)),
        }
    }
}

/// saphyr-parser's escapes (YAML 1.2); an escaped line break (a multi-line scalar) is not read.
fn double_quoted(mut rest: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    loop {
        let i = rest.bytes().position(|b| b == b'"' || b == b'\\')?;
        out.push_str(&rest[..i]);
        if rest.as_bytes()[i] == b'"' {
            return Some((out, &rest[i + 1..]));
        }
        let escape = rest[i + 1..].chars().next()?;
        rest = &rest[i + 1 + escape.len_utf8()..];
        let c = match escape {
            '0' => '\0',
            'a' => '\x07',
            'b' => '\x08',
            't' => '\t',
            'n' => '\n',
            'v' => '\x0b',
            'f' => '\x0c',
            'r' => '\r',
            'e' => '\x1b',
            ' ' => ' ',
            '"' => '"',
            '/' => '/',
            '\\' => '\\',
            'N' => '\u{85}',
            '_' => '\u{a0}',
            'L' => '\u{2028}',
            'P' => '\u{2029}',
            'x' | 'u' | 'U' => {
                let len = match escape {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex = rest.get(..len)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                rest = &rest[len..];
                char::from_u32(u32::from_str_radix(hex, 16).ok()?)?
            }
            _ => return None,
        };
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AliasBudget, YamlError, load, load_events};
    use super::*;

    /// The whole stream read by saphyr alone: what [`load`] must return.
    fn slow(text: &str) -> Result<Vec<Value>, YamlError> {
        load_events(text, 0, usize::MAX, &AliasBudget::fixed())
    }

    #[track_caller]
    fn same(text: &str) {
        let fast = load(text, usize::MAX, &AliasBudget::fixed());
        assert_eq!(fast, slow(text), "input: {text:?}");
        let first = load(text, 1, &AliasBudget::fixed());
        let slow_first = load_events(text, 0, 1, &AliasBudget::fixed());
        assert_eq!(first, slow_first, "first document of: {text:?}");
    }

    /// `body` is read by this module (not handed to saphyr) and means what saphyr reads.
    #[track_caller]
    fn fast_and_same(body: &str) {
        assert!(document(body).is_some(), "not read fast: {body:?}");
        same(body);
    }

    const SCALARS: &[&str] = &[
        "plain",
        "plain words",
        "a:b",
        "a#b",
        "x,y",
        "a[0]",
        "{x",
        "x}",
        "-x",
        "-1",
        "--port=1",
        "?x",
        ":x",
        "---",
        "...",
        "--- x",
        "-",
        "?",
        ":",
        "~",
        "null",
        "Null",
        "NULL",
        "y",
        "Y",
        "yes",
        "No",
        "on",
        "OFF",
        "true",
        "False",
        "0",
        "0777",
        "0o17",
        "0x1F",
        "0b101",
        "-0x1",
        "+1",
        "1_000",
        "1.5",
        "-.5",
        ".5",
        "1e3",
        "1E+3",
        "1.e3",
        ".",
        "+",
        "-.",
        "1.2.3",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551616",
        "-9223372036854775809",
        ".inf",
        "-.Inf",
        "+.INF",
        ".nan",
        ".NaN",
        "1:20",
        "2001-12-14",
        "2001-12-14T21:59:43Z",
        "2001-12-14 21:59:43.10",
        "<<",
        "=",
        "é",
        "日本語",
        "🎉",
        "a 'b'",
        "a \"b\"",
        "'a'",
        "\"a\"",
        "'a''b'",
        "\"a\\\"b\"",
        "\"\\x41\\u00e9\\U0001F389\\t\\n\\/\\\\\"",
        "\"\\q\"",
        "\"\\uD800\"",
        "\"\\x4\"",
        "''",
        "\"\"",
        "'",
        "\"",
        "'a' b",
        "\"a\" b",
        "[]",
        "{}",
        "[ ]",
        "[a, b]",
        "[a,b]",
        "['a', \"b\"]",
        "[a, ]",
        "[a,,b]",
        "[1, on, ~]",
        "[a: b]",
        "[[a]]",
        "[a]b",
        "{a: b}",
        "&x a",
        "*x",
        "!t a",
        "!!str 1",
        "|",
        "|-",
        ">",
        "@x",
        "`x",
        "%x",
        "a #b",
        "a# b",
        "a:  b",
        "a: b",
        "a :b",
        "http://x/y",
        "a\tb",
        "x ",
        "\u{a0}",
        "\u{85}",
        "\u{feff}x",
        "\u{2028}",
    ];

    #[test]
    fn scalars_mean_what_saphyr_reads() {
        for s in SCALARS {
            for text in [
                format!("k: {s}\n"),
                format!("- {s}\n"),
                format!("{s}: v\n"),
                format!("- {s}: v\n  w: {s}\n"),
                format!("k:\n- {s}\n- [{s}]\nz: {s}"),
                format!("---\n{s}\n"),
                format!("a:\n  b: [x, {s}]\n  c: \"{s}\"\n  d: '{s}'\n"),
                format!("--- {s}\nk: v\n"),
            ] {
                same(&text);
            }
        }
    }

    #[test]
    fn manifests_are_read_fast() {
        fast_and_same(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n  labels:\n    a: \"on\"\n\
             spec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n      - name: app\n\
             \x20       args: [\"--port=8080\", --x, 'y']\n        env:\n        - name: A\n\
             \x20         value: '<path:a#b>'\n        -   name: B\n            value:\n\
             \x20       ports: []\n        resources: {}\n  # comment\n  list:\n    - []\n",
        );
        assert!(document("a:\n  - - x\n").is_none());
        fast_and_same("- a\n-\n  - b\n-\n- c: 1\n  d:\n  - e\n  f: 2\n");
        fast_and_same("k: 1\nk: 2\nj: 3\n");
        fast_and_same("\"quoted key\": 1\n'single': 2\n1: a\ntrue: b\n1.5: c\n");
        fast_and_same("# only a comment\n");
    }

    #[test]
    fn streams_split_like_saphyr() {
        for text in [
            "",
            "\n",
            "---",
            "---\n",
            "---\n---\n",
            "# c\n---\na: 1\n",
            "a: 1\n---\nb: 2\n---\n",
            "a: 1\n--- # c\nb: 2",
            "a: 1\n--- b\n---\nc: 1\n",
            "a: 1\n...\n---\nb: 2\n",
            "%YAML 1.1\n---\na: 1\n",
            "a: 1\n---\n%TAG ! x\n---\nb: 1\n",
            "a: &x 1\nb: *x\n---\nc: 1\n",
            "a: 1\n---\nb: [\n---\nc: 1\n",
            "a: 1\n---\nb: \"x\n---\nc: 1\n",
            "a: 1\n---\tx\nb: 1\n",
            "a: 1\n---\r\nb: 1\r\n",
            "a: 1\n---\nb: |\n  x\n---\nc: 'y'\n",
            "a: 1\n---\nb: 1\0\n---\nc: 1\n",
            "\u{feff}a: 1\n---\nb: 1\n",
            "a: 1\n----\nb: 1\n",
            "- a\n---\n- b\n  c\n---\n- d\n",
            "a:\n b: 1\n  c: 2\n---\nx: 1\n",
        ] {
            same(text);
        }
    }

    #[test]
    fn errors_keep_their_stream_positions() {
        let text = "a: 1\n---\nb: 2\n---\nc: [\n";
        let error = load(text, usize::MAX, &AliasBudget::fixed()).expect_err("unclosed");
        assert_eq!(Err(error), slow(text));
    }

    /// Random manifest-like streams and mutations of them: whatever this module reads must be
    /// what saphyr reads, and what it leaves to saphyr must come out as saphyr reads it in the
    /// stream, errors and their positions included.
    #[test]
    fn random_streams_mean_what_saphyr_reads() {
        let mut next = crate::test_rng::xorshift(0x2545_F491_4F6C_DD1D);
        let keys = [
            "a", "b", "name", "1", "on", "\"q\"", "'s'", "x.y/z", "k-1", "~", "<<",
        ];
        let alphabet: Vec<char> = "-:?[]{},#&*!|>'\"%@` \n\t.0x1eyn~<\\é".chars().collect();
        let mut read_fast = 0;
        for _ in 0..4_000 {
            let mut text = String::new();
            let mut indent = 0usize;
            for _ in 0..next() % 12 + 1 {
                let pad = " ".repeat(indent);
                let key = keys[next() % keys.len()];
                let scalar = SCALARS[next() % SCALARS.len()];
                match next() % 10 {
                    0 => text.push_str("---\n"),
                    1 => {
                        text.push_str(&format!("{pad}{key}:\n"));
                        indent += [0, 1, 2, 2, 4][next() % 5];
                    }
                    2 => {
                        text.push_str(&format!("{pad}- {key}: {scalar}\n"));
                        indent += 2;
                    }
                    3 => text.push_str(&format!("{pad}- {scalar}\n")),
                    4 => text.push_str(&format!("{pad}# {scalar}\n\n")),
                    5 => indent = indent.saturating_sub(next() % 5),
                    6 => text.push_str(&format!("{pad}-\n")),
                    _ => text.push_str(&format!("{pad}{key}: {scalar}\n")),
                }
            }
            let fast = fast_documents(&text);
            read_fast += fast;
            same(&text);
            let mut chars: Vec<char> = text.chars().collect();
            for _ in 0..(next() % 3 + 1) {
                let at = next() % (chars.len() + 1);
                if next().is_multiple_of(2) || at == chars.len() {
                    chars.insert(at, alphabet[next() % alphabet.len()]);
                } else {
                    chars.remove(at);
                }
            }
            same(&chars.into_iter().collect::<String>());
        }
        assert!(read_fast > 1_000, "only {read_fast} documents read fast");
    }

    /// How many documents of `text` this module reads itself.
    fn fast_documents(text: &str) -> usize {
        split(text)
            .iter()
            .filter(|chunk| match chunk {
                Chunk::Document { body, end, .. } => {
                    matches!(document(&text[*body..*end]), Some(Some(_)))
                }
                Chunk::Rest { .. } => false,
            })
            .count()
    }
}
