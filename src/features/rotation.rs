//! Rotation-aware refresh: notice that a secret an Application's last render read has a new
//! KV v2 version, and ask Argo CD to render that Application again.
//!
//! Argo CD keeps generated manifests until the next refresh, so a rotated secret otherwise
//! reaches the cluster only when someone refreshes by hand or Git changes. Here each successful
//! render records which latest-version KV v2 secrets it read and at which version (an index in
//! memory, bounded, least recently rendered evicted). A background task reads each recorded
//! path's metadata (never its data) once per interval; when `current_version` differs from what
//! an Application read, the path is dropped from the secret cache and only the Applications that
//! read the old version get the `argocd.argoproj.io/refresh: hard` annotation (once per poll,
//! however many of its paths changed). A path whose latest version is deleted (or whose
//! metadata is gone) is a change to "version 0", so its Applications learn once that their
//! next render fails.
//!
//! Not tracked: reads pinned to a version (`#v`, `secret-version`; they cannot change) and KV v1
//! reads (no versions to compare without reading values). Nothing here sees secret values:
//! the index holds paths and version numbers.
//!
//! Must not: read secret data, log values, or patch anything but the refresh annotation of an
//! Application a render named.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use clap::Args;
use futures::StreamExt;

use crate::kube::{KubeApi, PatchError};
use crate::metrics;
use crate::names::{is_dns_label, is_dns_subdomain};
use crate::pipeline::context::RequestEnv;
use crate::secrets::{KvMetadata, KvVersion, ReadError, SecretData, SecretRequest, SecretSource};

/// The annotation Argo CD's application controller acts on (and removes) for a refresh.
pub const REFRESH_ANNOTATION: &str = "argocd.argoproj.io/refresh";
/// Metadata reads in flight at once per poll: enough to keep a poll short, few enough that a
/// poll of thousands of paths does not look like a burst to Vault.
const POLL_CONCURRENCY: usize = 4;
/// The version recorded for a path whose metadata is gone (KV v2 versions start at 1).
const GONE: u64 = 0;

/// Flags of `serve` for rotation tracking (off unless `--rotation-poll-seconds` is set).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Rotation")]
pub struct RotationArgs {
    /// Seconds between checks of the KV v2 metadata of the secrets renders read; a new
    /// version gives the Applications that read the old one a hard refresh. 0: off.
    #[arg(
        long,
        env = "AVP_SIDECAR_ROTATION_POLL_SECONDS",
        default_value_t = 0,
        value_name = "N"
    )]
    pub rotation_poll_seconds: u64,
    /// Namespace of Application objects whose `ARGOCD_APP_NAME` carries no namespace (Argo
    /// CD's own namespace; apps in other namespaces arrive as `<namespace>_<name>`).
    #[arg(
        long,
        env = "AVP_SIDECAR_ROTATION_APP_NAMESPACE",
        default_value = "argocd",
        value_name = "NS"
    )]
    pub rotation_app_namespace: String,
    /// Applications tracked at most; the least recently rendered are forgotten first.
    #[arg(
        long,
        env = "AVP_SIDECAR_ROTATION_MAX_APPS",
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub rotation_max_apps: usize,
    /// Keep the index in this JSON file (paths, versions and Application names; no values):
    /// loaded at start, written after changes and at shutdown, so a restarted sidecar still
    /// notices rotations for Applications it rendered before. Default: memory only.
    #[arg(long, env = "AVP_SIDECAR_ROTATION_STATE", value_name = "FILE")]
    pub rotation_state: Option<PathBuf>,
}

impl Default for RotationArgs {
    fn default() -> Self {
        Self {
            rotation_poll_seconds: 0,
            rotation_app_namespace: "argocd".to_owned(),
            rotation_max_apps: 10_000,
            rotation_state: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("--rotation-app-namespace {0:?} is not a Kubernetes namespace name")]
    BadNamespace(String),
    #[error("--rotation-max-apps must be at least 1")]
    NoApps,
    #[error("rotation state {path}: {reason}")]
    State { path: String, reason: String },
}

impl RotationArgs {
    pub fn enabled(&self) -> bool {
        self.rotation_poll_seconds > 0
    }

    /// The tracker for these flags, or `None` when rotation tracking is off.
    pub fn tracker(&self) -> Result<Option<Arc<Tracker>>, RotationError> {
        if !self.enabled() {
            return Ok(None);
        }
        if !is_dns_label(&self.rotation_app_namespace, 63) {
            return Err(RotationError::BadNamespace(
                self.rotation_app_namespace.clone(),
            ));
        }
        if self.rotation_max_apps == 0 {
            return Err(RotationError::NoApps);
        }
        let mut tracker = Tracker::new(&self.rotation_app_namespace, self.rotation_max_apps);
        tracker.state = self.rotation_state.clone();
        Ok(Some(Arc::new(tracker)))
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.rotation_poll_seconds)
    }
}

