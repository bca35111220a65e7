//! YAML reading and writing with the meaning Argo CD's Go code gives the same text.
//!
//! The repo-server and kubectl read YAML with sigs.k8s.io/yaml, i.e. go-yaml v2: YAML 1.1 plain
//! scalars (`on`, `yes`, `y` are booleans, `0777` is octal 511) and non-string map keys turned
//! into strings. No maintained Rust crate resolves scalars that way (serde_yaml is archived and
//! keeps `on` a string; YAML 1.2 crates read `0777` as 777), and a wrong guess silently changes a
//! ConfigMap value. So this module builds `serde_json::Value`s from saphyr-parser's event stream
//! and resolves every scalar itself, following go-yaml v2's `resolve.go` and `decode.go` and
//! sigs.k8s.io/yaml's key conversion.
//!
//! It also owns the YAML emitter used by the `generate` CLI. The emitter quotes every string that
//! a YAML 1.1 or 1.2 reader could take for anything but that string, so what we print reads back
//! as what we meant in Go and in Rust tools alike.

use std::collections::HashMap;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Tag};
use serde_json::{Map, Number, Value};

mod fast;

/// What one materialised node costs besides its text, in the estimated bytes the alias budget
/// counts: a `serde_json::Value` is 80 bytes with `preserve_order`, a map entry adds its hash,
/// key `String` and index slot, and every heap block its allocator overhead. 64 is a little
/// below a map entry's real cost per node (one key node + one value node: ~130 bytes) and about
/// a list item's, so the budget's bytes track real memory within a small factor.
const NODE_COST: u64 = 64;

/// How much a render's aliases may materialise per byte of tool output. A render holds its output
/// (stdout) and the parsed documents anyway (measured: a render's peak is ~4-6× its output for
/// typical manifests, less for long strings); aliases may add at most twice the text on top, so
/// an aliased output never costs much more than the same output written out. Measured on the
/// server: the red-team chart (1.77 MB of helm output, 40 documents each aliasing a 40 KB string
/// 1 000 times) is now refused in its first document with peak RSS ~20 MB above idle (8 MB with
/// glibc malloc: about 2× output + the floor); it used to reach 1.95 GB.
pub const ALIAS_BUDGET_PER_OUTPUT_BYTE: u64 = 2;
/// Every render may materialise this much from aliases, however small its output: ~60 000 small
/// nodes, far more than the few anchors real manifests use (shared labels, env blocks).
pub const ALIAS_BUDGET_FLOOR: u64 = 4 << 20;
/// No render may materialise more than this from aliases, however big its output: outputs that
/// large are written out, not aliased, and 64 MiB is already a lot next to the other renders.
pub const ALIAS_BUDGET_CAP: u64 = 64 << 20;
/// The budget of one file read outside a render (the operator's config and plugin files,
/// argocd-cm, a kustomization rewritten for plugin settings, `HELM_VALUES`).
pub const ALIAS_BUDGET_FIXED: u64 = 16 << 20;

/// How much YAML anchors and aliases may materialise, shared by every parse it is passed to.
///
/// go-yaml v2 bounds aliases per document (an alias/decode *ratio*, not a size), and so did we
/// (a node count per parse call). Both let many documents of a render expand one after the other:
/// 40 small templates, each inside go-yaml's ratio, each aliasing a 40 KB string a thousand
/// times, turned 1.7 MB of helm output into 1.95 GB of values. One budget per render closes that:
/// [`AliasBudget::for_output`] is created once per render from the size of the tool's output and
/// passed to the manifest splitter and to every `yamlParse` modifier of that render, so what all
/// of them materialise together stays proportional to what the tool printed.
///
/// Counted in estimated bytes, not nodes, so that one alias of a long string costs what it
/// copies: [`NODE_COST`] per node plus the length of every string in it. Charged are the copy
/// kept of each anchored node (for later aliases) and each alias expansion, before they are made.
/// Clones share the counter; [`AliasBudget::fork`] makes an independent copy of its state.
#[derive(Clone, Debug)]
pub struct AliasBudget(std::sync::Arc<BudgetState>);

#[derive(Debug)]
struct BudgetState {
    limit: u64,
    basis: BudgetBasis,
    used: std::sync::atomic::AtomicU64,
}

/// How a budget's limit was derived (for the error message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetBasis {
    /// [`ALIAS_BUDGET_FIXED`], for one file outside a render.
    Fixed,
    /// A render whose tool printed this many bytes.
    Output { bytes: u64 },
}

impl std::fmt::Display for BudgetBasis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetBasis::Fixed => write!(f, "the fixed budget of one file"),
            BudgetBasis::Output { bytes } => write!(
                f,
                "this render's budget: {ALIAS_BUDGET_PER_OUTPUT_BYTE} × {bytes} bytes of tool \
                 output, at least {ALIAS_BUDGET_FLOOR} and at most {ALIAS_BUDGET_CAP}"
            ),
        }
    }
}

/// A budget ran out. Says how big it was and why; never what was being parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "YAML anchors and aliases would materialise more than {limit} bytes of values ({basis}; \
     node estimate {NODE_COST} bytes + string lengths)"
)]
pub struct BudgetExceeded {
    pub limit: u64,
    pub basis: BudgetBasis,
}

impl AliasBudget {
    fn new(limit: u64, basis: BudgetBasis, used: u64) -> Self {
        Self(std::sync::Arc::new(BudgetState {
            limit,
            basis,
            used: used.into(),
        }))
    }

    /// The budget of one render whose tool printed `output_bytes`:
    /// `clamp(ALIAS_BUDGET_PER_OUTPUT_BYTE × output_bytes, ALIAS_BUDGET_FLOOR, ALIAS_BUDGET_CAP)`.
    pub fn for_output(output_bytes: usize) -> Self {
        let bytes = u64::try_from(output_bytes).unwrap_or(u64::MAX);
        let limit = bytes
            .saturating_mul(ALIAS_BUDGET_PER_OUTPUT_BYTE)
            .clamp(ALIAS_BUDGET_FLOOR, ALIAS_BUDGET_CAP);
        Self::new(limit, BudgetBasis::Output { bytes }, 0)
    }

    /// A budget of [`ALIAS_BUDGET_FIXED`] for one file read outside a render.
    pub fn fixed() -> Self {
        Self::new(ALIAS_BUDGET_FIXED, BudgetBasis::Fixed, 0)
    }

    /// An independent budget with this one's limit and what it has used so far (a cached
    /// render's budget, resumed by each request that substitutes it).
    #[must_use]
    pub fn fork(&self) -> Self {
        Self::new(self.0.limit, self.0.basis, self.used())
    }

    pub fn limit(&self) -> u64 {
        self.0.limit
    }

