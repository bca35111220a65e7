//! The four CMP RPCs. Each streaming RPC: deadline → receive (verify) → unpack → work, with
//! every failure drained and mapped to a status, and the work dir removed on every path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::Stream;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, info, info_span, warn};

use super::{RequestError, Shared, deadline, status};
use crate::config::DiscoverMode;
use crate::metrics;
use crate::pipeline::cache;
use crate::pipeline::context::RequestEnv;
use crate::pipeline::discovery::archive;
use crate::pipeline::plugin::Plugin;
use crate::protocol::pb::ManifestRequestMetadata;
use crate::protocol::pb::config_management_plugin_service_server::ConfigManagementPluginService;
use crate::protocol::pb::{
    AppStreamRequest, CheckPluginConfigurationResponse, ManifestResponse,
    ParametersAnnouncementResponse, RepositoryResponse,
};
use crate::protocol::repository::ParameterAnnouncement;
use crate::protocol::spool::SpoolWriter;
use crate::protocol::stream;
use crate::protocol::trees::{RepoTree, Staged, TreeKey};
use crate::protocol::unpack::UnpackOptions;
use crate::protocol::workdir::WorkDir;

/// Upper bound on draining a failed request's remaining stream.
const MAX_DRAIN: Duration = Duration::from_secs(10);

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

#[derive(Clone)]
pub struct CmpService {
    plugin: Arc<Plugin>,
    shared: Arc<Shared>,
    /// The plugin's name as a metrics label (operator configuration, never request data).
    label: &'static str,
}

impl CmpService {
    /// Counts a request answered with OK.
    fn answered(&self, rpc: metrics::Rpc, started: Instant) {
        let (code, reason) = (tonic::Code::Ok, metrics::Reason::Ok);
        metrics::request(rpc, self.label, code, reason, started.elapsed());
    }

    /// The one way a request fails: the rest of the stream is drained (bounded, so a Go client
    /// sees our status instead of a reset), the error becomes its status, and the failure is
    /// counted and logged.
    async fn failed<S>(
        &self,
        rpc: metrics::Rpc,
        started: Instant,
        deadline: Option<Instant>,
        rest: &mut S,
        err: &RequestError,
    ) -> Status
    where
        S: Stream<Item = Result<AppStreamRequest, Status>> + Unpin,
    {
        let drain_until = deadline
            .map(|d| d.min(Instant::now() + MAX_DRAIN))
            .unwrap_or_else(|| Instant::now() + MAX_DRAIN);
        let _ = tokio::time::timeout_at(drain_until, stream::drain(rest)).await;
        let status = status::to_status(rpc.error_prefix(), err);
        metrics::request(
            rpc,
            self.label,
            status.code(),
            status::reason(err),
            started.elapsed(),
        );
        warn!(ms = millis(started.elapsed()), code = ?status.code(), error = %status.message(), "failed");
        status
    }

    pub fn new(plugin: Plugin, shared: Arc<Shared>) -> Self {
        Self {
            label: metrics::plugin_label(&plugin.full_name()),
            plugin: Arc::new(plugin),
            shared,
        }
    }
}

/// The request env the repo-server sent in the stream's metadata.
fn request_env(metadata: &crate::protocol::pb::ManifestRequestMetadata) -> RequestEnv {
    RequestEnv::new(
        metadata
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone())),
    )
}

/// A MatchRepository's archive, spooled and extracted as it arrives, ahead of need.
struct Prefetch {
    key: TreeKey,
    spool: SpoolWriter,
    staged: Staged,
    /// Holds the spool file (the extraction reads it through a descriptor of its own).
    workdir: WorkDir,
}

/// The rest of a stream whose request goes on before it has verified: `handle` receives and
/// verifies it alongside the work, then sets `verified`.
struct Pending {
    metadata: ManifestRequestMetadata,
    verified: tokio::sync::watch::Sender<bool>,
}

/// A render-ahead's place and what it renders ([`CmpService::ahead_place`]).
struct AheadPlace {
    running: super::ahead::Running,
    key: cache::Key,
    app_rel_path: String,
}

