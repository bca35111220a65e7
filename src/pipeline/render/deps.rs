//! Chart dependencies missing from `charts/`: `helm dependency build`, run confined like every
//! tool, with network only through the fetch proxy and the operator's credentials
//! (`crate::fetch`). As Argo CD's own Helm support does, and as helm requires, every declared
//! dependency is resolved, also those a `condition` disables.
//!
//! [`Renderer::prepare_chart_dependencies`] is the only place the helm path writes into the
//! repository tree (`charts/`, `Chart.lock`, helm's `tmpcharts`).

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::time::Instant;

use super::tool::ToolError;
use super::{RenderError, Renderer};
use crate::metrics::{self, ChartFailure};

/// One entry of `dependencies:` (`Chart.yaml`, or `requirements.yaml` for v1 charts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dependency {
    pub name: String,
    pub version: String,
    pub repository: String,
}

impl Dependency {
    fn is_file(&self) -> bool {
        self.repository.starts_with("file://")
    }

    /// A dependency helm reads from disk (`file://`) or an unset repository (vendored only).
    fn is_local(&self) -> bool {
        self.is_file() || self.repository.is_empty()
    }
}

/// Why a dependency could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchCause {
    #[error("not found in the repository")]
    NotFound,
    #[error(
        "authentication failed (credentials come only from the operator's repositories.yaml / registry config)"
    )]
    Auth,
    #[error("TLS verification failed (an operator can add a CA with --chart-ca-bundle)")]
    Tls,
    #[error("denied: {0}")]
    Denied(String),
    #[error("the deadline passed while fetching")]
    Deadline,
    /// helm could not download the repository's index (connection refused or reset, a 5xx):
    /// often passing, unlike a version the index does not list.
    #[error(
        "the repository's index could not be downloaded (helm's message is in the sidecar's log)"
    )]
    Unreachable,
    #[error("{0}; vendor the dependencies in charts/ (`helm dependency build`, commit charts/)")]
    Off(&'static str),
    #[error("the file:// path leaves the repository")]
    OutsideRepository,
    #[error(
        "Chart.lock is out of sync with Chart.yaml (run `helm dependency update` and commit Chart.lock)"
    )]
    LockOutOfSync,
    #[error("helm dependency build failed (helm's message is in the sidecar's log)")]
    Failed,
}

impl FetchCause {
    /// The failure reason's metric label.
    fn failure(&self) -> ChartFailure {
        match self {
            Self::NotFound => ChartFailure::NotFound,
            Self::Auth => ChartFailure::Auth,
            Self::Tls => ChartFailure::Tls,
            Self::Denied(_) | Self::OutsideRepository => ChartFailure::Denied,
            Self::Deadline => ChartFailure::Deadline,
            Self::Unreachable => ChartFailure::Unreachable,
            Self::Off(_) | Self::LockOutOfSync | Self::Failed => ChartFailure::Other,
        }
    }
}

/// A chart's dependencies could not be prepared. Never holds a response body: the cause is a
/// category, helm's own words go to the log.
#[derive(Debug, thiserror::Error)]
#[error("chart {chart}: dependency {dependency} (repository {repository}): {cause}")]
pub struct DependencyError {
    pub chart: String,
    pub dependency: String,
    pub repository: String,
    pub cause: FetchCause,
}

/// What preparing a chart's dependencies did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// Some dependency's version can float (a range, no `Chart.lock`): the render must not be
    /// served from the render cache later.
    pub floating: bool,
}

