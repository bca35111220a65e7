//! `avp-sidecar call`: talk to a running plugin socket like Argo CD's repo-server does, for
//! demos, debugging a deployed sidecar (`kubectl exec` into the pod) and benchmarks.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use avp_sidecar::protocol::client::{RepoStream, connect};

pub(crate) mod check;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Rpc {
    /// CheckPluginConfiguration
    Check,
    /// MatchRepository
    Match,
    /// GetParametersAnnouncement
    Params,
    /// GenerateManifest: prints the manifests as a YAML stream
    Generate,
}

#[derive(Args, Debug)]
pub(crate) struct CallArgs {
    /// Plugin socket to call.
    #[arg(long)]
    pub socket: PathBuf,
    /// Which RPC to call.
    #[arg(long, value_enum, default_value = "generate")]
    pub rpc: Rpc,
    /// Repository root to send (the whole tree is archived, as the repo-server does).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// App directory relative to the repository root.
    #[arg(long, default_value = ".")]
    pub app_path: String,
    /// Application name (ARGOCD_APP_NAME).
    #[arg(long, default_value = "demo")]
    pub app_name: String,
    /// Destination namespace (ARGOCD_APP_NAMESPACE).
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// AppProject (ARGOCD_APP_PROJECT_NAME).
    #[arg(long, default_value = "default")]
    pub project: String,
    /// Plugin env, as `argocd app create --plugin-env NAME=VALUE` (sent as ARGOCD_ENV_NAME).
    #[arg(long = "plugin-env", value_name = "NAME=VALUE")]
    pub plugin_env: Vec<String>,
    /// Raw request env entries sent as they are (`KUBE_VERSION=1.31.0`, `PARAM_IMAGE_TAG=...`).
    #[arg(long = "request-env", value_name = "NAME=VALUE")]
    pub request_env: Vec<String>,
    /// gRPC deadline in seconds (the repo-server's default is 60).
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Chunk size in bytes (ARGOCD_CMP_CHUNK_SIZE).
    #[arg(long, default_value_t = 1024)]
    pub chunk: usize,
}

fn split(kv: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = kv
        .split_once('=')
        .with_context(|| format!("{kv:?} is not NAME=VALUE"))?;
    Ok((k.to_owned(), v.to_owned()))
}

impl CallArgs {
    fn env(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut env: Vec<(String, String)> = [
            ("ARGOCD_APP_NAME", self.app_name.as_str()),
            ("ARGOCD_APP_NAMESPACE", &self.namespace),
            ("ARGOCD_APP_PROJECT_NAME", &self.project),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for kv in &self.plugin_env {
            let (k, v) = split(kv)?;
            env.push((format!("ARGOCD_ENV_{k}"), v));
        }
        for kv in &self.request_env {
            env.push(split(kv)?);
        }
        Ok(env)
    }
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn call(args: CallArgs) -> anyhow::Result<()> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!("--timeout must be positive");
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut client = connect(&args.socket)
        .await
        .with_context(|| format!("connecting to {}", args.socket.display()))?;
    if let Rpc::Check = args.rpc {
        let r = client.check_plugin_configuration(()).await?.into_inner();
        println!(
            "isDiscoveryConfigured={} provideGitCreds={}",
            r.is_discovery_configured, r.provide_git_creds
        );
        return Ok(());
    }
    let mut stream = RepoStream::for_dir(&args.repo, &args.app_path, args.env()?)
        .with_context(|| format!("archiving {}", args.repo.display()))?;
    stream.chunk = args.chunk;
    let mut req = tonic::Request::new(futures::stream::iter(stream.messages()));
    req.set_timeout(timeout);
    let status = |s: tonic::Status| {
        anyhow::anyhow!("rpc error: code = {:?} desc = {}", s.code(), s.message())
    };
    match args.rpc {
        Rpc::Check => unreachable!("handled above"),
        Rpc::Match => {
            let r = client
                .match_repository(req)
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "isSupported={} isDiscoveryEnabled={}",
                r.is_supported, r.is_discovery_enabled
            );
        }
        Rpc::Params => {
            let r = client
                .get_parameters_announcement(req)
                .await
                .map_err(status)?
                .into_inner();
            for p in r.parameter_announcements {
                println!("{} ({}): {}", p.name, p.title, p.tooltip);
            }
        }
        Rpc::Generate => {
            // Argo's sequence on this one connection: CheckPluginConfiguration,
            // MatchRepository (if discovery is configured), CheckPluginConfiguration,
            // GenerateManifest.
            drop(req);
            let r = avp_sidecar::protocol::client::generate_like_argo(
                &mut client,
                &stream,
                Some(timeout),
            )
            .await
            .map_err(status)?;
            for m in r.manifests {
                let value: serde_json::Value =
                    serde_json::from_str(&m).context("manifest is not JSON")?;
                print!("---\n{}", avp_sidecar::yaml::to_yaml_string(&value));
            }
        }
    }
    Ok(())
}

