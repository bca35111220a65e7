//! Operator configuration of the server: flags, with Argo's environment variables as defaults.
//! Parsed and validated once at startup. Nothing here is ever taken from a request.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::pipeline::render::ToolPaths;
use crate::pipeline::render::tool::RunLimits;
use crate::protocol::unpack::UnpackLimits;

pub mod per_project;
pub use per_project::{PerProject, PerProjectError, ProjectRules};

/// Argo's default directory for plugin sockets, shared with the repo-server.
pub const DEFAULT_SOCKET_DIR: &str = "/home/argocd/cmp-server/plugins";
/// Argo's default directory for plugin definitions.
pub const DEFAULT_CONFIG_DIR: &str = "/home/argocd/cmp-server/config";

/// Which kustomize and helm, and how they are confined: what `version` reports on, and part of
/// every command that renders.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Tools")]
pub struct ToolArgs {
    /// kustomize binary (a name on PATH or a path).
    #[arg(long, env = "AVP_SIDECAR_KUSTOMIZE", default_value = "kustomize")]
    pub kustomize: PathBuf,
    /// helm binary (a name on PATH or a path); also passed to kustomize for helmCharts.
    #[arg(long, env = "AVP_SIDECAR_HELM", default_value = "helm")]
    pub helm: PathBuf,
    /// Confine kustomize and helm with Landlock: `auto` (on where the kernel supports it, else
    /// a warning), `require` (refuse to start without it) or `off`.
    #[arg(
        long,
        env = "AVP_SIDECAR_TOOL_SANDBOX",
        value_enum,
        default_value = "auto"
    )]
    pub tool_sandbox: crate::sandbox::SandboxMode,
    /// TCP ports sandboxed tools may connect to (comma-separated; none by default: tools make
    /// no outbound TCP connections, so charts are not fetched). Needs Landlock ABI 4 (Linux 6.7).
    #[arg(long, env = "AVP_SIDECAR_TOOL_CONNECT_PORTS", value_delimiter = ',')]
    pub tool_connect_ports: Vec<u16>,
}

impl ToolArgs {
    /// The tools, resolved on PATH, and their sandbox (probed once).
    pub fn resolve(&self) -> Result<(ToolPaths, crate::sandbox::Sandbox), ConfigError> {
        let path = std::env::var("PATH").unwrap_or_default();
        let tools = ToolPaths {
            kustomize: resolve_tool("kustomize", &self.kustomize, &path)?,
            helm: resolve_tool("helm", &self.helm, &path)?,
        };
        let sandbox = crate::sandbox::Sandbox::new(
            self.tool_sandbox,
            &[("kustomize", &tools.kustomize), ("helm", &tools.helm)],
            self.tool_connect_ports.clone(),
        )?;
        Ok((tools, sandbox))
    }
}

/// Flags shared by every command that renders (`serve`, `render`, `check`).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Tools")]
pub struct RenderArgs {
    #[command(flatten)]
    pub tools: ToolArgs,
    /// Cap on a tool's captured stdout, in MiB.
    #[arg(long, env = "AVP_SIDECAR_MAX_OUTPUT_MB", default_value_t = 256)]
    pub max_output_mb: usize,
    /// Tool runs at once (more wait in line, deadline still running). Default: 2 per CPU.
    #[arg(long, env = "AVP_SIDECAR_MAX_CONCURRENT_RENDERS")]
    pub max_concurrent_renders: Option<usize>,
    /// Seconds between SIGTERM and SIGKILL of a tool's process group at the deadline.
    #[arg(long, env = "AVP_SIDECAR_KILL_GRACE_SECONDS", default_value_t = 5.0)]
    pub kill_grace_seconds: f64,
    #[command(flatten)]
    pub fetch: crate::fetch::FetchArgs,
}