/// The chart file's `dependencies` (or `requirements.yaml`'s for `apiVersion: v1`).
pub(crate) fn read_dependencies(
    chart_dir: &Path,
) -> Result<(String, Vec<Dependency>), RenderError> {
    let chart = read_yaml(&chart_dir.join("Chart.yaml"))?;
    let name = chart
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut list = chart.get("dependencies").cloned();
    if list.is_none() && chart.get("apiVersion").and_then(Value::as_str) == Some("v1") {
        let req = chart_dir.join("requirements.yaml");
        if req.is_file() {
            list = read_yaml(&req)?.get("dependencies").cloned();
        }
    }
    let deps = list
        .as_ref()
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|d| {
                    let field = |k: &str| {
                        d.get(k)
                            .map(|v| match v {
                                Value::String(s) => s.clone(),
                                Value::Null => String::new(),
                                other => other.to_string(),
                            })
                            .unwrap_or_default()
                    };
                    let name = field("name");
                    (!name.is_empty()).then(|| Dependency {
                        name,
                        version: field("version"),
                        repository: field("repository"),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((name, deps))
}

fn read_yaml(path: &Path) -> Result<Value, RenderError> {
    let io = |source| RenderError::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > super::helm::MAX_CHART_FILE_BYTES {
        return Err(io(std::io::Error::other("larger than helm's 5 MiB limit")));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    crate::yaml::parse_first_document(&text).map_err(|e| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.to_string(),
        ))
    })
}

/// Whether `chart_dir` lacks dependencies in `charts/`, so that preparing it writes into the
/// tree (an unreadable chart file says no: the render then reports it without writing).
pub(crate) fn needs_dependencies(chart_dir: &Path) -> bool {
    read_dependencies(chart_dir).is_ok_and(|(_, deps)| !missing(chart_dir, &deps).is_empty())
}

/// Dependencies with nothing for them in `charts/` (a `<name>/` dir or a `<name>-*.tgz`).
pub(crate) fn missing(chart_dir: &Path, deps: &[Dependency]) -> Vec<Dependency> {
    let charts = chart_dir.join("charts");
    let names: Vec<String> = std::fs::read_dir(&charts)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    deps.iter()
        .filter(|d| {
            let prefix = format!("{}-", d.name);
            !names.iter().any(|n| {
                (*n == d.name && charts.join(n).join("Chart.yaml").is_file())
                    || (n.starts_with(&prefix) && n.ends_with(".tgz"))
            })
        })
        .cloned()
        .collect()
}

/// An exact SemVer version (helm's `1.2.3`, `v1.2.3`, with pre-release/build): no range.
fn is_exact(version: &str) -> bool {
    let v = version.strip_prefix('v').unwrap_or(version);
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c))
}

/// The versions `Chart.lock` (or v1's `requirements.lock`) pins, by dependency name.
fn locked(chart_dir: &Path) -> Option<Vec<Dependency>> {
    let lock = ["Chart.lock", "requirements.lock"]
        .iter()
        .map(|f| chart_dir.join(f))
        .find(|p| p.is_file())?;
    let value = read_yaml(&lock).ok()?;
    let items = value.get("dependencies")?.as_array()?;
    Some(
        items
            .iter()
            .filter_map(|d| {
                Some(Dependency {
                    name: d.get("name")?.as_str()?.to_owned(),
                    version: d.get("version")?.as_str()?.to_owned(),
                    repository: d
                        .get("repository")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                })
            })
            .collect(),
    )
}

/// Every remote dependency pinned: an exact version in `Chart.yaml`, and the same version in
/// `Chart.lock`. Only then can a cached archive stand in for a download, and the render be
/// cached.
fn pinned(deps: &[Dependency], lock: Option<&[Dependency]>) -> bool {
    let Some(lock) = lock else {
        return false;
    };
    deps.iter().filter(|d| !d.is_local()).all(|d| {
        is_exact(&d.version)
            && lock
                .iter()
                .any(|l| l.name == d.name && l.version == d.version && l.repository == d.repository)
    })
}

/// A `file://` dependency's directory, if it stays inside `repo` (symlinks resolved).
fn file_dependency_inside(chart_dir: &Path, repo: &Path, dep: &Dependency) -> bool {
    let rel = dep.repository.trim_start_matches("file://");
    let target = chart_dir.join(rel);
    match (std::fs::canonicalize(&target), std::fs::canonicalize(repo)) {
        (Ok(t), Ok(r)) => t.starts_with(r),
        _ => false,
    }
}

