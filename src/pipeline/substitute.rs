//! The stage between render and respond: choose the request's secret backend, collect the
//! reads the documents need, read each unique one once (concurrently, capped), then apply.
//! Owns the async glue around the pure `substitute` engine; knows no Vault details (those are
//! behind `SecretSource`).

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use serde_json::Value;
use tokio::time::Instant;

use crate::kube::KubeApi;
use crate::metrics;
use crate::pipeline::context::RequestEnv;
use crate::secrets::avp_secret::{KubeError, SecretName, SecretPolicy};
use crate::secrets::cache::{CachePolicy, CachingSource};
use crate::secrets::mounts::SecretMounts;
use crate::secrets::path_template::{PathSettings, PathVars};
use crate::secrets::policy::{LeakMode, Policy};
use crate::secrets::settings::{Layered, Lookup, SettingsError, VaultConfig};
use crate::secrets::vault::{LoginError, VaultSource};
use crate::secrets::{Fetched, SecretSource};
use crate::substitute::{self, Options, SubstituteError, external};
use crate::yaml::AliasBudget;

/// Independent reads in flight at once for one render.
pub const DEFAULT_READ_CONCURRENCY: usize = 8;
/// The plugin env naming a Kubernetes Secret with Vault settings (AVP's `-s`).
pub const AVP_SECRET: &str = "AVP_SECRET";

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Substitute(#[from] SubstituteError),
    /// The documents need secrets but no backend is configured.
    #[error(
        "the manifests need {count} secret read(s) (first: {first}) but no secret backend is configured (set AVP_TYPE=vault and VAULT_ADDR)"
    )]
    NoSource { count: usize, first: String },
    /// The deadline passed while reading secrets.
    #[error("deadline exceeded while reading {pending} secret(s) from vault")]
    Deadline { pending: usize },
    /// `AVP_SECRET` named a Secret that cannot or may not be used.
    #[error("AVP_SECRET (parameter or ARGOCD_ENV_AVP_SECRET): {0}")]
    ConfigSecret(#[from] KubeError),
    /// The CLI's `-s NAME` (AVP's flag) names a Secret that cannot be read.
    #[error("-s {name}")]
    CliSecret {
        name: String,
        #[source]
        source: KubeError,
    },
    /// An operator setting is invalid (found when a backend is built).
    #[error(transparent)]
    Settings(crate::config::ConfigError),
    /// `AVP_SECRET` is set but the operator enabled no config secrets.
    #[error(
        "AVP_SECRET={0:?} is set (parameter or ARGOCD_ENV_AVP_SECRET), but this sidecar reads no config secrets (the operator can allow some with --avp-secret-allow)"
    )]
    ConfigSecretsDisabled(String),
    /// The settings (from env, file or Secret) are invalid.
    #[error("vault configuration{origin}: {source}")]
    Config {
        origin: String,
        #[source]
        source: SettingsError,
    },
    #[error(transparent)]
    Client(#[from] LoginError),
    /// The operator's policy does not let this project read this path.
    #[error("project {project:?} may not read vault path {path} (operator path policy)")]
    PathDenied { project: String, path: String },
    /// More distinct secret reads than the operator allows for one render.
    #[error(
        "the manifests need {count} distinct secret reads, more than the limit of {limit} (--max-secret-reads)"
    )]
    TooManyReads { count: usize, limit: usize },
    /// A templated policy rule could not be rendered for this request.
    #[error("operator path policy: {0}")]
    PathTemplate(#[from] crate::secrets::path_template::PathTemplateError),
    /// Migration mode: an `avp.kubernetes.io/output` value or setting that cannot be honoured.
    #[error("{object}: {reason}")]
    Output { object: String, reason: String },
    /// A read the mount rules refuse, found before anything was sent to Vault.
    #[error("placeholder read refused: {0}")]
    Refused(#[source] crate::secrets::ReadError),
    /// Placeholders would put secrets outside Secret data, and the policy says deny.
    #[error(
        "project {project:?}: placeholders outside kind Secret data/stringData in {objects} (leak guard: deny)"
    )]
    Leak { project: String, objects: String },
}