/// An Argo CD Application object: where the refresh annotation goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl AppKey {
    /// From the repo-server's `ARGOCD_APP_NAME`: `name` for Applications in Argo CD's own
    /// namespace, `<namespace>_<name>` for "apps in any namespace" (Argo's instance name;
    /// neither part can contain `_`). `None` when unset or not valid Kubernetes names, which
    /// also keeps the value from shaping the API path.
    pub fn parse(app_name: &str, default_namespace: &str) -> Option<Self> {
        let app_name = app_name.trim();
        let (namespace, name) = app_name
            .split_once('_')
            .unwrap_or((default_namespace, app_name));
        (is_dns_label(namespace, 63) && is_dns_subdomain(name)).then(|| Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The Application's path below the Kubernetes API root.
    pub fn api_path(&self) -> String {
        format!(
            "/apis/argoproj.io/v1alpha1/namespaces/{}/applications/{}",
            self.namespace, self.name
        )
    }
}

/// Which backend read a path. Backends differ per project and per config Secret (each its own
/// Vault identity and cache), so a path is polled and invalidated through the source that
/// read it. The address is stable while the index holds the `Arc`.
type SourceId = usize;

fn source_id(source: &Arc<dyn SecretSource>) -> SourceId {
    Arc::as_ptr(source).cast::<()>() as usize
}

/// One tracked read: (source, KV v2 data path) at the version the render got.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Tracked {
    source: SourceId,
    path: String,
    version: u64,
}

struct AppEntry {
    /// Render sequence number, for least-recently-rendered eviction.
    seq: u64,
    reads: Vec<Tracked>,
}

#[derive(Default)]
struct Index {
    seq: u64,
    apps: HashMap<AppKey, AppEntry>,
    /// `seq` → app, oldest first.
    order: BTreeMap<u64, AppKey>,
    sources: HashMap<SourceId, Arc<dyn SecretSource>>,
    /// The newest `current_version` seen per (source, path), so one rotation is counted and
    /// invalidated once even while some refreshes are retried.
    seen: HashMap<(SourceId, String), u64>,
    /// Sources known at startup under a stable name (`default`, `project:<name>`), so the
    /// state file can name them; kept alive here, so their ids never change.
    registered: HashMap<String, Arc<dyn SecretSource>>,
    /// Changed since the state file was last written.
    dirty: bool,
}

impl Index {
    fn remove(&mut self, app: &AppKey) -> bool {
        let removed = self.apps.remove(app);
        if let Some(old) = &removed {
            self.order.remove(&old.seq);
        }
        removed.is_some()
    }

    fn insert(&mut self, app: AppKey, mut reads: Vec<Tracked>, max_apps: usize) {
        reads.sort();
        let unchanged = match self.apps.get(&app) {
            Some(old) => old.reads == reads,
            None => reads.is_empty(),
        };
        self.dirty |= !unchanged;
        self.remove(&app);
        if reads.is_empty() {
            return;
        }
        self.seq += 1;
        self.order.insert(self.seq, app.clone());
        self.apps.insert(
            app,
            AppEntry {
                seq: self.seq,
                reads,
            },
        );
        while self.apps.len() > max_apps {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.apps.remove(&oldest);
            self.dirty = true;
        }
    }

    /// Drops sources and seen versions no app refers to any more.
    fn collect_garbage(&mut self) {
        let live: HashSet<(SourceId, &str)> = self
            .apps
            .values()
            .flat_map(|e| e.reads.iter().map(|t| (t.source, t.path.as_str())))
            .collect();
        self.seen
            .retain(|(source, path), _| live.contains(&(*source, path.as_str())));
        let sources: HashSet<SourceId> = live.iter().map(|(s, _)| *s).collect();
        self.sources.retain(|id, _| sources.contains(id));
    }
}

/// The index of what each Application's last render read, and the poll over it.
pub struct Tracker {
    default_namespace: String,
    max_apps: usize,
    index: Mutex<Index>,
    /// `--rotation-state`: where the index is kept across restarts.
    state: Option<PathBuf>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("default_namespace", &self.default_namespace)
            .field("max_apps", &self.max_apps)
            .field("apps", &self.len())
            .finish()
    }
}

impl Tracker {
    pub fn new(default_namespace: &str, max_apps: usize) -> Self {
        Self {
            default_namespace: default_namespace.to_owned(),
            max_apps: max_apps.max(1),
            index: Mutex::default(),
            state: None,
        }
    }

