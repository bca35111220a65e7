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
use crate::context::RequestEnv;
use crate::plugin::Plugin;
use crate::protocol::pb::config_management_plugin_service_server::ConfigManagementPluginService;
use crate::protocol::pb::{
    AppStreamRequest, CheckPluginConfigurationResponse, ManifestResponse,
    ParametersAnnouncementResponse, RepositoryResponse,
};
use crate::protocol::repository::ParameterAnnouncement;
use crate::protocol::stream;
use crate::protocol::unpack::{self, UnpackOptions};
use crate::protocol::workdir::WorkDir;

/// Upper bound on draining a failed request's remaining stream.
const MAX_DRAIN: Duration = Duration::from_secs(10);

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

pub struct CmpService {
    plugin: Arc<Plugin>,
    shared: Arc<Shared>,
}

impl CmpService {
    pub fn new(plugin: Plugin, shared: Arc<Shared>) -> Self {
        Self {
            plugin: Arc::new(plugin),
            shared,
        }
    }
}

/// A received and unpacked request. `handle` keeps its `WorkDir` alive until the work future
/// has finished (holding it here would let a closure that captures only some fields drop it
/// early), so this only carries paths into it.
struct Unpacked {
    app_dir: PathBuf,
    /// Private scratch space outside the repository tree.
    scratch: PathBuf,
    env: RequestEnv,
    app_name: String,
}

impl CmpService {
    /// Receives, verifies and unpacks the stream into a fresh work dir.
    async fn receive<S>(&self, stream: &mut S) -> Result<(WorkDir, Unpacked), RequestError>
    where
        S: Stream<Item = Result<AppStreamRequest, Status>> + Unpin,
    {
        let settings = &self.shared.settings;
        let metadata = stream::receive_metadata(stream).await?;
        let workdir = WorkDir::create(&settings.work_root)
            .map_err(|e| RequestError::Internal(format!("creating work dir: {e}")))?;
        let archive = workdir.tmp().join("repo.tar.gz");
        let received =
            stream::receive_archive(stream, metadata, &archive, settings.max_compressed_bytes)
                .await?;
        let opts = UnpackOptions {
            preserve_file_mode: self.plugin.preserve_file_mode,
            limits: settings.unpack_limits,
        };
        let repo = workdir.repo();
        let archive_for_task = archive.clone();
        let stats =
            tokio::task::spawn_blocking(move || unpack::unpack(&archive_for_task, &repo, &opts))
                .await
                .map_err(|e| RequestError::Internal(format!("unpack task: {e}")))??;
        let _ = tokio::fs::remove_file(&archive).await;
        let meta = received.metadata;
        tracing::debug!(
            compressed = received.compressed_bytes,
            entries = stats.entries,
            bytes = stats.bytes,
            "repository unpacked"
        );
        let app_dir = app_dir(&workdir.repo(), &meta.app_rel_path)?;
        let unpacked = Unpacked {
            app_dir,
            scratch: workdir.tmp(),
            env: RequestEnv::new(meta.env.into_iter().map(|e| (e.name, e.value))),
            app_name: meta.app_name,
        };
        Ok((workdir, unpacked))
    }

    /// Runs `work` under the request deadline; on failure drains the stream (so a Go client
    /// still sending sees our status, not `EOF`) and maps the error.
    async fn handle<T, F, Fut>(
        &self,
        rpc: &'static str,
        prefix: &'static str,
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
        let span = info_span!("rpc", rpc, id, plugin = %self.plugin.full_name(), app = tracing::field::Empty, project = tracing::field::Empty);
        let started = Instant::now();
        let result = async {
            let job = async {
                let (workdir, unpacked) = self.receive(&mut stream).await?;
                let span = tracing::Span::current();
                span.record("app", unpacked.env.app_name());
                span.record("project", unpacked.env.project());
                let result = work(unpacked, deadline).await;
                drop(workdir);
                result
            };
            match deadline {
                Some(d) => tokio::time::timeout_at(d, job)
                    .await
                    .unwrap_or(Err(RequestError::Deadline)),
                None => job.await,
            }
        }
        .instrument(span.clone())
        .await;
        let _enter = span.enter();
        match result {
            Ok(resp) => {
                info!(ms = started.elapsed().as_millis() as u64, "ok");
                Ok(Response::new(resp))
            }
            Err(err) => {
                let drain_until = deadline
                    .map(|d| d.min(Instant::now() + MAX_DRAIN))
                    .unwrap_or_else(|| Instant::now() + MAX_DRAIN);
                let _ = tokio::time::timeout_at(drain_until, stream::drain(&mut stream)).await;
                let status = status::to_status(prefix, &err);
                warn!(ms = started.elapsed().as_millis() as u64, code = ?status.code(), error = %status.message(), "failed");
                Err(status)
            }
        }
    }
}

/// `appRelPath` joined to the repo root, lexically inside it and naming a real directory
/// (after symlinks, which extraction already confined to the root).
fn app_dir(root: &Path, rel: &str) -> Result<PathBuf, RequestError> {
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
    let real_root = std::fs::canonicalize(root)
        .map_err(|e| RequestError::Internal(format!("work dir: {e}")))?;
    match std::fs::canonicalize(&out) {
        Ok(real) if real.starts_with(&real_root) && real.is_dir() => Ok(real),
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
            "GenerateManifest",
            "error generating manifests",
            request,
            |u, deadline| async move {
                let generated = self
                    .shared
                    .pipeline
                    .generate(&self.plugin, &u.app_dir, &u.scratch, &u.env, deadline)
                    .await?;
                if !generated.tool_stderr.is_empty() {
                    info!(stderr = %generated.tool_stderr, "tool stderr");
                }
                info!(
                    kind = generated.kind.name(),
                    objects = generated.documents.len(),
                    tool_ms = generated.tool_time.as_millis() as u64,
                    substitute_ms = generated.substitute_time.as_millis() as u64,
                    app_dir = %u.app_name,
                    "rendered"
                );
                let manifests = generated
                    .documents
                    .iter()
                    .map(crate::manifest::to_json_string)
                    .collect();
                Ok(ManifestResponse {
                    manifests,
                    source_type: String::new(),
                })
            },
        )
        .await
    }

    async fn match_repository(
        &self,
        request: Request<Streaming<AppStreamRequest>>,
    ) -> Result<Response<RepositoryResponse>, Status> {
        let discover = self.plugin.pipeline.discover;
        self.handle(
            "MatchRepository",
            "match repository error",
            request,
            |u, _| async move {
                let supported = discover
                    && self
                        .shared
                        .pipeline
                        .detect(&self.plugin, &u.app_dir)
                        .is_some();
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
        self.handle(
            "GetParametersAnnouncement",
            "get parameters announcement error",
            request,
            |_u, _| async move {
                let parameter_announcements = self
                    .plugin
                    .static_parameters
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
        Ok(Response::new(CheckPluginConfigurationResponse {
            is_discovery_configured: self.plugin.pipeline.discover,
            provide_git_creds: self.plugin.provide_git_creds,
        }))
    }
}
