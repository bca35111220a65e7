//! The substitution engine: replaces argocd-vault-plugin (AVP) `<placeholders>` in rendered
//! manifests with secret values, reproducing AVP's observable behaviour
//! (argocd-vault-plugin v1.18.1, `pkg/kube/`).
//!
//! It is pure and synchronous and works in two phases so the caller can deduplicate and fetch
//! concurrently in between:
//! 1. [`collect`] lists every secret read the documents need;
//! 2. [`apply`] substitutes using the fetched results.
//!
//! The server uses [`plan`] and [`apply_planned`] instead: the same two phases, but each
//! document is walked for placeholders once, and documents shared with the render cache are
//! copied only when they change.
//!
//! It owns placeholder grammar, annotations, modifiers and per-kind rules. It must not do I/O,
//! parse YAML documents (except through `crate::yaml` for `yamlParse`), or talk to Vault, and
//! its errors must never contain a secret value.
//!
//! AVP behaviour reproduced on purpose, quirks included:
//! - Only string *values* are substituted: map keys never; strings directly in lists and maps
//!   in lists are walked, lists nested directly in lists are not.
//! - Typed insertion: when a placeholder's final value is not a string (a Vault number, bool,
//!   object or list, or a `jsonParse` result), the *whole field* becomes that value and any
//!   surrounding text is dropped (`"http://h:<port>"` with a numeric port becomes `80`). With
//!   several such placeholders the last one wins. Vault strings stay strings.
//! - `kind: Secret`: a value that is entirely valid standard base64 and whose decoded text holds
//!   a `<...>` is decoded, substituted and re-encoded (kustomize `secretGenerator` output).
//!   Other values get no automatic base64.
//! - `kind: ConfigMap`: results are stringified.
//! - `remove-missing` deletes map string fields whose placeholders hit missing keys; a missing
//!   path stays an error.
//!
//! Deliberate differences from AVP:
//! - Ignored manifests (`avp.kubernetes.io/ignore: true`) make no secret reads and get no path
//!   validation; AVP still reads the path annotation and fails if it is missing.
//! - The path annotation is read only if the manifest has at least one generic placeholder; AVP
//!   reads it for every manifest that has it.
//! - Reads are deduplicated; failed reads are reported once per manifest.
//! - A bad `kv-version`, a path rejected by `AVP_PATH_VALIDATION` or a misplaced
//!   `remove-missing` is reported by [`collect`] before any read, so it may be reported for a
//!   later manifest than the first one AVP would fail on.
//! - ConfigMap values that are objects or lists become compact JSON strings; AVP panics.
//! - A placeholder whose final value is `null` (e.g. `jsonParse` of `"null"`) is an error; AVP
//!   silently leaves the placeholder text in place.
//! - In a Secret, a base64 value that decodes to non-UTF-8 bytes is left alone; AVP may treat
//!   binary data containing `<` … `>` as a template.
//! - Versions are dropped from KV v1 requests (AVP ignores them), so they deduplicate.
//! - Errors print the field key and the original (pre-substitution) field text, truncated,
//!   and no field text at all for Secrets; modifier and parse errors never quote values.
//! - Opt-in extensions, off unless the operator configures them ([`Options::paths`]): a default
//!   path for objects with bare `<key>` placeholders and no path annotation (such objects then
//!   behave as if annotated with it), and `{{variable}}` templates in annotation and inline
//!   paths. Rendering happens before path validation, so every check sees the rendered path.
//! - Where AVP panics (empty modifier segment, `sha256sum`/`jsonPath` on numbers, ConfigMap
//!   floats or maps) this engine returns an error or a value. See `modifiers` and `jsonpath`
//!   for their own differences.

pub(crate) mod annotations;
pub mod external;
mod inspect;
mod jsonpath;
mod modifiers;
mod placeholder;

use std::borrow::{Borrow, Cow};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::secrets::path_template::{PathContext, PathTemplateError};
use crate::yaml::{AliasBudget, BudgetExceeded};

