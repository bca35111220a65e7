//! The `avp-sidecar` binary: argument parsing and process lifecycle only.

mod cli;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use avp_sidecar::config::ServeArgs;
use avp_sidecar::pipeline::Pipeline;
use avp_sidecar::pipeline::plugin::{self, Plugin};
use avp_sidecar::server::{self, Shared, socket};

/// mimalloc (v3) instead of glibc malloc, so that memory freed after a big render goes back to
/// the OS instead of ratcheting the sidecar towards its memory limit. Measured on the server
/// (`tests/cases/memory.rs`, render cache off): after a 21 MB helm render glibc kept 40 of the
/// 90 MB it grew by resident for good (118 of 267 MB after 64 MB), mimalloc was back within
/// ~10 MB of its idle RSS as soon as its threads next worked (~20 MB after 64 MB). The price:
/// ~18 MB more idle RSS and peaks up to ~1.3× glibc's. Safe to declare (no `unsafe`); the C
/// code is compiled by the `cc` crate into this binary, so the image needs nothing at run time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "avp-sidecar",
    version,
    about = "Argo CD config-management plugin: kustomize/helm + Vault placeholders"
)]
struct Cli {
    /// CLI commands: log progress (info) to stderr, not only warnings. (`serve` logs info
    /// anyway; `ARGOCD_CMP_SERVER_LOGLEVEL` and `RUST_LOG` still win.)
    #[arg(short = 'v', long = "verbose", global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve plugins over unix sockets for Argo CD's repo-server.
    Serve(Box<ServeArgs>),
    /// Fill in placeholders in YAML from a file, directory or stdin (like `argocd-vault-plugin
    /// generate`).
    Generate(Box<cli::GenerateArgs>),
    /// Call a plugin socket like Argo CD's repo-server (debugging, demos).
    Call(Box<cli::CallArgs>),
    /// Render a local checkout exactly as the server would, and print the manifests.
    Render(Box<cli::RenderCmdArgs>),
    /// Render a checkout like the sidecar and check its placeholders: where each comes from,
    /// whether policy and Vault allow and have it (exit 1 on problems; for CI).
    Check(Box<cli::check::CheckArgs>),
    /// Print the version and the helm and kustomize versions found.
    Version(avp_sidecar::config::ToolArgs),
    /// Plugin definitions: import argocd-cm plugins.
    #[command(subcommand)]
    Plugins(cli::PluginsCommand),
}