/// Where secrets come from: AVP's variables in the process environment, optionally a file,
/// optionally operator-allowed Kubernetes Secrets named by requests (`AVP_SECRET`).
#[derive(Args, Clone, Debug, Default)]
pub struct SecretsArgs {
    /// AVP config file (YAML, JSON or KEY=VALUE lines); the process environment wins over it.
    #[arg(
        short = 'c',
        long = "config-path",
        env = "AVP_SIDECAR_AVP_CONFIG",
        help_heading = "Vault"
    )]
    pub config_path: Option<PathBuf>,
    /// Max concurrent secret reads per render.
    #[arg(long, default_value_t = crate::pipeline::substitute::DEFAULT_READ_CONCURRENCY,
        env = "AVP_SIDECAR_READ_CONCURRENCY",
        help_heading = "Vault"
    )]
    pub read_concurrency: usize,
    /// Kubernetes Secrets that requests may name in `AVP_SECRET` (AVP's `-s`), as
    /// `[project=]namespace:name` with `*` wildcards; none by default.
    #[arg(
        long = "avp-secret-allow",
        env = "AVP_SIDECAR_SECRET_ALLOW",
        value_delimiter = ',',
        help_heading = "Vault"
    )]
    pub secret_allow: Vec<String>,
    /// Seconds a secret read is reused by later renders (0: no caching; concurrent reads of
    /// the same path are still shared). Reads pinned to a version are kept until evicted.
    #[arg(
        long,
        env = "AVP_SIDECAR_SECRET_CACHE_TTL_SECONDS",
        default_value_t = 30,
        help_heading = "Vault"
    )]
    pub secret_cache_ttl_seconds: u64,
    /// Max cached secret reads.
    #[arg(
        long,
        env = "AVP_SIDECAR_SECRET_CACHE_MAX_ENTRIES",
        default_value_t = 10_000,
        help_heading = "Vault"
    )]
    pub secret_cache_max_entries: usize,
    /// Max bytes of cached secret data, in MiB.
    #[arg(
        long,
        env = "AVP_SIDECAR_SECRET_CACHE_MAX_MB",
        default_value_t = 64,
        help_heading = "Vault"
    )]
    pub secret_cache_max_mb: usize,
    /// Calls to Vault at once per backend (the default identity, each project's, each config
    /// Secret's): reads, metadata, capability checks; more wait in line under their request's
    /// deadline. 0: no limit.
    #[arg(
        long,
        env = "AVP_SIDECAR_VAULT_MAX_IN_FLIGHT",
        default_value_t = 32,
        help_heading = "Vault"
    )]
    pub vault_max_in_flight: usize,
    /// The secrets mounts placeholders may read, as `MOUNT` or `MOUNT=1|2` (its KV version,
    /// which reads must then use). None (default): any mount but Vault's system mounts
    /// (`auth/`, `sys/`, `identity/`, `cubbyhole/`, always refused), each described by Vault
    /// once (`sys/internal/ui/mounts`) and read only if it is KV of the version read.
    #[arg(
        long = "secret-mounts",
        env = "AVP_SIDECAR_SECRET_MOUNTS",
        value_delimiter = ',',
        value_name = "MOUNT[=1|2]",
        help_heading = "Vault"
    )]
    pub secret_mounts: Vec<String>,
    /// Vault paths a project may read, as `[project=]pattern` (`*` within a path segment, `**`
    /// across); rules without a project apply to every project. None: every path (as AVP).
    #[arg(
        long = "path-allow",
        env = "AVP_SIDECAR_PATH_ALLOW",
        value_delimiter = ',',
        help_heading = "Secret policy"
    )]
    pub path_allow: Vec<String>,
    /// What to do with placeholders outside kind Secret `data`/`stringData` (their values show
    /// in Argo CD unmasked).
    #[arg(
        long,
        env = "AVP_SIDECAR_LEAK_GUARD",
        value_enum,
        default_value = "warn",
        help_heading = "Secret policy"
    )]
    pub leak_guard: crate::secrets::policy::LeakMode,
    /// Per-project leak-guard overrides, `project=allow|warn|deny`.
    #[arg(
        long = "leak-guard-project",
        env = "AVP_SIDECAR_LEAK_GUARD_PROJECTS",
        value_delimiter = ',',
        help_heading = "Secret policy"
    )]
    pub leak_guard_projects: Vec<String>,
    /// Annotate pod templates that use Secrets filled from Vault with a hash of the secret
    /// paths and versions read (`avp.kubernetes.io/secret-versions`), so a new version rolls
    /// the workload on the next sync.
    #[arg(
        long,
        env = "AVP_SIDECAR_ROLLOUT_HASH",
        help_heading = "Rollout hashes and External Secrets"
    )]
    pub rollout_hash: bool,
    /// Per-project overrides of `--rollout-hash`, `project=on|off`.
    #[arg(
        long = "rollout-hash-project",
        env = "AVP_SIDECAR_ROLLOUT_HASH_PROJECTS",
        value_delimiter = ',',
        help_heading = "Rollout hashes and External Secrets"
    )]
    pub rollout_hash_projects: Vec<String>,
    /// A project's own Vault settings, as `project=FILE` (AVP config file format, above the
    /// process env): e.g. its own AppRole, so Vault's policies and audit log see the project.
    /// Projects without one use the default settings.
    #[arg(
        long = "project-vault-config",
        env = "AVP_SIDECAR_PROJECT_VAULT_CONFIG",
        value_delimiter = ',',
        help_heading = "Vault"
    )]
    pub project_vault_config: Vec<String>,
    /// Distinct secret reads (unique path and version) one render may need; more fail the
    /// request before anything is read.
    #[arg(
        long,
        env = "AVP_SIDECAR_MAX_SECRET_READS",
        default_value_t = 1000,
        help_heading = "Vault"
    )]
    pub max_secret_reads: usize,
    /// Vault path for objects that use bare `<KEY>` placeholders without an
    /// `avp.kubernetes.io/path` annotation, as a template over the app context, e.g.
    /// `kv/data/{{namespace}}/{{app}}`. Unset (default): such objects are left alone, as in AVP.
    #[arg(
        long,
        env = "AVP_SIDECAR_DEFAULT_PATH",
        value_name = "TEMPLATE",
        help_heading = "Secret policy"
    )]
    pub default_path: Option<String>,
    /// Render `{{variables}}` in `avp.kubernetes.io/path` annotations and inline `<path:...>`
    /// placeholders. Off (default): `{{` in a path is literal, as in AVP.
    #[arg(
        long,
        env = "AVP_SIDECAR_PATH_TEMPLATES",
        help_heading = "Secret policy"
    )]
    pub path_templates: bool,
    /// Plugin env names whose `ARGOCD_ENV_<NAME>` values path templates and policy rules may use
    /// as `{{env.NAME}}`; none by default (tenants set these values).
    #[arg(
        long = "path-template-env",
        env = "AVP_SIDECAR_PATH_TEMPLATE_ENV",
        value_delimiter = ',',
        value_name = "NAME",
        help_heading = "Secret policy"
    )]
    pub path_template_env: Vec<String>,
    /// Migration to External Secrets: `off` (only Secrets annotated
    /// `avp.kubernetes.io/output: external-secret`), `on` (every Secret with placeholders unless
    /// annotated `secret`), `enforce` (every one, no opt-out).
    #[arg(
        long = "external-secrets",
        env = "AVP_SIDECAR_EXTERNAL_SECRETS",
        value_enum,
        default_value = "off",
        help_heading = "Rollout hashes and External Secrets"
    )]
    pub external_secrets: crate::substitute::external::Mode,
    /// Per-project overrides, `project=off|on|enforce`.
    #[arg(
        long = "external-secrets-project",
        env = "AVP_SIDECAR_EXTERNAL_SECRETS_PROJECTS",
        value_delimiter = ',',
        help_heading = "Rollout hashes and External Secrets"
    )]
    pub external_secrets_projects: Vec<String>,
    /// The External Secrets Operator store the generated ExternalSecrets name (required for
    /// any conversion).
    #[arg(
        long,
        env = "AVP_SIDECAR_EXTERNAL_SECRETS_STORE",
        help_heading = "Rollout hashes and External Secrets"
    )]
    pub external_secrets_store: Option<String>,
    /// Kind of that store: `ClusterSecretStore` or `SecretStore`.
    #[arg(
        long,
        env = "AVP_SIDECAR_EXTERNAL_SECRETS_STORE_KIND",
        default_value = "ClusterSecretStore",
        help_heading = "Rollout hashes and External Secrets"
    )]
    pub external_secrets_store_kind: String,
    /// `spec.refreshInterval` of the generated ExternalSecrets.
    #[arg(
        long,
        env = "AVP_SIDECAR_EXTERNAL_SECRETS_REFRESH",
        default_value = "1h",
        help_heading = "Rollout hashes and External Secrets"
    )]
    pub external_secrets_refresh: String,
    /// Kubernetes API URL (default: in-cluster service).
    #[arg(
        long,
        env = "AVP_SIDECAR_KUBE_API",
        hide = true,
        help_heading = "Vault"
    )]
    pub kube_api: Option<String>,
    /// Service-account token file for the Kubernetes API (default: the in-cluster one).
    #[arg(
        long,
        env = "AVP_SIDECAR_KUBE_TOKEN_PATH",
        hide = true,
        help_heading = "Vault"
    )]
    pub kube_token_path: Option<PathBuf>,
}