use crate::secrets::{Fetched, KvVersion, ReadError, SecretData, SecretRequest};

pub use inspect::{InspectedDocument, InspectedField, InspectedPlaceholder, inspect};

use annotations::Annotations;
use modifiers::ModifierError;
use placeholder::{Mode, Placeholder, Source};

/// Longest original field text quoted in an error.
const MAX_QUOTED_FIELD: usize = 200;

/// Settings that apply to every document of a render.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// KV engine version when a manifest has no `avp.kubernetes.io/kv-version` (`AVP_KV_VERSION`).
    pub default_kv_version: KvVersion,
    /// `AVP_PATH_VALIDATION`: every path read must match (unanchored `is_match`, as Go's
    /// `MatchString`).
    pub path_validation: Option<regex::Regex>,
    /// The request's path templating (operator settings + app context): the default path for
    /// bare `<KEY>` placeholders without `avp.kubernetes.io/path`, and `{{...}}` in annotation
    /// and inline paths when enabled. `None`: paths are used as written (AVP).
    pub paths: Option<Arc<PathContext>>,
}

/// Every secret read `docs` need, deduplicated. Ignored manifests need none.
///
/// Fails on the first manifest with a bad `kv-version` annotation, a path rejected by
/// [`Options::path_validation`], or `remove-missing` on a kind other than Secret/ConfigMap.
pub fn collect(docs: &[Value], opts: &Options) -> Result<BTreeSet<SecretRequest>, SubstituteError> {
    plan(docs, opts).map(|planned| planned.requests)
}

/// [`collect`], keeping what it learnt about each document for [`apply_planned`]: which
/// documents substitution changes at all, and the reads each one needs. Walking a document for
/// placeholders is most of the engine's work, and the plan lets `apply_planned` do it once.
pub fn plan<D: Borrow<Value>>(docs: &[D], opts: &Options) -> Result<Planned, SubstituteError> {
    let mut planned = Planned {
        requests: BTreeSet::new(),
        documents: Vec::with_capacity(docs.len()),
    };
    for (index, doc) in docs.iter().enumerate() {
        let document = match doc.borrow() {
            Value::Object(object) => {
                let manifest = Manifest::new(object, index, opts);
                if manifest.annotations.ignore {
                    None
                } else {
                    let plan = manifest.plan(object)?;
                    planned.requests.extend(plan.requests.iter().cloned());
                    plan.rewrites.then_some(plan)
                }
            }
            _ => None,
        };
        planned.documents.push(document);
    }
    Ok(planned)
}

/// The result of [`plan`]: all reads, and per document (in order) its own plan, `None` for a
/// document substitution leaves exactly as it is (not an object, ignored, or no string with a
/// placeholder in it).
#[derive(Debug)]
pub struct Planned {
    requests: BTreeSet<SecretRequest>,
    documents: Vec<Option<Plan>>,
}

impl Planned {
    /// Every read the documents need, deduplicated.
    pub fn requests(&self) -> &BTreeSet<SecretRequest> {
        &self.requests
    }

    /// The reads document `index` needs (empty for one substitution leaves alone).
    pub fn document_requests(&self, index: usize) -> Option<&BTreeSet<SecretRequest>> {
        self.documents
            .get(index)?
            .as_ref()
            .map(|plan| &plan.requests)
    }

    /// Whether [`apply_planned`] may change document `index`; `false` means it passes the
    /// document on as it is (the same `Arc`).
    pub fn changes(&self, index: usize) -> bool {
        self.documents.get(index).is_some_and(Option::is_some)
    }
}

/// Replaces placeholders in `docs` using `fetched` (the results of the reads [`collect`]
/// returned) and returns the new documents in order. What `yamlParse` modifiers materialise
/// from aliases is charged to `alias_budget`, the render's.
///
/// Stops at the first manifest with problems and reports all of that manifest's problems.
/// Documents that are not JSON objects pass through unchanged.
pub fn apply(
    docs: Vec<Value>,
    opts: &Options,
    fetched: &Fetched,
    alias_budget: &AliasBudget,
) -> Result<Vec<Value>, SubstituteError> {
    docs.into_iter()
        .enumerate()
        .map(|(index, doc)| match doc {
            Value::Object(object) => {
                apply_one(object, index, opts, fetched, alias_budget).map(Value::Object)
            }
            other => Ok(other),
        })
        .collect()
}