/// What the operator sets for every backend, whichever Vault settings it uses: the read cache
/// and the mounts placeholders may read.
#[derive(Clone, Debug, Default)]
pub struct BackendLimits {
    pub cache: CachePolicy,
    pub mounts: SecretMounts,
}

/// A secret source and the engine options that go with its configuration.
#[derive(Clone, Default)]
pub struct Backend {
    pub source: Option<Arc<dyn SecretSource>>,
    pub options: Options,
    /// The Vault client behind `source` (same session), for the readiness check's login.
    pub vault: Option<Arc<VaultSource>>,
}

impl Backend {
    /// Vault (behind the read cache) when `AVP_TYPE` is set in `l`, else no source.
    pub fn from_lookup(
        l: &dyn Lookup,
        origin: &str,
        limits: &BackendLimits,
    ) -> Result<Self, StageError> {
        if l.get(crate::secrets::settings::AVP_TYPE).is_none() {
            return Ok(Self::default());
        }
        let config = VaultConfig::from_lookup(l).map_err(|source| StageError::Config {
            origin: origin.to_owned(),
            source,
        })?;
        let options = Options {
            default_kv_version: config.kv_version,
            path_validation: config.path_validation.clone(),
            paths: None,
        };
        let vault = Arc::new(VaultSource::new(config)?.with_mounts(limits.mounts.clone()));
        let source: Arc<dyn SecretSource> = vault.clone();
        Ok(Self {
            source: Some(Arc::new(CachingSource::new(source, limits.cache))),
            options,
            vault: Some(vault),
        })
    }

    /// This backend with the request's path templating (default path, templates in paths).
    #[must_use]
    pub fn with_paths(mut self, paths: &PathSettings, env: &RequestEnv) -> Self {
        self.options.paths = Some(Arc::new(paths.for_request(env)));
        self
    }
}

/// A config Secret's content and the backend built from it.
type CachedBackend = (HashMap<String, String>, Backend);

/// Per-request Vault settings from operator-allowed Kubernetes Secrets. A backend (and with it
/// the Vault login) is reused while the Secret's content stays the same.
pub struct ConfigSecrets {
    pub api: KubeApi,
    pub policy: SecretPolicy,
    pub operator: Layered,
    pub limits: BackendLimits,
    cache: tokio::sync::Mutex<HashMap<SecretName, CachedBackend>>,
}

impl ConfigSecrets {
    pub fn new(
        api: KubeApi,
        policy: SecretPolicy,
        operator: Layered,
        limits: BackendLimits,
    ) -> Self {
        Self {
            api,
            policy,
            operator,
            limits,
            cache: Default::default(),
        }
    }

    async fn backend(&self, name: &str, project: &str) -> Result<Backend, StageError> {
        let secret = SecretName::parse(name)?;
        self.policy.check(project, &secret)?;
        let data = crate::secrets::avp_secret::read(&self.api, &secret).await?;
        let mut cache = self.cache.lock().await;
        if let Some((cached, backend)) = cache.get(&secret)
            && *cached == data
        {
            return Ok(backend.clone());
        }
        let backend = Backend::from_lookup(
            &self.operator.with_secret(data.clone()),
            &format!(" (with secret {secret})"),
            &self.limits,
        )?;
        cache.insert(secret, (data, backend.clone()));
        Ok(backend)
    }
}

