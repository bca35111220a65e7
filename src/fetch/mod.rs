//! Chart fetching: what helm's `dependency build` (and kustomize's `helmCharts` with `repo:`)
//! may reach and with which credentials. Everything here is operator configuration; nothing a
//! request sends configures a repository, a credential or a destination.
//!
//! - [`proxy`]: the forward proxy every fetching tool run must use (Landlock lets it connect
//!   only to the proxy's port), which checks each destination ([`dest`]).
//! - [`cache`]: archives fetched once serve every later render on this replica.
//! - Credentials and trust: the operator's helm `repositories.yaml`, registry config (OCI
//!   logins) and CA bundle, readable by the fetching tool run only.

pub mod cache;
pub mod dest;
pub mod proxy;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;

/// Operator flags of chart fetching (part of the render flags).
#[derive(Args, Clone, Debug)]
pub struct FetchArgs {
    /// Fetch chart dependencies missing from `charts/` (`helm dependency build`) and remote
    /// `helmCharts`, through the sidecar's proxy. Needs the tool sandbox with Landlock TCP
    /// rules (Linux 6.7+); without them fetching stays off.
    #[arg(
        long,
        env = "AVP_SIDECAR_CHART_FETCH",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "true|false"
    )]
    pub chart_fetch: bool,
    /// Destination ports chart fetches may use.
    #[arg(
        long,
        env = "AVP_SIDECAR_CHART_FETCH_PORTS",
        value_delimiter = ',',
        default_value = "443,80"
    )]
    pub chart_fetch_ports: Vec<u16>,
    /// Networks chart fetches may not reach (CIDRs), besides link-local and cloud metadata
    /// addresses, which are always refused, and loopback, refused unless allowed.
    #[arg(long, env = "AVP_SIDECAR_CHART_FETCH_DENY", value_delimiter = ',')]
    pub chart_fetch_deny: Vec<String>,
    /// Networks refused by default that chart fetches may reach (only loopback is; link-local
    /// and metadata addresses stay refused).
    #[arg(long, env = "AVP_SIDECAR_CHART_FETCH_ALLOW", value_delimiter = ',')]
    pub chart_fetch_allow: Vec<String>,
    /// Tests only: `HOST=IP`, resolve HOST to IP in the fetch proxy (Go never proxies
    /// `localhost`, so loopback test servers get a name).
    #[arg(long, value_delimiter = ',', hide = true)]
    pub chart_fetch_resolve: Vec<String>,
    /// helm `repositories.yaml` with the operator's chart repositories and their credentials
    /// (mounted from a Secret).
    #[arg(long, env = "AVP_SIDECAR_HELM_REPOSITORIES")]
    pub helm_repositories: Option<PathBuf>,
    /// helm registry config (docker `config.json` format) with OCI registry logins.
    #[arg(long, env = "AVP_SIDECAR_HELM_REGISTRY_CONFIG")]
    pub helm_registry_config: Option<PathBuf>,
    /// PEM CA certificates chart repositories and registries may be signed by, in addition to
    /// the system's.
    #[arg(long, env = "AVP_SIDECAR_CHART_CA_BUNDLE")]
    pub chart_ca_bundle: Option<PathBuf>,
    /// Where the dependency cache keeps archives (a private directory is created inside).
    #[arg(long, env = "AVP_SIDECAR_CHART_CACHE_DIR")]
    pub chart_cache_dir: Option<PathBuf>,
    /// Size bound of the dependency cache, in MiB (0: no cache).
    #[arg(long, env = "AVP_SIDECAR_CHART_CACHE_MB", default_value_t = 512)]
    pub chart_cache_mb: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchConfigError {
    #[error("invalid setting: --chart-fetch-deny/--chart-fetch-allow: {0}")]
    Cidr(#[from] dest::BadCidr),
    #[error("invalid setting: --chart-fetch-resolve {0:?}: expected HOST=IP")]
    Resolve(String),
    #[error("invalid setting: {flag} {path}: {source}")]
    File {
        flag: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid setting: --chart-cache-dir: {0}")]
    Cache(#[source] std::io::Error),
}

/// System CA bundles, the first that exists is combined with the operator's.
const SYSTEM_CA: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Chart fetching as configured; shared by all renders.
#[derive(Debug)]
pub struct ChartFetch {
    /// Why fetching is off (`None`: on).
    pub off: Option<&'static str>,
    rules: dest::Rules,
    resolve: HashMap<String, IpAddr>,
    proxy: tokio::sync::OnceCell<proxy::Proxy>,
    repositories: Option<PathBuf>,
    registry_config: Option<PathBuf>,
    /// The operator's CA bundle (combined with the system's per run).
    ca_bundle: Option<PathBuf>,
    pub cache: cache::DepCache,
}

/// Environment and Landlock additions for one fetching tool run.
#[derive(Debug)]
pub struct FetchRun {
    pub session: proxy::Session,
    /// The run's private files (combined CA bundle, repository list), outside every request;
    /// removed with the run.
    dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    /// Files the run may read (the operator's credentials and trust).
    pub read_only: Vec<PathBuf>,
    pub proxy_port: u16,
}

impl FetchArgs {
    /// Validates the flags; `net_enforced`: the tool sandbox restricts TCP connect (without
    /// it a tool could bypass the proxy, so fetching stays off).
    pub fn build(&self, net_enforced: bool) -> Result<ChartFetch, FetchConfigError> {
        let cidrs = |list: &[String]| {
            crate::config::rule_items(list)
                .map(str::parse)
                .collect::<Result<Vec<dest::Cidr>, _>>()
        };
        let rules = dest::Rules {
            ports: self.chart_fetch_ports.clone(),
            deny: cidrs(&self.chart_fetch_deny)?,
            allow: cidrs(&self.chart_fetch_allow)?,
        };
        let mut resolve = HashMap::new();
        for item in crate::config::rule_items(&self.chart_fetch_resolve) {
            let (host, ip) = item
                .split_once('=')
                .and_then(|(h, ip)| Some((h.to_ascii_lowercase(), ip.parse().ok()?)))
                .ok_or_else(|| FetchConfigError::Resolve(item.to_owned()))?;
            resolve.insert(host, ip);
        }
        // Kept as given (absolute), not resolved: a mounted Secret's files are symlinks that
        // Kubernetes swaps on update, and each run reads (and is granted) what they name then.
        let readable = |flag: &'static str, p: &Option<PathBuf>| -> Result<_, FetchConfigError> {
            p.as_ref()
                .map(|p| {
                    let err = |source| FetchConfigError::File {
                        flag,
                        path: p.display().to_string(),
                        source,
                    };
                    std::fs::File::open(p).map_err(err)?;
                    std::path::absolute(p).map_err(err)
                })
                .transpose()
        };
        let repositories = readable("--helm-repositories", &self.helm_repositories)?;
        let registry_config = readable("--helm-registry-config", &self.helm_registry_config)?;
        let ca_bundle = readable("--chart-ca-bundle", &self.chart_ca_bundle)?;
        let cache = cache::DepCache::new(
            self.chart_cache_dir.as_deref(),
            self.chart_cache_mb.saturating_mul(1 << 20),
        )
        .map_err(FetchConfigError::Cache)?;
        let off = if !self.chart_fetch {
            Some("chart fetching is off (--chart-fetch false)")
        } else if !net_enforced {
            Some(
                "chart fetching needs the tool sandbox with Landlock TCP rules (Linux 6.7+), which this server does not have",
            )
        } else {
            None
        };
        Ok(ChartFetch {
            off,
            rules,
            resolve,
            proxy: tokio::sync::OnceCell::new(),
            repositories,
            registry_config,
            ca_bundle,
            cache,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RepoListError {
    #[error("the operator's repositories file {path}: {reason}")]
    Operator { path: String, reason: String },
    #[error("writing the repository list: {0}")]
    Io(#[from] std::io::Error),
}

impl ChartFetch {
    /// The run's own copy of the repository list, in the run's private dir: the operator's
    /// `repositories.yaml` plus an entry without credentials for every `http(s)://` URL in
    /// `urls` (dependency repositories as written) it does not list, which is what Argo CD's
    /// `helm repo add` per dependency does (`helm dependency build` with a `Chart.lock`
    /// refuses repositories it has no definition for). Returns its path, which the run may
    /// read.
    pub fn repo_list(&self, run: &FetchRun, urls: &[&str]) -> Result<PathBuf, RepoListError> {
        use serde_json::{Value, json};
        let mut doc = match &self.repositories {
            Some(p) => {
                let bad = |reason: String| RepoListError::Operator {
                    path: p.display().to_string(),
                    reason,
                };
                let text = std::fs::read_to_string(p).map_err(|e| bad(e.to_string()))?;
                crate::yaml::parse_first_document(&text).map_err(|e| bad(e.to_string()))?
            }
            None => Value::Null,
        };
        if !doc.is_object() {
            doc = json!({"apiVersion": "", "generated": "0001-01-01T00:00:00Z"});
        }
        let norm = |u: &str| u.trim_end_matches('/').to_owned();
        let mut entries: Vec<Value> = doc
            .get("repositories")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for url in urls {
            let remote = url.starts_with("https://") || url.starts_with("http://");
            let listed = entries
                .iter()
                .any(|e| e.get("url").and_then(Value::as_str).map(norm) == Some(norm(url)));
            if remote && !listed {
                let name = format!("avp-{}", &cache::key(url, "", "")[..16]);
                entries.push(json!({"name": name, "url": url}));
            }
        }
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("repositories".to_owned(), Value::Array(entries));
        }
        let path = run.dir.path().join("repositories.yaml");
        // JSON is YAML: helm reads it with sigs.k8s.io/yaml.
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap_or_default())?;
        Ok(path)
    }

    /// What one fetching tool run gets: a proxy session (the proxy starts on first use), the
    /// proxy and credential variables, and the operator files it may read. `scratch` is the
    /// request's private directory (helm's repository cache goes there). With `verified`
    /// (a request whose stream is still arriving), the session connects nowhere before it is
    /// `true`.
    pub async fn run(
        &self,
        scratch: &std::path::Path,
        verified: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> std::io::Result<FetchRun> {
        let proxy = self
            .proxy
            .get_or_try_init(|| proxy::Proxy::start(self.rules.clone(), self.resolve.clone()))
            .await?;
        let session = proxy.session(verified)?;
        let url = session.url();
        let mut env: Vec<(String, String)> =
            ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"]
                .iter()
                .map(|k| ((*k).to_owned(), url.clone()))
                .collect();
        env.push(("NO_PROXY".to_owned(), String::new()));
        env.push(("no_proxy".to_owned(), String::new()));
        env.push((
            "HELM_REPOSITORY_CACHE".to_owned(),
            scratch.join("helm/cache/repository").display().to_string(),
        ));
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(self.cache.dir())?;
        let ca_bundle = match &self.ca_bundle {
            Some(ca) => {
                let mut pem = SYSTEM_CA
                    .iter()
                    .find_map(|p| std::fs::read(p).ok())
                    .unwrap_or_default();
                pem.push(b'\n');
                pem.extend(std::fs::read(ca)?);
                let combined = dir.path().join("ca-bundle.pem");
                std::fs::write(&combined, pem)?;
                Some(combined)
            }
            None => None,
        };
        let mut read_only = Vec::new();
        for (var, file) in [
            ("HELM_REPOSITORY_CONFIG", &self.repositories),
            ("HELM_REGISTRY_CONFIG", &self.registry_config),
            ("SSL_CERT_FILE", &ca_bundle),
        ] {
            if let Some(f) = file {
                env.push((var.to_owned(), f.display().to_string()));
                // Landlock grants the file itself, wherever the symlinks lead now.
                read_only.push(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()));
            }
        }
        Ok(FetchRun {
            proxy_port: proxy.port(),
            session,
            dir,
            env,
            read_only,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        fetch: FetchArgs,
    }

    fn build(args: &[&str], net: bool) -> Result<ChartFetch, FetchConfigError> {
        let cli =
            Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).expect("flags");
        cli.fetch.build(net)
    }

    #[tokio::test]
    async fn runs_get_the_proxy_the_operator_files_and_a_merged_repository_list() {
        let dir = tempfile::tempdir().expect("tmp");
        let repos = dir.path().join("repositories.yaml");
        std::fs::write(
            &repos,
            "apiVersion: \"\"\nrepositories:\n- name: private\n  url: https://charts.example/private\n  username: u\n  password: p\n",
        )
        .expect("write");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nx\n").expect("write");
        let repos_arg = repos.display().to_string();
        let ca_arg = ca.display().to_string();
        let fetch = build(
            &[
                "--helm-repositories",
                &repos_arg,
                "--chart-ca-bundle",
                &ca_arg,
            ],
            true,
        )
        .expect("build");
        assert_eq!(fetch.off, None);
        let scratch = dir.path().join("scratch");
        let run = fetch.run(&scratch, None).await.expect("run");
        let env: HashMap<&str, &str> = run
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(env["HTTPS_PROXY"].ends_with(&format!("@127.0.0.1:{}", run.proxy_port)));
        assert_eq!(env["NO_PROXY"], "");
        assert_eq!(env["HELM_REPOSITORY_CONFIG"], repos_arg);
        let bundle = std::fs::read_to_string(env["SSL_CERT_FILE"]).expect("bundle");
        assert!(bundle.ends_with("-----BEGIN CERTIFICATE-----\nx\n"));
        assert!(
            run.read_only
                .contains(&std::fs::canonicalize(&repos).expect("real"))
        );
        let list = fetch
            .repo_list(
                &run,
                &[
                    "https://charts.example/private/",
                    "https://charts.test",
                    "oci://reg.test/charts",
                    "file://../lib",
                ],
            )
            .expect("list");
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&list).expect("read")).expect("json");
        let urls: Vec<&str> = doc["repositories"]
            .as_array()
            .expect("repos")
            .iter()
            .filter_map(|r| r["url"].as_str())
            .collect();
        assert_eq!(
            urls,
            ["https://charts.example/private", "https://charts.test"]
        );
        assert_eq!(doc["repositories"][0]["password"], "p");
        // The run's files go with it.
        drop(run);
        assert!(!list.exists());
    }

    #[test]
    fn fetching_is_off_when_asked_or_without_tcp_rules_and_flags_are_checked() {
        assert!(
            build(&["--chart-fetch", "false"], true)
                .expect("off")
                .off
                .is_some()
        );
        assert!(build(&[], false).expect("no net").off.is_some());
        assert!(matches!(
            build(&["--chart-fetch-deny", "10.0.0.0/33"], true),
            Err(FetchConfigError::Cidr(_))
        ));
        assert!(matches!(
            build(&["--chart-fetch-resolve", "charts.test"], true),
            Err(FetchConfigError::Resolve(_))
        ));
        assert!(matches!(
            build(
                &["--helm-repositories", "/nonexistent/repositories.yaml"],
                true
            ),
            Err(FetchConfigError::File { .. })
        ));
    }
}