impl SecretsArgs {
    fn layers(&self) -> Result<crate::secrets::settings::Layered, ConfigError> {
        Ok(crate::secrets::settings::Layered::from_process(
            self.config_path.as_deref(),
        )?)
    }

    /// The read cache and mount rules every backend gets.
    fn limits(&self) -> Result<crate::pipeline::substitute::BackendLimits, ConfigError> {
        Ok(crate::pipeline::substitute::BackendLimits {
            cache: crate::secrets::cache::CachePolicy {
                ttl: Duration::from_secs(self.secret_cache_ttl_seconds),
                max_entries: self.secret_cache_max_entries.max(1),
                max_bytes: self.secret_cache_max_mb.saturating_mul(1 << 20),
                cache_errors: false,
                max_in_flight: self.vault_max_in_flight,
            },
            mounts: crate::secrets::mounts::SecretMounts::parse(&self.secret_mounts)?,
        })
    }

    /// The Kubernetes API client for config Secrets and rotation refreshes.
    pub fn kube(&self) -> Result<crate::kube::KubeApi, ConfigError> {
        Ok(crate::kube::KubeApi::new(
            self.kube_api.clone(),
            self.kube_token_path.clone(),
        )?)
    }

    /// The substitution stage: Vault from the operator's settings when `AVP_TYPE` is set (else
    /// no source: a render with placeholders then fails saying so), plus config secrets if
    /// the operator allowed any.
    pub fn substituter(&self) -> Result<crate::pipeline::substitute::Substituter, ConfigError> {
        use crate::pipeline::substitute::{Backend, ConfigSecrets, Substituter};
        let layered = self.layers()?;
        let limits = self.limits()?;
        let default = Backend::from_lookup(&layered, "", &limits)?;
        let config_secrets = if self.secret_allow.is_empty() {
            None
        } else {
            let policy = crate::secrets::avp_secret::SecretPolicy::parse(&self.secret_allow)?;
            Some(ConfigSecrets::new(
                self.kube()?,
                policy,
                layered.clone(),
                limits.clone(),
            ))
        };
        let paths = self.path_settings()?;
        let policy = crate::secrets::policy::Policy::with_template_env(
            &self.path_allow,
            self.leak_guard,
            &self.leak_guard_projects,
            &paths.env_names,
        )?;
        let projects = self.project_vault_files()?.try_map(|project, file| {
            let layers = layered.with_project_file(&file)?;
            Backend::from_lookup(&layers, &format!(" (project {project})"), &limits)
                .map_err(ConfigError::from)
        })?;
        Ok(Substituter {
            default,
            projects,
            config_secrets,
            concurrency: self.read_concurrency.max(1),
            policy,
            max_reads: self.max_secret_reads,
            external_secrets: self.external_secrets()?,
            paths,
            rollout: crate::features::rollout::RolloutSettings::new(
                self.rollout_hash,
                &self.rollout_hash_projects,
            )?,
            rotation: None,
            leak_warnings: Default::default(),
        })
    }

