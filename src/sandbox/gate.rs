//! The helm gate: the only way kustomize reaches helm, and the rules for our own helm calls.
//!
//! kustomize's `helmCharts` (and `HelmChartInflationGenerator` files) build a helm argv from
//! fields the repository chooses. A release name `--post-renderer=sh` became a helm flag that
//! piped the rendered chart into a shell. So kustomize gets `--helm-command <our binary>` and
//! an environment naming the real helm ([`GATE_ENV`]); in that mode `main` calls [`run`],
//! which accepts exactly the argv shapes kustomize 5.x produces (`version`, `pull`,
//! `template`; see `api/types/helmchartargs.go` `AsHelmArgs` and the generator's
//! `pullCommand`), refuses every value helm would read as a flag, any flag kustomize never
//! sends (`--post-renderer`, `--set-file`, `--repo` in `template`, ...) and any path outside
//! the request, then pins helm's homes to the request's scratch dir (no repository-chosen
//! `configHome`, so no repository-supplied `repositories.yaml` or plugins) and execs helm.
//! The direct helm path (`render::helm`) builds the same `template` shape and is checked by
//! [`check`] before it runs, so both paths obey one set of rules.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

/// Set in kustomize's environment: the real helm binary. Its presence makes `avp-sidecar`
/// act as the gate.
pub const GATE_ENV: &str = "AVP_SIDECAR_HELM_GATE";
/// The request's repository directory (chart paths and value files must be inside it or the
/// scratch dir; errors name files relative to it).
pub const GATE_REPO_ENV: &str = "AVP_SIDECAR_HELM_GATE_REPO";
/// The request's scratch directory (kustomize's temporary values files, helm's homes).
pub const GATE_SCRATCH_ENV: &str = "AVP_SIDECAR_HELM_GATE_SCRATCH";
/// Starts the one stderr line the gate writes when it refuses; the server turns that line
/// into the request's error.
pub const REFUSED_PREFIX: &str = "avp-sidecar helm gate refused: ";

/// Helm homes below a request's scratch dir (also used for the direct helm path).
pub const HELM_HOMES: [(&str, &str); 3] = [
    ("HELM_CACHE_HOME", "helm/cache"),
    ("HELM_CONFIG_HOME", "helm/config"),
    ("HELM_DATA_HOME", "helm/data"),
];

/// Where helm looks for plugins (downloaders, post-renderers): a directory that never exists,
/// beside the request's `repo/` and scratch dir, where no tool may write (the sandbox grants
/// only those two), so no helm call can find or plant a plugin.
pub fn no_plugins_dir(scratch: &Path) -> PathBuf {
    scratch.parent().unwrap_or(scratch).join("no-helm-plugins")
}

/// The only variables helm gets from the gate's environment (plus the pinned homes): helm's
/// `--name-template` and chart templates must not find anything else there.
const HELM_ENV_KEEP: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    // Set by the server for fetching runs: the operator's credentials and trust, and the
    // request's own repository cache (never from a request).
    "HELM_REPOSITORY_CONFIG",
    "HELM_REGISTRY_CONFIG",
    "HELM_REPOSITORY_CACHE",
];

/// The request's directories, which every path in a helm call must stay inside.
#[derive(Clone, Copy, Debug)]
pub struct Dirs<'a> {
    pub repo: &'a Path,
    pub scratch: &'a Path,
}

/// An accepted helm call.
#[derive(Debug, PartialEq, Eq)]
pub enum HelmCall {
    /// `version -c --short` / `version --short` (kustomize's helm v3 check).
    Version,
    /// `pull --untar --untardir DIR ...` (a remote chart for `helmCharts` with `repo:`).
    Pull { chart: String },
    /// `template ...` of the chart in `chart`.
    Template { chart: PathBuf },
}