/// A render-ahead started by a MatchRepository ([`CmpService::render_ahead`]): stopped when
/// dropped before [`AheadTask::confirm`], i.e. when the match's stream failed.
struct AheadTask {
    verified: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AheadTask {
    /// The match's stream has verified: the render may go into the render cache, and runs on
    /// without the request.
    fn confirm(self) {
        self.verified.send_replace(true);
    }
}

impl Drop for AheadTask {
    fn drop(&mut self) {
        if !*self.verified.borrow() {
            self.task.abort();
        }
    }
}

/// A received (and, when needed, checked-out) request. `handle` keeps its `WorkDir` alive until
/// the work future has finished (holding it here would let a closure that captures only some
/// fields drop it early), so this only carries paths into it and the shared tree.
struct Unpacked {
    input: Input,
    env: RequestEnv,
    app_name: String,
    /// Where to store the render, when the render cache applies.
    cache_key: Option<cache::Key>,
    /// A render a MatchRepository started for this request (`server::ahead`), found when the
    /// request's metadata arrived.
    ahead: Option<super::ahead::Found>,
}

impl Unpacked {
    /// The checkout; requests received with [`Need::Tree`] that missed the render cache
    /// always have one.
    fn checkout(&self) -> Result<&RepoTree, RequestError> {
        match &self.input {
            Input::Tree(tree) => Ok(tree),
            Input::Cached(_) | Input::Verified => Err(RequestError::NoCheckout),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the work closure gets to render from.
enum Input {
    /// The repository (the shared tree of its archive, or the request's private copy once it
    /// asks to write), its app dir and private scratch space outside the tree.
    Tree(RepoTree),
    /// A render-cache hit: the archive was verified but not unpacked.
    Cached(cache::Cached),
    /// The archive was verified and nothing else was needed (built-in parameters).
    Verified,
}

/// What a request needs of its archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// Only that the stream verifies (it is read to the end and hashed, nothing is written).
    Verify,
    /// The extracted repository.
    Tree,
}

impl CmpService {
    /// Receives and verifies the stream; with [`Need::Tree`], gives the request the shared
    /// tree of its archive, extracting it if no request has yet (none on a render-cache hit).
    /// A request whose tree is already there only hashes its stream (no spool). When it may
    /// render before its stream has verified ([`CmpService::renders_before_verified`]), this
    /// returns after the metadata with the tree marked unverified and the rest of the stream
    /// as [`Pending`], for `handle` to verify alongside the work; otherwise it uses the tree
    /// only once its own stream has verified against the checksum that keys it.
    async fn receive<S>(
        &self,
        stream: &mut S,
        use_cache: bool,
        need: Need,
    ) -> Result<(Option<WorkDir>, Unpacked, Option<Pending>), RequestError>
    where
        S: Stream<Item = Result<AppStreamRequest, Status>> + Unpin,
    {
        let settings = &self.shared.settings;
        let metadata = stream::receive_metadata(stream).await?;
        let env = request_env(&metadata);
        let cache_key =
            (use_cache && self.shared.render_cache.enabled()).then(|| self.cache_key(&metadata));
        // Only a built-in GenerateManifest uses the render cache (and so `use_cache`).
        if use_cache {
            self.shared
                .ahead
                .note_generate(&self.plugin.full_name(), &metadata.checksum);
        }
        // A render a MatchRepository started for this request (Argo sends it right after the
        // match), looked up before the render cache (a render ahead puts its render there
        // before it ends) and held, so its render is handed over even if it ends meanwhile.
        let ahead = cache_key
            .filter(|_| need == Need::Tree)
            .and_then(|key| self.shared.ahead.find(&key));
        let hit = cache_key.and_then(|key| self.shared.render_cache.get(&key));
        let ahead = ahead.filter(|_| hit.is_none());
        if use_cache && self.shared.render_cache.enabled() {
            if hit.is_some() {
                metrics::RENDER_CACHE_HITS.inc([]);
            } else {
                metrics::RENDER_CACHE_MISSES.inc([]);
            }
        }
        if hit.is_some() || need == Need::Verify {
            // Still receive and verify everything: a hit must not accept a bad stream.
            let received =
                stream::receive_archive(stream, metadata, None, settings.max_compressed_bytes)
                    .await?;
            let unpacked = Unpacked {
                input: hit.map_or(Input::Verified, Input::Cached),
                env,
                app_name: received.metadata.app_name,
                cache_key,
                ahead: None,
            };
            return Ok((None, unpacked, None));
        }
        let workdir =
            WorkDir::create(&settings.work_root).map_err(|source| RequestError::WorkDir {
                path: settings.work_root.display().to_string(),
                source,
            })?;
        let key = TreeKey::new(&metadata.checksum, self.plugin.preserve_file_mode);
        let (tree, meta, pending) = if let Some(tree) = self.shared.trees.ready(&key) {
            metrics::ARCHIVE_CACHE.inc(["tree", "hit"]);
            if self.renders_before_verified(use_cache) {
                let (verified, _) = tokio::sync::watch::channel(false);
                let pending = Pending {
                    metadata: metadata.clone(),
                    verified,
                };
                (tree, metadata, Some(pending))
            } else {
                let received =
                    stream::receive_archive(stream, metadata, None, settings.max_compressed_bytes)
                        .await?;
                tracing::debug!(
                    compressed = received.compressed_bytes,
                    "repository tree shared"
                );
                (tree, received.metadata, None)
            }
        } else {
            let archive = workdir.tmp().join("repo.tar.gz");
            let spool = SpoolWriter::create(&archive)
                .await
                .map_err(stream::StreamError::Io)?;
            // Extracted while it arrives, unless another request is extracting it already
            // (then this one waits for that tree once its own stream has verified).
            let staged = spool.reader(&archive).ok().and_then(|reader| {
                self.shared
                    .trees
                    .stage(&key, reader, self.unpack_options(), None)
            });
            let received = stream::receive_archive(
                stream,
                metadata,
                Some(spool),
                settings.max_compressed_bytes,
            )
            .await?;
            let unpack_started = Instant::now();
            let (tree, extracted) = match staged {
                Some(staged) => self.shared.trees.get_or_adopt(&key, staged).await?,
                None => {
                    self.shared
                        .trees
                        .get_or_extract(&key, &archive, self.unpack_options())
                        .await?
                }
            };
            let _ = tokio::fs::remove_file(&archive).await;
            if extracted {
                metrics::UNPACK_SECONDS.observe([], unpack_started.elapsed());
            }
            let result = if extracted { "miss" } else { "hit" };
            metrics::ARCHIVE_CACHE.inc(["tree", result]);
            let stats = tree.stats();
            tracing::debug!(
                compressed = received.compressed_bytes,
                entries = stats.entries,
                bytes = stats.bytes,
                extracted,
                "repository unpacked"
            );
            (tree, received.metadata, None)
        };
        let (app_rel, pending) = match (app_rel(tree.path(), &meta.app_rel_path), pending) {
            (Ok(rel), pending) => (rel, pending),
            // What the tree says about the app path is for a verified stream only.
            (Err(err), Some(Pending { metadata, .. })) => {
                stream::receive_archive(stream, metadata, None, settings.max_compressed_bytes)
                    .await?;
                return Err(err);
            }
            (Err(err), None) => return Err(err),
        };
        let mut tree =
            RepoTree::shared(tree, app_rel, &workdir.repo(), &workdir.tmp()).map_err(|source| {
                RequestError::WorkDir {
                    path: workdir.path().display().to_string(),
                    source,
                }
            })?;
        if let Some(pending) = &pending {
            tree = tree.unverified(pending.verified.subscribe());
        }
        let unpacked = Unpacked {
            input: Input::Tree(tree),
            env,
            app_name: meta.app_name,
            cache_key,
            ahead,
        };
        Ok((Some(workdir), unpacked, pending))
    }

    /// A place among the requests in progress, held until the request is answered. `wait`
    /// (MatchRepository of a command plugin): wait in line under the deadline instead of being
    /// refused, because Argo takes a failed MatchRepository for "no plugin" and renders the
    /// app itself (or fails a named app with "not reachable").
    async fn admit(
        &self,
        wait: bool,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, RequestError> {
        let Some(slots) = &self.shared.settings.request_slots else {
            return Ok(None);
        };
        if wait {
            return slots
                .semaphore
                .clone()
                .acquire_owned()
                .await
                .map(Some)
                .map_err(|_| RequestError::ShuttingDown);
        }
        match slots.semaphore.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => Err(RequestError::Busy { limit: slots.limit }),
        }
    }

    /// Whether a request whose tree is already extracted may render it while its own stream
    /// still arrives (render-cacheable built-in renders only, so no operator command runs, and
    /// only when tools cannot open connections of their own: their network goes through the
    /// fetch proxy, whose session waits for the verification). Saves the receive time, the
    /// larger part of what the sidecar adds to a render of a monorepo's later apps.
    fn renders_before_verified(&self, use_cache: bool) -> bool {
        use_cache && !self.shared.pipeline.renderer.sandbox.tools_may_connect()
    }

    /// Runs `work` while the rest of the stream arrives and is verified, and answers only
    /// once it has: with the stream's error as soon as it fails (`work` is dropped: its tools
    /// are stopped), else with `work`'s result. `work` must wait in `RepoTree::verified`
    /// before any step with an effect beyond the request (secrets, the render cache).
    async fn verify_alongside<S, T>(
        &self,
        stream: &mut S,
        pending: Pending,
        work: impl std::future::Future<Output = Result<T, RequestError>>,
    ) -> Result<T, RequestError>
    where
        S: Stream<Item = Result<AppStreamRequest, Status>> + Unpin,
    {
        let Pending { metadata, verified } = pending;
        let max = self.shared.settings.max_compressed_bytes;
        let verify = async {
            stream::receive_archive(stream, metadata, None, max).await?;
            verified.send_replace(true);
            Ok::<_, RequestError>(())
        };
        tokio::pin!(verify, work);
        let finished = tokio::select! {
            biased;
            v = &mut verify => {
                v?;
                None
            }
            r = &mut work => {
                tracing::debug!("work done before the stream verified; waiting for it");
                Some(r)
            }
        };
        match finished {
            None => work.await,
            Some(result) => {
                verify.await?;
                result
            }
        }
    }

    /// The render-cache key for a GenerateManifest request, known from the metadata alone.
    fn cache_key(&self, metadata: &ManifestRequestMetadata) -> cache::Key {
        let env: Vec<(String, String)> = metadata
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        cache::key(
            &self.plugin.full_name(),
            &metadata.checksum,
            &metadata.app_rel_path,
            &env,
            &self.shared.tool_fingerprint,
        )
    }

    /// Runs `work` under the request deadline; on failure drains the stream (so a Go client
    /// still sending sees our status, not `EOF`) and maps the error.
    async fn handle<T, F, Fut>(
        &self,
        rpc: metrics::Rpc,
        use_cache: bool,
        need: Need,
        request: Request<Streaming<AppStreamRequest>>,
        work: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnOnce(Unpacked, Option<Instant>) -> Fut,
        Fut: std::future::Future<Output = Result<T, RequestError>>,
    {
        let deadline =
            deadline::from_metadata(request.metadata(), self.shared.settings.default_timeout);
        let mut stream = request.into_inner();
        let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
        let _in_flight = metrics::REQUESTS_IN_FLIGHT.track([rpc.name()]);
        let span = info_span!("rpc", rpc = rpc.name(), id, plugin = %self.plugin.full_name(), app = tracing::field::Empty, project = tracing::field::Empty);
        let started = Instant::now();
        let job = async {
            let _slot = self
                .admit(matches!(rpc, metrics::Rpc::MatchRepository))
                .await?;
            let (workdir, unpacked, pending) = self.receive(&mut stream, use_cache, need).await?;
            let span = tracing::Span::current();
            span.record("app", unpacked.env.app_name());
            span.record("project", unpacked.env.project());
            let ignored = crate::pipeline::context::ignored_operator_names(&unpacked.env);
            if !ignored.is_empty() {
                metrics::OPERATOR_OVERRIDES_IGNORED.inc([]);
                warn!(names = ?ignored, "request env names operator settings; ignored (they are set by the operator only)");
            }
            let result = match pending {
                None => work(unpacked, deadline).await,
                Some(pending) => {
                    self.verify_alongside(&mut stream, pending, work(unpacked, deadline))
                        .await
                }
            };
            drop(workdir);
            result
        };
        let result = within(deadline, job).instrument(span.clone()).await;
        let _enter = span.enter();
        match result {
            Ok(resp) => {
                self.answered(rpc, started);
                info!(ms = millis(started.elapsed()), "ok");
                Ok(Response::new(resp))
            }
            Err(err) => Err(self.failed(rpc, started, deadline, &mut stream, &err).await),
        }
    }
}

impl CmpService {
    fn unpack_options(&self) -> UnpackOptions {
        UnpackOptions {
            preserve_file_mode: self.plugin.preserve_file_mode,
            limits: self.shared.settings.unpack_limits,
        }
    }

    /// Whether a GenerateManifest of this app is to be expected after its MatchRepository: the
    /// match claims it (Argo then uses the plugin), or it is a plain app usable by name and a
    /// GenerateManifest of this plugin came for the same archive already (the commit's apps
    /// name the plugin). Plain apps Argo renders itself get no render ahead.
    fn generate_follows(
        &self,
        mode: DiscoverMode,
        outcome: &archive::Outcome,
        metadata: &ManifestRequestMetadata,
    ) -> bool {
        answer(mode, outcome).0
            || (renders(outcome)
                && self
                    .shared
                    .ahead
                    .generated(&self.plugin.full_name(), &metadata.checksum))
    }

    /// A render-ahead's place (`server::ahead`) for the app of `metadata`, when a
    /// GenerateManifest of it could render before its own stream has verified: a built-in
    /// render that the render cache applies to, tools without network of their own, and no
    /// render of it cached or in flight. Only on spare capacity, a render slot free now and at
    /// most [`super::ahead::MAX_IN_FLIGHT`] at once, because the match cannot tell whether a
    /// GenerateManifest follows (an unclaimed app gets one only if its Application names the
    /// plugin). `verified` turns true once the match's stream has verified (until then no
    /// GenerateManifest waits for the render).
    fn ahead_place(
        &self,
        metadata: &ManifestRequestMetadata,
        verified: tokio::sync::watch::Receiver<bool>,
    ) -> Option<AheadPlace> {
        let cache = &self.shared.render_cache;
        if !cache.enabled()
            || !self.renders_before_verified(true)
            || self.shared.pipeline.renderer.slots.available_permits() == 0
        {
            return None;
        }
        let key = self.cache_key(metadata);
        if cache.contains(&key) {
            return None;
        }
        let running = self.shared.ahead.begin(key, verified)?;
        Some(AheadPlace {
            running,
            key,
            app_rel_path: metadata.app_rel_path.clone(),
        })
    }

    /// Starts rendering the app of a MatchRepository whose archive's tree is kept, before the
    /// match's stream has verified ([`CmpService::ahead_place`] says when; `None`: nothing
    /// started). The render is kept only after [`AheadTask::confirm`]; dropped unconfirmed,
    /// it is stopped.
    fn render_ahead(
        &self,
        metadata: &ManifestRequestMetadata,
        env: &RequestEnv,
        deadline: Option<Instant>,
    ) -> Option<AheadTask> {
        let tree = self.shared.trees.ready(&TreeKey::new(
            &metadata.checksum,
            self.plugin.preserve_file_mode,
        ))?;
        let (verified, rx) = tokio::sync::watch::channel(false);
        let place = self.ahead_place(metadata, rx.clone())?;
        let service = self.clone();
        let env = env.clone();
        let task = tokio::spawn(
            async move {
                service
                    .run_ahead(place, tree, Some(rx), env, deadline)
                    .await;
            }
            .in_current_span(),
        );
        Some(AheadTask { verified, task })
    }

    /// The render-ahead of `place`'s app in `tree`: render, wait for `verified` (the match's
    /// stream; `None`: verified already), then keep the render (render cache) and hand it to
    /// the GenerateManifest waiting for it. A failure (the app path too) is left to that
    /// GenerateManifest, which renders and reports for itself; it is logged and counted only
    /// once the match's stream has verified, like everything a render learns of the tree.
    async fn run_ahead(
        &self,
        place: AheadPlace,
        tree: Arc<crate::protocol::trees::Tree>,
        verified: Option<tokio::sync::watch::Receiver<bool>>,
        env: RequestEnv,
        deadline: Option<Instant>,
    ) {
        let AheadPlace {
            running,
            key,
            app_rel_path,
        } = place;
        let gate = verified.clone();
        let render = async {
            let workdir = WorkDir::create(&self.shared.settings.work_root).map_err(|source| {
                RequestError::WorkDir {
                    path: self.shared.settings.work_root.display().to_string(),
                    source,
                }
            })?;
            let app_rel = app_rel(tree.path(), &app_rel_path)?;
            let mut tree = RepoTree::shared(tree, app_rel, &workdir.repo(), &workdir.tmp())
                .map_err(|source| RequestError::WorkDir {
                    path: workdir.path().display().to_string(),
                    source,
                })?;
            if let Some(rx) = verified {
                tree = tree.unverified(rx);
            }
            let r = self
                .shared
                .pipeline
                .render(&self.plugin, &tree, &env, deadline)
                .await?;
            tree.verified().await?;
            let documents = crate::pipeline::substitute::share(r.documents);
            if r.cacheable {
                self.shared
                    .render_cache
                    .insert(key, r.kind.clone(), &documents, &r.alias_budget);
            }
            if !r.tool_stderr.is_empty() {
                info!(stderr = %r.tool_stderr, "tool stderr");
            }
            info!(
                kind = r.kind.name(),
                tool_ms = millis(r.tool_time),
                cached = r.cacheable,
                "rendered ahead"
            );
            running.deliver(cache::Cached {
                kind: r.kind,
                documents,
                alias_budget: r.alias_budget,
            });
            drop(workdir);
            Ok::<_, RequestError>(r.cacheable)
        };
        let rendered = within(deadline, render).await;
        let result = match &rendered {
            Ok(_) => "rendered",
            Err(err) => {
                if let Some(mut gate) = gate
                    && gate.wait_for(|v| *v).await.is_err()
                {
                    return;
                }
                info!(error = %err, "render ahead failed; the GenerateManifest renders for itself");
                "failed"
            }
        };
        metrics::RENDERS_AHEAD.inc([result]);
        if let Ok(false) = rendered {
            // Not in the render cache: findable a moment longer, for a GenerateManifest that
            // asks only after the render ended.
            tokio::time::sleep(super::ahead::HANDOVER_GRACE).await;
        }
        drop(running);
    }

    /// Starts extracting a MatchRepository's archive into a tree nobody sees yet, from its
    /// spool as it arrives, when the archive's tree is neither there nor being made and a
    /// prefetch slot is free (else `None`: best effort, nothing is reported).
    async fn prefetch(&self, checksum: &str) -> Option<Prefetch> {
        let key = TreeKey::new(checksum, self.plugin.preserve_file_mode);
        let slot = self.shared.trees.prefetch_slot(&key)?;
        let workdir = WorkDir::create(&self.shared.settings.work_root).ok()?;
        let archive = workdir.tmp().join("repo.tar.gz");
        let spool = SpoolWriter::create(&archive).await.ok()?;
        let reader = spool.reader(&archive).ok()?;
        let staged = self
            .shared
            .trees
            .stage(&key, reader, self.unpack_options(), Some(slot))?;
        Some(Prefetch {
            key,
            spool,
            staged,
            workdir,
        })
    }

    /// Makes a prefetched extraction, whose stream has verified, the tree of its key, once it
    /// has ended (in the background: the MatchRepository answers meanwhile). Argo sends
    /// GenerateManifest right after a MatchRepository of an app this plugin renders: it finds
    /// the key's slot taken and waits for this extraction instead of starting its own. A
    /// failure is left to that GenerateManifest, which extracts (and reports) itself.
    ///
    /// With `ahead` (the match's own stream has verified), the app is then rendered from that
    /// tree for the GenerateManifest, which finds the render in flight and waits for it.
    fn adopt_prefetch(
        &self,
        key: TreeKey,
        staged: Staged,
        ahead: Option<(AheadPlace, RequestEnv, Option<Instant>)>,
    ) {
        let reserved = self.shared.trees.reserve(&key);
        let service = self.clone();
        let verified = Instant::now();
        tokio::spawn(
            async move {
                let tree = match service.shared.trees.complete(reserved, staged).await {
                    Ok((tree, extracted)) => {
                        if extracted {
                            metrics::UNPACK_SECONDS.observe([], verified.elapsed());
                            metrics::TREE_PREFETCHES.inc([]);
                            tracing::debug!(
                                ms = millis(verified.elapsed()),
                                "repository prefetched"
                            );
                        }
                        tree
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "repository prefetch failed");
                        return;
                    }
                };
                if let Some((place, env, deadline)) = ahead {
                    service.run_ahead(place, tree, None, env, deadline).await;
                }
            }
            .in_current_span(),
        );
    }

    /// MatchRepository of a built-in plugin, decided from the archive as it streams in
    /// (`discovery::archive`), or from the index of an earlier pass over the same archive (the
    /// other apps of a commit). The archive is also extracted as it arrives, and the tree kept
    /// once the stream has verified and the app is one this plugin renders
    /// ([`CmpService::prefetch`], best effort: without a work dir or a free slot it is
    /// skipped). Its admission is a pool of its own (`Settings::match_slots`, waited for under
    /// the deadline, never refused): a scan holds a few reads' worth of memory and one blocking
    /// thread. It answers rather than
    /// fails whenever the repository is readable: a cap hit, an unreadable archive or the
    /// deadline give `isSupported: false, isDiscoveryEnabled: false` (logged), so the app is
    /// never claimed on a guess and stays usable by name. Only a broken stream (no metadata,
    /// transport error, checksum mismatch) is an error.
    async fn match_archive(
        &self,
        builtin: &crate::pipeline::plugin::Builtin,
        request: Request<Streaming<AppStreamRequest>>,
    ) -> Result<Response<RepositoryResponse>, Status> {
        let settings = &self.shared.settings;
        let deadline = deadline::from_metadata(request.metadata(), settings.default_timeout);
        let mut stream = request.into_inner();
        let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
        let rpc = metrics::Rpc::MatchRepository;
        let _in_flight = metrics::REQUESTS_IN_FLIGHT.track([rpc.name()]);
        let span = info_span!("rpc", rpc = rpc.name(), id, plugin = %self.plugin.full_name(), app = tracing::field::Empty, project = tracing::field::Empty);
        let started = Instant::now();
        let mode = if builtin.discover {
            settings.discover
        } else {
            DiscoverMode::Off
        };
        let job = self.discover(builtin, mode, &mut stream, deadline);
        let result = within(deadline, job).instrument(span.clone()).await;
        let _enter = span.enter();
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(RequestError::Deadline) => {
                archive::Outcome::Unknown("deadline reached before the scan ended".to_owned())
            }
            Err(err) => return Err(self.failed(rpc, started, deadline, &mut stream, &err).await),
        };
        self.answered(rpc, started);
        if let (DiscoverMode::All | DiscoverMode::Placeholders, archive::Outcome::Unknown(why)) =
            (mode, &outcome)
        {
            warn!(reason = %why, "discovery could not decide; not claiming the app (usable by name)");
        }
        let (is_supported, is_discovery_enabled) = answer(mode, &outcome);
        info!(
            ms = millis(started.elapsed()),
            discover = ?mode,
            outcome = ?outcome,
            is_supported,
            is_discovery_enabled,
            "ok"
        );
        Ok(Response::new(RepositoryResponse {
            is_supported,
            is_discovery_enabled,
        }))
    }

    /// The discovery outcome of a MatchRepository: admission, metadata, then the archive
    /// (`scan_archive`), and what the request's own env adds.
    async fn discover<S>(
        &self,
        builtin: &crate::pipeline::plugin::Builtin,
        mode: DiscoverMode,
        stream: &mut S,
        deadline: Option<Instant>,
    ) -> Result<archive::Outcome, RequestError>
    where
        S: Stream<Item = Result<AppStreamRequest, Status>> + Unpin,
    {
        let settings = &self.shared.settings;
        let _slot = match &settings.match_slots {
            Some(slots) => Some(
                slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| RequestError::ShuttingDown)?,
            ),
            None => None,
        };
        let metadata = stream::receive_metadata(stream).await?;
        let env = request_env(&metadata);
        let span = tracing::Span::current();
        span.record("app", env.app_name());
        span.record("project", env.project());
        let req = archive::ScanRequest {
            app_rel_path: metadata.app_rel_path.clone(),
            accept: builtin.render,
            markers: mode == DiscoverMode::Placeholders,
            extra: env
                .plugin(crate::pipeline::render::helm::HELM_VALUE_FILES)
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        let (outcome, cut_at_cap) = self
            .scan_archive(stream, metadata, &req, mode, &env, deadline)
            .await?;
        Ok(settle(
            outcome,
            cut_at_cap.then_some(settings.max_compressed_bytes),
            mode,
            &env,
        ))
    }

    /// Receives the archive and decides `req` from it: from the index of an earlier pass over
    /// the same archive, or from a pass over this stream (kept once the stream has verified).
    /// Extracts the archive as it arrives ([`CmpService::prefetch`]) when its tree is not there
    /// yet, and keeps the tree if the app is one this plugin renders.
    /// Also returns whether the stream was over the forwarding cap.
    async fn scan_archive<S>(
        &self,
        stream: &mut S,
        metadata: crate::protocol::pb::ManifestRequestMetadata,
        req: &archive::ScanRequest,
        mode: DiscoverMode,
        env: &RequestEnv,
        deadline: Option<Instant>,
    ) -> Result<(archive::Outcome, bool), RequestError>
    where
        S: Stream<Item = Result<AppStreamRequest, Status>> + Unpin,
    {
        let settings = &self.shared.settings;
        let limits = archive::ScanLimits {
            max_entries: settings.unpack_limits.max_entries,
            max_bytes: settings.unpack_limits.max_extracted_bytes,
            ..archive::ScanLimits::default()
        };
        let checksum = metadata.checksum.clone();
        let markers = req.markers;
        let known = self.shared.scan_indexes.get(&checksum, markers);
        if mode != DiscoverMode::Off {
            let result = if known.is_some() { "hit" } else { "miss" };
            metrics::ARCHIVE_CACHE.inc(["scan_index", result]);
        }
        let prefetch = if mode == DiscoverMode::Off {
            None
        } else {
            self.prefetch(&checksum).await
        };
        let (spool, staged) = match prefetch {
            Some(p) => (Some(p.spool), Some((p.key, p.staged, p.workdir))),
            None => (None, None),
        };
        // For a render ahead once the prefetched tree is there (the first app of a commit).
        let ahead_metadata = staged.is_some().then(|| metadata.clone());
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        // With discovery off, or the archive's index already known, nothing is scanned: the
        // receiver is dropped and chunks are only hashed (the stream is still read to its end,
        // or Go's client fails its send).
        let scan = (mode != DiscoverMode::Off && known.is_none()).then(move || {
            tokio::task::spawn_blocking(move || {
                archive::Index::build(archive::ChannelReader::new(rx), markers, &limits)
            })
        });
        // The outcome is known already when the index is: if a GenerateManifest will follow,
        // the app's render can start now, alongside the rest of this stream (`server::ahead`).
        let ahead = known
            .as_ref()
            .filter(|index| {
                self.generate_follows(
                    mode,
                    &settle(index.evaluate(req), None, mode, env),
                    &metadata,
                )
            })
            .and_then(|_| self.render_ahead(&metadata, env, deadline));
        let forwarded =
            stream::receive_forwarding(stream, metadata, tx, spool, settings.max_compressed_bytes)
                .await?;
        if let Some(ahead) = ahead {
            ahead.confirm();
        }
        // The stream has verified against `checksum`: its index may be used and kept, and the
        // tree extracted from it kept (if the outcome is an app this plugin renders).
        let index = match (scan, known) {
            (Some(task), _) => {
                let index = Arc::new(task.await.map_err(|source| RequestError::Task {
                    task: "discovery scan",
                    source,
                })?);
                if !forwarded.cut_at_cap {
                    self.shared.scan_indexes.insert(&checksum, index.clone());
                }
                Some(index)
            }
            (None, known) => known,
        };
        let outcome = match (mode, index) {
            (DiscoverMode::Off, _) | (_, None) => archive::Outcome::NoApp,
            (_, Some(index)) => index.evaluate(req),
        };
        if let Some((key, staged, _workdir)) = staged {
            // Otherwise `staged` is dropped: cancelled, its directory removed.
            if renders(&outcome) && forwarded.spooled {
                let settled = settle(outcome.clone(), None, mode, env);
                let ahead = ahead_metadata
                    .as_ref()
                    .filter(|m| self.generate_follows(mode, &settled, m))
                    .and_then(|m| self.ahead_place(m, tokio::sync::watch::channel(true).1))
                    .map(|place| (place, env.clone(), deadline));
                self.adopt_prefetch(key, staged, ahead);
            }
        }
        Ok((outcome, forwarded.cut_at_cap))
    }
}

/// Whether an app with this outcome is one the plugin renders: claimed, or plain and so usable
/// by name (Argo sends a named app's GenerateManifest whatever the match answered).
fn renders(outcome: &archive::Outcome) -> bool {
    matches!(
        outcome,
        archive::Outcome::Plain | archive::Outcome::Placeholders
    )
}

/// A MatchRepository's answer `(isSupported, isDiscoveryEnabled)` for a discovery outcome.
fn answer(mode: DiscoverMode, outcome: &archive::Outcome) -> (bool, bool) {
    match (mode, outcome) {
        (DiscoverMode::Off, _) | (_, archive::Outcome::Unknown(_)) => (false, false),
        (DiscoverMode::All, archive::Outcome::NoApp) => (false, true),
        (DiscoverMode::All, _) => (true, true),
        (DiscoverMode::Placeholders, archive::Outcome::Placeholders) => (true, true),
        (DiscoverMode::Placeholders, _) => (false, false),
    }
}

/// What the archive's outcome becomes with the request's own env: placeholders in a plugin env
/// value count as placeholders in the app; `cut_at` (the compressed size cap, when the stream
/// went over it) leaves a placeholder scan undecided.
fn settle(
    outcome: archive::Outcome,
    cut_at: Option<u64>,
    mode: DiscoverMode,
    env: &RequestEnv,
) -> archive::Outcome {
    match (outcome, cut_at) {
        (archive::Outcome::Plain | archive::Outcome::NoApp, Some(cap))
            if mode == DiscoverMode::Placeholders =>
        {
            archive::Outcome::Unknown(format!("compressed repository over {cap} bytes"))
        }
        (archive::Outcome::Plain, _)
            if env.entries().iter().any(|(k, v)| {
                k.starts_with(crate::pipeline::context::PLUGIN_ENV_PREFIX)
                    && archive::MARKERS
                        .iter()
                        .any(|m| v.as_bytes().windows(m.len()).any(|w| w == *m))
            }) =>
        {
            archive::Outcome::Placeholders
        }
        (other, _) => other,
    }
}

/// `appRelPath` as a path relative to the repo root: lexically inside it and naming a real
/// directory (after symlinks, which extraction already confined to the root), with every link
/// resolved, so the same relative path names the app dir in a private copy of the tree.
fn app_rel(root: &Path, rel: &str) -> Result<PathBuf, RequestError> {
    let mut out = root.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            std::path::Component::Normal(p) => out.push(p),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir if out != root => {
                out.pop();
            }
            _ => {
                return Err(RequestError::AppPath(format!(
                    "{rel:?} is out of the work dir bound"
                )));
            }
        }
    }
    let real_root = std::fs::canonicalize(root).map_err(|source| RequestError::WorkDir {
        path: root.display().to_string(),
        source,
    })?;
    match std::fs::canonicalize(&out) {
        Ok(real) if real.starts_with(&real_root) && real.is_dir() => Ok(real
            .strip_prefix(&real_root)
            .map(Path::to_path_buf)
            .unwrap_or_default()),
        Ok(real) if real.starts_with(&real_root) => {
            Err(RequestError::AppPath(format!("{rel:?} is not a directory")))
        }
        Ok(_) => Err(RequestError::AppPath(format!(
            "{rel:?} is out of the work dir bound"
        ))),
        Err(_) => Err(RequestError::AppPath(format!(
            "{rel:?} does not exist in the repository"
        ))),
    }
}

