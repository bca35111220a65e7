//! `avp-sidecar check`: a CI-friendly lint of an app's placeholders. Given the rendered
//! documents (rendered exactly as the sidecar would), it lists every placeholder with where it
//! came from in the repository, checks each read against the operator's path policy, and asks
//! Vault whether the path (and pinned version) exists without reading values: KV v2 metadata,
//! and `sys/capabilities-self` when metadata is not readable. Data is read only with
//! `read_keys`, and then only key names are looked at.
//!
//! Secret values never reach a finding: messages are built from paths, keys, versions and
//! placeholder text written in the repository.

pub(crate) mod heuristics;
pub(crate) mod locate;
pub mod sarif;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use serde_json::Value;

use crate::secrets::path_template::PathVars;
use crate::secrets::policy::{LeakMode, Policy};
use crate::secrets::{KvVersion, ReadError, SecretRequest, SecretSource};
use crate::substitute::{
    self, InspectedDocument, InspectedField, InspectedPlaceholder, ObjectRef, Options, Problem,
};

use locate::RepoIndex;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Vault checks were asked for but nothing to ask is configured.
    #[error(
        "{count} secret path(s) to verify (first: {first}) but no secret backend is configured: set AVP_TYPE=vault and VAULT_ADDR (or -c FILE), or pass --no-vault"
    )]
    NoSource { count: usize, first: String },
}

/// How bad a finding is; SARIF's levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Note,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Note => "note",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// What a finding is about. Ids are stable: CI configurations and SARIF consumers key on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    Placeholder,
    PathDenied,
    PathMissing,
    PermissionDenied,
    KeyMissing,
    Leak,
    NotAPlaceholder,
    TemplateError,
    AnnotationError,
    VaultError,
    Unverified,
}

impl Rule {
    pub const ALL: [Rule; 11] = [
        Rule::Placeholder,
        Rule::PathDenied,
        Rule::PathMissing,
        Rule::PermissionDenied,
        Rule::KeyMissing,
        Rule::Leak,
        Rule::NotAPlaceholder,
        Rule::TemplateError,
        Rule::AnnotationError,
        Rule::VaultError,
        Rule::Unverified,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Rule::Placeholder => "placeholder",
            Rule::PathDenied => "path-denied",
            Rule::PathMissing => "path-missing",
            Rule::PermissionDenied => "permission-denied",
            Rule::KeyMissing => "key-missing",
            Rule::Leak => "leak",
            Rule::NotAPlaceholder => "not-a-placeholder",
            Rule::TemplateError => "template-error",
            Rule::AnnotationError => "annotation-error",
            Rule::VaultError => "vault-error",
            Rule::Unverified => "unverified",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Rule::Placeholder => "An AVP placeholder and the Vault read it needs",
            Rule::PathDenied => "The project's path policy does not allow this Vault path",
            Rule::PathMissing => "No secret (or no live version) at this Vault path",
            Rule::PermissionDenied => "Vault denies reading this path",
            Rule::KeyMissing => "The secret has no such key",
            Rule::Leak => {
                "Placeholder outside kind Secret data/stringData: the value would be shown unmasked by Argo CD"
            }
            Rule::NotAPlaceholder => "Looks like a placeholder, but AVP leaves it as it is",
            Rule::TemplateError => "A path template cannot be rendered for this app",
            Rule::AnnotationError => {
                "An avp.kubernetes.io annotation stops the object from rendering"
            }
            Rule::VaultError => "Vault could not be asked (unreachable, login failed, bad answer)",
            Rule::Unverified => "The path could not be verified without reading data",
        }
    }

    /// The level a rule's findings usually have (SARIF `defaultConfiguration`).
    pub fn default_level(self) -> Level {
        match self {
            Rule::Placeholder | Rule::Unverified => Level::Note,
            Rule::Leak | Rule::NotAPlaceholder => Level::Warning,
            _ => Level::Error,
        }
    }
}