    /// Estimated bytes materialised so far.
    pub fn used(&self) -> u64 {
        self.0.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes `cost` from the budget, or fails (and takes it anyway: the caller stops).
    fn charge(&self, cost: u64) -> Result<(), BudgetExceeded> {
        let before = self
            .0
            .used
            .fetch_add(cost, std::sync::atomic::Ordering::Relaxed);
        if before.saturating_add(cost) > self.0.limit {
            return Err(BudgetExceeded {
                limit: self.0.limit,
                basis: self.0.basis,
            });
        }
        Ok(())
    }
}

/// go-yaml v2 refuses more than 10 000 nested levels. We stop earlier because `serde_json::Value`
/// is dropped, cloned and printed recursively and must not overflow a 2 MiB tokio worker stack.
const MAX_DEPTH: usize = 1_000;

/// Tags of the YAML core schema (`!!int` etc.) arrive with this prefix.
const CORE_TAG_PREFIX: &str = "tag:yaml.org,2002:";

/// Go's `base64.StdEncoding`: padding required, non-zero trailing bits tolerated.
const GO_STD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Something in the text could not be read, with its 1-based position in that text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("yaml: line {line}, column {column}: {kind}")]
pub struct YamlError {
    pub line: usize,
    pub column: usize,
    pub kind: YamlErrorKind,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum YamlErrorKind {
    /// The text is not well-formed YAML (message from the parser).
    #[error("{0}")]
    Syntax(String),
    /// Anchors and aliases would materialise more than the budget allows.
    #[error("{0}")]
    AliasBudget(BudgetExceeded),
    #[error("anchor value contains itself")]
    RecursiveAlias,
    #[error("exceeded max depth of {MAX_DEPTH}")]
    TooDeep,
    /// A scalar with an explicit tag (`!!int`, ...) whose text does not fit that tag.
    #[error("cannot decode {found} `{value}` as a !!{tag}")]
    BadTag {
        found: &'static str,
        value: String,
        tag: String,
    },
    #[error("!!binary value contains invalid base64 data")]
    BadBinary,
    #[error("invalid map key: a {0} cannot be a key")]
    NonScalarKey(&'static str),
    /// sigs.k8s.io/yaml cannot turn null and uint64 keys into JSON object keys.
    #[error("unsupported map key of type: {kind}, key: {key}")]
    UnsupportedKey { kind: &'static str, key: String },
    #[error("map merge requires map or sequence of maps as the value")]
    BadMerge,
    /// JSON has no `.inf`/`.nan`; Go's `json.Marshal` fails on them too.
    #[error("json: unsupported value: {0}")]
    NonFinite(&'static str),
}

/// Parses every document of a YAML stream, in order.
///
/// A document without content (`---` alone, or only comments after it) becomes `Value::Null`;
/// callers that want objects skip those.
///
/// For a file read on its own (configuration): aliases get a fresh [`AliasBudget::fixed`].
pub fn parse_documents(text: &str) -> Result<Vec<Value>, YamlError> {
    parse_documents_within(text, &AliasBudget::fixed())
}

/// [`parse_documents`], charging what anchors and aliases materialise to `budget`.
pub fn parse_documents_within(text: &str, budget: &AliasBudget) -> Result<Vec<Value>, YamlError> {
    load(text, usize::MAX, budget)
}

/// Parses only the first document of `text` (`Null` if there is none), ignoring anything after
/// its end, as go-yaml v2's `Unmarshal` does with the chunks apimachinery splits a stream into.
/// Aliases get a fresh [`AliasBudget::fixed`].
pub fn parse_first_document(text: &str) -> Result<Value, YamlError> {
    parse_first_document_within(text, &AliasBudget::fixed())
}

/// [`parse_first_document`], charging what anchors and aliases materialise to `budget`.
pub fn parse_first_document_within(text: &str, budget: &AliasBudget) -> Result<Value, YamlError> {
    Ok(load(text, 1, budget)?.pop().unwrap_or(Value::Null))
}

/// Reads documents with [`fast`] where it can and with saphyr where it cannot, with the result
/// (values, errors and their positions) of reading the whole stream with saphyr.
///
/// A document [`fast`] gives up on is parsed alone with saphyr, against a copy of the budget
/// charged only if it succeeds; if that fails too, saphyr reads the rest of the stream from that
/// document on, so the error is the one the stream gives there.
fn load(text: &str, max_documents: usize, budget: &AliasBudget) -> Result<Vec<Value>, YamlError> {
    let mut documents = Vec::new();
    for chunk in fast::split(text) {
        if documents.len() >= max_documents {
            break;
        }
        let (start, line) = match chunk {
            fast::Chunk::Document {
                start,
                body,
                end,
                line,
                explicit,
            } => match fast::document(&text[body..end]) {
                Some(Some(value)) => {
                    documents.push(value);
                    continue;
                }
                Some(None) => {
                    if explicit {
                        documents.push(Value::Null);
                    }
                    continue;
                }
                None => match load_alone(&text[start..end], line, budget) {
                    Some(value) => {
                        documents.push(value);
                        continue;
                    }
                    None => (start, line),
                },
            },
            fast::Chunk::Rest { start, line } => (start, line),
        };
        let rest = max_documents - documents.len();
        documents.extend(load_events(&text[start..], line, rest, budget)?);
        break;
    }
    Ok(documents)
}

/// One document's text (with its `---` line, if any) read alone by saphyr; `None` if that does
/// not give exactly one document, or fails.
fn load_alone(text: &str, line: usize, budget: &AliasBudget) -> Option<Value> {
    // saphyr stops at a NUL as at the end of the stream: only the whole rest reads the same.
    if text.contains('\0') {
        return None;
    }
    let trial = budget.fork();
    let before = trial.used();
    let mut documents = load_events(text, line, usize::MAX, &trial).ok()?;
    if documents.len() != 1 {
        return None;
    }
    budget.charge(trial.used() - before).ok()?;
    documents.pop()
}

/// saphyr's reading of `text`, which starts at line `line_offset` (0-based) of the stream.
fn load_events(
    text: &str,
    line_offset: usize,
    max_documents: usize,
    budget: &AliasBudget,
) -> Result<Vec<Value>, YamlError> {
    let error_at = |mark: &Marker, kind| {
        let mut error = error_at(mark, kind);
        error.line += line_offset;
        error
    };
    let mut loader = Loader::new(budget);
    let mut documents = Vec::new();
    for next in Parser::new_from_str(text) {
        let (event, span) =
            next.map_err(|e| error_at(e.marker(), YamlErrorKind::Syntax(e.info().to_owned())))?;
        match event {
            Event::DocumentStart(_) => loader.reset(),
            Event::DocumentEnd => {
                documents.push(loader.root.take().unwrap_or(Value::Null));
                if documents.len() >= max_documents {
                    break;
                }
            }
            event => loader
                .event(event)
                .map_err(|kind| error_at(&span.start, kind))?,
        }
    }
    Ok(documents)
}

fn error_at(mark: &Marker, kind: YamlErrorKind) -> YamlError {
    YamlError {
        line: mark.line(),
        column: mark.col() + 1,
        kind,
    }
}

/// A finished node. Scalars keep their YAML type until we know whether they become a key or a
/// value: sigs.k8s.io/yaml formats a float key as float32 and rejects null keys, so a key cannot
/// be derived from the JSON value.
#[derive(Debug, Clone)]
enum Node {
    Scalar(Scalar),
    /// A plain `<<` key: go-yaml v2 merges the mapping given as its value.
    MergeKey,
    Collection(Value),
}

#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    /// Only for integers above `i64::MAX`, as go-yaml v2 returns them.
    Uint(u64),
    Float(f64),
    Str(String),
}

impl Scalar {
    fn tag_name(&self) -> &'static str {
        match self {
            Scalar::Null => "!!null",
            Scalar::Bool(_) => "!!bool",
            Scalar::Int(_) | Scalar::Uint(_) => "!!int",
            Scalar::Float(_) => "!!float",
            Scalar::Str(_) => "!!str",
        }
    }
}

/// A collection being built; `size` is its estimated cost so far (see [`AliasBudget`]).
enum Frame {
    Seq {
        anchor: usize,
        items: Vec<Value>,
        size: u64,
    },
    Map {
        anchor: usize,
        map: Map<String, Value>,
        key: Option<Key>,
        size: u64,
    },
}

enum Key {
    Name(String),
    Merge,
}

struct Loader<'b> {
    stack: Vec<Frame>,
    /// Finished anchored nodes with their estimated costs, by saphyr's anchor id.
    anchors: HashMap<usize, (Node, u64)>,
    budget: &'b AliasBudget,
    root: Option<Value>,
}

impl<'b> Loader<'b> {
    fn new(budget: &'b AliasBudget) -> Self {
        Self {
            stack: Vec::new(),
            anchors: HashMap::new(),
            budget,
            root: None,
        }
    }

    /// Anchors are scoped to one document, as in go-yaml.
    fn reset(&mut self) {
        self.stack.clear();
        self.anchors.clear();
        self.root = None;
    }

    fn event(&mut self, event: Event<'_>) -> Result<(), YamlErrorKind> {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.as_deref().map(full_tag);
                let size = NODE_COST.saturating_add(u64::try_from(text.len()).unwrap_or(u64::MAX));
                let node = if is_merge_key(&text, style, tag.as_deref()) {
                    Node::MergeKey
                } else {
                    Node::Scalar(resolve_scalar(text, style, tag.as_deref())?)
                };
                self.finish(node, size, anchor)
            }
            Event::Alias(id) => {
                // Charged before the copy is made.
                let size = self
                    .anchors
                    .get(&id)
                    .map(|(_, size)| *size)
                    .ok_or(YamlErrorKind::RecursiveAlias)?;
                self.budget
                    .charge(size)
                    .map_err(YamlErrorKind::AliasBudget)?;
                let node = self
                    .anchors
                    .get(&id)
                    .map(|(node, _)| node.clone())
                    .ok_or(YamlErrorKind::RecursiveAlias)?;
                self.attach(node, size, true)
            }
            // Tags on collections are ignored, as go-yaml v2 does when decoding into interface{}.
            Event::SequenceStart(anchor, _) => self.push(Frame::Seq {
                anchor,
                items: Vec::new(),
                size: NODE_COST,
            }),
            Event::MappingStart(anchor, _) => self.push(Frame::Map {
                anchor,
                map: Map::new(),
                key: None,
                size: NODE_COST,
            }),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    anchor,
                    items,
                    size,
                }) => self.finish(Node::Collection(Value::Array(items)), size, anchor),
                Some(Frame::Map {
                    anchor, map, size, ..
                }) => self.finish(Node::Collection(Value::Object(map)), size, anchor),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn push(&mut self, frame: Frame) -> Result<(), YamlErrorKind> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(YamlErrorKind::TooDeep);
        }
        self.stack.push(frame);
        Ok(())
    }

    fn finish(&mut self, node: Node, size: u64, anchor: usize) -> Result<(), YamlErrorKind> {
        if anchor != 0 {
            // The copy kept for aliases is materialised too (nested anchors copy their content
            // again), so it is charged before it is made.
            self.budget
                .charge(size)
                .map_err(YamlErrorKind::AliasBudget)?;
            // An alias of an anchored `<<` is an ordinary string, never a merge.
            let stored = match &node {
                Node::MergeKey => Node::Scalar(Scalar::Str("<<".to_owned())),
                other => other.clone(),
            };
            self.anchors.insert(anchor, (stored, size));
        }
        self.attach(node, size, false)
    }

    fn attach(&mut self, node: Node, size: u64, via_alias: bool) -> Result<(), YamlErrorKind> {
        match self.stack.last_mut() {
            None => self.root = Some(into_value(node)?),
            Some(Frame::Seq {
                items, size: total, ..
            }) => {
                items.push(into_value(node)?);
                *total = total.saturating_add(size);
            }
            Some(Frame::Map {
                map,
                key,
                size: total,
                ..
            }) => {
                *total = total.saturating_add(size);
                match key.take() {
                    None => *key = Some(into_key(node)?),
                    // Duplicate keys: the last one wins, as with go-yaml v2 (non-strict).
                    Some(Key::Name(name)) => {
                        map.insert(name, into_value(node)?);
                    }
                    Some(Key::Merge) => merge(map, node, via_alias)?,
                }
            }
        }
        Ok(())
    }
}