/// `avp-sidecar generate`: a drop-in for `argocd-vault-plugin generate`.
#[derive(Args, Debug)]
pub(crate) struct GenerateArgs {
    /// A YAML/JSON file, a directory (every .yaml/.yml/.json below it, in lexical order) or `-`
    /// for stdin.
    pub path: PathBuf,
    /// Accept empty input (AVP's behaviour). By default empty input is an error, because it
    /// usually means the command before the pipe failed, and an empty render lets Argo CD prune
    /// every resource of the app.
    #[arg(long)]
    pub allow_empty: bool,
    /// `[namespace:]name` of a Kubernetes Secret holding Vault settings (AVP's `-s`); its values
    /// rank below the environment and `-c`.
    #[arg(short = 's', long = "secret-name")]
    pub secret_name: Option<String>,
    /// AVP's flag, accepted so AVP plugin commands run unchanged: print each Vault read the
    /// manifests need (path, version) to stderr. Unlike AVP, never a value.
    #[arg(long)]
    pub verbose_sensitive_output: bool,
    /// AVP's flag, accepted so AVP plugin commands run unchanged. Nothing to disable: no token
    /// is ever written to disk (AVP caches it in `~/.avp`); a run logs in once.
    #[arg(long)]
    pub disable_token_cache: bool,
    #[command(flatten)]
    pub secrets: avp_sidecar::config::SecretsArgs,
}

/// The documents of stdin (`-`), a file, or a directory read as AVP's `generate <dir>` does
/// (the code of the `argocd-vault-plugin` plugin), and the alias budget of their render (sized
/// by all the input together, as a tool's output would be).
async fn read_documents(
    path: &std::path::Path,
) -> anyhow::Result<(Vec<serde_json::Value>, avp_sidecar::yaml::AliasBudget)> {
    use std::io::Read;
    let parse = |text: &str, name: &str, budget: &avp_sidecar::yaml::AliasBudget| {
        avp_sidecar::pipeline::manifest::split_tool_output(text, budget)
            .with_context(|| format!("could not read {name}"))
    };
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        let budget = avp_sidecar::yaml::AliasBudget::for_output(text.len());
        return Ok((parse(&text, "stdin", &budget)?, budget));
    }
    if path.is_dir() {
        // The operator's own files: the CLI takes them whole, as AVP does.
        return avp_sidecar::pipeline::render::directory::render(path, usize::MAX)
            .await
            .with_context(|| format!("reading {}", path.display()));
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read file {}", path.display()))?;
    let budget = avp_sidecar::yaml::AliasBudget::for_output(text.len());
    let docs = parse(&text, &path.display().to_string(), &budget)?;
    Ok((docs, budget))
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let (docs, alias_budget) = read_documents(&args.path).await?;
    if docs.is_empty() && !args.allow_empty {
        bail!(
            "no manifests in the input (did the command before the pipe fail?); pass --allow-empty to accept it"
        );
    }
    for (i, d) in docs.iter().enumerate() {
        if d.get("kind")
            .and_then(|k| k.as_str())
            .is_none_or(str::is_empty)
        {
            bail!("document {} has no 'kind': not a Kubernetes object", i + 1);
        }
    }
    let backend = match &args.secret_name {
        Some(name) => args.secrets.backend_with_secret(name).await?,
        None => args.secrets.substituter()?.default,
    };
    // In a command plugin (`... | avp-sidecar generate -`) the app context is this process's
    // env, as the repo-server set it for the plugin.
    let process_env = avp_sidecar::pipeline::context::RequestEnv::new(std::env::vars());
    let backend = backend.with_paths(&args.secrets.path_settings()?, &process_env);
    if args.verbose_sensitive_output {
        for read in avp_sidecar::substitute::collect(&docs, &backend.options)? {
            eprintln!("avp-sidecar: reading {read}");
        }
    }
    let concurrency = args.secrets.read_concurrency.max(1);
    // The operator runs `generate`: no path policy or read cap, only the rollout hash if on.
    let rollout = avp_sidecar::features::rollout::RolloutSettings::new(
        args.secrets.rollout_hash,
        &args.secrets.rollout_hash_projects,
    )?;
    let no_policy = avp_sidecar::secrets::policy::Policy::default();
    let guard =
        rollout
            .enabled(process_env.project())
            .then(|| avp_sidecar::pipeline::substitute::Guard {
                policy: &no_policy,
                project: process_env.project(),
                max_reads: usize::MAX,
                rollout_hash: true,
            });
    let reads = avp_sidecar::pipeline::substitute::read_and_apply(
        &backend,
        docs,
        &alias_budget,
        concurrency,
        None,
        guard,
    );
    let out = avp_sidecar::secrets::vault::attributed(process_env.origin(), reads).await?;
    let mut text = String::new();
    for d in &out {
        avp_sidecar::yaml::push_yaml(&mut text, d);
        text.push_str("---\n");
    }
    use std::io::Write;
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing output")?;
    Ok(())
}