/// [`apply`] for the documents [`plan`] planned (the same documents, in the same order, with
/// the same options), without walking them for placeholders again. Documents it does not
/// change are passed on as they are; the others are copied first when shared (a render-cache
/// entry shares them), so what the caller shares is never modified.
pub fn apply_planned(
    docs: Vec<Arc<Value>>,
    planned: &Planned,
    opts: &Options,
    fetched: &Fetched,
    alias_budget: &AliasBudget,
) -> Result<Vec<Arc<Value>>, SubstituteError> {
    docs.into_iter()
        .enumerate()
        .map(|(index, doc)| {
            let Some(Some(plan)) = planned.documents.get(index) else {
                return Ok(doc);
            };
            match Arc::unwrap_or_clone(doc) {
                Value::Object(mut object) => {
                    let manifest = Manifest::new(&object, index, opts);
                    substitute_object(&manifest, plan, &mut object, fetched, alias_budget)?;
                    Ok(Arc::new(Value::Object(object)))
                }
                // Only objects are planned.
                other => Ok(Arc::new(other)),
            }
        })
        .collect()
}

/// Everything that went wrong in one manifest.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct SubstituteError {
    pub object: ObjectRef,
    /// In document order; never empty.
    pub problems: Vec<Problem>,
}

impl fmt::Display for SubstituteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not replace all placeholders in {}:", self.object)?;
        for problem in &self.problems {
            write!(f, "\n{problem}")?;
        }
        Ok(())
    }
}

/// Identifies a manifest in errors, by its pre-substitution `kind`, `metadata.namespace` and
/// `metadata.name` (empty when absent or not strings) and its position in the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    /// Zero-based position among the documents.
    pub index: usize,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.kind.is_empty() {
            "object"
        } else {
            &self.kind
        };
        if self.name.is_empty() {
            return write!(f, "{kind} (document {})", self.index + 1);
        }
        if self.namespace.is_empty() {
            write!(f, "{kind}/{}", self.name)
        } else {
            write!(f, "{kind}/{}/{}", self.namespace, self.name)
        }
    }
}

/// One problem in one manifest. Messages hold paths, keys, template text and type names, never
/// secret values.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error("unsupported kvVersion specified in avp.kubernetes.io/kv-version: {0:?}")]
    UnsupportedKvVersion(String),
    #[error("the path {0} is disallowed by AVP_PATH_VALIDATION restriction")]
    PathDisallowed(String),
    #[error(
        "avp.kubernetes.io/remove-missing annotation can only be used on Secret or ConfigMap resources"
    )]
    RemoveMissingNotAllowed,
    /// A read failed (missing path, permission denied, backend error).
    #[error("{0}")]
    Read(ReadError),
    /// `fetched` has no entry for a request this manifest needs: a caller bug.
    #[error("internal error: no fetched result for {0}")]
    NotFetched(SecretRequest),
    /// The key is absent from the secret, or its value is `null`.
    #[error("missing vault value for placeholder {0}")]
    MissingValue(Site),
    #[error("invalid modifier: {name} for placeholder {site}")]
    UnknownModifier { name: String, site: Site },
    #[error("empty modifier for placeholder {0}")]
    EmptyModifier(Site),
    #[error("{modifier}: {message} for placeholder {site}")]
    ModifierFailed {
        modifier: String,
        message: String,
        site: Site,
    },
    #[error("null value for placeholder {0}")]
    NullValue(Site),
    /// `yamlParse` ran out of the render's alias budget (shared with the tool output's parse).
    #[error("yamlParse: {error} for placeholder {site}")]
    AliasBudget { error: BudgetExceeded, site: Site },
    /// Migration mode: this placeholder has no `ExternalSecret` equivalent.
    #[error("cannot convert {what} to an ExternalSecret: {reason}")]
    NotConvertible { what: String, reason: String },
    /// A templated path could not be rendered for this request (bad template or a variable
    /// value that is not one safe path segment). Reported before any read.
    #[error("{0}")]
    PathTemplate(PathTemplateError),
}