fn main() -> ExitCode {
    // Two internal modes, decided before argument parsing: kustomize calls us as its helm
    // (the gate names the real helm in the environment), and the server re-executes us to
    // confine a tool run. Neither is a user-facing command.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(
            avp_sidecar::sandbox::helper::SUBCOMMAND,
        ))
    {
        let err = avp_sidecar::sandbox::helper::main(std::env::args_os().skip(2).collect());
        eprintln!("{err}");
        return ExitCode::from(avp_sidecar::sandbox::helper::EXIT_REFUSED);
    }
    // (The helper comes first: it wraps kustomize, whose environment names the gate.)
    if let Some(real_helm) = std::env::var_os(avp_sidecar::sandbox::gate::GATE_ENV) {
        return avp_sidecar::sandbox::gate::run(real_helm);
    }
    let cli = Cli::parse();
    let cli_level = if cli.verbose { "info" } else { "warn" };
    let result = match cli.command {
        Command::Serve(args) => {
            avp_sidecar::telemetry::init("json", "info");
            run_serve(*args)
        }
        Command::Call(args) => cli::call(*args),
        Command::Generate(args) => {
            avp_sidecar::telemetry::init("text", cli_level);
            cli::generate(*args)
        }
        Command::Render(args) => {
            avp_sidecar::telemetry::init("text", cli_level);
            cli::render(*args)
        }
        Command::Check(args) => {
            avp_sidecar::telemetry::init("text", cli_level);
            // 0: clean, 1: findings that fail, 2: the check could not run.
            return match cli::check::run(*args) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("avp-sidecar: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Version(args) => cli::version(&args),
        Command::Plugins(cli::PluginsCommand::Import(args)) => cli::import_plugins(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("avp-sidecar: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn select_plugins(args: &ServeArgs) -> anyhow::Result<Vec<Plugin>> {
    let mut from_dir = if args.config_dir.is_dir() {
        plugin::load_dir(&args.config_dir)?
    } else {
        Vec::new()
    };
    if let Some(cm) = &args.argocd_cm {
        for imported in cli::read_argocd_cm(cm)? {
            for note in &imported.notes {
                tracing::info!(plugin = %imported.name, file = %cm.display(), "argocd-cm import: {note}");
            }
            for warning in &imported.warnings {
                tracing::warn!(plugin = %imported.name, file = %cm.display(), "argocd-cm import: {warning}");
            }
            if from_dir
                .iter()
                .any(|p| p.full_name() == imported.plugin.full_name())
            {
                bail!(
                    "plugin {:?} from {} is also defined in {}",
                    imported.name,
                    cm.display(),
                    args.config_dir.display()
                );
            }
            from_dir.push(imported.plugin);
        }
    }
    if args.plugins.is_empty() {
        if args.socket.is_some() {
            return Ok(vec![
                Plugin::builtin(plugin::DEFAULT_PLUGIN).context("built-in plugin")?,
            ]);
        }
        if !from_dir.is_empty() {
            return Ok(from_dir);
        }
        return Ok(plugin::BUILTIN
            .iter()
            .filter_map(|(name, _)| Plugin::builtin(name))
            .collect());
    }
    args.plugins
        .iter()
        .map(|name| {
            from_dir
                .iter()
                .find(|p| &p.full_name() == name || &p.name == name)
                .cloned()
                .or_else(|| Plugin::builtin(name))
                .ok_or_else(|| plugin::PluginError::Unknown(name.clone()).into())
        })
        .collect()
}

#[tokio::main]
async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let settings = args.settings()?;
    let plugins = select_plugins(&args)?;
    avp_sidecar::sandbox::reaper::harden_server()
        .context("making the server non-dumpable and a child subreaper")?;
    report_sandbox(&settings.renderer.sandbox);
    match settings.renderer.fetch.off {
        None => tracing::info!("chart fetching on (through the fetch proxy)"),
        Some(why) => tracing::info!("{why}: chart dependencies must be vendored"),
    }
    if args.socket.is_some() && plugins.len() != 1 {
        bail!(
            "--socket serves exactly one plugin; {} were selected",
            plugins.len()
        );
    }
    avp_sidecar::protocol::workdir::reset_work_root(&settings.work_root)
        .with_context(|| format!("preparing work dir {}", settings.work_root.display()))?;
    avp_sidecar::protocol::janitor::start(&settings.trash_root)
        .with_context(|| format!("preparing {}", settings.trash_root.display()))?;
    let trees = avp_sidecar::protocol::trees::TreeCache::new(
        &settings.tree_root,
        settings.tree_cache_entries,
        settings.tree_cache_bytes,
    )
    .with_context(|| format!("preparing {}", settings.tree_root.display()))?;
    let tool_fingerprint = avp_sidecar::pipeline::cache::tool_fingerprint(&[
        &settings.renderer.tools.kustomize,
        &settings.renderer.tools.helm,
    ]);
    let render_cache = avp_sidecar::pipeline::cache::RenderCache::new(
        args.render_cache_entries,
        args.render_cache_mb.saturating_mul(1 << 20),
    );
    let mut substituter = args.secrets.substituter()?;
    let (backend_tx, backend_rx) = tokio::sync::watch::channel(None);
    let _vault_check = match (&substituter.default.vault, args.vault_ready_check_seconds) {
        (Some(vault), every) if every > 0 => {
            let _ = backend_tx.send(Some("vault login not checked yet".to_owned()));
            Some(AbortOnDrop(tokio::spawn(check_vault(
                vault.clone(),
                std::time::Duration::from_secs(every),
                backend_tx,
            ))))
        }
        _ => None,
    };
    let rotation = start_rotation(&args, &mut substituter)?;
    let pipeline = Pipeline {
        renderer: settings.renderer.clone(),
        substitute: Arc::new(substituter),
    };
    let shared = Arc::new(Shared::new(
        settings,
        pipeline,
        render_cache,
        trees,
        tool_fingerprint,
    ));

    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let _http = match args.metrics_addr {
        Some(addr) => {
            let listener = server::http::bind(addr)
                .await
                .with_context(|| format!("binding metrics listener {addr}"))?;
            tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
            Some(AbortOnDrop(tokio::spawn(server::http::serve(
                listener, ready_rx, backend_rx,
            ))))
        }
        None => None,
    };
    let _metrics_log = (args.metrics_log_seconds > 0).then(|| {
        let every = std::time::Duration::from_secs(args.metrics_log_seconds);
        AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                tracing::info!(counters = %avp_sidecar::metrics::summary(), "metrics");
            }
        }))
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let mut sockets = Vec::new();
    for plugin in plugins {
        let path = match &args.socket {
            Some(p) => p.clone(),
            None => plugin.socket_path(&shared.settings.socket_dir),
        };
        let (listener, guard) =
            socket::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        tracing::info!(plugin = %plugin.full_name(), socket = %path.display(), "serving");
        sockets.push(guard);
        let mut rx = stop_rx.clone();
        let shutdown = async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        servers.spawn(server::serve(listener, plugin, shared.clone(), shutdown));
    }

    let _ = ready_tx.send(true);
    let signal = signals.recv().await;
    let _ = ready_tx.send(false);
    tracing::info!(signal, "shutting down: draining in-flight requests");
    // Remove the sockets first so the repo-server stops dialing us, then drain.
    drop(sockets);
    let _ = stop_tx.send(true);
    let drain = async {
        while let Some(res) = servers.join_next().await {
            if let Ok(Err(e)) = res {
                tracing::warn!(error = %e, "server ended with an error");
            }
        }
    };
    if tokio::time::timeout(shared.settings.drain_timeout, drain)
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached; exiting with requests in flight");
    }
    if let Some(rotation) = rotation {
        rotation.stop().await;
    }
    // Nothing left behind: the shared trees (each removed once no request holds it) and
    // everything queued for background removal.
    let _ = tokio::task::spawn_blocking(avp_sidecar::sandbox::reaper::kill_all_tools).await;
    shared.trees.clear();
    tokio::task::spawn_blocking(avp_sidecar::protocol::janitor::flush)
        .await
        .context("waiting for background removals")?;
    for dir in [&shared.settings.tree_root, &shared.settings.trash_root] {
        if let Err(err) = std::fs::remove_dir(dir) {
            tracing::warn!(path = %dir.display(), %err, "could not remove at shutdown");
        }
    }
    tracing::info!(counters = %avp_sidecar::metrics::summary(), "stopped");
    Ok(())
}