/// Where a finding points: a repository file and 1-based line when the text was found there,
/// and always the rendered object it is in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Relative to the checked directory, `/`-separated.
    pub file: Option<String>,
    pub line: Option<usize>,
    /// `Kind/name` (or `Kind/namespace/name`) of the rendered object.
    pub object: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub rule: Rule,
    pub level: Level,
    pub message: String,
    pub location: Location,
}

/// The findings of one check, sorted by location.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Placeholder occurrences seen.
    pub placeholders: usize,
    /// A file to point at for findings that could not be traced (the app's kustomization or
    /// Chart.yaml), relative to the checked directory; SARIF consumers want a file.
    pub app_entry: String,
}

impl Report {
    pub fn count(&self, level: Level) -> usize {
        self.findings.iter().filter(|f| f.level == level).count()
    }
}

/// Everything `check` needs besides the documents.
pub struct CheckOptions<'a> {
    /// The repository root as checked out (where locations are searched).
    pub repo: &'a Path,
    /// The app directory relative to `repo`.
    pub app_path: &'a str,
    pub project: &'a str,
    pub policy: &'a Policy,
    /// The engine options of the project's backend, with this app's path templating.
    pub engine: &'a Options,
    /// Where to verify paths; `None` skips every Vault check (`--no-vault`).
    pub source: Option<Arc<dyn SecretSource>>,
    /// Read data to verify keys (values are looked at for key names only).
    pub read_keys: bool,
    pub concurrency: usize,
}

/// One use of a read, to report verification results where the placeholder is.
struct Use {
    key: String,
    /// A bare `<key>`: the key comes from the annotation/default path.
    generic: bool,
    locations: Vec<Location>,
}

/// Checks `docs` (pre-substitution, as rendered): every placeholder and near miss is located
/// and judged (`Checker`), then the reads that passed the policy are verified against Vault.
pub async fn check(docs: &[Value], opts: &CheckOptions<'_>) -> Result<Report, CheckError> {
    let no_vars = PathVars::default();
    let mut checker = Checker {
        docs,
        opts,
        index: RepoIndex::build(opts.repo, opts.app_path),
        vars: opts.engine.paths.as_ref().map_or(&no_vars, |p| p.vars()),
        leak_mode: opts.policy.leak_mode(opts.project),
        findings: Vec::new(),
        placeholders: 0,
        reads: BTreeMap::new(),
    };
    for doc in &substitute::inspect(docs, opts.engine) {
        checker.document(doc);
    }
    if let (Some(source), false) = (&opts.source, checker.reads.is_empty()) {
        let results = verify_all(source, checker.reads.keys(), opts).await;
        let mut verified_findings = Vec::new();
        let mut add = |rule, level, message: String, locations: &[Location]| {
            push_findings(&mut verified_findings, rule, level, &message, locations);
        };
        for (req, uses) in &checker.reads {
            let Some(verified) = results.get(req) else {
                continue;
            };
            for u in uses {
                report_use(req, u, verified, &mut add);
            }
        }
        checker.findings.extend(verified_findings);
    }
    Ok(checker.finish())
}

fn push_findings(
    findings: &mut Vec<Finding>,
    rule: Rule,
    level: Level,
    message: &str,
    locations: &[Location],
) {
    for location in locations {
        findings.push(Finding {
            rule,
            level,
            message: message.to_owned(),
            location: location.clone(),
        });
    }
}

/// The state of one `check` while documents are walked.
struct Checker<'a> {
    docs: &'a [Value],
    opts: &'a CheckOptions<'a>,
    index: RepoIndex,
    vars: &'a PathVars,
    leak_mode: LeakMode,
    findings: Vec<Finding>,
    placeholders: usize,
    /// Reads the policy allows, with every use, for verification.
    reads: BTreeMap<SecretRequest, Vec<Use>>,
}