/// Where a placeholder problem happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// The placeholder without `<>` and modifiers, e.g. `path:secret/data/app#key` or `key`.
    pub placeholder: String,
    /// Key of the field (for a list element, the key of the list).
    pub field: String,
    /// Pre-substitution field text, truncated; `None` for Secrets, whose field text is kept out
    /// of errors entirely.
    pub original: Option<String>,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in string {}", self.placeholder, self.field)?;
        if let Some(original) = &self.original {
            write!(f, ": {original}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Secret,
    ConfigMap,
    Other,
}

/// One manifest's substitution context, read before anything is substituted.
struct Manifest<'o> {
    object: ObjectRef,
    kind: Kind,
    mode: Mode,
    annotations: Annotations,
    opts: &'o Options,
}

/// The reads one manifest needs.
#[derive(Debug)]
struct Plan {
    /// The annotation path read, when the manifest has generic placeholders.
    annotation_read: Option<SecretRequest>,
    requests: BTreeSet<SecretRequest>,
    /// Whether substitution rewrites any string: one holds a placeholder, or is a Secret's
    /// base64 value whose decoded text holds one (re-encoded even when the mode does not
    /// substitute it). Without any, `apply` returns the manifest exactly as it was.
    rewrites: bool,
}

impl<'o> Manifest<'o> {
    fn new(object: &Map<String, Value>, index: usize, opts: &'o Options) -> Self {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
        let metadata = object.get("metadata").and_then(Value::as_object);
        let kind = text(object.get("kind"));
        let annotations = Annotations::from_object(object);
        Manifest {
            object: ObjectRef {
                index,
                namespace: text(metadata.and_then(|m| m.get("namespace"))),
                name: text(metadata.and_then(|m| m.get("name"))),
                kind: kind.clone(),
            },
            kind: match kind.as_str() {
                "Secret" => Kind::Secret,
                "ConfigMap" => Kind::ConfigMap,
                _ => Kind::Other,
            },
            mode: if annotations.path.is_some()
                || opts.paths.as_ref().is_some_and(|p| p.has_default_path())
            {
                Mode::Generic
            } else {
                Mode::InlineOnly
            },
            annotations,
            opts,
        }
    }

    fn error(&self, problems: Vec<Problem>) -> SubstituteError {
        SubstituteError {
            object: self.object.clone(),
            problems,
        }
    }

    /// The request for reading `path` at `version` from this manifest, after path validation
    /// and kv-version checks (in AVP's order).
    fn request(&self, path: &str, version: &str) -> Result<SecretRequest, Problem> {
        let path = match &self.opts.paths {
            Some(paths) => paths.resolve(path).map_err(Problem::PathTemplate)?,
            None => Cow::Borrowed(path),
        };
        let path = path.as_ref();
        if let Some(re) = &self.opts.path_validation
            && !re.is_match(path)
        {
            return Err(Problem::PathDisallowed(path.to_owned()));
        }
        let kv_version = self
            .annotations
            .kv_version(self.opts.default_kv_version)
            .map_err(Problem::UnsupportedKvVersion)?;
        // KV v1 has no versions; AVP drops the version there, and so do we so reads dedupe.
        let version =
            (kv_version == KvVersion::V2 && !version.is_empty()).then(|| version.to_owned());
        Ok(SecretRequest {
            path: path.to_owned(),
            kv_version,
            version,
        })
    }

    /// The path to read for generic placeholders: the annotation, else the operator's default
    /// path (rendered for this request). `None` when the annotation is empty (every generic
    /// placeholder is then missing, as in AVP) or there is neither.
    fn generic_path(&self) -> Result<Option<&str>, Problem> {
        match (&self.annotations.path, &self.opts.paths) {
            (Some(p), _) => Ok(Some(p.as_str()).filter(|p| !p.is_empty())),
            (None, Some(paths)) => paths
                .default_path()
                .transpose()
                .map_err(Problem::PathTemplate),
            (None, None) => Ok(None),
        }
    }

