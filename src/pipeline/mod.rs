//! The request path, shared by the gRPC service and the CLI:
//! discover → render → (documents) → substitute. Plain function calls on plain data.

pub mod cache;
pub mod context;
pub(crate) mod discovery;
pub mod manifest;
pub mod plugin;
pub mod render;
pub mod substitute;

use std::path::Path;

use crate::protocol::trees::RepoTree;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::pipeline::context::RequestEnv;
use crate::pipeline::discovery::AppKind;
use crate::pipeline::plugin::{Commands, Kind, Plugin};
use crate::pipeline::render::{RenderError, Renderer};
use crate::yaml::AliasBudget;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The app dir holds nothing this plugin renders.
    #[error(
        "no kustomization or Chart.yaml found in app path {path:?} (plugin {plugin} renders {accept})"
    )]
    NotSupported {
        path: String,
        plugin: String,
        accept: &'static str,
    },
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A discovery rule could not be evaluated.
    #[error("{0}")]
    Discovery(String),
    /// The dynamic parameters command printed something other than a JSON array.
    #[error("error unmarshaling dynamic parameter output into ParametersAnnouncementResponse: {0}")]
    Parameters(String),
    #[error(transparent)]
    Substitute(#[from] crate::pipeline::substitute::StageError),
}

/// The result of a render, before substitution.
#[derive(Debug)]
pub struct Rendered {
    pub kind: AppKind,
    pub documents: Vec<Value>,
    pub tool_time: Duration,
    pub tool_stderr: String,
    /// The render's alias budget (see [`AliasBudget`]): parsing the tool output used some,
    /// substitution must be given the rest ([`Pipeline::substitute`]).
    pub alias_budget: AliasBudget,
    /// Whether the render cache may serve this render later (not when it fetched a chart
    /// whose version can float).
    pub cacheable: bool,
}

/// Everything the pipeline needs besides the request; shared by all requests.
#[derive(Clone)]
pub struct Pipeline {
    pub renderer: Renderer,
    pub substitute: Arc<crate::pipeline::substitute::Substituter>,
}

impl Pipeline {
    /// `MatchRepository` on an extracted checkout: whether the plugin supports the app (only
    /// meaningful when the plugin has discovery configured). The server uses it for command
    /// plugins (Argo's rules); built-in plugins are answered from the archive without
    /// extracting it (`discovery::archive`, `--discover`), and their arm here is the
    /// `--discover all` answer.
    pub async fn matches(
        &self,
        plugin: &Plugin,
        tree: &RepoTree,
        env: &RequestEnv,
        deadline: Option<Instant>,
    ) -> Result<bool, PipelineError> {
        let app_dir = tree.app_dir();
        let app_dir = app_dir.as_path();
        match &plugin.kind {
            Kind::Builtin(b) => Ok(b.discover && discovery::detect(app_dir, b.render).is_some()),
            Kind::Commands(c) => {
                let d = &c.discover;
                if !d.file_name.is_empty() {
                    discovery::go_glob_matches(app_dir, &d.file_name)
                        .map_err(PipelineError::Discovery)
                } else if !d.find.glob.is_empty() {
                    Ok(discovery::zglob_matches(app_dir, &d.find.glob))
                } else if !d.find.command.is_empty() {
                    let argv: Vec<String> =
                        d.find.command.iter().chain(&d.find.args).cloned().collect();
                    let out = self.run_command(c, &argv, tree, env, deadline).await?;
                    // Argo: exit 0 and stdout (one trailing newline removed) not empty.
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    Ok(!stdout.strip_suffix('\n').unwrap_or(&stdout).is_empty())
                } else {
                    Ok(false)
                }
            }
        }
    }

    /// Discovers and renders the app of `tree`: the pre-substitution documents.
    pub async fn render(
        &self,
        plugin: &Plugin,
        tree: &RepoTree,
        env: &RequestEnv,
        deadline: Option<Instant>,
    ) -> Result<Rendered, PipelineError> {
        let builtin = match &plugin.kind {
            Kind::Builtin(b) => b,
            Kind::Commands(c) => {
                return self.render_commands(c, tree, env, deadline).await;
            }
        };
        let app_dir = tree.app_dir();
        let kind = discovery::detect(&app_dir, builtin.render).ok_or_else(|| {
            PipelineError::NotSupported {
                path: app_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                plugin: plugin.full_name(),
                accept: match builtin.render {
                    discovery::Accept::Kustomize => "kustomize apps",
                    discovery::Accept::Helm => "helm charts",
                    discovery::Accept::Auto => "kustomize apps and helm charts",
                    discovery::Accept::Directory => "directories",
                },
            }
        })?;
        let out = self.renderer.render(&kind, tree, env, deadline).await?;
        Ok(Rendered {
            kind,
            documents: out.documents,
            tool_time: out.tool_time,
            tool_stderr: out.stderr,
            alias_budget: out.alias_budget,
            cacheable: out.cacheable,
        })
    }