#[tonic::async_trait]
impl ConfigManagementPluginService for CmpService {
    async fn generate_manifest(
        &self,
        request: Request<Streaming<AppStreamRequest>>,
    ) -> Result<Response<ManifestResponse>, Status> {
        self.handle(
            metrics::Rpc::GenerateManifest,
            // Operator commands may depend on more than their inputs (network, time): no cache.
            matches!(self.plugin.kind, crate::pipeline::plugin::Kind::Builtin(_)),
            Need::Tree,
            request,
            |u, deadline| async move {
                let pipeline = &self.shared.pipeline;
                let ahead = match u.ahead {
                    Some(found) => {
                        tracing::debug!("waiting for the render ahead");
                        found.ended().await
                    }
                    None => None,
                };
                let (kind, documents, alias_budget, cached) = match (u.input, ahead) {
                    (Input::Verified, _) => return Err(RequestError::NoCheckout),
                    (Input::Tree(tree), Some(ahead)) => {
                        // Nothing goes further before this request's own stream verified.
                        tree.verified().await?;
                        info!(kind = ahead.kind.name(), "took the render ahead");
                        (ahead.kind, ahead.documents, ahead.alias_budget, true)
                    }
                    (Input::Tree(tree), None) => {
                        let r = pipeline
                            .render(&self.plugin, &tree, &u.env, deadline)
                            .await?;
                        // Rendered maybe before the stream verified; nothing goes further
                        // (the render cache, secrets) before it has.
                        tree.verified().await?;
                        if !r.tool_stderr.is_empty() {
                            info!(stderr = %r.tool_stderr, "tool stderr");
                        }
                        let documents = crate::pipeline::substitute::share(r.documents);
                        if let Some(key) = u.cache_key.filter(|_| r.cacheable) {
                            self.shared.render_cache.insert(
                                key,
                                r.kind.clone(),
                                &documents,
                                &r.alias_budget,
                            );
                        }
                        info!(
                            kind = r.kind.name(),
                            tool_ms = millis(r.tool_time),
                            "rendered"
                        );
                        (r.kind, documents, r.alias_budget, false)
                    }
                    (Input::Cached(hit), _) => (hit.kind, hit.documents, hit.alias_budget, true),
                };
                let started = Instant::now();
                let documents = pipeline
                    .substitute_shared(&self.plugin, documents, &alias_budget, &u.env, deadline)
                    .await?;
                metrics::SUBSTITUTE_SECONDS.observe([], started.elapsed());
                info!(
                    kind = kind.name(),
                    render_cache_hit = cached,
                    objects = documents.len(),
                    substitute_ms = millis(started.elapsed()),
                    app_dir = %u.app_name,
                    "generated"
                );
                Ok(ManifestResponse {
                    manifests: documents
                        .iter()
                        .map(|d| crate::pipeline::manifest::to_json_string(d))
                        .collect(),
                    source_type: String::new(),
                })
            },
        )
        .await
    }