/// Why a helm call was refused. `field` is the kustomization field the value came from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GateError {
    #[error("`helm {0}` is not a call kustomize makes for chart inflation")]
    Command(String),
    #[error("{field} {value:?} {reason}")]
    Value {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("helm flag {0:?} is not allowed (only the flags kustomize's helmCharts produce)")]
    Flag(String),
    #[error("unexpected extra argument {0:?}")]
    Extra(String),
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("arguments are not UTF-8")]
    NotUtf8,
}

const FLAG_LIKE: &str = "must not start with '-' (helm would read it as a flag)";

/// Checks a helm argv (without the program name) against the shapes kustomize produces.
pub fn check(args: &[String], dirs: Dirs<'_>) -> Result<HelmCall, GateError> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["version", "-c", "--short"] | ["version", "--short"] => Ok(HelmCall::Version),
        ["pull", "--untar", "--untardir", dir, rest @ ..] => {
            in_repo("chartHome", dir, dirs)?;
            check_pull(rest)
        }
        ["template", first, rest @ ..] => {
            if *first != "--generate-name" {
                release_name(first)?;
            }
            check_template(rest, dirs)
        }
        [cmd, ..] => Err(GateError::Command((*cmd).to_owned())),
        [] => Err(GateError::Missing("helm command")),
    }
}

fn check_template(args: &[&str], dirs: Dirs<'_>) -> Result<HelmCall, GateError> {
    let mut chart = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |field| flag_value(it.next(), field);
        match *arg {
            "--namespace" => {
                let ns = value("namespace")?;
                if !crate::names::is_dns_label(ns, 63) {
                    return Err(bad("namespace", ns, "is not a Kubernetes namespace name"));
                }
            }
            "--name-template" => {
                // helm renders it with sprig's `env`: a template could print helm's
                // environment into the release name. Only a literal name is accepted.
                let t = value("nameTemplate")?;
                release_name(t).map_err(|_| {
                    bad(
                        "nameTemplate",
                        t,
                        "must be a literal release name (templates are not allowed)",
                    )
                })?;
            }
            "-f" => {
                let f = value("valuesFile")?;
                inside("valuesFile", f, dirs)?;
                // helm splits --values on commas (and reads quotes as CSV).
                if f.contains([',', '"']) {
                    return Err(bad("valuesFile", f, "must not contain ',' or '\"'"));
                }
            }
            "--api-versions" => {
                let v = value("apiVersions")?;
                if !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "./-".contains(c))
                {
                    return Err(bad("apiVersions", v, "is not an API version"));
                }
            }
            "--kube-version" => {
                let v = value("kubeVersion")?;
                if !crate::pipeline::render::helm::is_kube_version(v) {
                    return Err(bad("kubeVersion", v, "is not a Kubernetes version"));
                }
            }
            "--include-crds" | "--skip-tests" | "--no-hooks" | "--debug" | "--devel" => {}
            flag if flag.starts_with('-') => return Err(GateError::Flag(flag.to_owned())),
            path if chart.is_none() => {
                in_repo("chartHome", path, dirs)?;
                let name = Path::new(path)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("");
                if name.starts_with('-') {
                    return Err(bad("name", name, FLAG_LIKE));
                }
                chart = Some(PathBuf::from(path));
            }
            extra => return Err(GateError::Extra(extra.to_owned())),
        }
    }
    chart
        .map(|chart| HelmCall::Template { chart })
        .ok_or(GateError::Missing("chart"))
}

fn check_pull(args: &[&str]) -> Result<HelmCall, GateError> {
    let mut chart: Option<String> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match *arg {
            "--repo" => {
                let repo = flag_value(it.next(), "repo")?;
                repo_url(repo, &["https://", "http://"])?;
            }
            "--version" => {
                let v = flag_value(it.next(), "version")?;
                if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(bad("version", v, "must not contain spaces"));
                }
            }
            "--devel" => {}
            flag if flag.starts_with('-') => return Err(GateError::Flag(flag.to_owned())),
            reference if chart.is_none() => {
                if reference.starts_with("oci://") {
                    repo_url(reference, &["oci://"])?;
                } else if !reference
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                {
                    return Err(bad("name", reference, "is not a chart name"));
                }
                chart = Some(reference.to_owned());
            }
            extra => return Err(GateError::Extra(extra.to_owned())),
        }
    }
    chart
        .map(|chart| HelmCall::Pull { chart })
        .ok_or(GateError::Missing("chart name"))
}