/// Shared substitution state: the operator's backend, optional config secrets, read cap,
/// per-project policy.
pub struct Substituter {
    pub default: Backend,
    /// Projects with their own Vault settings (and so their own login and cache).
    pub projects: crate::config::PerProject<Backend>,
    pub config_secrets: Option<ConfigSecrets>,
    pub concurrency: usize,
    pub policy: Policy,
    /// Distinct reads one render may need (each unique path/version is one read).
    pub max_reads: usize,
    /// Operator path templates, applied to every request's backend.
    pub paths: PathSettings,
    pub external_secrets: ExternalSecrets,
    /// Which projects get rollout hashes on their pod templates.
    pub rollout: crate::features::rollout::RolloutSettings,
    /// Rotation tracking: what each Application's last render read (`--rotation-poll-seconds`).
    pub rotation: Option<Arc<crate::features::rotation::Tracker>>,
    /// When each leak-guard warning (project and objects) was last logged: the same warning is
    /// logged at most once per [`LEAK_WARNING_EVERY`]; the metric counts every render.
    pub leak_warnings: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

/// How often the same leak-guard warning is logged again (renders repeat, cache hits included).
pub const LEAK_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
/// Warnings remembered at most; past that the oldest memory is dropped (a warning may repeat).
const MAX_LEAK_WARNINGS: usize = 10_000;

/// Migration to External Secrets: which Secrets become `ExternalSecret`s, per project.
#[derive(Clone, Debug, Default)]
pub struct ExternalSecrets {
    /// `None`: not configured; then only an explicit annotation is an error.
    pub store: Option<external::Store>,
    pub mode: external::Mode,
    pub projects: crate::config::PerProject<external::Mode>,
}

impl ExternalSecrets {
    /// Replaces the Secrets this project converts by `ExternalSecret`s, before anything is read:
    /// their values are then never read here at all.
    /// Documents it does not convert are passed on as they are (still shared).
    fn apply(
        &self,
        documents: Vec<Arc<Value>>,
        options: &Options,
        project: &str,
    ) -> Result<Vec<Arc<Value>>, StageError> {
        let mode = self.projects.get_or(project, self.mode);
        documents
            .into_iter()
            .enumerate()
            .map(|(index, doc)| {
                let object_name = || {
                    format!(
                        "Secret/{}",
                        doc["metadata"]["name"].as_str().unwrap_or_default()
                    )
                };
                let convert = external::wants_conversion(&doc, mode).map_err(|reason| {
                    StageError::Output {
                        object: object_name(),
                        reason,
                    }
                })?;
                let (true, Some(object)) = (convert, doc.as_object()) else {
                    return Ok(doc);
                };
                let Some(store) = &self.store else {
                    return Err(StageError::Output {
                        object: object_name(),
                        reason: format!(
                            "{} asks for an ExternalSecret, but this sidecar has no --external-secrets-store",
                            external::OUTPUT_ANNOTATION
                        ),
                    });
                };
                match external::convert(object, index, options, store)? {
                    Some(converted) => {
                        metrics::EXTERNAL_SECRETS.inc([]);
                        Ok(Arc::new(converted))
                    }
                    None => Ok(doc),
                }
            })
            .collect()
    }
}

/// What the operator imposes on one request's reads.
#[derive(Clone, Copy)]
pub struct Guard<'a> {
    pub policy: &'a Policy,
    pub project: &'a str,
    pub max_reads: usize,
    /// Annotate pod templates with the versions of the placeholder Secrets they use.
    pub rollout_hash: bool,
}

impl std::fmt::Debug for Substituter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Substituter")
            .field(
                "default_source",
                &self.default.source.as_ref().map(|_| "configured"),
            )
            .field("config_secrets", &self.config_secrets.is_some())
            .field("projects", &self.projects.projects().collect::<Vec<_>>())
            .finish()
    }
}

impl Substituter {
    /// The request's backend: its `AVP_SECRET` config Secret, its project's settings, or the
    /// operator's default (without path templating; see [`Backend::with_paths`]).
    pub async fn backend(&self, env: &RequestEnv) -> Result<Backend, StageError> {
        match (env.setting(AVP_SECRET), &self.config_secrets) {
            (None, _) => Ok(self
                .projects
                .get(env.project())
                .unwrap_or(&self.default)
                .clone()),
            (Some(name), Some(secrets)) => secrets.backend(&name, env.project()).await,
            (Some(name), None) => Err(StageError::ConfigSecretsDisabled(name.into_owned())),
        }
    }