impl Checker<'_> {
    fn add(&mut self, rule: Rule, level: Level, message: String, locations: &[Location]) {
        push_findings(&mut self.findings, rule, level, &message, locations);
    }

    fn document(&mut self, doc: &InspectedDocument) {
        let object = object_name(&doc.object);
        let object_only = [Location {
            file: None,
            line: None,
            object: object.clone(),
        }];
        for problem in &doc.problems {
            self.add(
                Rule::AnnotationError,
                Level::Error,
                problem.to_string(),
                &object_only,
            );
        }
        for field in &doc.fields {
            let in_secret_data = self
                .docs
                .get(doc.object.index)
                .is_some_and(|d| crate::pipeline::substitute::masked_by_argo(d, &field.path));
            for ph in &field.placeholders {
                self.placeholder(ph, field, &object, in_secret_data);
            }
            self.near_misses(doc, field, &object, in_secret_data);
        }
    }

    /// One placeholder: where it is, what it reads, and whether that read is allowed.
    fn placeholder(
        &mut self,
        ph: &InspectedPlaceholder,
        field: &InspectedField,
        object: &str,
        in_secret_data: bool,
    ) {
        self.placeholders += 1;
        let field_name = field.path.join(".");
        let field_key = field.path.last().map(String::as_str);
        let locations = self.index.locate(&ph.text, field_key, object);
        let shown = heuristics::shorten(&ph.text);
        let read = match &ph.request {
            Ok(Some(req)) => describe_request(req),
            Ok(None) => "no path (avp.kubernetes.io/path is empty)".to_owned(),
            Err(_) => "path not resolved".to_owned(),
        };
        self.add(
            Rule::Placeholder,
            Level::Note,
            format!("{shown} in {field_name}: key {:?} from {read}", ph.key),
            &locations,
        );
        if !ph.inline
            && let Some(reason) = heuristics::suspicious_generic_key(&ph.key)
        {
            self.add(
                Rule::NotAPlaceholder,
                Level::Warning,
                format!("{shown}: {reason}"),
                &locations,
            );
        }
        if !in_secret_data && self.leak_mode != LeakMode::Allow {
            let level = if self.leak_mode == LeakMode::Deny {
                Level::Error
            } else {
                Level::Warning
            };
            self.add(
                Rule::Leak,
                level,
                format!(
                    "{shown} in {object} field {field_name} is outside kind Secret data/stringData: Argo CD shows the value unmasked (leak guard: {})",
                    leak_mode_name(self.leak_mode)
                ),
                &locations,
            );
        }
        let req = match &ph.request {
            Ok(Some(req)) => req,
            Ok(None) => {
                return self.add(
                    Rule::PathMissing,
                    Level::Error,
                    format!(
                        "{shown}: avp.kubernetes.io/path is empty, so every bare <key> is missing"
                    ),
                    &locations,
                );
            }
            Err(problem) => {
                let rule = match problem {
                    Problem::PathTemplate(_) => Rule::TemplateError,
                    Problem::PathDisallowed(_) => Rule::PathDenied,
                    _ => Rule::AnnotationError,
                };
                return self.add(
                    rule,
                    Level::Error,
                    format!("{shown}: {problem}"),
                    &locations,
                );
            }
        };
        let project = self.opts.project;
        match self.opts.policy.allows_for(project, &req.path, self.vars) {
            Ok(true) => self.reads.entry(req.clone()).or_default().push(Use {
                key: ph.key.clone(),
                generic: !ph.inline,
                locations,
            }),
            Ok(false) => self.add(
                Rule::PathDenied,
                Level::Error,
                format!(
                    "{shown}: project {project:?} may not read vault path {} (--path-allow)",
                    req.path
                ),
                &locations,
            ),
            Err(e) => self.add(
                Rule::TemplateError,
                Level::Error,
                format!("{shown}: operator path policy: {e}"),
                &locations,
            ),
        }
    }

    /// Text in `field` that looks like a placeholder but is not one.
    fn near_misses(
        &mut self,
        doc: &InspectedDocument,
        field: &InspectedField,
        object: &str,
        in_secret_data: bool,
    ) {
        let field_name = field.path.join(".");
        let field_key = field.path.last().map(String::as_str);
        let taken: Vec<_> = field.placeholders.iter().map(|p| p.range.clone()).collect();
        let ctx = heuristics::Context {
            generic_mode: doc.generic_mode,
            secret_data: in_secret_data,
            decoded: field.decoded,
            whole_value: field.text.trim(),
        };
        for miss in heuristics::near_misses(&field.text, &taken, &ctx) {
            let text = &field.text[miss.range.clone()];
            let locations = self.index.locate(text, field_key, object);
            self.add(
                Rule::NotAPlaceholder,
                Level::Warning,
                format!(
                    "{} in {field_name} is not a placeholder: {}",
                    heuristics::shorten(text),
                    miss.reason
                ),
                &locations,
            );
        }
    }

    /// Findings sorted by location (untraced last), most severe first, duplicates dropped.
    fn finish(mut self) -> Report {
        self.findings.sort_by(|a, b| {
            (a.location.file.is_none(), &a.location, b.level, a.rule).cmp(&(
                b.location.file.is_none(),
                &b.location,
                a.level,
                b.rule,
            ))
        });
        self.findings.dedup();
        Report {
            findings: self.findings,
            placeholders: self.placeholders,
            app_entry: self.index.app_entry().to_owned(),
        }
    }
}