    /// Finds the reads this (non-ignored) manifest needs, or everything that stops it early.
    fn plan(&self, object: &Map<String, Value>) -> Result<Plan, SubstituteError> {
        if self.annotations.remove_missing && self.kind == Kind::Other {
            return Err(self.error(vec![Problem::RemoveMissingNotAllowed]));
        }
        let mut wants_generic = false;
        let mut rewrites = false;
        let mut inline: Vec<(String, String)> = Vec::new();
        visit_strings(object, &mut |text| {
            let template = self.template_text(text);
            // The same test as `Replacer::replace_field`, which leaves a field alone exactly
            // when its text was not decoded and holds no placeholder.
            rewrites |= matches!(template, Cow::Owned(_));
            for m in placeholder::find(&template, self.mode) {
                rewrites = true;
                match Placeholder::parse(m.as_str()).source {
                    Source::Generic { .. } => wants_generic = true,
                    Source::Inline { path, version, .. } => {
                        inline.push((path.to_owned(), version.to_owned()));
                    }
                }
            }
        });

        let mut problems = Vec::new();
        let mut requests = BTreeSet::new();
        let mut annotation_read = None;
        let generic_path = if wants_generic {
            self.generic_path().unwrap_or_else(|problem| {
                problems.push(problem);
                None
            })
        } else {
            None
        };
        let wanted = generic_path
            .map(|p| (p, self.annotations.secret_version.as_str(), true))
            .into_iter()
            .chain(inline.iter().map(|(p, v)| (p.as_str(), v.as_str(), false)));
        for (path, version, is_annotation) in wanted {
            match self.request(path, version) {
                Ok(req) => {
                    if is_annotation {
                        annotation_read = Some(req.clone());
                    }
                    requests.insert(req);
                }
                Err(problem) => push_unique(&mut problems, problem),
            }
        }
        if problems.is_empty() {
            Ok(Plan {
                annotation_read,
                requests,
                rewrites,
            })
        } else {
            Err(self.error(problems))
        }
    }

    /// The text to search for placeholders in a string value: for a Secret, the decoded text of
    /// a base64 value that contains a placeholder; otherwise the value itself.
    fn template_text<'t>(&self, value: &'t str) -> Cow<'t, str> {
        match self.decoded_secret_template(value) {
            Some(decoded) => Cow::Owned(decoded),
            None => Cow::Borrowed(value),
        }
    }

    /// AVP's `secretReplacement` test: Secret kind, whole value valid std base64, decoded text
    /// matches the generic placeholder regex (whatever the mode).
    /// Values whose decoded bytes hold no `<` (most of a Secret's `data`) are not decoded.
    fn decoded_secret_template(&self, value: &str) -> Option<String> {
        if self.kind != Kind::Secret || !modifiers::base64_may_decode_to_angle(value) {
            return None;
        }
        let decoded = String::from_utf8(modifiers::go_base64_decode(value)?).ok()?;
        placeholder::contains_any(&decoded).then_some(decoded)
    }
}

/// Calls `f` on every string AVP substitutes: map values and strings directly in lists, through
/// nested maps and maps in lists.
fn visit_strings(object: &Map<String, Value>, f: &mut impl FnMut(&str)) {
    for value in object.values() {
        match value {
            Value::Object(inner) => visit_strings(inner, f),
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::Object(inner) => visit_strings(inner, f),
                        Value::String(s) => f(s),
                        _ => {}
                    }
                }
            }
            Value::String(s) => f(s),
            _ => {}
        }
    }
}

fn push_unique(problems: &mut Vec<Problem>, problem: Problem) {
    if !problems.contains(&problem) {
        problems.push(problem);
    }
}