    /// Substitutes one render's documents; `alias_budget` is that render's.
    pub async fn run(
        &self,
        documents: Vec<Value>,
        alias_budget: &AliasBudget,
        env: &RequestEnv,
        deadline: Option<Instant>,
    ) -> Result<Vec<Value>, StageError> {
        let documents = self
            .run_shared(share(documents), alias_budget, env, deadline)
            .await?;
        Ok(unshare(documents))
    }

    /// [`Self::run`] on documents that may be shared with the render cache: those substitution
    /// leaves alone are passed on as they are, the others are copied before they are changed,
    /// so the cached documents stay as rendered.
    pub async fn run_shared(
        &self,
        documents: Vec<Arc<Value>>,
        alias_budget: &AliasBudget,
        env: &RequestEnv,
        deadline: Option<Instant>,
    ) -> Result<Vec<Arc<Value>>, StageError> {
        let mut backend = self.backend(env).await?.with_paths(&self.paths, env);
        let project = env.project();
        let documents = self
            .external_secrets
            .apply(documents, &backend.options, project)?;
        // Planned before the guard runs, so it skips what cannot leak; a plan error is reported
        // after the guard's, as when the guard ran first.
        let planned = substitute::plan(&documents, &backend.options);
        self.guard_leaks(&documents, planned.as_ref().ok(), &backend.options, project)?;
        let planned = planned?;
        let recording = match (&self.rotation, &backend.source) {
            (Some(tracker), Some(source)) => Some(tracker.recording(source.clone())),
            _ => None,
        };
        if let Some(rec) = &recording {
            backend.source = Some(rec.clone());
        }
        let reads = read_and_apply_planned(
            &backend,
            documents,
            &planned,
            alias_budget,
            self.concurrency,
            deadline,
            Some(Guard {
                policy: &self.policy,
                project,
                max_reads: self.max_reads,
                rollout_hash: self.rollout.enabled(project),
            }),
        );
        let documents = crate::secrets::vault::attributed(env.origin(), reads).await?;
        if let Some(tracker) = &self.rotation {
            tracker.record(env, recording.as_deref());
        }
        Ok(documents)
    }

    /// Placeholders in objects other than core Secrets, or in a Secret outside
    /// `data`/`stringData`, put values where Argo CD shows them unmasked. Allowed, logged
    /// (default) or refused. `planned` (the documents' plan, when it succeeded) spares the walk
    /// of the documents with no placeholder (see [`may_leak`]).
    fn guard_leaks(
        &self,
        documents: &[Arc<Value>],
        planned: Option<&substitute::Planned>,
        options: &Options,
        project: &str,
    ) -> Result<(), StageError> {
        let mode = self.policy.leak_mode(project);
        if mode == LeakMode::Allow {
            return Ok(());
        }
        let mut leaking = Vec::new();
        for (index, doc) in documents.iter().enumerate() {
            if may_leak(doc, index, planned) {
                find_leaks(doc, options, &mut leaking);
            }
        }
        if leaking.is_empty() {
            return Ok(());
        }
        metrics::LEAK_GUARD_HITS.add([], leaking.len() as u64);
        let objects = leaking.join(", ");
        match mode {
            LeakMode::Deny => Err(StageError::Leak {
                project: project.to_owned(),
                objects,
            }),
            LeakMode::Warn | LeakMode::Allow => {
                if self.first_leak_warning(project, &objects) {
                    tracing::warn!(project, objects = %objects, "placeholders outside kind Secret data: values will be visible in Argo CD");
                }
                Ok(())
            }
        }
    }
}

impl Substituter {
    /// Whether this leak warning was not logged within [`LEAK_WARNING_EVERY`] (and records it).
    fn first_leak_warning(&self, project: &str, objects: &str) -> bool {
        let Ok(mut seen) = self.leak_warnings.lock() else {
            return true;
        };
        let key = format!("{project}\0{objects}");
        let now = std::time::Instant::now();
        if seen
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < LEAK_WARNING_EVERY)
        {
            return false;
        }
        if seen.len() >= MAX_LEAK_WARNINGS {
            seen.retain(|_, at| now.duration_since(*at) < LEAK_WARNING_EVERY);
            if seen.len() >= MAX_LEAK_WARNINGS {
                seen.clear();
            }
        }
        seen.insert(key, now);
        true
    }
}