    /// `--project-vault-config`: each project's AVP config file (read by the caller).
    fn project_vault_files(&self) -> Result<PerProject<PathBuf>, PerProjectError> {
        PerProject::parse(
            "--project-vault-config",
            &self.project_vault_config,
            |file| Ok(PathBuf::from(file)),
        )
    }

    /// Path templates, parsed once so a bad template stops the server at startup.
    pub fn path_settings(
        &self,
    ) -> Result<crate::secrets::path_template::PathSettings, ConfigError> {
        Ok(crate::secrets::path_template::PathSettings::new(
            self.default_path.as_deref(),
            self.path_templates,
            &self.path_template_env,
        )?)
    }

    fn external_secrets(
        &self,
    ) -> Result<crate::pipeline::substitute::ExternalSecrets, ConfigError> {
        use crate::substitute::external::{Mode, Store};
        if !["ClusterSecretStore", "SecretStore"]
            .contains(&self.external_secrets_store_kind.as_str())
        {
            return Err(ConfigError::StoreKind(
                self.external_secrets_store_kind.clone(),
            ));
        }
        let projects = PerProject::<Mode>::parse_enum(
            "--external-secrets-project",
            &self.external_secrets_projects,
        )?;
        let store = self
            .external_secrets_store
            .as_ref()
            .filter(|s| !s.trim().is_empty())
            .map(|name| Store {
                name: name.trim().to_owned(),
                kind: self.external_secrets_store_kind.clone(),
                refresh_interval: self.external_secrets_refresh.clone(),
            });
        let converting =
            self.external_secrets != Mode::Off || projects.values().any(|m| *m != Mode::Off);
        if converting && store.is_none() {
            return Err(ConfigError::NoStore);
        }
        Ok(crate::pipeline::substitute::ExternalSecrets {
            store,
            mode: self.external_secrets,
            projects,
        })
    }