/// Classifies helm's stderr of a failed `dependency build`.
fn classify(stderr: &str) -> FetchCause {
    let s = stderr.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| s.contains(w));
    if has(&["out of sync with the dependencies file"]) {
        FetchCause::LockOutOfSync
    } else if has(&["x509:", "certificate", "tls: "]) {
        FetchCause::Tls
    } else if has(&[
        // Status codes only with their words: a bare "401" also matches our generated
        // repository names (`avp-4016…`) and port numbers.
        "status code 401",
        "unauthorized",
        "authentication required",
        "403 forbidden",
        "status code 403",
    ]) {
        FetchCause::Auth
    } else if has(&["connect: permission denied", "operation not permitted"]) {
        FetchCause::Denied(
            "the tool sandbox allows network connections only through the sidecar's fetch proxy"
                .to_owned(),
        )
    } else if has(&["permission denied"]) {
        FetchCause::Denied("the tool sandbox refused a file outside the request".to_owned())
    } else if has(&[
        "status code 404",
        "not found",
        "no chart version found",
        "no chart name found",
        "can't get a valid version",
        "no such host",
    ]) {
        FetchCause::NotFound
    } else if has(&["unable to get an update from"]) {
        // helm goes on after a failed index download and then fails on the missing index.
        FetchCause::Unreachable
    } else {
        FetchCause::Failed
    }
}