    /// Argo's use of the answer (util/app/discovery/discovery.go, `cmpSupports`, called by
    /// `DetectConfigManagementPlugin`): an error from MatchRepository means "this plugin does
    /// not support the app" (auto-detection goes on to the next socket and finally to Argo's
    /// own kustomize/helm/directory; a named plugin fails with "named cmp service ... not
    /// reachable"). Otherwise the plugin is used when `isSupported` is true; when it is false
    /// the plugin is used only if the Application names it AND `isDiscoveryEnabled` is false.
    /// So a built-in plugin answers `isSupported: false, isDiscoveryEnabled: false` for every
    /// app it does not claim: auto-detection skips it, `plugin.name` still renders it.
    async fn match_repository(
        &self,
        request: Request<Streaming<AppStreamRequest>>,
    ) -> Result<Response<RepositoryResponse>, Status> {
        if let crate::pipeline::plugin::Kind::Builtin(b) = &self.plugin.kind {
            return self.match_archive(b, request).await;
        }
        // Command plugins: Argo's discovery rules on the extracted checkout, as before (their
        // admission waits instead of refusing, see `admit`).
        let discover = self.plugin.discovery_configured();
        self.handle(
            metrics::Rpc::MatchRepository,
            false,
            Need::Tree,
            request,
            |u, deadline| async move {
                let supported = discover
                    && self
                        .shared
                        .pipeline
                        .matches(&self.plugin, u.checkout()?, &u.env, deadline)
                        .await?;
                Ok(RepositoryResponse {
                    is_supported: supported,
                    is_discovery_enabled: discover,
                })
            },
        )
        .await
    }