/// `avp-sidecar render`: what the repo-server would receive for a local checkout.
#[derive(Args, Debug)]
pub(crate) struct RenderCmdArgs {
    /// Repository root (the whole tree is copied, as the repo-server sends it).
    pub dir: PathBuf,
    /// App directory relative to the repository root.
    #[arg(long, default_value = ".")]
    pub app_path: String,
    /// Plugin whose pipeline to use (a built-in or one in --config-dir).
    #[arg(long, default_value = "avp")]
    pub plugin: String,
    /// Directory of ConfigManagementPlugin definitions.
    #[arg(long, default_value = avp_sidecar::config::DEFAULT_CONFIG_DIR)]
    pub config_dir: PathBuf,
    #[command(flatten)]
    pub app: AppContextArgs,
    /// Leave placeholders in place (no Vault needed).
    #[arg(long)]
    pub no_secrets: bool,
    #[command(flatten)]
    pub render: avp_sidecar::config::RenderArgs,
    #[command(flatten)]
    pub secrets: avp_sidecar::config::SecretsArgs,
}

/// The app context of a local render (`render`, `check`): the same flag names, with one meaning
/// each, as `call` and Argo CD's `--plugin-env`.
#[derive(Args, Debug)]
pub(crate) struct AppContextArgs {
    /// Plugin env `NAME=VALUE`, as `--plugin-env` in Argo CD (sent as `ARGOCD_ENV_NAME`).
    #[arg(long = "plugin-env", value_name = "NAME=VALUE")]
    pub plugin_env: Vec<String>,
    /// Raw request env entries sent as they are (`KUBE_VERSION=1.31.0`, `PARAM_IMAGE_TAG=...`).
    #[arg(long = "request-env", value_name = "NAME=VALUE")]
    pub request_env: Vec<String>,
    /// Application name (`ARGOCD_APP_NAME`; default: the app directory's name, as the
    /// repo-server's default).
    #[arg(long)]
    pub app_name: Option<String>,
    /// Destination namespace (`ARGOCD_APP_NAMESPACE`).
    #[arg(long)]
    pub namespace: Option<String>,
    /// AppProject (`ARGOCD_APP_PROJECT_NAME`): path policy and leak guard are per project.
    #[arg(long, default_value = "default")]
    pub project: String,
}

