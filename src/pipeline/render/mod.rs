//! Runs kustomize or helm for an app and returns the parsed documents. Argument construction
//! (`kustomize.rs`, `helm.rs`) is pure and unit-tested; `tool.rs` is the only process spawner.
//! Never sees secrets: substitution happens after rendering.

pub mod deps;
pub mod directory;
pub(crate) mod helm;
pub(crate) mod kustomize;
pub mod tool;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::metrics;
use crate::pipeline::context::{self, RequestEnv};
use crate::pipeline::discovery::AppKind;
use crate::protocol::trees::RepoTree;
use crate::sandbox::gate;
use crate::yaml::AliasBudget;
use tool::{RunLimits, ToolCommand, ToolError};

/// Where the real tools live (operator configuration).
#[derive(Clone, Debug)]
pub struct ToolPaths {
    /// kustomize, or kubectl (whose embedded kustomize runs as `kubectl kustomize`).
    pub kustomize: PathBuf,
    pub helm: PathBuf,
}

impl ToolPaths {
    /// True when `kustomize` names kubectl, which is called as `kubectl kustomize DIR`.
    pub fn kustomize_is_kubectl(&self) -> bool {
        self.kustomize.file_name().is_some_and(|n| n == "kubectl")
    }

    /// `helm version --short` and kustomize's version, for `avp-sidecar version`: run like
    /// every tool (through `tool::run`, with the child env of an empty request, so no server
    /// secret reaches them), each with a 10 s deadline.
    pub async fn versions(
        &self,
        server_env: &[(String, String)],
    ) -> Vec<(&'static str, PathBuf, Result<String, ToolError>)> {
        let env = context::child_env(server_env, &RequestEnv::default(), &[]);
        let kustomize_args: &[&str] = if self.kustomize_is_kubectl() {
            &["version", "--client"]
        } else {
            &["version"]
        };
        let mut out = Vec::new();
        for (what, program, args) in [
            ("helm", &self.helm, &["version", "--short"][..]),
            ("kustomize", &self.kustomize, kustomize_args),
        ] {
            let cmd = ToolCommand {
                program: program.clone(),
                args: args.iter().map(OsString::from).collect(),
                cwd: std::env::temp_dir(),
                env: env.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            let version = tool::run(&cmd, Some(deadline), RunLimits::default())
                .await
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
            out.push((what, program.clone(), version));
        }
        out
    }
}

/// Everything a render needs besides the request.
#[derive(Clone)]
pub struct Renderer {
    pub tools: ToolPaths,
    /// The server's whole environment, Vault credentials included: `context::child_env` drops
    /// the private names for kustomize and helm; operator command plugins get all of it, as in
    /// Argo CD. Never printed (see the `Debug` impl).
    pub server_env: Vec<(String, String)>,
    pub limits: RunLimits,
    /// Tool runs allowed at once; more wait in line (with their deadline still running).
    pub slots: std::sync::Arc<tokio::sync::Semaphore>,
    pub max_concurrent: usize,
    /// How tool processes are confined (`--tool-sandbox`).
    pub sandbox: crate::sandbox::Sandbox,
    /// Chart fetching (proxy, credentials, dependency cache), shared by all renders.
    pub fetch: std::sync::Arc<crate::fetch::ChartFetch>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("tools", &self.tools)
            .field(
                "server_env",
                &format_args!("{} variables", self.server_env.len()),
            )
            .field("limits", &self.limits)
            .field("max_concurrent", &self.max_concurrent)
            .field("sandbox", &self.sandbox)
            .field("fetch", &self.fetch)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A plugin env value that would change the meaning of a command.
    #[error("invalid {name}: {reason}")]
    InvalidEnv { name: String, reason: String },
    /// The kustomization file could not be read or rewritten.
    #[error("cannot apply plugin settings to {file}: {reason}")]
    Kustomization { file: String, reason: String },
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The tool's output is not valid YAML/JSON.
    #[error("{tool} output: {source}")]
    Output {
        tool: &'static str,
        #[source]
        source: crate::pipeline::manifest::ManifestError,
    },
    /// A manifest file of a plain directory app is not valid YAML/JSON.
    #[error("{file}: {source}")]
    File {
        file: String,
        #[source]
        source: crate::pipeline::manifest::ManifestError,
    },
    /// A plain directory app without manifests (AVP's error).
    #[error("no YAML or JSON files were found in {0}")]
    NoManifests(String),
    /// Asked to render something that is not a built-in app kind.
    #[error("{0} apps are not rendered by the built-in pipeline")]
    NotBuiltin(&'static str),
    /// A helm call (from kustomize's `helmCharts` or our own) broke the gate's rules; the
    /// message names the kustomization, chart and field to fix.
    #[error("helm call refused: {0}")]
    HelmRefused(String),
    /// The deadline passed while waiting for a tool slot.
    #[error("deadline exceeded while waiting for a free render slot ({0} renders run at once)")]
    Queued(usize),
    /// A chart's dependencies could not be fetched (names chart, dependency, repository and
    /// cause).
    #[error(transparent)]
    Dependency(Box<deps::DependencyError>),
    /// The request's private copy of the repository could not be made.
    #[error("preparing a writable checkout: {0}")]
    Checkout(#[from] crate::protocol::trees::TreeError),
    #[error("preparing render in {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What came out of a render, before substitution.
#[derive(Debug)]
pub struct Rendered {
    pub documents: Vec<Value>,
    pub tool_time: Duration,
    /// The tool's stderr (warnings), logged by the caller even on success, like Argo.
    pub stderr: String,
    /// This render's alias budget, sized by the tool's output and partly used by parsing it;
    /// substitution (`yamlParse`) spends the rest.
    pub alias_budget: AliasBudget,
    /// False when the render fetched something whose version can float (a range, `latest`,
    /// no `Chart.lock`): the render cache must not serve it later, so a Hard Refresh sees
    /// upstream changes.
    pub cacheable: bool,
}

/// The kustomization file as seen in `app_dir` (discovery saw it in the shared tree; after
/// [`RepoTree::writable`] the request renders its private copy).
fn in_app_dir(app_dir: &Path, kustomization: &Path) -> PathBuf {
    kustomization
        .file_name()
        .map_or_else(|| kustomization.to_path_buf(), |name| app_dir.join(name))
}

/// Whether a local `helmCharts` chart of this kustomization lacks dependencies in `charts/`.
fn kustomize_charts_need_dependencies(tree: &RepoTree, kustomization: &Path) -> bool {
    let app_dir = tree.app_dir();
    deps::kustomize_local_charts(&in_app_dir(&app_dir, kustomization), tree.root())
        .iter()
        .any(|chart| deps::needs_dependencies(chart))
}

impl Renderer {
    /// Renders the app of `tree` (its app dir; `tree.scratch()` holds helm homes and generated
    /// values files, outside the repository). The tree is the shared read-only one unless a
    /// step needs to write: then it asks `tree.writable()` first (kustomize edits, a
    /// `helmCharts` pull), and every path below is taken after that.
    pub async fn render(
        &self,
        kind: &AppKind,
        tree: &RepoTree,
        env: &RequestEnv,
        deadline: Option<Instant>,
    ) -> Result<Rendered, RenderError> {
        if let AppKind::Directory = kind {
            let (documents, alias_budget) =
                directory::render(&tree.app_dir(), self.limits.max_output_bytes).await?;
            return Ok(Rendered {
                documents,
                tool_time: Duration::ZERO,
                stderr: String::new(),
                alias_budget,
                cacheable: true,
            });
        }
        // Before any path is taken: a write into the tree moves the request to its private copy.
        match kind {
            AppKind::Kustomize { kustomization } => {
                kustomize::apply_plugin_settings(tree, kustomization, env).await?;
                // A `helmCharts` chart pull writes into the chart home below the app (possible
                // when fetching is on or tools may connect), and a local chart may get its
                // dependencies built into its `charts/`.
                let may_pull = self.fetch.off.is_none() || self.sandbox.tools_may_connect();
                if tree.kustomize_may_write()
                    && (may_pull || kustomize_charts_need_dependencies(tree, kustomization))
                {
                    tree.writable().await?;
                }
            }
            AppKind::Helm if deps::needs_dependencies(&tree.app_dir()) => {
                tree.writable().await?;
            }
            _ => {}
        }
        let scratch = tree.scratch();
        let repo = tree.root();
        let app_dir = tree.app_dir();
        let app_dir = app_dir.as_path();
        let mut extra = tool_homes(scratch)?;
        let dirs = gate::Dirs { repo, scratch };
        let mut cacheable = true;
        let (cmd, tool_name, fetching) = match kind {
            AppKind::Command | AppKind::Directory => {
                return Err(RenderError::NotBuiltin(kind.name()));
            }
            AppKind::Kustomize { kustomization } => {
                // Local `helmCharts` charts get their dependencies as a chart app does.
                let kustomization = in_app_dir(app_dir, kustomization);
                let charts = deps::kustomize_local_charts(&kustomization, repo);
                if !charts.is_empty() {
                    let helm_env =
                        crate::pipeline::context::child_env(&self.server_env, env, &extra);
                    let real_repo =
                        std::fs::canonicalize(repo).map_err(|source| RenderError::Io {
                            path: repo.display().to_string(),
                            source,
                        })?;
                    for chart in charts {
                        let prepared = self
                            .prepare_chart_dependencies(
                                &chart, &real_repo, scratch, &helm_env, deadline,
                            )
                            .await?;
                        cacheable &= !prepared.floating;
                    }
                }
                // kustomize reaches helm only through our gate (see `sandbox::gate`).
                for (name, value) in [
                    (gate::GATE_ENV, self.tools.helm.as_path()),
                    (gate::GATE_REPO_ENV, repo),
                    (gate::GATE_SCRATCH_ENV, scratch),
                ] {
                    extra.push((name.to_owned(), value.display().to_string()));
                }
                // `helmCharts` with `repo:` pull through the gate: the fetch proxy, the
                // operator's credentials.
                let fetching = match self.fetch.off {
                    None => Some(self.fetch.run(scratch, tree.verification()).await.map_err(
                        |source| RenderError::Io {
                            path: "chart fetch proxy".to_owned(),
                            source,
                        },
                    )?),
                    Some(_) => None,
                };
                if let Some(run) = &fetching {
                    extra.extend(run.env.iter().cloned());
                }
                let child_env = crate::pipeline::context::child_env(&self.server_env, env, &extra);
                (
                    kustomize::command(&self.tools, &self.sandbox.helper, app_dir, child_env),
                    "kustomize",
                    fetching,
                )
            }
            AppKind::Helm => {
                let settings = helm::HelmSettings::from_env(env)?;
                let mut values = settings.value_files(app_dir, repo, scratch).await?;
                values.extend(settings.write_values_files(scratch).await?);
                let child_env = crate::pipeline::context::child_env(&self.server_env, env, &extra);
                let prepared = self
                    .prepare_chart_dependencies(app_dir, repo, scratch, &child_env, deadline)
                    .await?;
                cacheable = !prepared.floating;
                let cmd = helm::command(&self.tools, app_dir, &settings, &values, child_env);
                let args: Vec<String> = cmd
                    .args
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                // Our own argv: a refusal means a request value slipped past validation.
                gate::check(&args, dirs).map_err(|e| RenderError::HelmRefused(e.to_string()))?;
                (cmd, "helm", None)
            }
        };
        let (read_write, read_only) = (tree.read_write(), tree.read_only());
        let cmd = match &fetching {
            Some(run) => {
                let read_only: Vec<PathBuf> =
                    read_only.iter().chain(&run.read_only).cloned().collect();
                self.sandbox
                    .wrap_fetching(cmd, &read_write, &read_only, run.proxy_port)
            }
            None => self.sandbox.wrap(cmd, &read_write, &read_only),
        };
        let tool = match kind {
            AppKind::Helm => metrics::Tool::Helm,
            _ => metrics::Tool::Kustomize,
        };
        let out = self.run_in_slot(&cmd, tool, deadline).await;
        if let Some(run) = fetching {
            // A remote chart's version can float (kustomize pulls the latest without one).
            cacheable &= run.session.connections() == 0;
            if let (Err(_), Some(denied)) = (&out, run.session.denials().first()) {
                metrics::chart_failure(metrics::ChartFailure::Denied);
                return Err(RenderError::HelmRefused(format!(
                    "kustomize helmCharts: chart fetch refused: {denied}"
                )));
            }
        }
        let out = out.map_err(gate_refusal)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let alias_budget = AliasBudget::for_output(out.stdout.len());
        let mut documents = crate::pipeline::manifest::split_tool_output(&text, &alias_budget)
            .map_err(|source| RenderError::Output {
                tool: tool_name,
                source,
            })?;
        if let (AppKind::Helm, Some(repo)) = (kind, env.setting(APP_REPO)) {
            helm::annotate_repo(&mut documents, &repo);
        }
        Ok(Rendered {
            documents,
            tool_time: out.elapsed,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            alias_budget,
            cacheable,
        })
    }
}

/// A kustomize failure caused by the helm gate becomes the gate's own message (kustomize wraps
/// it in its helm command line and temporary paths, which help nobody).
fn gate_refusal(err: RenderError) -> RenderError {
    if let RenderError::Tool(ToolError::Failed { stderr, .. }) = &err
        && let Some(line) = stderr
            .lines()
            .find_map(|l| l.split_once(gate::REFUSED_PREFIX).map(|(_, msg)| msg))
    {
        metrics::HELM_GATE_REFUSALS.inc([]);
        return RenderError::HelmRefused(line.trim().to_owned());
    }
    err
}

impl Renderer {
    /// Runs a tool once a render slot is free (waiting counts against the deadline). `tool`
    /// names it in the metrics: the wait, the run and how it ended.
    pub async fn run_in_slot(
        &self,
        cmd: &tool::ToolCommand,
        tool: metrics::Tool,
        deadline: Option<Instant>,
    ) -> Result<tool::ToolOutput, RenderError> {
        let queued = Instant::now();
        let waiting = metrics::RENDER_SLOT_WAITING.track([]);
        let acquire = self.slots.clone().acquire_owned();
        let permit = match deadline {
            Some(d) => tokio::time::timeout_at(d, acquire).await.ok(),
            None => Some(acquire.await),
        };
        drop(waiting);
        metrics::RENDER_SLOT_WAIT_SECONDS.observe([], queued.elapsed());
        let Some(Ok(_permit)) = permit else {
            return Err(RenderError::Queued(self.max_concurrent()));
        };
        let _running = metrics::TOOL_RUNS_IN_FLIGHT.track([tool.name()]);
        let started = Instant::now();
        let out = tool::run(cmd, deadline, self.limits).await;
        let result = match &out {
            Ok(_) => metrics::ToolResult::Ok,
            Err(ToolError::Failed { .. }) => metrics::ToolResult::Failed,
            Err(ToolError::Deadline { .. }) => metrics::ToolResult::Deadline,
            Err(ToolError::OutputTooLarge { .. }) => metrics::ToolResult::OutputTooLarge,
            Err(ToolError::Spawn { .. } | ToolError::Io { .. }) => metrics::ToolResult::Error,
        };
        metrics::TOOL_RUNS.inc([tool.name(), result.name()]);
        let took = out
            .as_ref()
            .map_or_else(|_| started.elapsed(), |o| o.elapsed);
        metrics::TOOL_SECONDS.observe([tool.name()], took);
        Ok(out?)
    }

    /// The size of the render queue's window.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }
}

/// Plugin env names with built-in meaning (without the `ARGOCD_ENV_` prefix).
pub const IMAGE_NAME: &str = "IMAGE_NAME";
pub const IMAGE_TAG: &str = "IMAGE_TAG";
pub const APP_REPO: &str = "APP_REPO";

/// The settings a built-in reads (see `RequestEnv::setting`) for what it renders, besides
/// `AVP_SECRET`: its parameter announcements list exactly these (a test holds them together).
pub fn settings(accept: crate::pipeline::discovery::Accept) -> &'static [&'static str] {
    use crate::pipeline::discovery::Accept;
    const KUSTOMIZE: &[&str] = &[IMAGE_NAME, IMAGE_TAG, APP_REPO];
    const ALL: &[&str] = &[
        IMAGE_NAME,
        IMAGE_TAG,
        APP_REPO,
        helm::HELM_VALUE_FILES,
        helm::HELM_VALUES,
        helm::HELM_RELEASE_NAME,
        helm::HELM_ARGS,
    ];
    match accept {
        Accept::Directory => &[],
        Accept::Kustomize => KUSTOMIZE,
        Accept::Helm | Accept::Auto => ALL,
    }
}
/// The annotation `kustomize edit set annotation github.com/url:<repo>` sets in the seed pipeline.
pub const REPO_ANNOTATION: &str = "github.com/url";

/// Per-request HOME and helm directories, so tools never write to shared or read-only places
/// and requests cannot see each other's caches.
fn tool_homes(scratch: &Path) -> Result<Vec<(String, String)>, RenderError> {
    let mut out = Vec::new();
    out.push((
        "HELM_PLUGINS".to_owned(),
        gate::no_plugins_dir(scratch).display().to_string(),
    ));
    for (var, dir) in [("HOME", "home"), ("TMPDIR", "tmp")]
        .into_iter()
        .chain(gate::HELM_HOMES)
    {
        let path = scratch.join(dir);
        std::fs::create_dir_all(&path).map_err(|source| RenderError::Io {
            path: path.display().to_string(),
            source,
        })?;
        out.push((var.to_owned(), path.display().to_string()));
    }
    Ok(out)
}

/// Image settings from `IMAGE_NAME`/`IMAGE_TAG`: both or neither.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageOverride {
    pub name: String,
    /// A tag, or a digest (`sha256:...`).
    pub tag: String,
}

impl ImageOverride {
    pub fn from_env(env: &RequestEnv) -> Result<Option<Self>, RenderError> {
        match (env.setting(IMAGE_NAME), env.setting(IMAGE_TAG)) {
            (None, None) => Ok(None),
            (Some(name), Some(tag)) => {
                validate_image_name(&name)?;
                validate_image_tag(&tag)?;
                Ok(Some(Self {
                    name: name.into_owned(),
                    tag: tag.into_owned(),
                }))
            }
            (Some(_), None) | (None, Some(_)) => Err(RenderError::InvalidEnv {
                name: format!(
                    "{IMAGE_NAME}/{IMAGE_TAG} (parameters, or ARGOCD_ENV_{IMAGE_NAME}/ARGOCD_ENV_{IMAGE_TAG})"
                ),
                reason: "both must be set to change the image".to_owned(),
            }),
        }
    }