/// The dependency helm's message is about: one whose name or repository it mentions, else
/// the only one, else all of them.
fn culprit(stderr: &str, missing: &[Dependency]) -> (String, String) {
    let remote: Vec<&Dependency> = missing.iter().filter(|d| !d.is_file()).collect();
    let pool: Vec<&Dependency> = if remote.is_empty() {
        missing.iter().collect()
    } else {
        remote
    };
    let mentioned = pool.iter().find(|d| {
        (!d.repository.is_empty() && stderr.contains(d.repository.trim_end_matches('/')))
            || stderr.contains(&format!("\"{}\"", d.name))
            || stderr.contains(&format!("{}-", d.name))
    });
    match (mentioned, pool.as_slice()) {
        (Some(d), _) | (None, [d]) => (format!("{} {}", d.name, d.version), d.repository.clone()),
        (None, all) => (
            all.iter()
                .map(|d| format!("{} {}", d.name, d.version))
                .collect::<Vec<_>>()
                .join(", "),
            all.iter()
                .map(|d| d.repository.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ),
    }
}

impl Renderer {
    /// Makes `charts/` of the chart in `chart_dir` hold every declared dependency: nothing
    /// when all are vendored; else from the dependency cache when every remote dependency is
    /// pinned and cached; else `helm dependency build`, confined (rw: `repo` and `scratch`;
    /// network: the fetch proxy only; read: the operator's credentials), whose archives then
    /// fill the cache.
    ///
    /// This is the only place the helm path writes into the repository tree (`charts/`,
    /// `Chart.lock`, `tmpcharts`): `chart_dir` must be writable. `env` is the helm run's
    /// environment (homes pinned to `scratch`).
    pub(crate) async fn prepare_chart_dependencies(
        &self,
        chart_dir: &Path,
        repo: &Path,
        scratch: &Path,
        env: &[(String, String)],
        deadline: Option<Instant>,
    ) -> Result<Prepared, RenderError> {
        let (chart_name, deps) = read_dependencies(chart_dir)?;
        let missing = missing(chart_dir, &deps);
        if missing.is_empty() {
            return Ok(Prepared::default());
        }
        let chart = chart_label(&chart_name, chart_dir, repo);
        let fail = |dep: &Dependency, cause: FetchCause| {
            metrics::chart_failure(cause.failure());
            RenderError::Dependency(Box::new(DependencyError {
                chart: chart.clone(),
                dependency: format!("{} {}", dep.name, dep.version),
                repository: dep.repository.clone(),
                cause,
            }))
        };
        for dep in missing.iter().filter(|d| d.is_file()) {
            if !file_dependency_inside(chart_dir, repo, dep) {
                return Err(fail(dep, FetchCause::OutsideRepository));
            }
        }
        let lock = locked(chart_dir);
        let remote: Vec<&Dependency> = missing.iter().filter(|d| !d.is_local()).collect();
        // Only what is fetched can float: `file://` charts come with the repository.
        let pinned = pinned(&missing, lock.as_deref());
        let prepared = Prepared {
            floating: !remote.is_empty() && !pinned,
        };
        let keys: Vec<(String, &Dependency)> = remote
            .iter()
            .map(|d| {
                (
                    crate::fetch::cache::key(&d.repository, &d.name, &d.version),
                    *d,
                )
            })
            .collect();
        if pinned && self.copy_cached(chart_dir, &missing, &keys)? {
            return Ok(prepared);
        }
        if let (Some(off), Some(dep)) = (self.fetch.off, remote.first()) {
            return Err(fail(dep, FetchCause::Off(off)));
        }
        // Renders needing the same pinned dependencies share one download: the first fetches,
        // the others find them cached when their turn comes. Floating ones are resolved anew.
        let _flight = if pinned {
            let set: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
            Some(self.fetch.cache.flight(&set.join(",")).await)
        } else {
            None
        };
        if pinned && self.copy_cached(chart_dir, &missing, &keys)? {
            return Ok(prepared);
        }
        let mut child_env = env.to_vec();
        let (cmd, run) = {
            let cmd = super::tool::ToolCommand {
                program: self.tools.helm.clone(),
                args: vec![
                    "dependency".into(),
                    "build".into(),
                    chart_dir.as_os_str().to_owned(),
                ],
                cwd: chart_dir.to_path_buf(),
                env: Vec::new(),
            };
            let dirs = [repo.to_path_buf(), scratch.to_path_buf()];
            if self.fetch.off.is_some() {
                // Only `file://` charts to package: no network, no credentials.
                let cmd = super::tool::ToolCommand {
                    env: child_env,
                    ..cmd
                };
                (self.sandbox.wrap(cmd, &dirs, &[]), None)
            } else {
                // After `RepoTree::writable`: the request has verified.
                let run =
                    self.fetch
                        .run(scratch, None)
                        .await
                        .map_err(|source| RenderError::Io {
                            path: "chart fetch proxy".to_owned(),
                            source,
                        })?;
                let urls: Vec<&str> = deps.iter().map(|d| d.repository.as_str()).collect();
                let list = self
                    .fetch
                    .repo_list(&run, &urls)
                    .map_err(|e| RenderError::Io {
                        path: "helm repository list".to_owned(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                let mut read_only = run.read_only.clone();
                read_only.push(list.clone());
                let list_env = (
                    "HELM_REPOSITORY_CONFIG".to_owned(),
                    list.display().to_string(),
                );
                for (k, v) in run.env.iter().chain([&list_env]) {
                    child_env.retain(|(name, _)| name != k);
                    child_env.push((k.clone(), v.clone()));
                }
                let cmd = super::tool::ToolCommand {
                    env: child_env,
                    ..cmd
                };
                let cmd = self
                    .sandbox
                    .wrap_fetching(cmd, &dirs, &read_only, run.proxy_port);
                (cmd, Some(run))
            }
        };
        metrics::CHART_DEPENDENCY_BUILDS.inc([]);
        let result = self.run_in_slot(&cmd, metrics::Tool::Helm, deadline).await;
        let denials = run.map(|r| r.session.denials()).unwrap_or_default();
        match result {
            Ok(_) => {}
            Err(RenderError::Tool(ToolError::Deadline { .. }) | RenderError::Queued(_)) => {
                let (dependency, repository) = culprit("", &missing);
                metrics::chart_failure(ChartFailure::Deadline);
                return Err(RenderError::Dependency(Box::new(DependencyError {
                    chart,
                    dependency,
                    repository,
                    cause: FetchCause::Deadline,
                })));
            }
            Err(RenderError::Tool(ToolError::Failed {
                stderr,
                stdout_tail,
                ..
            })) => {
                // helm reports a repository it could not update on stdout, then fails later.
                let stderr = format!("{stdout_tail}\n{stderr}");
                tracing::warn!(chart = %chart, output = %stderr.trim(), "helm dependency build failed");
                let cause = match denials.first() {
                    Some(d) => FetchCause::Denied(d.to_string()),
                    None => classify(&stderr),
                };
                let (dependency, repository) = culprit(&stderr, &missing);
                metrics::chart_failure(cause.failure());
                return Err(RenderError::Dependency(Box::new(DependencyError {
                    chart,
                    dependency,
                    repository,
                    cause,
                })));
            }
            Err(other) => return Err(other),
        }
        metrics::CHART_FETCHES.add([], u64::try_from(remote.len()).unwrap_or(u64::MAX));
        self.fill_cache(chart_dir, &deps);
        Ok(prepared)
    }

    /// Copies every missing remote dependency from the cache into `charts/`; false (nothing
    /// copied that matters: helm rebuilds `charts/` anyway) when one is not cached or a
    /// `file://` dependency needs helm.
    fn copy_cached(
        &self,
        chart_dir: &Path,
        missing: &[Dependency],
        keys: &[(String, &Dependency)],
    ) -> Result<bool, RenderError> {
        if missing.iter().any(Dependency::is_local) {
            return Ok(false);
        }
        let charts = chart_dir.join("charts");
        std::fs::create_dir_all(&charts).map_err(|source| RenderError::Io {
            path: "charts/".to_owned(),
            source,
        })?;
        let mut copied = Vec::new();
        for (key, dep) in keys {
            let dest = charts.join(format!("{}-{}.tgz", dep.name, dep.version));
            if !self.fetch.cache.copy_to(key, &dest) {
                for p in copied {
                    let _ = std::fs::remove_file(p);
                }
                return Ok(false);
            }
            copied.push(dest);
        }
        metrics::CHART_CACHE_HITS.add([], u64::try_from(keys.len()).unwrap_or(u64::MAX));
        Ok(true)
    }

    /// After a successful build: each remote dependency's archive, as `Chart.lock` pinned
    /// it, into the cache.
    fn fill_cache(&self, chart_dir: &Path, deps: &[Dependency]) {
        let Some(lock) = locked(chart_dir) else {
            return;
        };
        for l in lock
            .iter()
            .filter(|l| !l.is_local() && is_exact(&l.version))
        {
            if !deps
                .iter()
                .any(|d| d.name == l.name && d.repository == l.repository)
            {
                continue;
            }
            let archive: PathBuf = chart_dir
                .join("charts")
                .join(format!("{}-{}.tgz", l.name, l.version));
            if archive.is_file() {
                let key = crate::fetch::cache::key(&l.repository, &l.name, &l.version);
                if let Err(e) = self.fetch.cache.put(&key, &archive) {
                    tracing::warn!(error = %e, "chart cache: cannot store an archive");
                }
            }
        }
    }
}

/// The local charts the kustomization at `kustomization` inflates (`helmCharts` entries without
/// `repo:`): `<chartHome>/<name>` (or kustomize's `<chartHome>/<name>-<version>/<name>`) with a
/// `Chart.yaml`, inside `repo`. Only this kustomization's own entries (not its bases').
pub(crate) fn kustomize_local_charts(kustomization: &Path, repo: &Path) -> Vec<PathBuf> {
    let Ok(doc) = read_yaml(kustomization) else {
        return Vec::new();
    };
    let Some(dir) = kustomization.parent() else {
        return Vec::new();
    };
    let home = doc
        .get("helmGlobals")
        .and_then(|g| g.get("chartHome"))
        .and_then(Value::as_str)
        .unwrap_or("charts");
    let Ok(real_repo) = std::fs::canonicalize(repo) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in doc
        .get("helmCharts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("");
        let (name, version) = (field("name"), field("version"));
        if name.is_empty() || !field("repo").is_empty() || name.contains('/') {
            continue;
        }
        let candidates = [
            dir.join(home).join(name),
            dir.join(home).join(format!("{name}-{version}")).join(name),
        ];
        for c in candidates {
            if let Ok(real) = std::fs::canonicalize(&c)
                && real.starts_with(&real_repo)
                && real.join("Chart.yaml").is_file()
                && !out.contains(&real)
            {
                out.push(real);
            }
        }
    }
    out
}

/// `name (path/in/repo)` for errors.
fn chart_label(name: &str, chart_dir: &Path, repo: &Path) -> String {
    let rel = chart_dir
        .strip_prefix(repo)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let rel = if rel.is_empty() { ".".to_owned() } else { rel };
    if name.is_empty() {
        rel
    } else {
        format!("{name} ({rel})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(name: &str, version: &str, repository: &str) -> Dependency {
        Dependency {
            name: name.to_owned(),
            version: version.to_owned(),
            repository: repository.to_owned(),
        }
    }

    #[test]
    fn dependencies_are_read_and_missing_ones_found() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = dir.path();
        std::fs::write(
            c.join("Chart.yaml"),
            "apiVersion: v2\nname: web\nversion: 1.0.0\ndependencies:\n- name: redis\n  version: 1.2.3\n  repository: https://charts.test\n  condition: redis.enabled\n- name: common\n  version: ~2.0\n  repository: oci://reg.test/charts\n- name: local\n  version: 0.1.0\n  repository: file://../local\n- name: vendored\n  version: 1.0.0\n",
        )
        .expect("write");
        std::fs::create_dir_all(c.join("charts/vendored")).expect("mkdir");
        std::fs::write(c.join("charts/vendored/Chart.yaml"), "name: vendored\n").expect("write");
        std::fs::write(c.join("charts/common-2.0.1.tgz"), "x").expect("write");
        let (name, deps) = read_dependencies(c).expect("read");
        assert_eq!(name, "web");
        assert_eq!(deps.len(), 4);
        assert_eq!(deps[1], dep("common", "~2.0", "oci://reg.test/charts"));
        let names: Vec<String> = missing(c, &deps).into_iter().map(|d| d.name).collect();
        assert_eq!(names, ["redis", "local"]);

        // v1 charts keep them in requirements.yaml.
        std::fs::write(
            c.join("Chart.yaml"),
            "apiVersion: v1\nname: old\nversion: 1.0.0\n",
        )
        .expect("write");
        std::fs::write(
            c.join("requirements.yaml"),
            "dependencies:\n- name: a\n  version: 1.0.0\n  repository: https://charts.test\n",
        )
        .expect("write");
        assert_eq!(
            read_dependencies(c).expect("v1").1,
            [dep("a", "1.0.0", "https://charts.test")]
        );
    }

    #[test]
    fn only_exact_locked_versions_are_pinned() {
        for v in ["1.2.3", "v1.2.3", "1.2.3-rc.1", "1.2.3+build.5"] {
            assert!(is_exact(v), "{v}");
        }
        for v in [
            "",
            "1.2",
            "~1.2.3",
            "^1",
            ">=1.0.0",
            "1.2.x",
            "latest",
            "*",
            "1.2.3 || 2",
        ] {
            assert!(!is_exact(v), "{v}");
        }
        let deps = [
            dep("a", "1.2.3", "https://r"),
            dep("l", "0.1.0", "file://../l"),
        ];
        let lock = [dep("a", "1.2.3", "https://r")];
        assert!(pinned(&deps, Some(&lock)));
        assert!(!pinned(&deps, None));
        assert!(!pinned(&[dep("a", "~1.2", "https://r")], Some(&lock)));
        assert!(!pinned(&deps, Some(&[dep("a", "1.2.4", "https://r")])));
    }

    #[test]
    fn failures_are_classified_and_attributed() {
        let missing = [
            dep("redis", "1.2.3", "https://charts.test"),
            dep("pg", "2.0.0", "oci://reg.test/c"),
        ];
        assert_eq!(
            classify("Error: failed to fetch https://charts.test/index.yaml : 401 Unauthorized"),
            FetchCause::Auth
        );
        assert_eq!(
            classify(
                "tls: failed to verify certificate: x509: certificate signed by unknown authority"
            ),
            FetchCause::Tls
        );
        assert_eq!(
            classify(
                "Error: can't get a valid version for 1 subchart(s): \"redis\" (repository \"https://charts.test\", version \"9.9.9\")"
            ),
            FetchCause::NotFound
        );
        assert_eq!(classify("something odd"), FetchCause::Failed);
        // A generated repository name or a port with a status code's digits (CI saw this).
        assert_eq!(
            classify(
                "...Successfully got an update from the \"avp-4016121fdb4c33ae\" chart repository\nError: can't get a valid version for 1 subchart(s): \"redis\" (repository \"http://charts.test:40143\", version \"9.9.9\")"
            ),
            FetchCause::NotFound
        );
        assert_eq!(
            classify(
                "Error: no cached repository for avp-4041aa found. (try 'helm repo update'): open /h/avp-4041aa-index.yaml: no such file or directory"
            ),
            FetchCause::Failed
        );
        assert_eq!(
            classify(
                "Error: GET \"https://reg.test/v2/c/pg/tags/list\": response status code 401: unauthorized: authentication required"
            ),
            FetchCause::Auth
        );
        // helm 3.19 by hand, nothing listening at the repository's port.
        assert_eq!(
            classify(
                "Getting updates for unmanaged Helm repositories...\n...Unable to get an update from the \"http://127.0.0.1:1\" chart repository:\n\tGet \"http://127.0.0.1:1/index.yaml\": dial tcp 127.0.0.1:1: connect: connection refused\nError: no cached repository for helm-manager-10d8 found. (try 'helm repo update'): open /h/helm-manager-10d8-index.yaml: no such file or directory"
            ),
            FetchCause::Unreachable
        );
        // An index that is not there is a repository that is not there.
        assert_eq!(
            classify(
                "...Unable to get an update from the \"avp-1\" chart repository (http://charts.test):\n\tfailed to fetch http://charts.test/index.yaml : 404 Not Found"
            ),
            FetchCause::NotFound
        );
        assert_eq!(
            classify(
                "Error: the lock file (Chart.lock) is out of sync with the dependencies file (Chart.yaml). Please update the dependencies"
            ),
            FetchCause::LockOutOfSync
        );
        assert_eq!(
            culprit(
                "... \"redis\" (repository \"https://charts.test\" ...",
                &missing
            ),
            ("redis 1.2.3".to_owned(), "https://charts.test".to_owned())
        );
        assert_eq!(
            culprit("oci://reg.test/c/pg:2.0.0: unauthorized", &missing).0,
            "pg 2.0.0"
        );
        assert_eq!(culprit("?", &missing).0, "redis 1.2.3, pg 2.0.0");
    }

    #[test]
    fn file_dependencies_must_stay_in_the_repository() {
        let dir = tempfile::tempdir().expect("tmp");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join("app")).expect("mkdir");
        std::fs::create_dir_all(repo.join("lib")).expect("mkdir");
        let chart = repo.join("app");
        assert!(file_dependency_inside(
            &chart,
            &repo,
            &dep("l", "1.0.0", "file://../lib")
        ));
        assert!(!file_dependency_inside(
            &chart,
            &repo,
            &dep("l", "1.0.0", "file://../..")
        ));
        assert!(!file_dependency_inside(
            &chart,
            &repo,
            &dep("l", "1.0.0", "file:///etc")
        ));
        assert!(!file_dependency_inside(
            &chart,
            &repo,
            &dep("l", "1.0.0", "file://../missing")
        ));
    }
}