    /// An operator's `init` + `generate`, as `argocd-cmp-server` runs them.
    async fn render_commands(
        &self,
        c: &Commands,
        tree: &RepoTree,
        env: &RequestEnv,
        deadline: Option<Instant>,
    ) -> Result<Rendered, PipelineError> {
        if let Some(init) = &c.init {
            self.run_command(c, &init.argv(), tree, env, deadline)
                .await?;
        }
        let out = self
            .run_command(c, &c.generate.argv(), tree, env, deadline)
            .await?;
        let text = String::from_utf8_lossy(&out.stdout);
        let alias_budget = AliasBudget::for_output(out.stdout.len());
        let documents = crate::pipeline::manifest::split_tool_output(&text, &alias_budget)
            .map_err(|source| {
                PipelineError::Render(RenderError::Output {
                    tool: "generate command",
                    source,
                })
            })?;
        Ok(Rendered {
            kind: AppKind::Command,
            documents,
            tool_time: out.elapsed,
            tool_stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            alias_budget,
            cacheable: false,
        })
    }

    /// `GetParametersAnnouncement`: dynamic (if any) then static, as Argo lists them. `tree`
    /// is needed (and then given) only for an operator's dynamic parameters command.
    pub async fn parameters(
        &self,
        plugin: &Plugin,
        tree: Option<&RepoTree>,
        env: &RequestEnv,
        deadline: Option<Instant>,
    ) -> Result<Vec<crate::pipeline::plugin::Parameter>, PipelineError> {
        let mut out = Vec::new();
        if let Kind::Commands(c) = &plugin.kind
            && let Some(cmd) = &c.dynamic_parameters
            && let Some(tree) = tree
        {
            let run = self
                .run_command(c, &cmd.argv(), tree, env, deadline)
                .await?;
            let text = String::from_utf8_lossy(&run.stdout);
            let text = text.strip_suffix('\n').unwrap_or(&text);
            out.extend(
                crate::pipeline::plugin::parse_dynamic_parameters(text)
                    .map_err(PipelineError::Parameters)?,
            );
        }
        out.extend(plugin.static_parameters.iter().cloned());
        Ok(out)
    }

    /// Runs an operator-written command: argv, cwd = app dir, the server's whole environment
    /// (as Argo's sidecar does; the operator wrote the command) then the request's. Confined
    /// like the built-in tools when the plugin opts in (`spec.sandbox: true`), with its own
    /// program allowed to execute besides kustomize, helm and avp-sidecar. Operator commands
    /// may write anywhere in the checkout (`init` often does), so they always run in the
    /// request's private copy.
    async fn run_command(
        &self,
        c: &Commands,
        argv: &[String],
        tree: &RepoTree,
        env: &RequestEnv,
        deadline: Option<Instant>,
    ) -> Result<crate::pipeline::render::tool::ToolOutput, PipelineError> {
        tree.writable()
            .await
            .map_err(|e| PipelineError::Render(RenderError::Checkout(e)))?;
        let app_dir = tree.app_dir();
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| PipelineError::Discovery("Command is empty".to_owned()))?;
        let mut child_env = self.renderer.server_env.clone();
        for (k, v) in env
            .entries()
            .iter()
            .filter(|(k, _)| !crate::pipeline::context::is_reserved_name(k))
        {
            child_env.retain(|(name, _)| name != k);
            child_env.push((k.clone(), v.clone()));
        }
        let path_var = child_env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let cmd = crate::pipeline::render::tool::ToolCommand {
            program: program.into(),
            args: args.iter().map(Into::into).collect(),
            cwd: app_dir.to_path_buf(),
            env: child_env,
        };
        let cmd = if c.sandbox {
            let program = crate::sandbox::resolve_program(Path::new(program), &path_var);
            self.renderer
                .sandbox
                .wrap_with(cmd, &tree.read_write(), &tree.read_only(), &program)
        } else {
            cmd
        };
        Ok(self
            .renderer
            .run_in_slot(&cmd, crate::metrics::Tool::Command, deadline)
            .await?)
    }

    /// Fills in placeholders, if the plugin substitutes. `alias_budget` is the render's (from
    /// [`Rendered::alias_budget`]), so `yamlParse` shares it with the parse of the tool output.
    pub async fn substitute(
        &self,
        plugin: &Plugin,
        documents: Vec<Value>,
        alias_budget: &AliasBudget,
        env: &RequestEnv,
        deadline: Option<Instant>,
    ) -> Result<Vec<Value>, PipelineError> {
        if plugin.substitutes() {
            Ok(self
                .substitute
                .run(documents, alias_budget, env, deadline)
                .await?)
        } else {
            Ok(documents)
        }
    }

    /// [`Self::substitute`] on documents shared with the render cache: only the documents
    /// substitution changes are copied (see [`substitute::Substituter::run_shared`]).
    pub async fn substitute_shared(
        &self,
        plugin: &Plugin,
        documents: Vec<Arc<Value>>,
        alias_budget: &AliasBudget,
        env: &RequestEnv,
        deadline: Option<Instant>,
    ) -> Result<Vec<Arc<Value>>, PipelineError> {
        if plugin.substitutes() {
            Ok(self
                .substitute
                .run_shared(documents, alias_budget, env, deadline)
                .await?)
        } else {
            Ok(documents)
        }
    }
}