/// Whether Argo CD masks this object's `data`/`stringData`: only core Secrets (`apiVersion: v1`,
/// `kind: Secret`, exactly). A `Secret` of any other group is shown as it is.
fn is_core_secret(object: &serde_json::Map<String, Value>) -> bool {
    object.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && object.get("kind").and_then(Value::as_str) == Some("Secret")
}

/// Whether Argo CD masks the field at `path` of `doc`: `data`/`stringData` of a core Secret,
/// also as an item of a list (see [`find_leaks`]). `check` uses the same rule as the guard.
pub fn masked_by_argo(doc: &Value, path: &[String]) -> bool {
    match (doc.as_object(), path) {
        (Some(object), [items, index, rest @ ..])
            if items == "items" && object.get("items").is_some_and(Value::is_array) =>
        {
            index
                .parse::<usize>()
                .ok()
                .and_then(|i| object["items"].get(i))
                .is_some_and(|item| masked_by_argo(item, rest))
        }
        (Some(object), [field, ..]) => {
            is_core_secret(object) && matches!(field.as_str(), "data" | "stringData")
        }
        _ => false,
    }
}

/// Whether [`find_leaks`] can find anything in document `index`: not when its plan says
/// substitution leaves it alone, as that means no string of it holds a placeholder (the guard
/// probes a part of the same object, with the same annotations). Lists are judged anyway:
/// each item is probed with its own annotations, which the list's plan does not use.
fn may_leak(doc: &Value, index: usize, planned: Option<&substitute::Planned>) -> bool {
    planned.is_none_or(|p| p.changes(index)) || doc.get("items").is_some_and(Value::is_array)
}