    async fn get_parameters_announcement(
        &self,
        request: Request<Streaming<AppStreamRequest>>,
    ) -> Result<Response<ParametersAnnouncementResponse>, Status> {
        // Only an operator's dynamic parameters command looks at the repository.
        let need = match &self.plugin.kind {
            crate::pipeline::plugin::Kind::Commands(c) if c.dynamic_parameters.is_some() => {
                Need::Tree
            }
            crate::pipeline::plugin::Kind::Commands(_)
            | crate::pipeline::plugin::Kind::Builtin(_) => Need::Verify,
        };
        self.handle(
            metrics::Rpc::GetParametersAnnouncement,
            false,
            need,
            request,
            |u, deadline| async move {
                let parameters = self
                    .shared
                    .pipeline
                    .parameters(&self.plugin, u.checkout().ok(), &u.env, deadline)
                    .await?;
                let parameter_announcements = parameters
                    .iter()
                    .map(|p| ParameterAnnouncement {
                        name: p.name.clone(),
                        title: p.title.clone(),
                        tooltip: p.tooltip.clone(),
                        required: p.required,
                        item_type: p.item_type.clone(),
                        collection_type: p.collection_type.clone(),
                        string: p.string.clone(),
                        array: p.array.clone(),
                        map: p.map.clone().into_iter().collect(),
                    })
                    .collect();
                Ok(ParametersAnnouncementResponse {
                    parameter_announcements,
                })
            },
        )
        .await
    }

    async fn check_plugin_configuration(
        &self,
        _request: Request<()>,
    ) -> Result<Response<CheckPluginConfigurationResponse>, Status> {
        metrics::request(
            metrics::Rpc::CheckPluginConfiguration,
            self.label,
            tonic::Code::Ok,
            metrics::Reason::Ok,
            Duration::ZERO,
        );
        Ok(Response::new(CheckPluginConfigurationResponse {
            is_discovery_configured: self.plugin.discovery_configured()
                && !(matches!(self.plugin.kind, crate::pipeline::plugin::Kind::Builtin(_))
                    && self.shared.settings.discover == DiscoverMode::Off),
            provide_git_creds: self.plugin.provide_git_creds,
        }))
    }
}

/// `job` under the request's deadline: [`RequestError::Deadline`] if the deadline passes first.
async fn within<T>(
    deadline: Option<Instant>,
    job: impl std::future::Future<Output = Result<T, RequestError>>,
) -> Result<T, RequestError> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, job)
            .await
            .unwrap_or(Err(RequestError::Deadline)),
        None => job.await,
    }
}