fn flag_value<'a>(v: Option<&&'a str>, field: &'static str) -> Result<&'a str, GateError> {
    match v {
        None => Err(GateError::Missing(field)),
        Some(v) if v.starts_with('-') => Err(bad(field, v, FLAG_LIKE)),
        Some(v) => Ok(v),
    }
}

fn bad(field: &'static str, value: &str, reason: &'static str) -> GateError {
    GateError::Value {
        field,
        value: value.chars().take(120).collect(),
        reason,
    }
}

/// Helm's release name rule (a DNS subdomain of at most 53 characters).
fn release_name(name: &str) -> Result<(), GateError> {
    if name.starts_with('-') {
        Err(bad("releaseName", name, FLAG_LIKE))
    } else if name.len() <= 53 && crate::names::is_dns_subdomain(name) {
        Ok(())
    } else {
        Err(bad(
            "releaseName",
            name,
            "is not a Helm release name (lowercase letters, digits, '-' and '.', at most 53)",
        ))
    }
}

fn repo_url(url: &str, schemes: &[&str]) -> Result<(), GateError> {
    let ok = schemes.iter().any(|s| url.starts_with(s))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(bad("repo", url, "must be an http(s):// or oci:// URL"))
    }
}

/// An absolute, `..`-free path inside the request's repository (charts live only there).
fn in_repo(field: &'static str, path: &str, dirs: Dirs<'_>) -> Result<(), GateError> {
    inside(
        field,
        path,
        Dirs {
            repo: dirs.repo,
            scratch: dirs.repo,
        },
    )
}

/// An absolute, `..`-free path inside the request's repository or scratch dir.
fn inside(field: &'static str, path: &str, dirs: Dirs<'_>) -> Result<(), GateError> {
    let p = Path::new(path);
    let clean = p.is_absolute()
        && !p
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir));
    if clean && (p.starts_with(dirs.repo) || p.starts_with(dirs.scratch)) {
        Ok(())
    } else {
        let shown = p
            .strip_prefix(dirs.repo)
            .map_or_else(|_| path.to_owned(), |r| r.display().to_string());
        Err(bad(field, &shown, "must stay inside the repository"))
    }
}

/// Gate mode: check `std::env::args`, pin helm's environment, exec the real helm.
pub fn run(real_helm: OsString) -> ExitCode {
    let refuse = |msg: String| {
        eprintln!("{REFUSED_PREFIX}{msg}");
        ExitCode::from(2)
    };
    let (Some(repo), Some(scratch)) = (
        std::env::var_os(GATE_REPO_ENV).map(PathBuf::from),
        std::env::var_os(GATE_SCRATCH_ENV).map(PathBuf::from),
    ) else {
        return refuse(format!("{GATE_REPO_ENV}/{GATE_SCRATCH_ENV} not set"));
    };
    let args: Option<Vec<String>> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string().ok())
        .collect();
    let dirs = Dirs {
        repo: &repo,
        scratch: &scratch,
    };
    let Some(args) = args else {
        return refuse(GateError::NotUtf8.to_string());
    };
    if let Err(e) = check(&args, dirs) {
        return refuse(explain(&e, &args, dirs));
    }
    let mut cmd = std::process::Command::new(&real_helm);
    cmd.args(&args).env_clear();
    for name in HELM_ENV_KEEP {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    for (name, dir) in HELM_HOMES {
        cmd.env(name, scratch.join(dir));
    }
    cmd.env("HELM_PLUGINS", no_plugins_dir(&scratch));
    let err = cmd.exec();
    refuse(format!(
        "cannot execute {}: {err}",
        Path::new(&real_helm).display()
    ))
}