/// go-yaml v2 applies a merge where the `<<` key stands: merged keys overwrite keys written before
/// it, keys written after it overwrite merged ones, and in a list of maps earlier maps win.
/// The value must be a mapping, an alias of a mapping, or a sequence of those.
fn merge(map: &mut Map<String, Value>, node: Node, via_alias: bool) -> Result<(), YamlErrorKind> {
    match node {
        Node::Collection(Value::Object(source)) => map.extend(source),
        Node::Collection(Value::Array(items))
            if !via_alias && items.iter().all(Value::is_object) =>
        {
            for item in items.into_iter().rev() {
                if let Value::Object(source) = item {
                    map.extend(source);
                }
            }
        }
        _ => return Err(YamlErrorKind::BadMerge),
    }
    Ok(())
}

fn full_tag(tag: &Tag) -> String {
    format!("{}{}", tag.handle, tag.suffix)
}

/// go-yaml v2's `isMerge`: the value `<<`, either implicit (plain and untagged, or tagged with the
/// non-specific `!`) or tagged `!!merge`.
fn is_merge_key(text: &str, style: ScalarStyle, tag: Option<&str>) -> bool {
    text == "<<"
        && match tag {
            None => style == ScalarStyle::Plain,
            Some(tag) => tag == "!" || tag.strip_prefix(CORE_TAG_PREFIX) == Some("merge"),
        }
}

/// Takes the scalar's text by value: a string keeps saphyr's allocation instead of a copy.
fn resolve_scalar(
    text: std::borrow::Cow<'_, str>,
    style: ScalarStyle,
    tag: Option<&str>,
) -> Result<Scalar, YamlErrorKind> {
    let Some(tag) = tag else {
        // Quoted and block scalars are always strings.
        return Ok(match style {
            ScalarStyle::Plain => {
                resolve_plain_non_string(&text).unwrap_or_else(|| Scalar::Str(text.into_owned()))
            }
            _ => Scalar::Str(text.into_owned()),
        });
    };
    match tag.strip_prefix(CORE_TAG_PREFIX) {
        Some("binary") => decode_binary(&text).map(Scalar::Str),
        Some(kind @ ("null" | "bool" | "int" | "float" | "timestamp")) => {
            resolve_tagged(kind, &text)
        }
        // `!!str`, and tags go-yaml cannot resolve (`!!map` on a scalar, local `!foo`, the
        // non-specific `!`): the text is kept as a string.
        _ => Ok(Scalar::Str(text.into_owned())),
    }
}

/// go-yaml v2 `resolve()` with an explicit core tag: resolve as if untagged and accept the result
/// only if it has that type (an int is widened to a float for `!!float`).
fn resolve_tagged(kind: &str, text: &str) -> Result<Scalar, YamlErrorKind> {
    if kind == "timestamp" && is_timestamp(text) {
        // Timestamps decode to their text when the target is interface{}.
        return Ok(Scalar::Str(text.to_owned()));
    }
    match (kind, resolve_plain(text)) {
        ("null", resolved @ Scalar::Null)
        | ("bool", resolved @ Scalar::Bool(_))
        | ("int", resolved @ (Scalar::Int(_) | Scalar::Uint(_)))
        | ("float", resolved @ Scalar::Float(_)) => Ok(resolved),
        // Go's float64(int64) rounds the same way.
        ("float", Scalar::Int(i)) => Ok(Scalar::Float(i as f64)),
        (_, resolved) => Err(YamlErrorKind::BadTag {
            found: resolved.tag_name(),
            value: text.to_owned(),
            tag: kind.to_owned(),
        }),
    }
}

/// Plain-scalar resolution of go-yaml v2 (`resolve.go`, branch v2), built with a current Go:
/// `strconv.ParseInt(s, 0, 64)` accepts `0x`, `0o`, `0b` prefixes and `0`-prefixed octal.
/// v2 has no sexagesimal numbers; timestamps stay strings when decoding into interface{}.
fn resolve_plain(text: &str) -> Scalar {
    resolve_plain_non_string(text).unwrap_or_else(|| Scalar::Str(text.to_owned()))
}

/// [`resolve_plain`] without copying the text of a string (`None`): the emitter asks this of
/// every string it writes.
fn resolve_plain_non_string(text: &str) -> Option<Scalar> {
    let Some(&first) = text.as_bytes().first() else {
        return Some(Scalar::Null);
    };
    // v2 only looks further at scalars whose first byte can start a non-string.
    if !first.is_ascii_digit() && !b"+-.yYnNtTfFoO~".contains(&first) {
        return None;
    }
    match text {
        "~" | "null" | "Null" | "NULL" => return Some(Scalar::Null),
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            return Some(Scalar::Bool(true));
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            return Some(Scalar::Bool(false));
        }
        ".nan" | ".NaN" | ".NAN" => return Some(Scalar::Float(f64::NAN)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Some(Scalar::Float(f64::INFINITY));
        }
        "-.inf" | "-.Inf" | "-.INF" => return Some(Scalar::Float(f64::NEG_INFINITY)),
        _ => {}
    }
    match first {
        b'.' => parse_float(text).map(Scalar::Float),
        b'+' | b'-' | b'0'..=b'9' => {
            let plain = text.replace('_', "");
            if let Some(i) = parse_go_int(&plain) {
                Some(Scalar::Int(i))
            } else if let Some(u) = parse_go_uint(&plain) {
                Some(Scalar::Uint(u))
            } else if let Some(f) = parse_float(&plain) {
                Some(Scalar::Float(f))
            } else {
                // v2's fallback for old Go: `0b` followed by a signed binary number.
                plain
                    .strip_prefix("0b")
                    .and_then(|rest| parse_radix_int(rest, 2))
                    .map(Scalar::Int)
            }
        }
        _ => None,
    }
}

/// Go's `strconv.ParseUint(s, 0, 64)` on text without underscores.
fn parse_go_uint(s: &str) -> Option<u64> {
    let lower = |b: u8| b.to_ascii_lowercase();
    let bytes = s.as_bytes();
    let (digits, radix) = match bytes {
        [b'0', p, _, ..] if lower(*p) == b'x' => (&s[2..], 16),
        [b'0', p, _, ..] if lower(*p) == b'o' => (&s[2..], 8),
        [b'0', p, _, ..] if lower(*p) == b'b' => (&s[2..], 2),
        [b'0', _, ..] => (&s[1..], 8),
        _ => (s, 10),
    };
    parse_radix_digits(digits, radix)
}

/// Go's `strconv.ParseInt(s, 0, 64)`: an optional sign, then `ParseUint` rules.
fn parse_go_int(s: &str) -> Option<i64> {
    let (negative, rest) = split_sign(s);
    signed(negative, parse_go_uint(rest)?)
}

/// Go's `strconv.ParseInt(s, radix, 64)` for an explicit radix.
fn parse_radix_int(s: &str, radix: u32) -> Option<i64> {
    let (negative, rest) = split_sign(s);
    signed(negative, parse_radix_digits(rest, radix)?)
}

fn split_sign(s: &str) -> (bool, &str) {
    match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    }
}

fn signed(negative: bool, magnitude: u64) -> Option<i64> {
    let value = i128::from(magnitude);
    i64::try_from(if negative { -value } else { value }).ok()
}

