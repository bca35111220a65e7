//! The render pipeline shared by the gRPC service and the CLI:
//! discover → render → (documents) → substitute. Plain function calls on plain data.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::context::RequestEnv;
use crate::discovery::{self, AppKind};
use crate::plugin::Plugin;
use crate::render::{RenderError, Renderer};

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
    #[error(transparent)]
    Substitute(#[from] crate::substitute_stage::StageError),
}

/// The result of a render, before substitution.
#[derive(Debug)]
pub struct Rendered {
    pub kind: AppKind,
    pub documents: Vec<Value>,
    pub tool_time: Duration,
    pub tool_stderr: String,
}

/// Everything the pipeline needs besides the request; shared by all requests.
#[derive(Clone)]
pub struct Pipeline {
    pub renderer: Renderer,
    pub substitute: Arc<crate::substitute_stage::Substituter>,
}

impl Pipeline {
    /// Which renderer the plugin would use for this app dir, if any.
    pub fn detect(&self, plugin: &Plugin, app_dir: &Path) -> Option<AppKind> {
        discovery::detect(app_dir, plugin.pipeline.render)
    }

    /// Discovers and renders: the pre-substitution documents.
    pub async fn render(
        &self,
        plugin: &Plugin,
        app_dir: &Path,
        scratch: &Path,
        env: &RequestEnv,
        deadline: Option<Instant>,
    ) -> Result<Rendered, PipelineError> {
        let kind = self
            .detect(plugin, app_dir)
            .ok_or_else(|| PipelineError::NotSupported {
                path: app_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                plugin: plugin.full_name(),
                accept: match plugin.pipeline.render {
                    discovery::Accept::Kustomize => "kustomize apps",
                    discovery::Accept::Helm => "helm charts",
                    discovery::Accept::Auto => "kustomize apps and helm charts",
                },
            })?;
        let out = self
            .renderer
            .render(&kind, app_dir, scratch, env, deadline)
            .await?;
        Ok(Rendered {
            kind,
            documents: out.documents,
            tool_time: out.tool_time,
            tool_stderr: out.stderr,
        })
    }

    /// Fills in placeholders, if the plugin substitutes.
    pub async fn substitute(
        &self,
        plugin: &Plugin,
        documents: Vec<Value>,
        env: &RequestEnv,
        deadline: Option<Instant>,
    ) -> Result<Vec<Value>, PipelineError> {
        if plugin.pipeline.substitute {
            Ok(self.substitute.run(documents, env, deadline).await?)
        } else {
            Ok(documents)
        }
    }
}