    /// Names a source that exists for the whole run (the default backend, a project's), so
    /// what it read can be saved and found again after a restart.
    pub fn register(&self, label: &str, source: Arc<dyn SecretSource>) {
        self.lock().registered.insert(label.to_owned(), source);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // Every update leaves the index consistent before anything can panic.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applications tracked.
    pub fn len(&self) -> usize {
        self.lock().apps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A source for one render that forwards to `source` and notes what it read.
    pub fn recording(&self, source: Arc<dyn SecretSource>) -> Arc<Recording> {
        Arc::new(Recording {
            inner: source,
            reads: Mutex::default(),
        })
    }

    /// After a successful render: what it read replaces what the app read before (the latest
    /// render is what Argo CD shows). `recording` is `None` when the render had no backend.
    pub fn record(&self, env: &RequestEnv, recording: Option<&Recording>) {
        let Some(app) = AppKey::parse(env.app_name(), &self.default_namespace) else {
            if !env.app_name().is_empty() {
                tracing::debug!(
                    app = env.app_name(),
                    "rotation: app name is not an Application name; not tracked"
                );
            }
            return;
        };
        let mut index = self.lock();
        let reads = match recording {
            Some(rec) => {
                let id = source_id(&rec.inner);
                index.sources.entry(id).or_insert_with(|| rec.inner.clone());
                rec.take()
                    .into_iter()
                    .map(|(path, version)| Tracked {
                        source: id,
                        path,
                        version,
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        index.insert(app, reads, self.max_apps);
    }

    /// Every (source, path) some app read, once.
    fn targets(&self) -> Vec<(SourceId, Arc<dyn SecretSource>, String)> {
        let mut index = self.lock();
        index.collect_garbage();
        let unique: HashSet<(SourceId, &str)> = index
            .apps
            .values()
            .flat_map(|e| e.reads.iter().map(|t| (t.source, t.path.as_str())))
            .collect();
        let mut targets: Vec<_> = unique
            .into_iter()
            .filter_map(|(id, path)| {
                let source = index.sources.get(&id)?.clone();
                Some((id, source, path.to_owned()))
            })
            .collect();
        targets.sort_by(|a, b| a.2.cmp(&b.2));
        targets
    }

    /// Apps whose last render read `path` from `source` at another version than `current`.
    /// Also says whether `current` is news (first time seen for this path).
    fn stale(&self, source: SourceId, path: &str, current: u64) -> (Vec<AppKey>, bool) {
        let mut index = self.lock();
        let mut apps: Vec<AppKey> = index
            .apps
            .iter()
            .filter(|(_, e)| {
                e.reads
                    .iter()
                    .any(|t| t.source == source && t.path == path && t.version != current)
            })
            .map(|(k, _)| k.clone())
            .collect();
        apps.sort();
        if apps.is_empty() {
            index.seen.insert((source, path.to_owned()), current);
            return (apps, false);
        }
        let previous = index.seen.insert((source, path.to_owned()), current);
        (apps, previous != Some(current))
    }

    /// The app was told about `current`: do not tell it again for this version.
    fn advance(&self, app: &AppKey, source: SourceId, path: &str, current: u64) {
        let mut index = self.lock();
        if let Some(entry) = index.apps.get_mut(app) {
            for t in &mut entry.reads {
                if t.source == source && t.path == path {
                    t.version = current;
                }
            }
            index.dirty = true;
        }
    }

    fn forget(&self, app: &AppKey) {
        let mut index = self.lock();
        if index.remove(app) {
            index.dirty = true;
        }
    }

    /// One round: a metadata read per unique (source, path), then a refresh of each app that
    /// read an older version. Failures are logged and counted; the next round retries.
    pub async fn poll(&self, refresher: &dyn Refresher) -> PollReport {
        let mut report = PollReport::default();
        let targets = self.targets();
        if targets.is_empty() {
            return report;
        }
        // Futures built up front (they are lazy): a closure in the stream's type trips the
        // spawned task's `Send` check (rust-lang/rust#102211).
        let reads: Vec<_> = targets.into_iter().map(read_metadata).collect();
        let answers: Vec<MetadataAnswer> = futures::stream::iter(reads)
            .buffer_unordered(POLL_CONCURRENCY)
            .collect()
            .await;
        // Each app that read an old version, with every (source, path, version) it is told
        // about: an app whose secrets rotated together gets one refresh.
        let mut due: BTreeMap<AppKey, Vec<(SourceId, String, u64)>> = BTreeMap::new();
        for (id, source, path, answer) in answers {
            report.polled += 1;
            let current = match answer {
                // The latest version deleted or destroyed (`kv delete`): renders of the path
                // now fail, so tell the apps once; undeleted, it is news again.
                Ok(Some(KvMetadata {
                    current_version,
                    live_versions,
                })) if !live_versions.contains(&current_version) => GONE,
                Ok(Some(KvMetadata {
                    current_version, ..
                })) => current_version,
                Ok(None) => continue,
                // Metadata and all versions deleted (`kv metadata delete`): the same; a path
                // written again starts at version 1 and counts as a change.
                Err(ReadError::NotFound(_)) => GONE,
                Err(e) => {
                    report.errors += 1;
                    metrics::ROTATION_ERRORS.inc(["metadata"]);
                    tracing::warn!(path = %path, error = %e, "rotation: metadata read failed; retrying next poll");
                    continue;
                }
            };
            let (apps, news) = self.stale(id, &path, current);
            if apps.is_empty() {
                continue;
            }
            if news {
                report.changes += 1;
                metrics::ROTATION_CHANGES.inc([]);
                source.invalidate(&path);
                let names: Vec<String> = apps.iter().map(ToString::to_string).collect();
                if current == GONE {
                    tracing::warn!(path = %path, apps = %names.join(","), "rotation: secret deleted; refreshing the applications that read it");
                } else {
                    tracing::info!(path = %path, version = current, apps = %names.join(","), "rotation: new secret version; refreshing the applications that read it");
                }
            }
            for app in apps {
                due.entry(app)
                    .or_default()
                    .push((id, path.clone(), current));
            }
        }
        for (app, changes) in due {
            let paths: Vec<&str> = changes.iter().map(|(_, p, _)| p.as_str()).collect();
            let paths = paths.join(",");
            match refresher.refresh(&app).await {
                Ok(()) => {
                    for (id, path, current) in &changes {
                        self.advance(&app, *id, path, *current);
                    }
                    metrics::ROTATION_REFRESHES.inc([]);
                    tracing::info!(app = %app, paths = %paths, "rotation: hard refresh requested");
                    report.refreshed.push(app);
                }
                Err(e) if e.is_not_found() => {
                    self.forget(&app);
                    report.errors += 1;
                    metrics::ROTATION_ERRORS.inc(["refresh"]);
                    tracing::warn!(app = %app, error = %e, "rotation: application not found; no longer tracked");
                }
                Err(e) => {
                    report.errors += 1;
                    metrics::ROTATION_ERRORS.inc(["refresh"]);
                    tracing::warn!(app = %app, paths = %paths, error = %e, "rotation: refresh failed; retrying next poll");
                }
            }
        }
        report
    }

    /// Polls every `every` until the task is aborted.
    pub fn spawn(
        self: Arc<Self>,
        every: Duration,
        refresher: Arc<dyn Refresher>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let report = self.poll(refresher.as_ref()).await;
                self.persist().await;
                if report.polled > 0 {
                    tracing::debug!(
                        polled = report.polled,
                        changes = report.changes,
                        refreshed = report.refreshed.len(),
                        errors = report.errors,
                        "rotation: poll done"
                    );
                }
            }
        })
    }
}

/// The state file: what each Application's last render read, oldest render first.
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct State {
    apps: Vec<StateApp>,
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct StateApp {
    namespace: String,
    name: String,
    reads: Vec<StateRead>,
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct StateRead {
    /// A registered source's label.
    source: String,
    path: String,
    version: u64,
}

impl Tracker {
    /// The index as the state file holds it, if it changed since the last call. Reads through
    /// unregistered sources (config Secrets' backends, made per request) are left out: they
    /// are tracked again from the next render.
    fn snapshot_if_dirty(&self) -> Option<State> {
        let mut index = self.lock();
        if !index.dirty {
            return None;
        }
        index.dirty = false;
        let labels: HashMap<SourceId, &str> = index
            .registered
            .iter()
            .map(|(label, source)| (source_id(source), label.as_str()))
            .collect();
        let apps = index
            .order
            .values()
            .filter_map(|app| {
                let entry = index.apps.get(app)?;
                let reads: Vec<StateRead> = entry
                    .reads
                    .iter()
                    .filter_map(|t| {
                        Some(StateRead {
                            source: (*labels.get(&t.source)?).to_owned(),
                            path: t.path.clone(),
                            version: t.version,
                        })
                    })
                    .collect();
                (!reads.is_empty()).then(|| StateApp {
                    namespace: app.namespace.clone(),
                    name: app.name.clone(),
                    reads,
                })
            })
            .collect();
        Some(State { apps })
    }

    /// Writes the state file if the index changed (atomically: a temp file, then rename).
    /// Failures are logged and counted; the index stays in memory and is written next time.
    pub async fn persist(&self) {
        let Some(path) = &self.state else {
            return;
        };
        let Some(state) = self.snapshot_if_dirty() else {
            return;
        };
        if let Err(e) = write_state(path, &state).await {
            self.lock().dirty = true;
            metrics::ROTATION_ERRORS.inc(["state"]);
            tracing::warn!(error = %e, "rotation: could not save the index");
        }
    }

    /// Loads the state file written by an earlier run; a missing file is an empty index.
    /// Entries naming a source this run did not register are skipped. Call after `register`.
    pub fn load(&self) -> Result<usize, RotationError> {
        let Some(path) = &self.state else {
            return Ok(0);
        };
        let err = |reason: String| RotationError::State {
            path: path.display().to_string(),
            reason,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(err(e.to_string())),
        };
        let state: State = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let mut index = self.lock();
        let mut loaded = 0;
        for app in state.apps {
            let Some(key) = AppKey::parse(
                &format!("{}_{}", app.namespace, app.name),
                &self.default_namespace,
            ) else {
                continue;
            };
            let reads: Vec<Tracked> = app
                .reads
                .into_iter()
                .filter_map(|r| {
                    let source = index.registered.get(&r.source)?.clone();
                    let id = source_id(&source);
                    index.sources.entry(id).or_insert(source);
                    Some(Tracked {
                        source: id,
                        path: r.path,
                        version: r.version,
                    })
                })
                .collect();
            if !reads.is_empty() {
                index.insert(key, reads, self.max_apps);
                loaded += 1;
            }
        }
        index.dirty = false;
        Ok(loaded)
    }
}

async fn write_state(path: &Path, state: &State) -> std::io::Result<()> {
    let text = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .await?;
    tokio::io::AsyncWriteExt::write_all(&mut file, &text).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, path).await
}

type MetadataAnswer = (
    SourceId,
    Arc<dyn SecretSource>,
    String,
    Result<Option<KvMetadata>, ReadError>,
);

/// One metadata read of a poll.
async fn read_metadata(
    (id, source, path): (SourceId, Arc<dyn SecretSource>, String),
) -> MetadataAnswer {
    let req = SecretRequest {
        path,
        kv_version: KvVersion::V2,
        version: None,
    };
    metrics::ROTATION_POLLS.inc([]);
    let answer = source.metadata(&req).await;
    (id, source, req.path, answer)
}

/// What one poll did (for logs and tests).
#[derive(Debug, Default)]
pub struct PollReport {
    pub polled: usize,
    pub changes: usize,
    pub refreshed: Vec<AppKey>,
    pub errors: usize,
}

/// Asks Argo CD to render an Application again.
#[async_trait]
pub trait Refresher: Send + Sync {
    async fn refresh(&self, app: &AppKey) -> Result<(), PatchError>;
}

/// Sets the hard-refresh annotation with a JSON merge patch (needs `patch` on
/// `applications.argoproj.io`; see `sidecar/kustomize/avp-sidecar-rotation`).
#[async_trait]
impl Refresher for KubeApi {
    async fn refresh(&self, app: &AppKey) -> Result<(), PatchError> {
        let patch = serde_json::json!({
            "metadata": {"annotations": {REFRESH_ANNOTATION: "hard"}}
        });
        self.merge_patch(&app.api_path(), &patch).await
    }
}

/// A render's view of its backend: reads go through unchanged, and each successful
/// latest-version KV v2 read is noted with the version it returned.
pub struct Recording {
    inner: Arc<dyn SecretSource>,
    reads: Mutex<Vec<(String, u64)>>,
}

impl Recording {
    fn take(&self) -> Vec<(String, u64)> {
        let mut reads = std::mem::take(&mut *self.reads.lock().unwrap_or_else(|p| p.into_inner()));
        reads.sort();
        reads.dedup();
        reads
    }
}

#[async_trait]
impl SecretSource for Recording {
    async fn read(&self, req: &SecretRequest) -> Result<SecretData, ReadError> {
        let result = self.inner.read(req).await;
        if let Ok(data) = &result
            && req.kv_version == KvVersion::V2
            && req.version.is_none()
            && let Some(version) = data.version()
        {
            self.reads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((req.path.clone(), version));
        }
        result
    }

    async fn metadata(&self, req: &SecretRequest) -> Result<Option<KvMetadata>, ReadError> {
        self.inner.metadata(req).await
    }

    fn precheck(&self, req: &SecretRequest) -> Result<(), ReadError> {
        self.inner.precheck(req)
    }

    fn invalidate(&self, path: &str) {
        self.inner.invalidate(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::context::APP_NAME;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// KV v2 with one current version for every path; counts metadata reads.
    #[derive(Default)]
    struct Versions {
        current: AtomicU64,
        metadata_reads: AtomicUsize,
        invalidated: Mutex<Vec<String>>,
        down: std::sync::atomic::AtomicBool,
        /// The current version is soft-deleted.
        deleted: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl SecretSource for Versions {
        async fn read(&self, _req: &SecretRequest) -> Result<SecretData, ReadError> {
            Ok(SecretData::default().with_version(Some(self.current.load(Ordering::SeqCst))))
        }

        async fn metadata(&self, req: &SecretRequest) -> Result<Option<KvMetadata>, ReadError> {
            self.metadata_reads.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(ReadError::Backend {
                    path: req.path.clone(),
                    message: "connection refused".into(),
                });
            }
            let current_version = self.current.load(Ordering::SeqCst);
            if current_version == 0 {
                return Err(ReadError::NotFound(req.clone()));
            }
            let last = if self.deleted.load(Ordering::SeqCst) {
                current_version - 1
            } else {
                current_version
            };
            Ok(Some(KvMetadata {
                current_version,
                live_versions: (1..=last).collect(),
            }))
        }

        fn invalidate(&self, path: &str) {
            self.invalidated.lock().expect("lock").push(path.to_owned());
        }
    }

    #[derive(Default)]
    struct Patches {
        apps: Mutex<Vec<AppKey>>,
        fail_with: Mutex<Option<u16>>,
    }

    #[async_trait]
    impl Refresher for Patches {
        async fn refresh(&self, app: &AppKey) -> Result<(), PatchError> {
            if let Some(status) = *self.fail_with.lock().expect("lock") {
                return Err(PatchError::Status {
                    object: app.api_path(),
                    status,
                });
            }
            self.apps.lock().expect("lock").push(app.clone());
            Ok(())
        }
    }

    fn env(app: &str) -> RequestEnv {
        RequestEnv::new([(APP_NAME.to_owned(), app.to_owned())])
    }

    fn req(path: &str, kv_version: KvVersion, version: Option<&str>) -> SecretRequest {
        SecretRequest {
            path: path.to_owned(),
            kv_version,
            version: version.map(Into::into),
        }
    }

    fn key(ns: &str, name: &str) -> AppKey {
        AppKey {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    /// One render of `app` reading `reqs` through the tracker.
    async fn render(
        t: &Tracker,
        source: &Arc<dyn SecretSource>,
        app: &str,
        reqs: &[SecretRequest],
    ) {
        let rec = t.recording(source.clone());
        for r in reqs {
            rec.read(r).await.expect("read");
        }
        t.record(&env(app), Some(&rec));
    }

    #[test]
    fn app_names_plain_and_namespaced() {
        assert_eq!(AppKey::parse("web", "argocd"), Some(key("argocd", "web")));
        assert_eq!(
            AppKey::parse("team-a_web", "argocd"),
            Some(key("team-a", "web"))
        );
        assert_eq!(
            AppKey::parse("web.v2", "argocd"),
            Some(key("argocd", "web.v2"))
        );
        for bad in [
            "", "  ", "Web", "a_b_c", "_web", "web_", "../x", "a/b", "ns.x_web",
        ] {
            assert_eq!(AppKey::parse(bad, "argocd"), None, "{bad:?}");
        }
        assert_eq!(
            key("team-a", "web").api_path(),
            "/apis/argoproj.io/v1alpha1/namespaces/team-a/applications/web"
        );
    }

    #[test]
    fn off_by_default_and_flags_checked() {
        let args = RotationArgs::default();
        assert!(args.tracker().expect("valid").is_none());
        let on = RotationArgs {
            rotation_poll_seconds: 30,
            ..Default::default()
        };
        assert!(on.tracker().expect("valid").is_some());
        for bad in [
            RotationArgs {
                rotation_app_namespace: "Argo_CD".into(),
                ..on.clone()
            },
            RotationArgs {
                rotation_max_apps: 0,
                ..on.clone()
            },
        ] {
            assert!(bad.tracker().is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn pinned_and_kv1_reads_are_not_tracked() {
        let t = Tracker::new("argocd", 10);
        let v: Arc<dyn SecretSource> = Arc::new(Versions::default());
        render(
            &t,
            &v,
            "pinned",
            &[
                req("secret/data/a", KvVersion::V2, Some("1")),
                req("kv1/a", KvVersion::V1, None),
            ],
        )
        .await;
        assert!(t.is_empty(), "nothing to watch");
        render(
            &t,
            &v,
            "latest",
            &[req("secret/data/a", KvVersion::V2, None)],
        )
        .await;
        assert_eq!(t.len(), 1);
        assert_eq!(t.targets().len(), 1);
    }

    #[tokio::test]
    async fn latest_render_replaces_and_index_is_bounded() {
        let t = Tracker::new("argocd", 3);
        let v: Arc<dyn SecretSource> = Arc::new(Versions::default());
        let a = req("secret/data/a", KvVersion::V2, None);
        let b = req("secret/data/b", KvVersion::V2, None);
        render(&t, &v, "one", std::slice::from_ref(&a)).await;
        render(&t, &v, "one", std::slice::from_ref(&b)).await;
        let paths: Vec<String> = t.targets().into_iter().map(|(_, _, p)| p).collect();
        assert_eq!(
            paths,
            ["secret/data/b"],
            "the second render replaced the first"
        );
        for app in ["two", "three", "four"] {
            render(&t, &v, app, std::slice::from_ref(&a)).await;
        }
        assert_eq!(t.len(), 3);
        assert!(
            !t.lock().apps.contains_key(&key("argocd", "one")),
            "least recently rendered is evicted"
        );
        render(&t, &v, "two", &[]).await;
        assert_eq!(t.len(), 2, "a render reading nothing stops tracking");
        t.record(&env(""), None);
        t.record(&env("Not_Valid_"), None);
        assert_eq!(t.len(), 2);
    }

    #[tokio::test]
    async fn one_refresh_per_rotation_for_the_apps_that_read_it() {
        let t = Tracker::new("argocd", 10);
        let versions = Arc::new(Versions::default());
        versions.current.store(2, Ordering::SeqCst);
        let v: Arc<dyn SecretSource> = versions.clone();
        let web = req("secret/data/web", KvVersion::V2, None);
        let other = req("secret/data/other", KvVersion::V2, None);
        render(&t, &v, "a", std::slice::from_ref(&web)).await;
        render(&t, &v, "apps_d", std::slice::from_ref(&web)).await;
        // b read `other` at version 2, which it will stay at below.
        render(&t, &v, "b", std::slice::from_ref(&other)).await;
        let patches = Patches::default();

        let report = t.poll(&patches).await;
        assert_eq!(report.polled, 2, "one metadata read per unique path");
        assert!(report.refreshed.is_empty());
        assert_eq!(versions.metadata_reads.load(Ordering::SeqCst), 2);

        // `web` rotates; `b` re-renders so it reads 3 of `other` too and stays current.
        versions.current.store(3, Ordering::SeqCst);
        render(&t, &v, "b", std::slice::from_ref(&other)).await;
        let report = t.poll(&patches).await;
        assert_eq!(report.refreshed, [key("apps", "d"), key("argocd", "a")]);
        assert_eq!(report.changes, 1);
        assert_eq!(
            *versions.invalidated.lock().expect("lock"),
            ["secret/data/web"]
        );
        let report = t.poll(&patches).await;
        assert!(report.refreshed.is_empty(), "no second refresh");
        assert_eq!(patches.apps.lock().expect("lock").len(), 2);
    }

    #[tokio::test]
    async fn one_refresh_per_app_and_a_deleted_secret_is_told_once() {
        let t = Tracker::new("argocd", 10);
        let versions = Arc::new(Versions::default());
        versions.current.store(1, Ordering::SeqCst);
        let v: Arc<dyn SecretSource> = versions.clone();
        let both = [
            req("secret/data/web", KvVersion::V2, None),
            req("secret/data/db", KvVersion::V2, None),
        ];
        render(&t, &v, "a", &both).await;
        let patches = Patches::default();

        versions.current.store(2, Ordering::SeqCst);
        let report = t.poll(&patches).await;
        assert_eq!((report.changes, report.refreshed.len()), (2, 1));
        assert_eq!(
            patches.apps.lock().expect("lock").len(),
            1,
            "one patch for two paths"
        );

        // Both paths deleted with their metadata: one more refresh, then quiet.
        versions.current.store(0, Ordering::SeqCst);
        let report = t.poll(&patches).await;
        assert_eq!((report.errors, report.refreshed.len()), (0, 1));
        assert!(t.poll(&patches).await.refreshed.is_empty());
        // Written again: version 1 is news.
        versions.current.store(1, Ordering::SeqCst);
        assert_eq!(t.poll(&patches).await.refreshed, [key("argocd", "a")]);
        assert_eq!(patches.apps.lock().expect("lock").len(), 3);
        // The latest version soft-deleted (`kv delete`): told once; undeleted: told again.
        versions.deleted.store(true, Ordering::SeqCst);
        assert_eq!(t.poll(&patches).await.refreshed, [key("argocd", "a")]);
        assert!(t.poll(&patches).await.refreshed.is_empty());
        versions.deleted.store(false, Ordering::SeqCst);
        assert_eq!(t.poll(&patches).await.refreshed, [key("argocd", "a")]);
        assert_eq!(patches.apps.lock().expect("lock").len(), 5);
    }

    #[tokio::test]
    async fn failures_are_counted_and_retried() {
        let t = Tracker::new("argocd", 10);
        let versions = Arc::new(Versions::default());
        versions.current.store(1, Ordering::SeqCst);
        let v: Arc<dyn SecretSource> = versions.clone();
        render(&t, &v, "a", &[req("secret/data/web", KvVersion::V2, None)]).await;
        let patches = Patches::default();

        versions.down.store(true, Ordering::SeqCst);
        let report = t.poll(&patches).await;
        assert_eq!((report.errors, report.refreshed.len()), (1, 0));

        versions.down.store(false, Ordering::SeqCst);
        versions.current.store(2, Ordering::SeqCst);
        *patches.fail_with.lock().expect("lock") = Some(403);
        let report = t.poll(&patches).await;
        assert_eq!((report.errors, report.changes), (1, 1));
        *patches.fail_with.lock().expect("lock") = None;
        let report = t.poll(&patches).await;
        assert_eq!(report.refreshed, [key("argocd", "a")], "retried");
        assert_eq!(report.changes, 0, "the same rotation is counted once");

        versions.current.store(3, Ordering::SeqCst);
        *patches.fail_with.lock().expect("lock") = Some(404);
        let report = t.poll(&patches).await;
        assert_eq!(report.errors, 1);
        assert!(t.is_empty(), "a deleted Application is forgotten");
        assert_eq!(t.poll(&patches).await.polled, 0, "nothing left to poll");
    }

    #[tokio::test]
    async fn state_file_round_trip() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("rotation.json");
        let versions = Arc::new(Versions::default());
        versions.current.store(1, Ordering::SeqCst);
        let default: Arc<dyn SecretSource> = versions.clone();
        let per_request: Arc<dyn SecretSource> = Arc::new(Versions::default());
        let web = req("secret/data/web", KvVersion::V2, None);

        let mut first = Tracker::new("argocd", 10);
        first.state = Some(file.clone());
        first.register("default", default.clone());
        render(&first, &default, "a", std::slice::from_ref(&web)).await;
        render(&first, &per_request, "b", std::slice::from_ref(&web)).await;
        first.persist().await;
        let mode = std::fs::metadata(&file)
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(
            text.contains("secret/data/web") && !text.contains("\"b\""),
            "{text}"
        );

        std::fs::remove_file(&file).expect("rm");
        render(&first, &default, "a", std::slice::from_ref(&web)).await;
        first.persist().await;
        assert!(!file.exists(), "an unchanged index is not written again");
        render(&first, &default, "c", std::slice::from_ref(&web)).await;
        first.persist().await;
        assert!(file.exists());

        // A restart: the same backend registered under the same name, a fresh tracker.
        let mut second = Tracker::new("argocd", 10);
        second.state = Some(file.clone());
        second.register("default", default.clone());
        assert_eq!(second.load().expect("load"), 2);
        versions.current.store(2, Ordering::SeqCst);
        let patches = Patches::default();
        let report = second.poll(&patches).await;
        assert_eq!(report.refreshed, [key("argocd", "a"), key("argocd", "c")]);

        std::fs::write(&file, "{not json").expect("write");
        assert!(second.load().is_err());
        std::fs::remove_file(&file).expect("rm");
        assert_eq!(second.load().expect("missing is empty"), 0);
    }

    #[tokio::test]
    async fn sources_are_polled_separately() {
        let t = Tracker::new("argocd", 10);
        let one: Arc<dyn SecretSource> = Arc::new(Versions::default());
        let two: Arc<dyn SecretSource> = Arc::new(Versions::default());
        let web = req("secret/data/web", KvVersion::V2, None);
        render(&t, &one, "a", std::slice::from_ref(&web)).await;
        render(&t, &two, "b", std::slice::from_ref(&web)).await;
        render(&t, &one, "c", std::slice::from_ref(&web)).await;
        assert_eq!(t.targets().len(), 2, "same path, two identities");
        render(&t, &one, "b", std::slice::from_ref(&web)).await;
        assert_eq!(t.targets().len(), 1);
        assert_eq!(t.lock().sources.len(), 1, "unused source released");
    }
}
