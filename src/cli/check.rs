//! `avp-sidecar check`: render a checkout like the sidecar, then lint its placeholders (see
//! `avp_sidecar::features::check`). Exit codes for CI: 0 clean, 1 findings that fail, 2 the check itself
//! could not run (usage, render, configuration).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

use avp_sidecar::features::check::{self, CheckOptions, Level};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
    Sarif,
}

/// Flags of `check`.
#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    /// Repository root (the whole tree is copied, as the repo-server sends it; locations are
    /// reported relative to it).
    pub dir: PathBuf,
    /// App directory relative to the repository root.
    #[arg(long, default_value = ".")]
    pub app_path: String,
    #[command(flatten)]
    pub app: super::AppContextArgs,
    /// Plugin whose pipeline to use (a built-in or one in --config-dir).
    #[arg(long, default_value = "avp")]
    pub plugin: String,
    /// Directory of ConfigManagementPlugin definitions.
    #[arg(long, default_value = avp_sidecar::config::DEFAULT_CONFIG_DIR)]
    pub config_dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Skip every Vault call: grammar, locations, leak and path-policy checks only.
    #[arg(long)]
    pub no_vault: bool,
    /// Read secret data to verify that keys exist (values are never printed). Without it only
    /// metadata and capabilities are asked.
    #[arg(long)]
    pub read_keys: bool,
    /// Warnings fail the check too.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub render: avp_sidecar::config::RenderArgs,
    #[command(flatten)]
    pub secrets: avp_sidecar::config::SecretsArgs,
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let env = args.app.request_env(&args.dir, &args.app_path)?;

    let substituter = std::sync::Arc::new(args.secrets.substituter()?);
    let pipeline = avp_sidecar::pipeline::Pipeline {
        renderer: args.render.renderer()?,
        substitute: substituter.clone(),
    };
    let (_plugin, rendered) = super::render_checkout(
        &args.dir,
        &args.app_path,
        &args.plugin,
        &args.config_dir,
        &pipeline,
        &env,
    )
    .await?;
    let documents = rendered.documents;

    let backend = substituter
        .backend(&env)
        .await?
        .with_paths(&substituter.paths, &env);
    let source = if args.no_vault {
        None
    } else {
        check::require_source(&documents, &backend.options, backend.source.as_ref())?;
        backend.source.clone()
    };
    let report = check::check(
        &documents,
        &CheckOptions {
            repo: &args.dir,
            app_path: &args.app_path,
            project: env.project(),
            policy: &substituter.policy,
            engine: &backend.options,
            source,
            read_keys: args.read_keys,
            concurrency: substituter.concurrency,
        },
    )
    .await?;

    let out = match args.format {
        Format::Text => check::sarif::text(&report),
        Format::Json => check::sarif::json(&report),
        Format::Sarif => check::sarif::sarif(&report),
    };
    std::io::stdout()
        .write_all(out.as_bytes())
        .context("writing the report")?;
    let fails = report.count(Level::Error) > 0 || (args.strict && report.count(Level::Warning) > 0);
    Ok(if fails {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