/// Fails when Vault checks are wanted but there is no backend: then `check` would silently
/// verify nothing, which in CI looks like success.
pub fn require_source(
    docs: &[Value],
    engine: &Options,
    source: Option<&Arc<dyn SecretSource>>,
) -> Result<(), CheckError> {
    if source.is_some() {
        return Ok(());
    }
    let requests: BTreeSet<SecretRequest> = substitute::inspect(docs, engine)
        .iter()
        .flat_map(|d| &d.fields)
        .flat_map(|f| &f.placeholders)
        .filter_map(|p| p.request.clone().ok().flatten())
        .collect();
    match requests.iter().next() {
        None => Ok(()),
        Some(first) => Err(CheckError::NoSource {
            count: requests.len(),
            first: first.to_string(),
        }),
    }
}

fn object_name(o: &ObjectRef) -> String {
    o.to_string()
}

fn leak_mode_name(mode: LeakMode) -> &'static str {
    match mode {
        LeakMode::Allow => "allow",
        LeakMode::Warn => "warn",
        LeakMode::Deny => "deny",
    }
}

fn describe_request(req: &SecretRequest) -> String {
    let kv = match req.kv_version {
        KvVersion::V1 => "KV v1",
        KvVersion::V2 => "KV v2",
    };
    match &req.version {
        Some(v) => format!("{} version {v} ({kv})", req.path),
        None => format!("{} ({kv})", req.path),
    }
}

/// What Vault said about one read.
#[derive(Clone, Debug)]
enum Verified {
    /// Exists. `keys` when data was read (`read_keys`).
    Found {
        keys: Option<BTreeSet<String>>,
    },
    /// Could not be verified without reading data; the reason.
    Unverified(String),
    Problem(Rule, String),
}