    pub fn is_digest(&self) -> bool {
        self.tag.starts_with("sha256:")
    }
}

/// A setting's value is refused; it may have come from the UI parameter or the plugin env
/// (see `RequestEnv::setting`), so both are named.
fn invalid(name: &str, reason: &str) -> RenderError {
    RenderError::InvalidEnv {
        name: format!("{name} (parameter PARAM_{name} or ARGOCD_ENV_{name})"),
        reason: reason.to_owned(),
    }
}

/// An image reference without tag: registry/path components as the distribution spec allows.
fn validate_image_name(v: &str) -> Result<(), RenderError> {
    let ok = v.len() <= 255
        && !v.starts_with(['-', '/', '.'])
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(IMAGE_NAME, "not a valid image name"))
    }
}

/// A tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`) or a `sha256:<64 hex>` digest.
fn validate_image_tag(v: &str) -> Result<(), RenderError> {
    let tag_ok = v.len() <= 128
        && v.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    let digest_ok = v
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()));
    if tag_ok || digest_ok {
        Ok(())
    } else {
        Err(invalid(IMAGE_TAG, "not a valid image tag or sha256 digest"))
    }
}

/// The repository URL for the annotation: one line of printable text.
pub fn validate_repo(v: &str) -> Result<(), RenderError> {
    if v.len() <= 2048 && !v.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(invalid(
            APP_REPO,
            "must be a single line of at most 2048 characters",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::context::testing::request_env as env;

    #[test]
    fn image_override_rules() {
        assert_eq!(ImageOverride::from_env(&env(&[])).ok(), Some(None));
        let ok = env(&[
            ("ARGOCD_ENV_IMAGE_NAME", "ghcr.io/acme/web"),
            ("ARGOCD_ENV_IMAGE_TAG", "1.2.3"),
        ]);
        assert_eq!(
            ImageOverride::from_env(&ok).ok().flatten(),
            Some(ImageOverride {
                name: "ghcr.io/acme/web".into(),
                tag: "1.2.3".into()
            })
        );
        for (name, tag) in [
            ("nginx", "1.0; touch /tmp/x"),
            ("nginx", "$(id)"),
            ("nginx", "-rf"),
            ("--help", "1"),
            ("ng inx", "1"),
            ("nginx", "sha256:abc"),
        ] {
            let e = env(&[
                ("ARGOCD_ENV_IMAGE_NAME", name),
                ("ARGOCD_ENV_IMAGE_TAG", tag),
            ]);
            assert!(ImageOverride::from_env(&e).is_err(), "{name}:{tag}");
        }
        let half = env(&[("ARGOCD_ENV_IMAGE_TAG", "1")]);
        assert!(ImageOverride::from_env(&half).is_err());
    }
}