fn apply_one(
    mut object: Map<String, Value>,
    index: usize,
    opts: &Options,
    fetched: &Fetched,
    alias_budget: &AliasBudget,
) -> Result<Map<String, Value>, SubstituteError> {
    let manifest = Manifest::new(&object, index, opts);
    if manifest.annotations.ignore {
        return Ok(object);
    }
    let plan = manifest.plan(&object)?;
    substitute_object(&manifest, &plan, &mut object, fetched, alias_budget)?;
    Ok(object)
}

/// Substitutes the placeholders of one (not ignored) manifest, as `plan` planned it.
fn substitute_object(
    manifest: &Manifest<'_>,
    plan: &Plan,
    object: &mut Map<String, Value>,
    fetched: &Fetched,
    alias_budget: &AliasBudget,
) -> Result<(), SubstituteError> {
    // A failed annotation read stops the manifest before substitution, as in AVP.
    let generic_data = match &plan.annotation_read {
        None => None,
        Some(req) => match fetched.get(req) {
            None => return Err(manifest.error(vec![Problem::NotFetched(req.clone())])),
            Some(Err(e)) => return Err(manifest.error(vec![Problem::Read(e.clone())])),
            Some(Ok(data)) => Some(data),
        },
    };
    let mut replacer = Replacer {
        manifest,
        fetched,
        generic_data,
        alias_budget,
        problems: Vec::new(),
    };
    replacer.walk_map(object);
    if replacer.problems.is_empty() {
        Ok(())
    } else {
        Err(manifest.error(replacer.problems))
    }
}

/// The substitution walk over one manifest.
struct Replacer<'a> {
    manifest: &'a Manifest<'a>,
    fetched: &'a Fetched,
    /// Data of the annotation path, when it was read.
    generic_data: Option<&'a SecretData>,
    alias_budget: &'a AliasBudget,
    problems: Vec<Problem>,
}

/// The outcome of substituting one field.
struct FieldResult {
    value: Value,
    problems: Vec<Problem>,
}

impl FieldResult {
    fn has_missing(&self) -> bool {
        self.problems
            .iter()
            .any(|p| matches!(p, Problem::MissingValue(_)))
    }
}