/// The default Vault backend's login check for `/readyz`: now, then every `every` (each check
/// at most one login attempt, on the session renders share). Changes are logged once.
async fn check_vault(
    vault: Arc<avp_sidecar::secrets::vault::VaultSource>,
    every: std::time::Duration,
    state: tokio::sync::watch::Sender<Option<String>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = vault.check_login().await.err().map(|e| e.to_string());
        avp_sidecar::metrics::VAULT_LOGIN_OK.set([], i64::from(now.is_none()));
        let was = state.borrow().clone();
        if now != was {
            match &now {
                None => tracing::info!("vault login check passed: ready"),
                Some(reason) => {
                    tracing::warn!(reason = %reason, "vault login check failed: not ready")
                }
            }
        }
        let _ = state.send(now);
    }
}

/// Says once, at startup, whether tools run confined: a log line (a warning when off), the
/// `avp_sidecar_tool_sandbox_enabled` gauge and the `/readyz` body.
fn report_sandbox(sandbox: &avp_sidecar::sandbox::Sandbox) {
    let line = sandbox.status_line();
    let on = sandbox.enforced.is_some();
    avp_sidecar::metrics::TOOL_SANDBOX_ON.store(on, std::sync::atomic::Ordering::Relaxed);
    server::http::set_detail(&line);
    if on {
        tracing::info!(connect_ports = ?sandbox.connect_ports, "{line}");
    } else {
        tracing::warn!(
            "{line}: kustomize and helm can read what this process can; see docs/security.md"
        );
    }
}

/// Rotation tracking while serving: the poller, and the index to save at shutdown.
struct Rotation {
    poller: AbortOnDrop<()>,
    tracker: Arc<avp_sidecar::features::rotation::Tracker>,
}

impl Rotation {
    /// Stops polling, then writes the index (`--rotation-state`) once more.
    async fn stop(mut self) {
        self.poller.0.abort();
        let _ = (&mut self.poller.0).await;
        self.tracker.persist().await;
    }
}

/// Rotation tracking (`--rotation-poll-seconds`): the index goes into the substitution stage
/// (loaded from `--rotation-state` if set), the poller runs until serve returns.
fn start_rotation(
    args: &ServeArgs,
    substituter: &mut avp_sidecar::pipeline::substitute::Substituter,
) -> anyhow::Result<Option<Rotation>> {
    let Some(tracker) = args.rotation.tracker()? else {
        return Ok(None);
    };
    if let Some(source) = &substituter.default.source {
        tracker.register("default", source.clone());
    }
    for (project, backend) in &substituter.projects {
        if let Some(source) = &backend.source {
            tracker.register(&format!("project:{project}"), source.clone());
        }
    }
    let loaded = tracker.load()?;
    let kube = args
        .secrets
        .kube()
        .context("rotation tracking needs the Kubernetes API to refresh Applications")?;
    tracing::info!(
        every_seconds = args.rotation.rotation_poll_seconds,
        app_namespace = %args.rotation.rotation_app_namespace,
        max_apps = args.rotation.rotation_max_apps,
        loaded_apps = loaded,
        "rotation tracking on"
    );
    substituter.rotation = Some(tracker.clone());
    Ok(Some(Rotation {
        poller: AbortOnDrop(
            tracker
                .clone()
                .spawn(args.rotation.interval(), Arc::new(kube)),
        ),
        tracker,
    }))
}

/// Aborts a background task when the owner goes away.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// SIGTERM/SIGINT handlers, installed before the first socket is bound: a signal that arrives
/// while the server starts must drain and remove the sockets, not kill the process.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