async fn verify_all<'r>(
    source: &Arc<dyn SecretSource>,
    requests: impl Iterator<Item = &'r SecretRequest>,
    opts: &CheckOptions<'_>,
) -> BTreeMap<SecretRequest, Verified> {
    let read_keys = opts.read_keys;
    futures::stream::iter(requests.cloned())
        .map(|req| {
            let source = source.clone();
            async move {
                let verified = verify(source.as_ref(), &req, read_keys).await;
                (req, verified)
            }
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await
}

async fn verify(source: &dyn SecretSource, req: &SecretRequest, read_keys: bool) -> Verified {
    if let Err(e) = source.precheck(req) {
        return read_problem(&e);
    }
    if req.kv_version == KvVersion::V2 {
        match source.metadata(req).await {
            Ok(Some(meta)) => {
                let missing = match &req.version {
                    Some(v) => match v.trim().parse::<u64>() {
                        Ok(n) if meta.live_versions.contains(&n) => None,
                        Ok(n) => Some(format!(
                            "version {n} of {} is not live (deleted, destroyed or never written; current version {})",
                            req.path, meta.current_version
                        )),
                        Err(_) => Some(format!("secret version {v:?} is not a number")),
                    },
                    None if meta.live_versions.contains(&meta.current_version) => None,
                    None => Some(format!(
                        "the current version {} of {} is deleted or destroyed",
                        meta.current_version, req.path
                    )),
                };
                if let Some(message) = missing {
                    return Verified::Problem(Rule::PathMissing, message);
                }
            }
            Ok(None) if !read_keys => {
                return Verified::Unverified(format!(
                    "{}: the backend has no metadata; pass --read-keys to verify by reading",
                    req.path
                ));
            }
            Ok(None) => {}
            Err(ReadError::PermissionDenied(_)) => match source.capabilities(&req.path).await {
                Ok(Some(caps)) if allows_read(&caps) => {
                    if !read_keys {
                        return Verified::Unverified(format!(
                            "{}: metadata is not readable, the data path is (capabilities-self); pass --read-keys to verify it exists",
                            req.path
                        ));
                    }
                }
                Ok(Some(caps)) => {
                    return Verified::Problem(
                        Rule::PermissionDenied,
                        format!(
                            "the vault token may not read {} (capabilities: {})",
                            req.path,
                            if caps.is_empty() {
                                "none".to_owned()
                            } else {
                                caps.join(", ")
                            }
                        ),
                    );
                }
                Ok(None) | Err(_) if read_keys => {}
                Ok(None) | Err(_) => {
                    return Verified::Problem(
                        Rule::PermissionDenied,
                        format!("vault denied reading the metadata of {}", req.path),
                    );
                }
            },
            Err(e) => return read_problem(&e),
        }
    } else if !read_keys {
        return Verified::Unverified(format!(
            "{}: KV v1 has no metadata; pass --read-keys to verify by reading",
            req.path
        ));
    }
    if !read_keys {
        return Verified::Found { keys: None };
    }
    match source.read(req).await {
        Ok(data) => Verified::Found {
            keys: Some(
                data.values()
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, _)| k.clone())
                    .collect(),
            ),
        },
        Err(e) => read_problem(&e),
    }
}

fn allows_read(caps: &[String]) -> bool {
    caps.iter().any(|c| c == "read" || c == "root")
}

fn read_problem(e: &ReadError) -> Verified {
    let rule = match e {
        ReadError::NotFound(_)
        | ReadError::VersionDeleted { .. }
        | ReadError::MissingDataSegment(_) => Rule::PathMissing,
        ReadError::PermissionDenied(_) => Rule::PermissionDenied,
        ReadError::Refused(_) | ReadError::OwnCredentials(_) => Rule::PathDenied,
        ReadError::Backend { .. } => Rule::VaultError,
    };
    Verified::Problem(rule, e.to_string())
}

fn report_use(
    req: &SecretRequest,
    u: &Use,
    verified: &Verified,
    add: &mut impl FnMut(Rule, Level, String, &[Location]),
) {
    match verified {
        Verified::Found { keys: None } => {}
        Verified::Found { keys: Some(keys) } => {
            if !keys.contains(&u.key) {
                let via = if u.generic {
                    " (avp.kubernetes.io/path)"
                } else {
                    ""
                };
                add(
                    Rule::KeyMissing,
                    Level::Error,
                    format!("key {:?} is not in {}{via}", u.key, describe_request(req)),
                    &u.locations,
                );
            }
        }
        Verified::Unverified(reason) => {
            add(Rule::Unverified, Level::Note, reason.clone(), &u.locations)
        }
        Verified::Problem(rule, message) => add(*rule, Level::Error, message.clone(), &u.locations),
    }
}

#[cfg(test)]
mod tests;