impl AppContextArgs {
    /// The request env these flags describe for `app_path` of the checkout `dir`.
    pub(crate) fn request_env(
        &self,
        dir: &std::path::Path,
        app_path: &str,
    ) -> anyhow::Result<avp_sidecar::pipeline::context::RequestEnv> {
        use avp_sidecar::pipeline::context::{APP_NAME, APP_NAMESPACE, APP_PROJECT};
        let mut raw = Vec::new();
        if let Some(name) = &self.app_name {
            raw.push(format!("{APP_NAME}={name}"));
        }
        if let Some(ns) = &self.namespace {
            raw.push(format!("{APP_NAMESPACE}={ns}"));
        }
        raw.push(format!("{APP_PROJECT}={}", self.project));
        raw.extend(self.request_env.iter().cloned());
        local_env(dir, app_path, &self.plugin_env, &raw)
    }
}

/// The request env of a local render: plugin env as `ARGOCD_ENV_*`, raw entries as they are,
/// and the repo-server's default app name (the app directory's name) when none is given.
fn local_env(
    dir: &std::path::Path,
    app_path: &str,
    plugin_env: &[String],
    raw: &[String],
) -> anyhow::Result<avp_sidecar::pipeline::context::RequestEnv> {
    let mut env = Vec::new();
    for kv in plugin_env {
        let (k, v) = split(kv)?;
        env.push((format!("ARGOCD_ENV_{k}"), v));
    }
    for kv in raw {
        env.push(split(kv)?);
    }
    if !env
        .iter()
        .any(|(k, _)| k == avp_sidecar::pipeline::context::APP_NAME)
    {
        // Like the repo-server's default for an app at the repo root: the directory's name.
        let app_dir = dir.join(app_path).canonicalize().unwrap_or_default();
        let base = app_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        env.insert(
            0,
            (avp_sidecar::pipeline::context::APP_NAME.to_owned(), base),
        );
    }
    Ok(avp_sidecar::pipeline::context::RequestEnv::new(env))
}