/// The refusal with where to fix it: the chart and the kustomization that inflates it (the
/// nearest directory above the chart home that has a kustomization file).
pub fn explain(err: &GateError, args: &[String], dirs: Dirs<'_>) -> String {
    let chart = args
        .iter()
        .skip(1)
        .find(|a| a.starts_with('/'))
        .map(PathBuf::from);
    let Some(chart) = chart else {
        return format!("kustomize helmCharts: {err}");
    };
    let name = chart
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kustomization = chart
        .ancestors()
        .skip(1)
        .take_while(|d| d.starts_with(dirs.repo))
        .find_map(|d| {
            ["kustomization.yaml", "kustomization.yml", "Kustomization"]
                .iter()
                .map(|f| d.join(f))
                .find(|f| f.is_file())
        })
        .and_then(|f| f.strip_prefix(dirs.repo).ok().map(Path::to_path_buf));
    match kustomization {
        Some(k) => format!(
            "{}: helmCharts entry (or HelmChartInflationGenerator) with name {name:?}: {err}",
            k.display()
        ),
        None => format!("helmCharts entry with name {name:?}: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO: &str = "/w/req-1/repo";
    const SCRATCH: &str = "/w/req-1/tmp";

    fn dirs() -> Dirs<'static> {
        Dirs {
            repo: Path::new(REPO),
            scratch: Path::new(SCRATCH),
        }
    }

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| (*a).to_owned()).collect()
    }

    fn chk(s: &[&str]) -> Result<HelmCall, GateError> {
        check(&argv(s), dirs())
    }

    #[test]
    fn kustomize_shapes_are_accepted() {
        assert_eq!(chk(&["version", "-c", "--short"]), Ok(HelmCall::Version));
        assert_eq!(chk(&["version", "--short"]), Ok(HelmCall::Version));
        let chart = "/w/req-1/repo/app/charts/c";
        let values = "/w/req-1/tmp/tmp/kustomize-helm-1/c-kustomize-values.yaml";
        assert_eq!(
            chk(&[
                "template",
                "web",
                chart,
                "--namespace",
                "prod",
                "--name-template",
                "x",
                "-f",
                values,
                "-f",
                "/w/req-1/repo/app/extra.yaml",
                "--api-versions",
                "monitoring.coreos.com/v1",
                "--kube-version",
                "1.30",
                "--include-crds",
                "--skip-tests",
                "--no-hooks",
                "--debug",
                "--devel",
            ]),
            Ok(HelmCall::Template {
                chart: chart.into()
            })
        );
        assert!(chk(&["template", "--generate-name", chart, "-f", values]).is_ok());
        // Older kustomize put the namespace before the chart.
        assert!(chk(&["template", "web", "--namespace", "prod", chart]).is_ok());
        assert_eq!(
            chk(&[
                "pull",
                "--untar",
                "--untardir",
                "/w/req-1/repo/app/charts",
                "--repo",
                "https://charts.example.com",
                "c",
                "--version",
                "1.2.3",
                "--devel",
            ]),
            Ok(HelmCall::Pull { chart: "c".into() })
        );
        assert!(
            chk(&[
                "pull",
                "--untar",
                "--untardir",
                "/w/req-1/repo/app/charts",
                "oci://registry.example.com/charts/c",
                "--version",
                "1.2.3",
            ])
            .is_ok()
        );
    }

    #[test]
    fn flag_like_values_are_refused_with_their_field() {
        let chart = "/w/req-1/repo/app/charts/c";
        let field = |r: Result<HelmCall, GateError>| match r {
            Err(GateError::Value { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        };
        assert_eq!(
            field(chk(&["template", "--post-renderer=sh", chart])),
            "releaseName"
        );
        assert_eq!(field(chk(&["template", "-x", chart])), "releaseName");
        assert_eq!(
            field(chk(&[
                "template",
                "web",
                chart,
                "--namespace",
                "--post-renderer=sh"
            ])),
            "namespace"
        );
        assert_eq!(
            field(chk(&["template", "web", "/w/req-1/repo/app/charts/-c"])),
            "name"
        );
        assert_eq!(
            field(chk(&[
                "pull",
                "--untar",
                "--untardir",
                "/w/req-1/repo/c",
                "--repo",
                "--post-renderer",
                "c"
            ])),
            "repo"
        );
        assert_eq!(
            field(chk(&[
                "pull",
                "--untar",
                "--untardir",
                "/w/req-1/repo/c",
                "--repo",
                "https://x",
                "c",
                "--version",
                "--post-renderer=sh"
            ])),
            "version"
        );
        assert_eq!(
            chk(&[
                "pull",
                "--untar",
                "--untardir",
                "/w/req-1/repo/c",
                "--repo",
                "https://x",
                "-c"
            ]),
            Err(GateError::Flag("-c".into()))
        );
    }

    #[test]
    fn unknown_flags_commands_and_outside_paths_are_refused() {
        let chart = "/w/req-1/repo/app/charts/c";
        for flag in [
            "--post-renderer",
            "--post-renderer=sh",
            "--post-renderer-args",
            "--set-file",
            "--repo",
            "--plugins",
            "-fvalues.yaml",
            "--values=/etc/passwd",
        ] {
            assert!(
                matches!(
                    chk(&["template", "web", chart, flag]),
                    Err(GateError::Flag(_))
                ),
                "{flag}"
            );
        }
        for cmd in ["install", "plugin", "dependency", "registry", "sh"] {
            assert_eq!(chk(&[cmd, "x"]), Err(GateError::Command(cmd.into())));
        }
        assert!(chk(&["version"]).is_err());
        assert!(chk(&["template", "web", "/etc/c"]).is_err());
        assert!(chk(&["template", "web", "/w/req-1/repo/../../etc/c"]).is_err());
        assert!(chk(&["template", "web", "charts/c"]).is_err());
        assert!(chk(&["template", "web", chart, "-f", "/etc/passwd"]).is_err());
        assert!(
            chk(&[
                "template",
                "web",
                chart,
                "-f",
                "/w/req-1/repo/a,/etc/passwd"
            ])
            .is_err()
        );
        assert!(chk(&["template", "web", chart, "-f", "https://evil/values.yaml"]).is_err());
        assert!(chk(&["template", "web", chart, chart]).is_err());
        assert!(chk(&["template", "web"]).is_err());
        assert!(chk(&["pull", "--untar", "--untardir", "/tmp/x", "c"]).is_err());
        // Charts come from the repository only, never from the scratch dir.
        assert!(chk(&["pull", "--untar", "--untardir", "/w/req-1/tmp/helm", "c"]).is_err());
        assert!(chk(&["template", "web", "/w/req-1/tmp/c"]).is_err());
        assert!(
            chk(&[
                "template",
                "web",
                chart,
                "--name-template",
                "{{ env \"AWS_SECRET\" }}"
            ])
            .is_err()
        );
        assert!(
            chk(&[
                "pull",
                "--untar",
                "--untardir",
                "/w/req-1/repo/c",
                "--repo",
                "file:///etc",
                "c"
            ])
            .is_err()
        );
    }

    #[test]
    fn explanation_names_the_kustomization_and_chart() {
        let repo = tempfile::tempdir().expect("tmp");
        let app = repo.path().join("apps/web");
        std::fs::create_dir_all(app.join("charts/c")).expect("mkdir");
        std::fs::write(app.join("kustomization.yaml"), "helmCharts: []\n").expect("write");
        let scratch = repo.path().join("tmp");
        let d = Dirs {
            repo: repo.path(),
            scratch: &scratch,
        };
        let chart = app.join("charts/c").display().to_string();
        let args = argv(&["template", "--post-renderer=sh", &chart]);
        let err = check(&args, d).expect_err("refused");
        let text = explain(&err, &args, d);
        assert!(
            text.starts_with("apps/web/kustomization.yaml: helmCharts entry"),
            "{text}"
        );
        assert!(text.contains("name \"c\""), "{text}");
        assert!(
            text.contains("releaseName \"--post-renderer=sh\""),
            "{text}"
        );
    }
}