/// Adds `kind/name` of `doc` to `leaking` if a placeholder in it would be shown unmasked. An
/// object with an `items` list is what Argo CD calls a list (`unstructured.IsList`): it applies
/// each item as its own object, so each item is judged on its own (a core Secret item's data is
/// masked), and the list's other fields like any object's.
fn find_leaks(doc: &Value, options: &Options, leaking: &mut Vec<String>) {
    let Some(object) = doc.as_object() else {
        return;
    };
    let items = object.get("items").and_then(Value::as_array);
    // The part probed as it is: without a list's items or a core Secret's masked fields (the
    // rest is small, so copying it is cheap).
    let skip: &[&str] = match items {
        Some(_) => &["items"],
        None if is_core_secret(object) => &["data", "stringData"],
        None => &[],
    };
    let trimmed;
    let probe = if skip.is_empty() {
        doc
    } else {
        trimmed = Value::Object(
            object
                .iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        &trimmed
    };
    let uses = substitute::collect(std::slice::from_ref(probe), options)
        .map(|reads| !reads.is_empty())
        .unwrap_or(false);
    if uses {
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = doc["metadata"]["name"].as_str().unwrap_or("");
        let group = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .filter(|v| *v != "v1" && kind == "Secret")
            .map(|v| format!(" ({v})"))
            .unwrap_or_default();
        leaking.push(format!("{kind}/{name}{group}"));
    }
    for item in items.into_iter().flatten() {
        find_leaks(item, options, leaking);
    }
}

/// Documents that can be shared with the render cache (moved, not copied).
pub fn share(documents: Vec<Value>) -> Vec<Arc<Value>> {
    documents.into_iter().map(Arc::new).collect()
}

/// The documents back out of their `Arc`s, copying only those still shared elsewhere.
pub fn unshare(documents: Vec<Arc<Value>>) -> Vec<Value> {
    documents.into_iter().map(Arc::unwrap_or_clone).collect()
}

/// collect → concurrent reads → apply, with one backend. `alias_budget` is the render's: what
/// `yamlParse` modifiers materialise from aliases is charged to it.
pub async fn read_and_apply(
    backend: &Backend,
    documents: Vec<Value>,
    alias_budget: &AliasBudget,
    concurrency: usize,
    deadline: Option<Instant>,
    guard: Option<Guard<'_>>,
) -> Result<Vec<Value>, StageError> {
    let documents = read_and_apply_shared(
        backend,
        share(documents),
        alias_budget,
        concurrency,
        deadline,
        guard,
    )
    .await?;
    Ok(unshare(documents))
}

/// [`read_and_apply`] on documents that may be shared (see [`Substituter::run_shared`]). Each
/// document is walked for placeholders once: the plan that lists the reads also tells `apply`
/// and the rollout hashes which documents change and what each needs.
pub async fn read_and_apply_shared(
    backend: &Backend,
    documents: Vec<Arc<Value>>,
    alias_budget: &AliasBudget,
    concurrency: usize,
    deadline: Option<Instant>,
    guard: Option<Guard<'_>>,
) -> Result<Vec<Arc<Value>>, StageError> {
    let planned = substitute::plan(&documents, &backend.options)?;
    read_and_apply_planned(
        backend,
        documents,
        &planned,
        alias_budget,
        concurrency,
        deadline,
        guard,
    )
    .await
}

/// [`read_and_apply_shared`] with the documents' plan made already (`substitute::plan` with
/// `backend.options`).
async fn read_and_apply_planned(
    backend: &Backend,
    documents: Vec<Arc<Value>>,
    planned: &substitute::Planned,
    alias_budget: &AliasBudget,
    concurrency: usize,
    deadline: Option<Instant>,
    guard: Option<Guard<'_>>,
) -> Result<Vec<Arc<Value>>, StageError> {
    let requests = planned.requests();
    if let Some(guard) = guard {
        if requests.len() > guard.max_reads {
            return Err(StageError::TooManyReads {
                count: requests.len(),
                limit: guard.max_reads,
            });
        }
        let no_vars = PathVars::default();
        let vars = backend
            .options
            .paths
            .as_ref()
            .map_or(&no_vars, |p| p.vars());
        for request in requests {
            if !guard
                .policy
                .allows_for(guard.project, &request.path, vars)?
            {
                metrics::POLICY_DENIALS.inc([]);
                return Err(StageError::PathDenied {
                    project: guard.project.to_owned(),
                    path: request.path.clone(),
                });
            }
        }
    }
    let mut fetched = Fetched::new();
    if let Some(first) = requests.iter().next() {
        let Some(source) = &backend.source else {
            return Err(StageError::NoSource {
                count: requests.len(),
                first: first.to_string(),
            });
        };
        // Every read checked before the first is sent: a refused one stops the render with
        // no call to Vault at all.
        for request in requests {
            source.precheck(request).map_err(StageError::Refused)?;
        }
        let total = requests.len();
        let reads = futures::stream::iter(requests.iter().cloned())
            .map(|req| {
                let source = source.clone();
                async move {
                    let result = source.read(&req).await;
                    (req, result)
                }
            })
            .buffer_unordered(concurrency.max(1));
        let collect_all = reads.for_each(|(req, result)| {
            fetched.insert(req, result);
            std::future::ready(())
        });
        let finished = match deadline {
            Some(d) => tokio::time::timeout_at(d, collect_all).await.is_ok(),
            None => {
                collect_all.await;
                true
            }
        };
        if !finished {
            return Err(StageError::Deadline {
                pending: total - fetched.len(),
            });
        }
    }
    // Planned before apply: afterwards the Secrets no longer show which reads they used.
    let rollout = guard
        .filter(|g| g.rollout_hash)
        .map(|_| crate::features::rollout::plan_from(&documents, planned));
    let mut documents =
        substitute::apply_planned(documents, planned, &backend.options, &fetched, alias_budget)?;
    if let Some(plan) = rollout {
        let workloads = crate::features::rollout::annotate_shared(&mut documents, &plan, &fetched);
        tracing::debug!(workloads, "rollout hashes set");
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::pipeline::cache::RenderCache;
    use crate::pipeline::discovery::AppKind;
    use crate::secrets::{ReadError, SecretData, SecretRequest};

    /// Every path holds `pw`, at version 3 (so rollout hashes have a version to hash).
    struct Memory;

    #[async_trait::async_trait]
    impl SecretSource for Memory {
        async fn read(&self, req: &SecretRequest) -> Result<SecretData, ReadError> {
            let mut values = serde_json::Map::new();
            values.insert("pw".to_owned(), json!(format!("value of {}", req.path)));
            Ok(SecretData::new(values).with_version(Some(3)))
        }
    }

    /// A render: a placeholder Secret, a workload using it (gets a rollout hash), a plain
    /// ConfigMap and a workload using nothing.
    fn rendered() -> Vec<Value> {
        let workload = |name: &str, container: Value| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                   "spec": {"template": {"spec": {"containers": [container]}}}})
        };
        vec![
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                   "stringData": {"pw": "<path:secret/data/db#pw>"}}),
            workload(
                "web",
                json!({"name": "c", "envFrom": [{"secretRef": {"name": "db"}}]}),
            ),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plain"},
                   "data": {"a": "b"}}),
            workload("other", json!({"name": "c"})),
        ]
    }

    fn json_of(documents: &[Arc<Value>]) -> Vec<String> {
        documents
            .iter()
            .map(|d| crate::pipeline::manifest::to_json_string(d))
            .collect()
    }

    /// The server's miss (documents shared with the new cache entry) and its hits answer
    /// byte for byte what the unshared path (the CLI's) answers; a hit copies only what it
    /// changes, and no hit changes the cached entry, so the second hit is like the first.
    #[tokio::test]
    async fn hits_answer_as_a_miss_and_leave_the_cache_alone() {
        let backend = Backend {
            source: Some(Arc::new(Memory)),
            ..Backend::default()
        };
        let policy = Policy::default();
        let guard = Guard {
            policy: &policy,
            project: "p",
            max_reads: 10,
            rollout_hash: true,
        };
        let stage = |documents, budget: AliasBudget| {
            let backend = &backend;
            async move {
                read_and_apply_shared(backend, documents, &budget, 2, None, Some(guard))
                    .await
                    .expect("substitutes")
            }
        };
        let unshared = read_and_apply(
            &backend,
            rendered(),
            &AliasBudget::for_output(0),
            2,
            None,
            Some(guard),
        )
        .await
        .expect("substitutes");
        assert_eq!(unshared[0]["stringData"]["pw"], "value of secret/data/db");
        let hash = &unshared[1]["spec"]["template"]["metadata"]["annotations"]
            [crate::features::rollout::ANNOTATION];
        assert!(hash.is_string(), "{hash}");
        let expected = json_of(&share(unshared));

        let cache = RenderCache::new(4, 1 << 20);
        let documents = share(rendered());
        cache.insert(
            [1; 32],
            AppKind::Helm,
            &documents,
            &AliasBudget::for_output(0),
        );
        let miss = stage(documents, AliasBudget::for_output(0)).await;
        assert_eq!(json_of(&miss), expected);
        for _ in 0..2 {
            let hit = cache.get(&[1; 32]).expect("cached");
            let out = stage(hit.documents.clone(), hit.alias_budget).await;
            assert_eq!(json_of(&out), expected);
            let shared: Vec<bool> = hit
                .documents
                .iter()
                .zip(&out)
                .map(|(cached, answered)| Arc::ptr_eq(cached, answered))
                .collect();
            assert_eq!(shared, [false, false, true, true]);
            assert_eq!(unshare(hit.documents), rendered());
        }
    }

    fn leaks(doc: Value) -> Vec<String> {
        let mut out = Vec::new();
        find_leaks(&doc, &Options::default(), &mut out);
        out
    }

    #[test]
    fn only_core_secrets_mask_their_data() {
        let secret = |api: &str| {
            json!({"apiVersion": api, "kind": "Secret", "metadata": {"name": "s"},
                   "data": {"pw": "<path:secret/data/a#pw>"}})
        };
        assert!(leaks(secret("v1")).is_empty());
        assert_eq!(
            leaks(secret("evil.example.com/v1")),
            ["Secret/s (evil.example.com/v1)"]
        );
        assert_eq!(leaks(secret("v1beta1")), ["Secret/s (v1beta1)"]);
        let no_api = json!({"kind": "Secret", "metadata": {"name": "s"},
                            "stringData": {"pw": "<path:secret/data/a#pw>"}});
        assert_eq!(leaks(no_api), ["Secret/s"]);
        // Outside data/stringData a core Secret leaks too.
        let annotated = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "annotations": {"x": "<path:secret/data/a#pw>"}}});
        assert_eq!(leaks(annotated), ["Secret/s"]);
    }

    /// The guard skips documents whose plan says they hold no placeholder, and finds what it
    /// finds without the plan. A list is probed anyway: an item's own path annotation makes
    /// its `<key>` a placeholder, which the list's plan (without one) does not see.
    #[test]
    fn the_plan_spares_only_documents_that_cannot_leak() {
        let options = Options::default();
        let config_map = |name: &str, annotations: Value, value: &str| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": name, "annotations": annotations},
                   "data": {"v": value}})
        };
        let docs = share(vec![
            config_map("cm", json!({}), "<path:secret/data/a#pw>"),
            config_map("plain", json!({}), "nothing"),
            config_map(
                "ignored",
                json!({"avp.kubernetes.io/ignore": "true"}),
                "<path:secret/data/a#pw>",
            ),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                   "stringData": {"pw": "<path:secret/data/a#pw>"}}),
            json!({"apiVersion": "v1", "kind": "List", "items": [config_map(
                "item",
                json!({"avp.kubernetes.io/path": "secret/data/a"}),
                "<pw>",
            )]}),
        ]);
        let planned = substitute::plan(&docs, &options).expect("plans");
        let probed: Vec<bool> = docs
            .iter()
            .enumerate()
            .map(|(index, doc)| may_leak(doc, index, Some(&planned)))
            .collect();
        assert_eq!(probed, [true, false, false, true, true]);
        let (mut all, mut spared) = (Vec::new(), Vec::new());
        for (doc, probe) in docs.iter().zip(probed) {
            find_leaks(doc, &options, &mut all);
            if probe {
                find_leaks(doc, &options, &mut spared);
            }
        }
        assert_eq!(all, ["ConfigMap/cm", "ConfigMap/item"]);
        assert_eq!(spared, all);
    }

    #[test]
    fn list_items_are_judged_one_by_one() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ok"},
             "data": {"pw": "<path:secret/data/a#pw>"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"},
             "data": {"pw": "<path:secret/data/a#pw>"}},
            {"apiVersion": "x.io/v1", "kind": "Secret", "metadata": {"name": "fake"},
             "data": {"pw": "<path:secret/data/a#pw>"}},
            {"kind": "List", "items": [{"kind": "ConfigMap", "metadata": {"name": "deep"},
             "data": {"pw": "<path:secret/data/a#pw>"}}]},
        ]});
        assert_eq!(
            leaks(list.clone()),
            ["ConfigMap/cm", "Secret/fake (x.io/v1)", "ConfigMap/deep"]
        );
        let path = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(masked_by_argo(&list, &path(&["items", "0", "data", "pw"])));
        assert!(!masked_by_argo(&list, &path(&["items", "1", "data", "pw"])));
        assert!(!masked_by_argo(&list, &path(&["items", "2", "data", "pw"])));
        assert!(!masked_by_argo(&list, &path(&["items", "9", "data", "pw"])));
        // A Secret whose own `items` is not a list is still a Secret.
        let odd = json!({"apiVersion": "v1", "kind": "Secret", "items": "x",
                         "data": {"pw": "<path:secret/data/a#pw>"}});
        assert!(masked_by_argo(&odd, &path(&["data", "pw"])));
        assert!(leaks(odd).is_empty());
    }
}