impl Replacer<'_> {
    fn add_problems(&mut self, problems: impl IntoIterator<Item = Problem>) {
        for problem in problems {
            match problem {
                // The same failed read would otherwise repeat for every placeholder using it.
                Problem::Read(_) | Problem::NotFetched(_) => {
                    push_unique(&mut self.problems, problem)
                }
                other => self.problems.push(other),
            }
        }
    }

    fn walk_map(&mut self, map: &mut Map<String, Value>) {
        let remove_missing = self.manifest.annotations.remove_missing;
        let mut removed = Vec::new();
        for (key, value) in map.iter_mut() {
            match value {
                Value::Object(inner) => self.walk_map(inner),
                Value::Array(items) => {
                    for item in items.iter_mut() {
                        match item {
                            Value::Object(inner) => self.walk_map(inner),
                            Value::String(s) => {
                                // remove-missing does not apply to list elements (AVP).
                                if let Some(result) = self.replace_field(key, s) {
                                    self.add_problems(result.problems);
                                    *item = result.value;
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Value::String(s) => {
                    let Some(result) = self.replace_field(key, s) else {
                        continue;
                    };
                    if remove_missing && result.has_missing() {
                        removed.push(key.clone());
                        self.add_problems(
                            result
                                .problems
                                .into_iter()
                                .filter(|p| !matches!(p, Problem::MissingValue(_))),
                        );
                    } else {
                        self.add_problems(result.problems);
                        *value = result.value;
                    }
                }
                _ => {}
            }
        }
        for key in removed {
            map.shift_remove(&key);
        }
    }

    /// Substitutes one string field, applying the per-kind rules. `None` when the field stays
    /// exactly as it is (no placeholder in it, directly or base64-encoded): most fields of a
    /// render, which are then neither copied nor replaced.
    fn replace_field(&self, key: &str, original: &str) -> Option<FieldResult> {
        let manifest = self.manifest;
        if let Some(decoded) = manifest.decoded_secret_template(original) {
            // Re-encoded even without a match in this mode, as AVP does: the canonical encoding
            // may differ from the original (line breaks, trailing bits).
            let (value, problems) = self
                .substitute(key, &decoded, None)
                .unwrap_or_else(|| (Value::String(decoded.clone()), Vec::new()));
            let encoded = modifiers::base64_encode(stringify(value).as_bytes());
            return Some(FieldResult {
                value: Value::String(encoded),
                problems,
            });
        }
        let quoted = (manifest.kind != Kind::Secret).then_some(original);
        // A ConfigMap's string stays the same string when nothing is substituted.
        let (value, problems) = self.substitute(key, original, quoted)?;
        let value = match manifest.kind {
            Kind::ConfigMap => Value::String(stringify(value)),
            _ => value,
        };
        Some(FieldResult { value, problems })
    }

    /// AVP's `genericReplacement`: replaces every placeholder in `text`. Failed placeholders
    /// keep their text. If any final value is not a string, the last such value replaces the
    /// whole field. `None` when `text` holds no placeholder (the field is unchanged).
    /// `quoted` is the field text errors may quote (truncated only when a problem needs it).
    fn substitute(
        &self,
        key: &str,
        text: &str,
        quoted: Option<&str>,
    ) -> Option<(Value, Vec<Problem>)> {
        let mut matches = placeholder::find(text, self.manifest.mode).peekable();
        matches.peek()?;
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        let mut typed: Option<Value> = None;
        let mut problems = Vec::new();
        for m in matches {
            out.push_str(&text[last..m.start()]);
            last = m.end();
            let ph = Placeholder::parse(m.as_str());
            let site = || Site {
                placeholder: ph.name.to_owned(),
                field: key.to_owned(),
                original: quoted.map(|q| truncate(q, MAX_QUOTED_FIELD)),
            };
            match self.evaluate(&ph, site) {
                Ok(Value::String(s)) => out.push_str(&s),
                Ok(other) => {
                    typed = Some(other);
                    out.push_str(m.as_str());
                }
                Err(problem) => {
                    problems.push(problem);
                    out.push_str(m.as_str());
                }
            }
        }
        out.push_str(&text[last..]);
        Some((typed.unwrap_or(Value::String(out)), problems))
    }

    /// Looks up one placeholder and runs its modifiers.
    fn evaluate(&self, ph: &Placeholder<'_>, site: impl Fn() -> Site) -> Result<Value, Problem> {
        let raw = match &ph.source {
            Source::Inline { path, key, version } => {
                let req = self.manifest.request(path, version)?;
                match self.fetched.get(&req) {
                    None => return Err(Problem::NotFetched(req)),
                    Some(Err(e)) => return Err(Problem::Read(e.clone())),
                    Some(Ok(data)) => data.get(key),
                }
            }
            Source::Generic { key } => self.generic_data.and_then(|d| d.get(key)),
        };
        let raw = match raw {
            None | Some(Value::Null) => return Err(Problem::MissingValue(site())),
            Some(v) => v.clone(),
        };
        let value =
            modifiers::apply(raw, &ph.modifiers, self.alias_budget).map_err(|e| match e {
                ModifierError::Empty => Problem::EmptyModifier(site()),
                ModifierError::AliasBudget(error) => Problem::AliasBudget {
                    error,
                    site: site(),
                },
                ModifierError::Unknown(name) => Problem::UnknownModifier { name, site: site() },
                ModifierError::Failed { modifier, message } => Problem::ModifierFailed {
                    modifier: modifier.to_owned(),
                    message,
                    site: site(),
                },
            })?;
        if value.is_null() {
            return Err(Problem::NullValue(site()));
        }
        Ok(value)
    }
}

/// AVP's `stringify` for ConfigMap values and re-encoded Secret templates: numbers and bools in
/// their JSON form; objects and lists (where AVP panics) as compact JSON.
fn stringify(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// At most `max` characters of `text`, with an ellipsis when cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;

#[cfg(test)]
mod leak_props;
