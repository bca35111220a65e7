//! `avp-sidecar call`: talk to a running plugin socket like Argo CD's repo-server does, for
//! demos, debugging a deployed sidecar (`kubectl exec` into the pod) and benchmarks.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use avp_sidecar::protocol::client::{RepoStream, connect};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Rpc {
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
pub struct CallArgs {
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
    /// Raw env entries sent as they are.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
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
        for kv in &self.env {
            env.push(split(kv)?);
        }
        Ok(env)
    }
}

#[tokio::main(flavor = "current_thread")]
pub async fn call(args: CallArgs) -> anyhow::Result<()> {
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
            let r = client
                .generate_manifest(req)
                .await
                .map_err(status)?
                .into_inner();
            for m in r.manifests {
                let value: serde_json::Value =
                    serde_json::from_str(&m).context("manifest is not JSON")?;
                print!("---\n{}", avp_sidecar::yaml::to_yaml_string(&value));
            }
        }
    }
    Ok(())
}