/// Digits only: `from_str_radix` alone would also accept a sign.
fn parse_radix_digits(digits: &str, radix: u32) -> Option<u64> {
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// v2's `yamlStyleFloat` (`^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`) followed by
/// `strconv.ParseFloat`, which fails on overflow (the text then stays a string).
fn parse_float(s: &str) -> Option<f64> {
    let bytes = s.as_bytes();
    let digits_from = |i: usize| {
        bytes[i.min(bytes.len())..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let mut i = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let int_digits = digits_from(i);
    i += int_digits;
    if bytes.get(i) == Some(&b'.') {
        let frac_digits = digits_from(i + 1);
        if int_digits == 0 && frac_digits == 0 {
            return None;
        }
        i += 1 + frac_digits;
    } else if int_digits == 0 {
        return None;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1 + usize::from(matches!(bytes.get(i + 1), Some(b'+' | b'-')));
        let exp_digits = digits_from(i);
        if exp_digits == 0 {
            return None;
        }
        i += exp_digits;
    }
    if i != bytes.len() {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// The layouts go-yaml v2 tries: `2006-1-2`, `2006-1-2 15:4:5.999999999` and
/// `2006-1-2T15:4:5.999999999Z07:00` (also with `t`), with Go's `time.Parse` range checks.
fn is_timestamp(s: &str) -> bool {
    fn number(s: &mut &str, max_digits: usize) -> Option<u32> {
        let len = s
            .bytes()
            .take(max_digits)
            .take_while(u8::is_ascii_digit)
            .count();
        let (digits, rest) = s.split_at(len);
        *s = rest;
        digits.parse().ok()
    }
    fn literal(s: &mut &str, prefix: char) -> bool {
        s.strip_prefix(prefix).map(|rest| *s = rest).is_some()
    }
    let mut s = s;
    let year_len = s.bytes().take_while(u8::is_ascii_digit).count();
    if year_len != 4 {
        return false;
    }
    let (Some(year), true) = (number(&mut s, 4), literal(&mut s, '-')) else {
        return false;
    };
    let (Some(month), true, Some(day)) =
        (number(&mut s, 2), literal(&mut s, '-'), number(&mut s, 2))
    else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > days {
        return false;
    }
    if s.is_empty() {
        return true;
    }
    let zoned = literal(&mut s, 'T') || literal(&mut s, 't');
    if !zoned {
        let spaces = s.len() - s.trim_start_matches(' ').len();
        if spaces == 0 {
            return false;
        }
        s = &s[spaces..];
    }
    let time = (
        number(&mut s, 2),
        literal(&mut s, ':'),
        number(&mut s, 2),
        literal(&mut s, ':'),
        number(&mut s, 2),
    );
    let (Some(hour), true, Some(minute), true, Some(second)) = time else {
        return false;
    };
    if hour > 23 || minute > 59 || second > 59 {
        return false;
    }
    if s.len() >= 2
        && (s.starts_with('.') || s.starts_with(','))
        && s.as_bytes()[1].is_ascii_digit()
    {
        s = s[1..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    if !zoned {
        return s.is_empty();
    }
    if s == "Z" {
        return true;
    }
    let bytes = s.as_bytes();
    bytes.len() == 6
        && matches!(bytes[0], b'+' | b'-')
        && bytes[3] == b':'
        && [1, 2, 4, 5].iter().all(|&i| bytes[i].is_ascii_digit())
        && s[1..3].parse::<u32>().is_ok_and(|h| h <= 24)
        && s[4..6].parse::<u32>().is_ok_and(|m| m <= 60)
}

/// go-yaml v2 base64-decodes `!!binary` scalars and stores the bytes in a Go string; Go's JSON
/// encoder then writes one U+FFFD per byte that is not valid UTF-8.
fn decode_binary(text: &str) -> Result<String, YamlErrorKind> {
    let cleaned: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    let bytes = GO_STD_BASE64
        .decode(cleaned)
        .map_err(|_| YamlErrorKind::BadBinary)?;
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes.as_slice();
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                out.push_str(valid);
                return Ok(out);
            }
            Err(e) => {
                let (valid, invalid) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let bad = e.error_len().unwrap_or(invalid.len());
                out.extend(std::iter::repeat_n('\u{FFFD}', bad));
                rest = &invalid[bad..];
            }
        }
    }
}

fn into_value(node: Node) -> Result<Value, YamlErrorKind> {
    Ok(match node {
        Node::Collection(value) => value,
        Node::MergeKey => Value::String("<<".to_owned()),
        Node::Scalar(Scalar::Null) => Value::Null,
        Node::Scalar(Scalar::Bool(b)) => Value::Bool(b),
        Node::Scalar(Scalar::Int(i)) => Value::from(i),
        Node::Scalar(Scalar::Uint(u)) => Value::from(u),
        Node::Scalar(Scalar::Str(s)) => Value::String(s),
        Node::Scalar(Scalar::Float(f)) => float_value(f)?,
    })
}

/// Go's `json.Marshal` prints an integral float below 1e21 without a fraction (`1.0` → `1`), so
/// the repo-server reads it back as an integer; store it as the integer Go's text spells.
fn float_value(f: f64) -> Result<Value, YamlErrorKind> {
    if f.is_nan() {
        return Err(YamlErrorKind::NonFinite("NaN"));
    }
    if f.is_infinite() {
        return Err(YamlErrorKind::NonFinite(if f > 0.0 {
            "+Inf"
        } else {
            "-Inf"
        }));
    }
    if f.fract() == 0.0 && f.abs() < 1e21 {
        // Rust's `Display` prints the same shortest digits as Go's 'f' format.
        let text = f.to_string();
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = text.parse::<u64>() {
            return Ok(Value::from(u));
        }
    }
    Ok(Number::from_f64(f).map_or(Value::Null, Value::Number))
}

/// sigs.k8s.io/yaml's key conversion: ints in decimal, bools as `true`/`false`, floats as Go's
/// `FormatFloat(f, 'g', -1, 32)`; null, uint64 and collection keys are errors.
fn into_key(node: Node) -> Result<Key, YamlErrorKind> {
    let name = match node {
        Node::MergeKey => return Ok(Key::Merge),
        Node::Collection(Value::Array(_)) => return Err(YamlErrorKind::NonScalarKey("sequence")),
        Node::Collection(_) => return Err(YamlErrorKind::NonScalarKey("mapping")),
        Node::Scalar(Scalar::Str(s)) => s,
        Node::Scalar(Scalar::Int(i)) => i.to_string(),
        Node::Scalar(Scalar::Bool(b)) => b.to_string(),
        Node::Scalar(Scalar::Float(f)) => go_float32_string(f),
        Node::Scalar(Scalar::Uint(u)) => {
            return Err(YamlErrorKind::UnsupportedKey {
                kind: "uint64",
                key: u.to_string(),
            });
        }
        Node::Scalar(Scalar::Null) => {
            return Err(YamlErrorKind::UnsupportedKey {
                kind: "<nil>",
                key: "<nil>".to_owned(),
            });
        }
    };
    Ok(Key::Name(name))
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 32)`, with sigs.k8s.io/yaml's `.inf`/`.nan` spelling.
fn go_float32_string(f: f64) -> String {
    // Go's float32(f) rounds the same way: the narrowing is the point.
    #[allow(clippy::cast_possible_truncation)]
    let f = f as f32;
    if f.is_nan() {
        return ".nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.to_owned();
    }
    let scientific = format!("{f:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if f == 0.0 || (-4..6).contains(&exponent) {
        // Same shortest digits, positional notation.
        return f.to_string();
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
}

// ---------------------------------------------------------------------------------------------
// Emitter

/// Renders `value` as one YAML document (block style, 2-space indent, no `---`, final newline).
///
/// Strings are written plain only when no YAML 1.1 or 1.2 reader can take them for anything
/// else; multi-line strings become `|` block scalars when that is lossless, everything else is
/// double-quoted.
pub fn to_yaml_string(value: &Value) -> String {
    let mut out = String::new();
    push_yaml(&mut out, value);
    out
}

/// [`to_yaml_string`] appended to `out`: a stream of documents is written into one buffer
/// instead of one growing `String` per document.
pub fn push_yaml(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) if !map.is_empty() => write_map(out, map, 0, false),
        Value::Array(items) if !items.is_empty() => write_seq(out, items, 0, false),
        scalar => write_scalar(out, scalar, 2),
    }
}

fn indent(out: &mut String, mut width: usize) {
    const SPACES: &str = "                                                                ";
    while width > 0 {
        let n = width.min(SPACES.len());
        out.push_str(&SPACES[..n]);
        width -= n;
    }
}

/// `inline_first`: the cursor already sits after a `- ` at this indentation.
fn write_map(out: &mut String, map: &Map<String, Value>, width: usize, inline_first: bool) {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || !inline_first {
            indent(out, width);
        }
        // Simple keys are limited to 1024 characters; longer ones need the explicit `? ` form.
        if key.len() > 512 && key.chars().count() > 512 {
            out.push_str("? ");
            write_quoted(out, key);
            out.push('\n');
            indent(out, width);
        } else if is_plain_safe(key) {
            out.push_str(key);
        } else {
            write_quoted(out, key);
        }
        out.push(':');
        match value {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                write_map(out, inner, width + 2, false);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_seq(out, items, width + 2, false);
            }
            scalar => {
                out.push(' ');
                write_scalar(out, scalar, width + 2);
            }
        }
    }
}

fn write_seq(out: &mut String, items: &[Value], width: usize, inline_first: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline_first {
            indent(out, width);
        }
        out.push_str("- ");
        match item {
            Value::Object(map) if !map.is_empty() => write_map(out, map, width + 2, true),
            Value::Array(inner) if !inner.is_empty() => write_seq(out, inner, width + 2, true),
            scalar => write_scalar(out, scalar, width + 2),
        }
    }
}

/// Writes a scalar (or an empty collection) and ends the line; block scalar lines are indented
/// by `width`.
fn write_scalar(out: &mut String, value: &Value, width: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let start = out.len();
            // Writing to a `String` cannot fail.
            let _ = write!(out, "{n}");
            // YAML 1.1 floats need a dot (PyYAML reads `1e-7` as a string).
            if let Some(e) = out[start..].find('e')
                && !out[start..start + e].contains('.')
            {
                out.insert_str(start + e, ".0");
            }
        }
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
        Value::String(s) if is_plain_safe(s) => out.push_str(s),
        Value::String(s) if is_block_safe(s) => {
            let (header, body) = match s.strip_suffix('\n') {
                Some(body) => ("|", body),
                None => ("|-", s.as_str()),
            };
            out.push_str(header);
            for line in body.split('\n') {
                out.push('\n');
                if !line.is_empty() {
                    indent(out, width);
                    out.push_str(line);
                }
            }
        }
        Value::String(s) => write_quoted(out, s),
    }
    out.push('\n');
}

/// Characters YAML 1.1 readers (go-yaml, libyaml) accept raw and do not treat as line breaks.
fn is_printable(c: char) -> bool {
    matches!(c, ' '..='~' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}')
}

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let second = s.chars().nth(1);
    // Numbers, dates and times of any schema start with a digit, or a sign or dot and a digit.
    let numeric_start = first.is_ascii_digit()
        || (matches!(first, '+' | '-' | '.')
            && second.is_some_and(|c| c.is_ascii_digit() || c == '.'));
    !numeric_start
        && !matches!(s, "<<" | "=")
        && !matches!(
            first,
            '-' | '?'
                | ':'
                | ','
                | '['
                | ']'
                | '{'
                | '}'
                | '#'
                | '&'
                | '*'
                | '!'
                | '|'
                | '>'
                | '\''
                | '"'
                | '%'
                | '@'
                | '`'
        )
        && !first.is_whitespace()
        && !s.ends_with(char::is_whitespace)
        && !s.ends_with(':')
        && plain_body_ok(s)
        && resolve_plain_non_string(s).is_none()
}

/// No `: `, no ` #` and only printable characters in `s`: one pass over the bytes while they are
/// ASCII, as almost all are.
fn plain_body_ok(s: &str) -> bool {
    let mut previous = 0;
    for &b in s.as_bytes() {
        match b {
            b' ' if previous == b':' => return false,
            b'#' if previous == b' ' => return false,
            b' '..=b'~' => {}
            0x80.. => {
                return !s.contains(": ") && !s.contains(" #") && s.chars().all(is_printable);
            }
            _ => return false,
        }
        previous = b;
    }
    true
}

fn is_block_safe(s: &str) -> bool {
    let mut lines = s.strip_suffix('\n').unwrap_or(s).split('\n');
    s.contains('\n')
        && !s.ends_with("\n\n")
        && lines
            .clone()
            .find(|line| !line.is_empty())
            .is_some_and(|line| !line.starts_with([' ', '\t']))
        && lines.all(|line| {
            !line.ends_with([' ', '\t']) && line.chars().all(|c| c == '\t' || is_printable(c))
        })
}

/// A double-quoted scalar; the escapes used are common to YAML 1.1, YAML 1.2 and JSON.
fn write_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_printable(c) => out.push(c),
            // Everything else non-printable is below U+10000.
            c => out.push_str(&format!("\\u{:04X}", u32::from(c))),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `input` is one document meaning the JSON `expected`.
    #[track_caller]
    fn check(input: &str, expected: &str) {
        let want: Value = serde_json::from_str(expected).expect("expected is JSON");
        match parse_documents(input) {
            Ok(docs) => assert_eq!(docs, vec![want], "input: {input:?}"),
            Err(e) => panic!("input {input:?}: {e}"),
        }
    }

    /// `v: <scalar>` means `{"v": <expected>}`.
    #[track_caller]
    fn check_value(scalar: &str, expected: &str) {
        check(&format!("v: {scalar}\n"), &format!("{{\"v\": {expected}}}"));
    }

    #[track_caller]
    fn fails(input: &str) -> YamlError {
        match parse_documents(input) {
            Ok(docs) => panic!("input {input:?} parsed as {docs:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn null_spellings() {
        for s in ["~", "null", "Null", "NULL", "", "!!null ''", "!!null ~"] {
            check_value(s, "null");
        }
        for s in ["nUll", "nil", "None", "'~'", "\"null\""] {
            let text = s.trim_matches(['\'', '"']);
            check_value(s, &format!("{text:?}"));
        }
    }

    #[test]
    fn bool_spellings() {
        for s in [
            "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
        ] {
            check_value(s, "true");
        }
        for s in [
            "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
        ] {
            check_value(s, "false");
        }
        for s in ["yES", "oN", "tRUE", "o", "t", "f", "nO ", "yes please"] {
            check_value(s, &format!("{:?}", s.trim_end()));
        }
        // Quoting and block scalars keep strings; `y` in a list is a bool too.
        check_value("\"on\"", "\"on\"");
        check_value("'yes'", "\"yes\"");
        check_value("|\n  on\n", "\"on\\n\"");
        check("- y\n- n\n- 'y'\n", "[true, false, \"y\"]");
    }

    #[test]
    fn integers() {
        let table = [
            ("0", "0"),
            ("-0", "0"),
            ("00", "0"),
            ("0777", "511"),
            ("-0777", "-511"),
            ("0o17", "15"),
            ("0x1F", "31"),
            ("0X1f", "31"),
            ("+0x1F", "31"),
            ("-0x1F", "-31"),
            ("0b101", "5"),
            ("-0b101", "-5"),
            ("0B11", "3"),
            ("0b-101", "-5"),
            ("1_000", "1000"),
            ("1__0", "10"),
            ("1_", "1"),
            ("+12", "12"),
            ("-7", "-7"),
            ("9223372036854775807", "9223372036854775807"),
            ("-9223372036854775808", "-9223372036854775808"),
            ("9223372036854775808", "9223372036854775808"),
            ("18446744073709551615", "18446744073709551615"),
            // Past u64 they are floats; Go prints 1e20 as an integer literal.
            ("18446744073709551616", "18446744073709551616.0"),
            ("99999999999999999999", "1e20"),
            // Not octal, so a float: Go's JSON says 8.
            ("08", "8"),
            ("09.5", "9.5"),
            ("'0777'", "\"0777\""),
            ("\"0x1F\"", "\"0x1F\""),
        ];
        for (yaml, json) in table {
            check_value(yaml, json);
        }
        for s in [
            "_1", "0x", "0xG", "0b2", "0o8", "1-2", "+", "0o", "1 000", "1,000", "12abc",
        ] {
            check_value(s, &format!("{s:?}"));
        }
    }

    #[test]
    fn floats() {
        let table = [
            ("1.5", "1.5"),
            (".5", "0.5"),
            ("-.5", "-0.5"),
            ("+.5", "0.5"),
            ("1e-3", "0.001"),
            ("6.02e23", "6.02e23"),
            ("1_000.5", "1000.5"),
            ("-2.5E+2", "-250"),
            ("1e21", "1e21"),
            // Integral floats are integers in Go's JSON text.
            ("1e3", "1000"),
            ("1.", "1"),
            ("1.e2", "100"),
            ("3.0", "3"),
            ("-0.0", "0"),
        ];
        for (yaml, json) in table {
            check_value(yaml, json);
        }
        // Out of range, or not v2's float syntax: strings.
        for s in [
            "1e999", ".5e999", ".5_0", ".", "1e", "e3", "1.2.3", ".iNf", "+.nan", "1e+", "0x1p3",
        ] {
            check_value(s, &format!("{s:?}"));
        }
    }

    #[test]
    fn non_finite_floats_are_errors() {
        for s in [
            ".inf",
            ".Inf",
            ".INF",
            "+.inf",
            "-.inf",
            "-.INF",
            ".nan",
            ".NaN",
            ".NAN",
            "!!float .inf",
        ] {
            let e = fails(&format!("v: {s}\n"));
            assert!(matches!(e.kind, YamlErrorKind::NonFinite(_)), "{s}: {e}");
        }
        let e = fails("a: 1\nb: .inf\n");
        assert_eq!((e.line, e.column), (2, 4));
        assert_eq!(
            e.to_string(),
            "yaml: line 2, column 4: json: unsupported value: +Inf"
        );
    }

    #[test]
    fn strings_that_look_special() {
        // v2 has no sexagesimal numbers, and timestamps stay strings.
        for s in [
            "1:20",
            "190:20:30",
            "2001-12-14",
            "2001-12-14t21:59:43.10-05:00",
            "2001-12-14 21:59:43.10",
            "<<",
            "=",
            "é1",
            "v1.2",
            "100m",
            "a:b",
            "http://x/y?z=1#frag",
        ] {
            check_value(s, &format!("{s:?}"));
        }
    }

    #[test]
    fn block_scalars_and_chomping() {
        check_value("|\n  a\n  b\n", "\"a\\nb\\n\"");
        check_value("|-\n  a\n  b\n", "\"a\\nb\"");
        check("v: |+\n  a\n\n", r#"{"v": "a\n\n"}"#);
        check_value(">\n  a\n  b\n\n  c\n", "\"a b\\nc\\n\"");
        check_value(">-\n  0777\n", "\"0777\"");
        check_value("|2\n    indented\n", "\"  indented\\n\"");
    }

    #[test]
    fn flow_collections() {
        check(
            "{a: [1, on, 'x', 0x10], b: {c: ~}, d: []}",
            r#"{"a": [1, true, "x", 16], "b": {"c": null}, "d": []}"#,
        );
        check("[a, b: c, {}]", r#"["a", {"b": "c"}, {}]"#);
    }

    #[test]
    fn tags() {
        let table = [
            ("!!str on", "\"on\""),
            ("!!str 0777", "\"0777\""),
            ("!!str", "\"\""),
            ("!!int \"12\"", "12"),
            ("!!int 0x10", "16"),
            ("!<tag:yaml.org,2002:int> '7'", "7"),
            ("!!float 3", "3"),
            ("!!float '1.5'", "1.5"),
            ("!!bool \"yes\"", "true"),
            ("!!timestamp 2001-12-14", "\"2001-12-14\""),
            (
                "!!timestamp 2001-12-14T21:59:43.10Z",
                "\"2001-12-14T21:59:43.10Z\"",
            ),
            ("!!binary aGVsbG8=", "\"hello\""),
            ("!!binary |\n  aGVs\n  bG8=\n", "\"hello\""),
            ("!!binary /w==", "\"\\ufffd\""),
            // Tags go-yaml cannot resolve keep the text, even for numbers.
            ("!custom 12", "\"12\""),
            ("! on", "\"on\""),
            ("!!map foo", "\"foo\""),
            // Tags on collections are ignored.
            ("!foo {a: 1}", "{\"a\": 1}"),
            ("!!str [1]", "[1]"),
            ("!!map {a: on}", "{\"a\": true}"),
        ];
        for (yaml, json) in table {
            check_value(yaml, json);
        }
    }

    #[test]
    fn bad_tags() {
        for (yaml, found, tag) in [
            ("!!int abc", "!!str", "int"),
            ("!!int 1.5", "!!float", "int"),
            ("!!bool 1", "!!int", "bool"),
            ("!!null x", "!!str", "null"),
            ("!!float 18446744073709551615", "!!int", "float"),
            ("!!timestamp 2001-13-01", "!!str", "timestamp"),
            ("!!timestamp 2001-02-29", "!!str", "timestamp"),
        ] {
            let e = fails(&format!("v: {yaml}\n"));
            match &e.kind {
                YamlErrorKind::BadTag {
                    found: f, tag: t, ..
                } => assert_eq!((*f, t.as_str()), (found, tag), "{yaml}"),
                other => panic!("{yaml}: {other}"),
            }
        }
        let e = fails("v: !!int abc\n");
        assert_eq!(
            e.to_string(),
            "yaml: line 1, column 4: cannot decode !!str `abc` as a !!int"
        );
        assert_eq!(
            fails("v: !!binary aGVsbG8\n").kind,
            YamlErrorKind::BadBinary
        );
        assert_eq!(
            fails("v: !!binary 'a GVsbG8='\n").kind,
            YamlErrorKind::BadBinary
        );
    }

    #[test]
    fn timestamps() {
        for s in [
            "2001-12-14",
            "2001-1-2",
            "2000-02-29",
            "2001-12-14T21:59:43Z",
            "2001-12-14t21:59:43.123456789+05:30",
            "2001-12-14 21:59:43",
            "2001-12-14   1:2:3.5",
        ] {
            assert!(is_timestamp(s), "{s}");
        }
        for s in [
            "2001-12-14T21:59:43",
            "2001-12-14 21:59:43Z",
            "1900-02-29",
            "2001-12-32",
            "20011-12-14",
            "2001-12-14T24:00:00Z",
            "2001-12-14T21:59:43+0530",
            "2001-12-14x",
            "2001-12-14 21:59:43.",
        ] {
            assert!(!is_timestamp(s), "{s}");
        }
    }

    #[test]
    fn keys_become_strings_like_sigs_yaml() {
        let table = [
            ("1: a", r#"{"1": "a"}"#),
            ("0x10: a", r#"{"16": "a"}"#),
            ("-5: a", r#"{"-5": "a"}"#),
            ("on: push", r#"{"true": "push"}"#),
            ("n: x", r#"{"false": "x"}"#),
            ("'on': a", r#"{"on": "a"}"#),
            ("1.5: a", r#"{"1.5": "a"}"#),
            ("0.1: a", r#"{"0.1": "a"}"#),
            ("1e3: a", r#"{"1000": "a"}"#),
            ("123456.0: a", r#"{"123456": "a"}"#),
            ("1234567.0: a", r#"{"1.234567e+06": "a"}"#),
            ("1e6: a", r#"{"1e+06": "a"}"#),
            ("1e-5: a", r#"{"1e-05": "a"}"#),
            ("0.0001: a", r#"{"0.0001": "a"}"#),
            ("3.14159265358979: a", r#"{"3.1415927": "a"}"#),
            ("1e300: a", r#"{".inf": "a"}"#),
            (".inf: a", r#"{".inf": "a"}"#),
            ("-.inf: a", r#"{"-.inf": "a"}"#),
            (".nan: a", r#"{".nan": "a"}"#),
            ("-0.0: a", r#"{"-0": "a"}"#),
            ("!!float 1: a", r#"{"1": "a"}"#),
            ("2001-12-14: a", r#"{"2001-12-14": "a"}"#),
            ("\"\": a", r#"{"": "a"}"#),
        ];
        for (yaml, json) in table {
            check(yaml, json);
        }
    }

    #[test]
    fn keys_json_cannot_hold() {
        for yaml in ["~: a", "null: a", "? \n: a"] {
            assert!(
                matches!(
                    fails(yaml).kind,
                    YamlErrorKind::UnsupportedKey { kind: "<nil>", .. }
                ),
                "{yaml}"
            );
        }
        let e = fails("18446744073709551615: a");
        assert!(
            matches!(e.kind, YamlErrorKind::UnsupportedKey { kind: "uint64", .. }),
            "{e}"
        );
        assert_eq!(
            fails("? [1]\n: a\n").kind,
            YamlErrorKind::NonScalarKey("sequence")
        );
        assert_eq!(
            fails("? {a: 1}\n: b\n").kind,
            YamlErrorKind::NonScalarKey("mapping")
        );
        assert_eq!(
            fails("a: &m {x: 1}\n*m : b\n").kind,
            YamlErrorKind::NonScalarKey("mapping")
        );
    }

    #[test]
    fn duplicate_keys_last_wins() {
        check("a: 1\nb: 2\na: 3\n", r#"{"a": 3, "b": 2}"#);
        check("1: a\n'1': b\n", r#"{"1": "b"}"#);
    }

    #[test]
    fn anchors_and_aliases() {
        check("a: &x 1\nb: *x\n", r#"{"a": 1, "b": 1}"#);
        check(
            "a: &x {k: [on]}\nb: *x\n",
            r#"{"a": {"k": [true]}, "b": {"k": [true]}}"#,
        );
        check("- &s 'on'\n- *s\n", r#"["on", "on"]"#);
        // An aliased key keeps its YAML type.
        check("&k on: 1\nx: *k\n", r#"{"true": 1, "x": true}"#);
        check("a: &f 1.0\n*f : x\n", r#"{"a": 1, "1": "x"}"#);
        check("&f .inf : a\n*f : b\n", r#"{".inf": "b"}"#);
    }

    #[test]
    fn alias_errors() {
        assert_eq!(fails("a: &x [*x]\n").kind, YamlErrorKind::RecursiveAlias);
        assert!(matches!(fails("a: *nope\n").kind, YamlErrorKind::Syntax(_)));
        // Anchors do not outlive their document.
        let e = fails("a: &x 1\n---\nb: *x\n");
        assert_eq!(e.line, 3);
    }

    #[test]
    fn merge_keys() {
        check(
            "base: &b {a: 1, b: 2}\nd:\n  <<: *b\n  b: 3\n",
            r#"{"base": {"a": 1, "b": 2}, "d": {"a": 1, "b": 3}}"#,
        );
        // As in go-yaml v2, a merge overwrites keys written before it.
        check(
            "d:\n  b: 3\n  <<: {a: 1, b: 2}\n",
            r#"{"d": {"a": 1, "b": 2}}"#,
        );
        // In a list, earlier maps win.
        check(
            "a: &a {x: 1, w: 1}\nb: &b {w: 2, z: 2}\nc:\n  <<: [*a, *b]\n  z: 3\n",
            r#"{"a": {"x": 1, "w": 1}, "b": {"w": 2, "z": 2}, "c": {"x": 1, "w": 1, "z": 3}}"#,
        );
        check("<<: [{a: 1}, {a: 2, b: 2}]\n", r#"{"a": 1, "b": 2}"#);
        check("<<: []\n", "{}");
        check("!!merge <<: {a: 1}\n", r#"{"a": 1}"#);
        // Quoted `<<`, an alias of `<<`, and `<<` as a value are plain strings.
        check("\"<<\": {a: 1}\n", r#"{"<<": {"a": 1}}"#);
        check(
            "k: &m <<\n*m : 1\nv: <<\n",
            r#"{"k": "<<", "<<": 1, "v": "<<"}"#,
        );
        for bad in [
            "<<: 1\n",
            "<<:\n",
            "<<: [1]\n",
            "<<: [[{a: 1}]]\n",
            "s: &s x\n<<: [*s]\n",
            "l: &l [{x: 1}]\nm:\n  <<: *l\n",
        ] {
            assert_eq!(fails(bad).kind, YamlErrorKind::BadMerge, "{bad}");
        }
    }

    #[test]
    fn documents() {
        let docs = |text: &str| parse_documents(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(docs(""), Vec::<Value>::new());
        assert_eq!(docs("# only a comment\n"), Vec::<Value>::new());
        assert_eq!(docs("---\n"), vec![Value::Null]);
        assert_eq!(
            docs("# head\n---\n# c\n---\na: 1\n--- # trailing comment\nb: on\n"),
            vec![Value::Null, json!({"a": 1}), json!({"b": true})]
        );
        assert_eq!(
            docs("--- foo\n--- {a: 1}\n--- [1]\n--- |\n  text\n--- >\n  folded\n  text\n"),
            vec![
                json!("foo"),
                json!({"a": 1}),
                json!([1]),
                json!("text\n"),
                json!("folded text\n")
            ]
        );
        assert_eq!(docs("a: 1\n...\n"), vec![json!({"a": 1})]);
        assert_eq!(
            docs("a: 1\n...\n---\nb: 2\n...\nc: 3\n"),
            vec![json!({"a": 1}), json!({"b": 2}), json!({"c": 3})]
        );
        assert_eq!(docs("%YAML 1.1\n---\nv: yes\n"), vec![json!({"v": true})]);
        assert_eq!(
            parse_first_document("a: 1\n...\nb: [\n"),
            Ok(json!({"a": 1}))
        );
        assert_eq!(parse_first_document("# nothing\n"), Ok(Value::Null));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = fails("a:\n  - b\n -c\n");
        assert_eq!((e.line, e.column), (3, 2));
        assert!(e.to_string().starts_with("yaml: line 3, column 2: "), "{e}");
        assert!(e.to_string().contains("did not find expected key"), "{e}");
        assert!(matches!(fails("a: [1, 2\n").kind, YamlErrorKind::Syntax(_)));
        assert!(matches!(fails("a: 'x\n").kind, YamlErrorKind::Syntax(_)));
    }

    #[test]
    fn alias_bomb_is_bounded() {
        let mut text = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (prev, name) in "abcdefgh".chars().zip("bcdefghi".chars()) {
            let refs = vec![format!("*{prev}"); 9].join(",");
            text.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        assert_eq!(
            fails(&text).kind,
            YamlErrorKind::AliasBudget(BudgetExceeded {
                limit: ALIAS_BUDGET_FIXED,
                basis: BudgetBasis::Fixed
            })
        );
    }

    /// `n` aliases of a `len`-byte string in one document.
    fn aliased_string(len: usize, n: usize) -> String {
        format!(
            "s: &s {}\nl: [{}]\n",
            "x".repeat(len),
            vec!["*s"; n].join(", ")
        )
    }

    #[test]
    fn alias_budget_formula() {
        let limit = |bytes| AliasBudget::for_output(bytes).limit();
        // Floor for small outputs, proportional in between, capped for huge ones.
        assert_eq!(limit(0), ALIAS_BUDGET_FLOOR);
        assert_eq!(limit(1000), ALIAS_BUDGET_FLOOR);
        assert_eq!(limit(10 << 20), 20 << 20);
        assert_eq!(limit(20 << 20), 40 << 20);
        assert_eq!(limit(1 << 30), ALIAS_BUDGET_CAP);
        assert_eq!(limit(usize::MAX), ALIAS_BUDGET_CAP);
        assert_eq!(AliasBudget::fixed().limit(), ALIAS_BUDGET_FIXED);
        let e = BudgetExceeded {
            limit: 20 << 20,
            basis: BudgetBasis::Output { bytes: 10 << 20 },
        };
        assert_eq!(
            e.to_string(),
            "YAML anchors and aliases would materialise more than 20971520 bytes of values \
             (this render's budget: 2 × 10485760 bytes of tool output, at least 4194304 and at \
             most 67108864; node estimate 64 bytes + string lengths)"
        );
    }

    #[test]
    fn alias_budget_counts_string_bytes_and_anchor_copies() {
        let budget = AliasBudget::for_output(0);
        let docs = parse_documents_within(&aliased_string(1000, 10), &budget).expect("parses");
        assert_eq!(docs[0]["l"].as_array().map(Vec::len), Some(10));
        // The anchor's copy and ten aliases, each a node and its 1000 bytes.
        assert_eq!(budget.used(), 11 * (NODE_COST + 1000));
        // No anchors, nothing charged.
        let plain = AliasBudget::for_output(0);
        parse_documents_within("a: [1, 2, {b: c}]\n", &plain).expect("parses");
        assert_eq!(plain.used(), 0);
        // One alias of a long string costs what it copies: a single node can exhaust the budget.
        let one = AliasBudget::for_output(0);
        let long = usize::try_from(ALIAS_BUDGET_FLOOR).expect("fits") / 2 + 1;
        let e = parse_documents_within(&aliased_string(long, 1), &one).expect_err("over budget");
        assert!(matches!(e.kind, YamlErrorKind::AliasBudget(_)), "{e}");
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn alias_budget_is_shared_across_calls() {
        // Each document alone is far inside the floor; together they are not.
        let doc = aliased_string(10_000, 20);
        let per_doc = 21 * (NODE_COST + 10_000);
        let budget = AliasBudget::for_output(0);
        let fits = usize::try_from(ALIAS_BUDGET_FLOOR / per_doc).expect("fits");
        for _ in 0..fits {
            parse_first_document_within(&doc, &budget).expect("inside the budget");
        }
        let clone = budget.clone();
        let e = parse_documents_within(&doc, &clone).expect_err("budget spent");
        assert_eq!(
            e.kind,
            YamlErrorKind::AliasBudget(BudgetExceeded {
                limit: ALIAS_BUDGET_FLOOR,
                basis: BudgetBasis::Output { bytes: 0 }
            })
        );
        // Clones share one counter; a fork starts from the state at forking, on its own.
        assert!(budget.used() > ALIAS_BUDGET_FLOOR);
        let fresh = AliasBudget::for_output(0);
        parse_documents_within(&doc, &fresh).expect("parses");
        let fork = fresh.fork();
        parse_documents_within(&doc, &fork).expect("parses");
        assert_eq!((fresh.used(), fork.used()), (per_doc, 2 * per_doc));
        // Files read on their own each get a fresh fixed budget.
        for _ in 0..2 * fits {
            parse_documents(&doc).expect("own budget");
        }
    }

    #[test]
    fn alias_budget_grows_with_the_output() {
        let doc = aliased_string(100_000, 60);
        let need = 61 * (NODE_COST + 100_000);
        assert!(need > ALIAS_BUDGET_FLOOR);
        let small = AliasBudget::for_output(doc.len());
        assert!(parse_documents_within(&doc, &small).is_err());
        let output = usize::try_from(need / ALIAS_BUDGET_PER_OUTPUT_BYTE).expect("fits");
        let big = AliasBudget::for_output(output);
        parse_documents_within(&doc, &big).expect("inside a big output's budget");
        // Nested anchors copy their content again: charged per copy.
        let open: String = (0..50).map(|i| format!("&a{i} [")).collect();
        let nested = format!("{open}'{}'{}\n", "y".repeat(100_000), "]".repeat(50));
        let e = parse_documents_within(&nested, &AliasBudget::for_output(nested.len()));
        assert!(matches!(
            e,
            Err(YamlError {
                kind: YamlErrorKind::AliasBudget(_),
                ..
            })
        ));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}x", "- ".repeat(MAX_DEPTH + 1));
        assert_eq!(fails(&deep).kind, YamlErrorKind::TooDeep);
        let ok = format!("{}x", "- ".repeat(MAX_DEPTH));
        assert!(parse_documents(&ok).is_ok());
        assert!(parse_documents(&"[".repeat(100_000)).is_err());
    }

    /// Random bytes and mangled YAML must give a value or an error, never a panic.
    #[test]
    fn garbage_never_panics() {
        let corpus = "a: &a {b: [1, 'x', \"y\\n\"], c: !!int 3}\n<<: *a\n? [k]\n: |\n  text\n--- !t\n- *a\n- >-\n  f\n...\n";
        let alphabet: Vec<char> = "-:?[]{},#&*!|>'\"%@` \n\t.0x1eyn~<\\é".chars().collect();
        let mut next = crate::test_rng::xorshift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3_000 {
            let mut text: Vec<char> = corpus.chars().collect();
            for _ in 0..(next() % 8 + 1) {
                let at = next() % (text.len() + 1);
                match next() % 3 {
                    0 => text.insert(at, alphabet[next() % alphabet.len()]),
                    1 if at < text.len() => {
                        text.remove(at);
                    }
                    _ => text.truncate(at),
                }
            }
            let text: String = text.into_iter().collect();
            let _ = parse_documents(&text);
            let random: String = (0..next() % 64)
                .map(|_| alphabet[next() % alphabet.len()])
                .collect();
            let _ = parse_documents(&random);
        }
    }

    // ---- emitter ----

    const TRICKY: &[&str] = &[
        "on",
        "yes",
        "y",
        "Y",
        "n",
        "NO",
        "off",
        "True",
        "~",
        "null",
        "Null",
        "",
        "0777",
        "0x1F",
        "0o17",
        "0b101",
        "1e3",
        ".5",
        "-.5",
        "+1",
        "1_000",
        "1.5",
        ".inf",
        "-.inf",
        ".nan",
        "1:20",
        "2001-12-14",
        "2001-12-14T21:59:43Z",
        "- x",
        "-",
        "--- x",
        "...",
        "a: b",
        "a:",
        "a:b",
        "#x",
        "x #y",
        "x#y",
        "\"\"",
        " lead",
        "trail ",
        " ",
        "\t",
        "multi\nline",
        "multi\nline\n",
        "\nleading newline",
        "two\n\n",
        "\n",
        "trailing space \nline",
        "  indented\nblock",
        "tab\there",
        "cr\r\nlf",
        "\"quoted\"",
        "'single'",
        "*alias",
        "&anchor",
        "!tag",
        "%",
        "@",
        "`",
        "{",
        "}",
        "[",
        "]",
        "?",
        "? x",
        ">",
        "|",
        ",",
        "<<",
        "=",
        "héllo wörld",
        "日本語",
        "emoji 🎉",
        "nbsp\u{a0}",
        "line\u{2028}sep",
        "next\u{85}line",
        "bom\u{feff}",
        "del\u{7f}",
        "bell\u{7}",
        "back\\slash",
        "plain text",
        "nginx:1.25",
        "http://x/y",
        "a,b",
        "a[0]",
        "100m",
        "v1.2.3",
        "1.2.3",
    ];

    #[track_caller]
    fn round_trip(value: &Value) {
        let text = to_yaml_string(value);
        match parse_documents(&text) {
            Ok(docs) => assert_eq!(docs, vec![value.clone()], "emitted:\n{text}"),
            Err(e) => panic!("emitted text does not parse: {e}\n{text}"),
        }
    }

    #[test]
    fn tricky_strings_round_trip() {
        for s in TRICKY {
            round_trip(&json!(s));
            round_trip(&json!({ "k": s }));
            round_trip(&json!({ *s: "v" }));
            round_trip(&json!([s, [s], { "k": [s] }]));
            round_trip(&json!({ "nested": { "list": [{ *s: s, "x": s }] } }));
        }
    }

    #[test]
    fn structures_and_numbers_round_trip() {
        round_trip(&json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "x", "labels": {}, "annotations": {"a/b": "on"}},
            "data": {"script": "#!/bin/sh\necho hi\n", "flag": "yes"},
            "numbers": [0, -1, 511, i64::MIN, u64::MAX, 1.5, -0.25, 1e-7, 6.02e23, 1e300],
            "bools": [true, false, null],
            "empty": [[], {}, [[]], [{}], ""],
            "deep": [[[1, [2]], {"a": [{"b": {}}]}]],
        }));
        round_trip(&json!([]));
        round_trip(&json!({}));
        round_trip(&json!(null));
        round_trip(&json!(12));
        round_trip(&json!({"long": "x".repeat(5000), "x".repeat(2000): "long key"}));
    }

    #[test]
    fn emitter_layout() {
        let value = json!({
            "a": "on",
            "b": [1, {"c": "x\ny\n", "d": []}, [2, 3]],
            "e": {},
            "f": "plain words",
            "g": "line\nno newline",
        });
        let want = "a: \"on\"\nb:\n  - 1\n  - c: |\n      x\n      y\n    d: []\n  - - 2\n    - 3\ne: {}\n\
                    f: plain words\ng: |-\n  line\n  no newline\n";
        assert_eq!(to_yaml_string(&value), want);
        assert_eq!(to_yaml_string(&json!("x\n")), "|\n  x\n");
        assert_eq!(to_yaml_string(&json!("on")), "\"on\"\n");
        assert_eq!(to_yaml_string(&json!("bell\u{7}")), "\"bell\\u0007\"\n");
        // Numbers: YAML 1.1 floats need a dot before the exponent.
        let numbers = json!([1e-7, 6.02e23, 1e300, -2.5e-10, 7, -3, 1.5, u64::MAX]);
        assert_eq!(
            to_yaml_string(&numbers),
            "- 1.0e-7\n- 6.02e+23\n- 1.0e+300\n- -2.5e-10\n- 7\n- -3\n- 1.5\n- 18446744073709551615\n"
        );
        let mut stream = String::new();
        push_yaml(&mut stream, &json!({"a": 1}));
        push_yaml(&mut stream, &json!(["b"]));
        assert_eq!(stream, "a: 1\n- b\n");
    }

    /// `is_plain_safe` as it was before its one-pass rewrite (allocating `resolve_plain`,
    /// `contains` for `: ` and ` #`, `chars().all(is_printable)`).
    fn is_plain_safe_reference(s: &str) -> bool {
        let Some(first) = s.chars().next() else {
            return false;
        };
        let second = s.chars().nth(1);
        let numeric_start = first.is_ascii_digit()
            || (matches!(first, '+' | '-' | '.')
                && second.is_some_and(|c| c.is_ascii_digit() || c == '.'));
        matches!(resolve_plain(s), Scalar::Str(_))
            && !numeric_start
            && !matches!(s, "<<" | "=")
            && !"-?:,[]{}#&*!|>'\"%@`".contains(first)
            && !first.is_whitespace()
            && !s.ends_with(char::is_whitespace)
            && !s.ends_with(':')
            && !s.contains(": ")
            && !s.contains(" #")
            && s.chars().all(is_printable)
    }

    #[test]
    fn plain_safety_as_before() {
        for s in TRICKY {
            assert_eq!(is_plain_safe(s), is_plain_safe_reference(s), "{s:?}");
        }
        let alphabet: Vec<char> =
            "ab yYnNtTfFoO~01x_.+-:#?,[]{}&*!|>'\"%@`\t\r\n\u{7f}\u{85}\u{a0}é\u{2028}\u{feff}🎉"
                .chars()
                .collect();
        let mut next = crate::test_rng::xorshift(0xD1B5_4A32_D192_ED03);
        for _ in 0..50_000 {
            let s: String = (0..next() % 8)
                .map(|_| alphabet[next() % alphabet.len()])
                .collect();
            assert_eq!(is_plain_safe(&s), is_plain_safe_reference(&s), "{s:?}");
        }
    }

    #[test]
    fn plain_only_when_unambiguous() {
        for s in [
            "plain text",
            "nginx:1.25",
            "http://x/y",
            "a,b",
            "héllo",
            "x#y",
            "a:b",
        ] {
            assert!(is_plain_safe(s), "{s}");
        }
        for s in TRICKY.iter().filter(|s| {
            !matches!(
                **s,
                "plain text"
                    | "nginx:1.25"
                    | "http://x/y"
                    | "a,b"
                    | "a[0]"
                    | "héllo wörld"
                    | "日本語"
                    | "emoji 🎉"
                    | "x#y"
                    | "a:b"
                    | "back\\slash"
                    | "v1.2.3"
            )
        }) {
            assert!(!is_plain_safe(s), "{s:?} must be quoted");
        }
    }
}