/// Renders a local checkout as the server would (shared by `render` and `check`): the plugin
/// by name, the repository copied through the repo-server's archive and our unpack rules, then
/// discovery and the tool run. Returns the plugin and the render (pre-substitution documents).
pub(crate) async fn render_checkout(
    dir: &std::path::Path,
    app_path: &str,
    plugin_name: &str,
    config_dir: &std::path::Path,
    pipeline: &avp_sidecar::pipeline::Pipeline,
    env: &avp_sidecar::pipeline::context::RequestEnv,
) -> anyhow::Result<(
    avp_sidecar::pipeline::plugin::Plugin,
    avp_sidecar::pipeline::Rendered,
)> {
    use avp_sidecar::pipeline::plugin::Plugin;
    use avp_sidecar::protocol::{client, unpack, workdir::WorkDir};

    let plugin = if config_dir.is_dir() {
        avp_sidecar::pipeline::plugin::load_dir(config_dir)?
            .into_iter()
            .find(|p| p.name == plugin_name || p.full_name() == plugin_name)
    } else {
        None
    }
    .or_else(|| Plugin::builtin(plugin_name))
    .with_context(|| format!("unknown plugin {plugin_name:?}"))?;

    // The same copy the server works on: archive like the repo-server, unpack with its rules.
    let archive = client::tgz_dir(dir).with_context(|| format!("archiving {}", dir.display()))?;
    let work = WorkDir::create(&std::env::temp_dir())?;
    let archive_path = work.tmp().join("repo.tar.gz");
    std::fs::write(&archive_path, &archive)?;
    unpack::unpack(
        &archive_path,
        &work.repo(),
        &unpack::UnpackOptions::default(),
    )?;
    let app_dir = work.repo().join(app_path);
    anyhow::ensure!(
        app_dir.is_dir(),
        "app path {:?} is not a directory in {}",
        app_path,
        dir.display()
    );
    let tree = avp_sidecar::protocol::trees::RepoTree::private(
        &work.repo(),
        std::path::PathBuf::from(app_path),
        &work.tmp(),
    )?;
    let rendered = pipeline.render(&plugin, &tree, env, None).await?;
    Ok((plugin, rendered))
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn render(args: RenderCmdArgs) -> anyhow::Result<()> {
    let env = args.app.request_env(&args.dir, &args.app_path)?;
    let pipeline = avp_sidecar::pipeline::Pipeline {
        renderer: args.render.renderer()?,
        substitute: std::sync::Arc::new(args.secrets.substituter()?),
    };
    let (plugin, rendered) = render_checkout(
        &args.dir,
        &args.app_path,
        &args.plugin,
        &args.config_dir,
        &pipeline,
        &env,
    )
    .await?;
    let documents = if args.no_secrets {
        rendered.documents
    } else {
        pipeline
            .substitute(
                &plugin,
                rendered.documents,
                &rendered.alias_budget,
                &env,
                None,
            )
            .await?
    };
    let mut out = String::new();
    for d in &documents {
        out.push_str("---\n");
        avp_sidecar::yaml::push_yaml(&mut out, d);
    }
    use std::io::Write;
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(())
}

/// `avp-sidecar version`: our version and the tools found.
#[tokio::main(flavor = "current_thread")]
pub(crate) async fn version(args: &avp_sidecar::config::ToolArgs) -> anyhow::Result<()> {
    println!("avp-sidecar {}", env!("CARGO_PKG_VERSION"));
    match args.resolve() {
        Ok((tools, sandbox)) => {
            let server_env: Vec<(String, String)> = std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect();
            for (what, path, version) in tools.versions(&server_env).await {
                match version {
                    Ok(v) => println!("{what} {v} ({})", path.display()),
                    Err(_) => println!("{what} not usable at {}", path.display()),
                }
            }
            println!("{}", sandbox.status_line());
        }
        Err(e) => println!("tools: {e}"),
    }
    Ok(())
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum PluginsCommand {
    /// Convert the `configManagementPlugins` of an argocd-cm ConfigMap (removed in Argo CD 2.8)
    /// into ConfigManagementPlugin files for the sidecar's config dir.
    Import(ImportArgs),
}

#[derive(Args, Debug)]
pub(crate) struct ImportArgs {
    /// The argocd-cm ConfigMap (YAML, e.g. from `kubectl get cm argocd-cm -o yaml`).
    pub file: PathBuf,
    /// Write `<name>.yaml` per plugin into this directory (default: print all to stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Overwrite existing files in --out.
    #[arg(long)]
    pub force: bool,
}

/// Reads and converts an argocd-cm file (shared by `plugins import` and `serve --argocd-cm`).
pub(crate) fn read_argocd_cm(
    file: &std::path::Path,
) -> anyhow::Result<Vec<avp_sidecar::features::argocd_cm::Imported>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(avp_sidecar::features::argocd_cm::import(
        &text,
        &file.display().to_string(),
    )?)
}

/// `avp-sidecar plugins import`: definitions to stdout or `--out`, warnings to stderr.
pub(crate) fn import_plugins(args: &ImportArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let imported = read_argocd_cm(&args.file)?;
    if imported.is_empty() {
        bail!("{}: configManagementPlugins is empty", args.file.display());
    }
    let mut stdout = std::io::stdout().lock();
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for p in &imported {
            let path = dir.join(format!("{}.yaml", p.name));
            if path.exists() && !args.force {
                bail!("{} exists (pass --force to overwrite)", path.display());
            }
        }
    }
    for p in &imported {
        for warning in &p.warnings {
            eprintln!("warning: plugin {}: {warning}", p.name);
        }
        match &args.out {
            Some(dir) => {
                let path = dir.join(format!("{}.yaml", p.name));
                std::fs::write(&path, &p.yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                let kind = match p.plugin.kind {
                    avp_sidecar::pipeline::plugin::Kind::Builtin(_) => "built-in pipeline",
                    avp_sidecar::pipeline::plugin::Kind::Commands(_) => "command plugin",
                };
                writeln!(stdout, "{}: {kind} -> {}", p.name, path.display())?;
            }
            None => write!(stdout, "---\n{}", p.yaml)?,
        }
    }
    Ok(())
}