    /// The backend for the CLI's `-s NAME`: the operator runs the CLI, so no policy applies.
    pub async fn backend_with_secret(
        &self,
        name: &str,
    ) -> Result<crate::pipeline::substitute::Backend, crate::pipeline::substitute::StageError> {
        use crate::pipeline::substitute::{Backend, StageError};
        let cli = |source| StageError::CliSecret {
            name: name.to_owned(),
            source,
        };
        let secret = crate::secrets::avp_secret::SecretName::parse(name).map_err(cli)?;
        let api = crate::kube::KubeApi::new(self.kube_api.clone(), self.kube_token_path.clone())
            .map_err(|e| cli(e.into()))?;
        let data = crate::secrets::avp_secret::read(&api, &secret)
            .await
            .map_err(cli)?;
        let layered = crate::secrets::settings::Layered::from_process(self.config_path.as_deref())
            .map_err(|source| StageError::Config {
                origin: String::new(),
                source,
            })?
            .with_secret(data);
        let limits = self.limits().map_err(StageError::Settings)?;
        Backend::from_lookup(&layered, &format!(" (with secret {secret})"), &limits)
    }
}

/// Flags of `serve`.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Serve exactly this socket path (one plugin: `--plugin`, or the built-in `avp`).
    #[arg(long, env = "AVP_SIDECAR_SOCKET", help_heading = "Plugins and sockets")]
    pub socket: Option<PathBuf>,
    /// Plugins to serve, by name: built-ins (`avp`, `avp-kustomize`, `avp-helm`) or
    /// definitions in the config dir. Default: every definition in the config dir, or all
    /// built-ins when it has none.
    #[arg(
        long = "plugin",
        env = "AVP_SIDECAR_PLUGINS",
        value_delimiter = ',',
        help_heading = "Plugins and sockets"
    )]
    pub plugins: Vec<String>,
    /// Directory of ConfigManagementPlugin definitions (`*.yaml`, `*.yml`).
    #[arg(long, default_value = DEFAULT_CONFIG_DIR,
        env = "AVP_SIDECAR_CONFIG_DIR",
        help_heading = "Plugins and sockets"
    )]
    pub config_dir: PathBuf,
    /// An argocd-cm ConfigMap whose `configManagementPlugins` are served as well (converted
    /// as `plugins import` does; warnings are logged).
    #[arg(
        long = "argocd-cm",
        env = "AVP_SIDECAR_ARGOCD_CM",
        value_name = "FILE",
        help_heading = "Plugins and sockets"
    )]
    pub argocd_cm: Option<PathBuf>,
    /// Directory for plugin sockets.
    #[arg(long, env = "ARGOCD_PLUGINSOCKFILEPATH", default_value = DEFAULT_SOCKET_DIR,
        help_heading = "Plugins and sockets"
    )]
    pub socket_dir: PathBuf,
    /// Base of per-request work dirs (`<dir>/_cmp_server`; default: $TMPDIR or /tmp).
    #[arg(long, env = "ARGOCD_CMP_WORKDIR", help_heading = "Requests and limits")]
    pub workdir: Option<PathBuf>,
    /// Max gRPC message size in MiB, both directions (Argo's default is 100).
    #[arg(
        long,
        env = "ARGOCD_GRPC_MAX_SIZE_MB",
        default_value_t = 100,
        help_heading = "Requests and limits"
    )]
    pub max_message_mb: usize,
    /// Max compressed repository size in MiB.
    #[arg(
        long,
        env = "AVP_SIDECAR_MAX_COMPRESSED_MB",
        default_value_t = 512,
        help_heading = "Requests and limits"
    )]
    pub max_compressed_mb: u64,
    /// Max extracted repository size in MiB.
    #[arg(
        long,
        env = "AVP_SIDECAR_MAX_EXTRACTED_MB",
        default_value_t = 2048,
        help_heading = "Requests and limits"
    )]
    pub max_extracted_mb: u64,
    /// Max number of entries in a repository archive.
    #[arg(
        long,
        env = "AVP_SIDECAR_MAX_ENTRIES",
        default_value_t = 200_000,
        help_heading = "Requests and limits"
    )]
    pub max_entries: u64,
    /// Max length in bytes of a path inside a repository archive.
    #[arg(
        long,
        env = "AVP_SIDECAR_MAX_PATH_BYTES",
        default_value_t = 4096,
        help_heading = "Requests and limits"
    )]
    pub max_path_bytes: usize,
    /// Max directory depth of a path inside a repository archive.
    #[arg(
        long,
        env = "AVP_SIDECAR_MAX_PATH_DEPTH",
        default_value_t = 128,
        help_heading = "Requests and limits"
    )]
    pub max_path_depth: usize,
    /// Deadline in seconds for requests that carry none (0 = none, as Argo's server). The
    /// repo-server always sends one; this bounds other clients.
    #[arg(
        long,
        env = "AVP_SIDECAR_DEFAULT_TIMEOUT_SECONDS",
        default_value_t = 300,
        help_heading = "Requests and limits"
    )]
    pub default_timeout_seconds: u64,
    /// Streaming requests in progress at once (each holds a spooled archive and an extracted
    /// repository on disk); more are refused with RESOURCE_EXHAUSTED. 0: no limit.
    #[arg(
        long,
        env = "AVP_SIDECAR_MAX_CONCURRENT_REQUESTS",
        default_value_t = 128,
        help_heading = "Requests and limits"
    )]
    pub max_concurrent_requests: usize,
    /// Which apps the built-in plugins with `discover: true` claim in MatchRepository (Argo's
    /// auto-detection): `placeholders` (a kustomization or Chart.yaml AND AVP placeholder text
    /// in the app's files), `all` (every kustomization / Chart.yaml) or `off` (none). Unclaimed
    /// apps are still rendered when an Application names the plugin.
    #[arg(
        long,
        env = "AVP_SIDECAR_DISCOVER",
        value_enum,
        default_value = "placeholders",
        help_heading = "Discovery and caches"
    )]
    pub discover: DiscoverMode,
    /// Memory for rendered output reused across requests with identical inputs, in MiB
    /// (0 disables the render cache).
    #[arg(
        long,
        env = "AVP_SIDECAR_RENDER_CACHE_MB",
        default_value_t = 128,
        help_heading = "Discovery and caches"
    )]
    pub render_cache_mb: usize,
    /// Max renders kept in the render cache.
    #[arg(
        long,
        env = "AVP_SIDECAR_RENDER_CACHE_ENTRIES",
        default_value_t = 512,
        help_heading = "Discovery and caches"
    )]
    pub render_cache_entries: usize,
    /// Disk for extracted repositories kept between requests, in MiB: an archive (one commit)
    /// is extracted once and shared read-only by every request that sends it (MatchRepository,
    /// GenerateManifest, every app of a monorepo). Least recently used trees go first; a tree
    /// larger than this is used by its requests and not kept. 0: nothing kept.
    #[arg(
        long,
        env = "AVP_SIDECAR_TREE_CACHE_MB",
        default_value_t = 512,
        help_heading = "Discovery and caches"
    )]
    pub tree_cache_mb: u64,
    /// Max extracted repositories kept (see `--tree-cache-mb`).
    #[arg(
        long,
        env = "AVP_SIDECAR_TREE_CACHE_ENTRIES",
        default_value_t = 64,
        help_heading = "Discovery and caches"
    )]
    pub tree_cache_entries: usize,
    /// Address for `/metrics`, `/healthz` and `/readyz` (e.g. `0.0.0.0:9090`); off by default.
    #[arg(long, env = "AVP_SIDECAR_METRICS_ADDR", help_heading = "Observability")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// With a Vault backend (`AVP_TYPE=vault`), seconds between checks that it still accepts
    /// the sidecar's login (`/readyz` answers 503 with the reason while it does not). Each
    /// check reuses the shared session and makes at most one login attempt. 0: no check.
    #[arg(
        long,
        env = "AVP_SIDECAR_VAULT_READY_CHECK_SECONDS",
        default_value_t = 30,
        help_heading = "Observability"
    )]
    pub vault_ready_check_seconds: u64,
    /// Seconds between log lines with all counters (0: never).
    #[arg(
        long,
        default_value_t = 300,
        env = "AVP_SIDECAR_METRICS_LOG_SECONDS",
        help_heading = "Observability"
    )]
    pub metrics_log_seconds: u64,
    /// How long to wait for in-flight requests on SIGTERM before exiting.
    #[arg(
        long,
        default_value_t = 30,
        env = "AVP_SIDECAR_DRAIN_SECONDS",
        help_heading = "Requests and limits"
    )]
    pub drain_seconds: u64,
    #[command(flatten)]
    pub render: RenderArgs,
    #[command(flatten)]
    pub secrets: SecretsArgs,
    #[command(flatten)]
    pub rotation: crate::features::rotation::RotationArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{what} {name:?} not found on PATH")]
    ToolNotFound { what: &'static str, name: String },
    #[error("invalid setting: {0}")]
    PerProject(#[from] PerProjectError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchConfigError),
    /// AVP settings (env, `--config-path`, a project's file) that cannot be read or parsed.
    #[error("invalid setting: {0}")]
    VaultSettings(#[from] crate::secrets::settings::SettingsError),
    /// A Vault backend that cannot be built from valid-looking settings.
    #[error("invalid setting: {0}")]
    Backend(#[source] Box<crate::pipeline::substitute::StageError>),
    #[error("invalid setting: {0}")]
    Mounts(#[from] crate::secrets::mounts::BadMount),
    #[error("invalid setting: {0}")]
    Kube(#[from] crate::kube::SetupError),
    #[error("invalid setting: {0}")]
    PathTemplate(#[from] crate::secrets::path_template::PathTemplateError),
    #[error(
        "invalid setting: --external-secrets-store-kind {0:?}: expected ClusterSecretStore or SecretStore"
    )]
    StoreKind(String),
    #[error("invalid setting: --external-secrets on/enforce needs --external-secrets-store")]
    NoStore,
    #[error("invalid setting: --kill-grace-seconds {0}: must be a finite number of seconds >= 0")]
    KillGrace(f64),
    /// Paths below the work dir reach helm's `--values`, which splits on `,` and parses quotes.
    #[error("invalid setting: --workdir {0}: must be UTF-8 without ',', '\"' or line breaks")]
    WorkDir(String),
}

impl From<crate::pipeline::substitute::StageError> for ConfigError {
    fn from(e: crate::pipeline::substitute::StageError) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// `--discover`: what auto-detection may route to the built-in plugins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DiscoverMode {
    /// Every app with a kustomization / Chart.yaml (the behaviour before this flag).
    All,
    /// Only those whose files hold AVP placeholder text (`<path:` or `avp.kubernetes.io/`).
    #[default]
    Placeholders,
    /// None: the built-in plugins are used by name only.
    Off,
}

/// Validated server settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub socket_dir: PathBuf,
    /// Per-request work dirs (`req-*`).
    pub work_root: PathBuf,
    /// Shared extracted repositories (`trees::TreeCache`), beside the work root.
    pub tree_root: PathBuf,
    /// Where the janitor stages directories to delete in the background (same file system).
    pub trash_root: PathBuf,
    /// `--tree-cache-mb` in bytes and `--tree-cache-entries`.
    pub tree_cache_bytes: u64,
    pub tree_cache_entries: usize,
    pub max_message_bytes: usize,
    pub max_compressed_bytes: u64,
    pub unpack_limits: UnpackLimits,
    pub default_timeout: Option<Duration>,
    /// Admission for streaming requests; `None` when unlimited.
    pub request_slots: Option<RequestSlots>,
    /// Admission for built-in plugins' MatchRepository (archive scans in memory, nothing on
    /// disk): its own pool of the same size as `request_slots`, waited for (under the
    /// deadline), never refused.
    pub match_slots: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    pub discover: DiscoverMode,
    pub drain_timeout: Duration,
    pub renderer: crate::pipeline::render::Renderer,
}

/// The cap on streaming requests in progress.
#[derive(Clone, Debug)]
pub struct RequestSlots {
    pub semaphore: std::sync::Arc<tokio::sync::Semaphore>,
    pub limit: usize,
}

impl RenderArgs {
    pub fn renderer(&self) -> Result<crate::pipeline::render::Renderer, ConfigError> {
        let server_env: Vec<(String, String)> = std::env::vars().collect();
        let max_concurrent = self
            .max_concurrent_renders
            .unwrap_or_else(|| {
                2 * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            })
            .max(1);
        if !(self.kill_grace_seconds.is_finite() && self.kill_grace_seconds >= 0.0) {
            return Err(ConfigError::KillGrace(self.kill_grace_seconds));
        }
        let (tools, sandbox) = self.tools.resolve()?;
        let net_enforced = sandbox.enforced.is_some_and(|s| s.net);
        let fetch = std::sync::Arc::new(self.fetch.build(net_enforced)?);
        Ok(crate::pipeline::render::Renderer {
            tools,
            sandbox,
            fetch,
            server_env,
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(max_concurrent)),
            max_concurrent,
            limits: RunLimits {
                max_output_bytes: self.max_output_mb.saturating_mul(1 << 20),
                kill_grace: Duration::from_secs_f64(self.kill_grace_seconds),
            },
        })
    }
}

impl ServeArgs {
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let base = self.workdir.clone().unwrap_or_else(std::env::temp_dir);
        // Absolute, because the helm gate and the tool sandbox compare absolute paths.
        let base = std::path::absolute(&base).unwrap_or(base);
        // Paths below it reach helm's `--values`, which splits on `,` and parses quotes.
        if base
            .to_str()
            .is_none_or(|b| b.contains([',', '"', '\n', '\r']))
        {
            return Err(ConfigError::WorkDir(base.display().to_string()));
        }
        Ok(Settings {
            socket_dir: self.socket_dir.clone(),
            work_root: base.join("_cmp_server"),
            tree_root: base.join("_avp_trees"),
            trash_root: base.join("_avp_trash"),
            tree_cache_bytes: self.tree_cache_mb.saturating_mul(1 << 20),
            tree_cache_entries: self.tree_cache_entries,
            max_message_bytes: self.max_message_mb.saturating_mul(1 << 20),
            max_compressed_bytes: self.max_compressed_mb.saturating_mul(1 << 20),
            unpack_limits: UnpackLimits {
                max_extracted_bytes: self.max_extracted_mb.saturating_mul(1 << 20),
                max_entries: self.max_entries,
                max_path_bytes: self.max_path_bytes,
                max_path_depth: self.max_path_depth,
            },
            default_timeout: (self.default_timeout_seconds > 0)
                .then(|| Duration::from_secs(self.default_timeout_seconds)),
            request_slots: (self.max_concurrent_requests > 0).then(|| RequestSlots {
                semaphore: std::sync::Arc::new(tokio::sync::Semaphore::new(
                    self.max_concurrent_requests,
                )),
                limit: self.max_concurrent_requests,
            }),
            match_slots: (self.max_concurrent_requests > 0).then(|| {
                std::sync::Arc::new(tokio::sync::Semaphore::new(self.max_concurrent_requests))
            }),
            discover: self.discover,
            drain_timeout: Duration::from_secs(self.drain_seconds),
            renderer: self.render.renderer()?,
        })
    }
}

/// Resolves a tool to an absolute path once, so a missing tool fails at startup, not per request.
fn resolve_tool(what: &'static str, tool: &Path, path_var: &str) -> Result<PathBuf, ConfigError> {
    let not_found = || ConfigError::ToolNotFound {
        what,
        name: tool.display().to_string(),
    };
    if tool.components().count() > 1 {
        return std::fs::canonicalize(tool).map_err(|_| not_found());
    }
    std::env::split_paths(path_var)
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
        .ok_or_else(not_found)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The items of list-valued flags (`--path-allow a,b --path-allow c`): each value split at
/// commas, trimmed, empty items dropped. One rule for every such flag.
pub fn rule_items(rules: &[String]) -> impl Iterator<Item = &str> {
    rules
        .iter()
        .flat_map(|r| r.split(','))
        .map(str::trim)
        .filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::ServeArgs;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// In a pod spec every setting is an env var; a flag without one can only be changed by
    /// editing the container's args. Hidden flags are test hooks and need none.
    #[test]
    fn every_serve_flag_has_an_env_var_and_a_heading() {
        let cmd = Serve::command();
        let mut missing = Vec::new();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            // Hidden flags are test hooks (`--chart-fetch-resolve`), not settings.
            if id == "help" || arg.is_hide_set() {
                continue;
            }
            if arg.get_env().is_none() {
                missing.push(format!("--{id}: no env var"));
            }
            if arg.get_help_heading().is_none() {
                missing.push(format!("--{id}: no help heading"));
            }
        }
        assert!(missing.is_empty(), "{missing:#?}");
    }
}
