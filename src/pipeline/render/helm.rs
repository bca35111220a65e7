//! `helm template` for a chart app. Settings from the request become argv only after
//! validation, and values from plugin env go through a generated values file (never `--set`,
//! whose `,` and `=` parsing would let a value set other keys).
//!
//! Seed-pipeline equivalents for charts: `IMAGE_NAME`/`IMAGE_TAG` set the values
//! `image.repository`/`image.tag` (the `helm create` convention); `APP_REPO` adds the
//! `github.com/url` annotation to every rendered object's metadata after rendering.
//!
//! What AVP's helm plugin offers through `${ARGOCD_ENV_HELM_ARGS}` (any flag, including
//! `--post-renderer`: code execution) is offered as data instead, as Argo CD's own helm source
//! does: `HELM_VALUE_FILES` (files of the repository, never outside it), `HELM_VALUES` (inline
//! YAML, AVP's `-f <(echo "$ARGOCD_ENV_HELM_VALUES")`) and `HELM_RELEASE_NAME`; `HELM_ARGS`
//! itself is read as data, honouring only its value files and simple `--set`s ([`HelmArgs`]).
//! Precedence, lowest first: the chart's `values.yaml`, `HELM_VALUE_FILES` in order, `HELM_ARGS`
//! value files, `HELM_VALUES`, `HELM_ARGS` `--set`s, the image.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use tokio::io::AsyncReadExt;

use super::{ImageOverride, REPO_ANNOTATION, RenderError, ToolPaths, validate_repo};
use crate::names::is_dns_label;
use crate::pipeline::context::{APP_NAMESPACE, KUBE_API_VERSIONS, KUBE_VERSION, RequestEnv};
use crate::pipeline::render::tool::ToolCommand;

/// helm's own limit for a chart file; value files are held to it.
pub(crate) const MAX_CHART_FILE_BYTES: u64 = 5 << 20;

/// Plugin env names for charts (without the `ARGOCD_ENV_` prefix).
pub(crate) const HELM_VALUE_FILES: &str = "HELM_VALUE_FILES";
pub(crate) const HELM_VALUES: &str = "HELM_VALUES";
pub(crate) const HELM_RELEASE_NAME: &str = "HELM_RELEASE_NAME";
/// AVP's helm plugin setting: words for helm's command line (see [`HelmArgs`]).
pub(crate) const HELM_ARGS: &str = "HELM_ARGS";

/// Validated inputs of one `helm template` run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HelmSettings {
    pub release: String,
    pub namespace: Option<String>,
    pub kube_version: Option<String>,
    pub api_versions: Vec<String>,
    pub image: Option<ImageOverride>,
    /// `HELM_VALUE_FILES` as given: relative to the chart dir, checked against the repository
    /// by [`HelmSettings::value_files`].
    pub value_files: Vec<String>,
    /// `HELM_ARGS`, read as data.
    pub args: HelmArgs,
    /// `HELM_VALUES`: YAML (a mapping), checked to parse.
    pub inline_values: Option<String>,
}

/// Release name when the request carries no usable app name.
const DEFAULT_RELEASE: &str = "release";

impl HelmSettings {
    pub(crate) fn from_env(env: &RequestEnv) -> Result<Self, RenderError> {
        if let Some(repo) = env.setting(super::APP_REPO) {
            validate_repo(&repo)?;
        }
        let namespace = match env.non_empty(APP_NAMESPACE) {
            Some(ns) if is_dns_label(ns, 63) => Some(ns.to_owned()),
            Some(_) => return Err(invalid(APP_NAMESPACE, "not a valid namespace name")),
            None => None,
        };
        let kube_version = match env.non_empty(KUBE_VERSION) {
            Some(v) if is_kube_version(v) => Some(v.to_owned()),
            Some(_) => return Err(invalid(KUBE_VERSION, "not a Kubernetes version")),
            None => None,
        };
        let api_versions = comma_list(env.non_empty(KUBE_API_VERSIONS), |s| {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "./-".contains(c))
                .then_some(())
                .ok_or_else(|| invalid(KUBE_API_VERSIONS, "not a list of group/version strings"))
        })?;
        let release = match env.setting(HELM_RELEASE_NAME).as_deref() {
            Some(name) if name.len() <= 53 && crate::names::is_dns_subdomain(name) => {
                name.to_owned()
            }
            Some(_) => {
                return Err(super::invalid(
                    HELM_RELEASE_NAME,
                    "not a release name (lowercase letters, digits, '-' and '.', at most 53)",
                ));
            }
            None => release_name(env.app_name()),
        };
        let value_files = comma_list(env.setting(HELM_VALUE_FILES).as_deref(), |f| {
            check_value_file(HELM_VALUE_FILES, f)
        })?;
        let inline_values = match env.setting(HELM_VALUES).as_deref() {
            None => None,
            Some(text) => match crate::yaml::parse_first_document(text) {
                Ok(Value::Object(_) | Value::Null) => Some(text.to_owned()),
                Ok(_) => return Err(super::invalid(HELM_VALUES, "not a YAML mapping")),
                Err(e) => return Err(super::invalid(HELM_VALUES, &format!("not YAML: {e}"))),
            },
        };
        Ok(Self {
            release,
            namespace,
            kube_version,
            api_versions,
            image: ImageOverride::from_env(env)?,
            value_files,
            args: HelmArgs::parse(env.setting(HELM_ARGS).as_deref().unwrap_or(""))?,
            inline_values,
        })
    }

    /// The value files, each proven to be a file inside `repo` (symlinks resolved) and copied
    /// into `scratch`: helm gets only our fixed names, since its `--values` splits a path on
    /// `,` (a link target such as `a,/etc/x.yaml` would make it read another file). Files
    /// outside the repository and missing ones get the same answer: no probing the sidecar's
    /// filesystem.
    pub(crate) async fn value_files(
        &self,
        chart_dir: &Path,
        repo: &Path,
        scratch: &Path,
    ) -> Result<Vec<PathBuf>, RenderError> {
        let root = repo.canonicalize().map_err(|source| RenderError::Io {
            path: repo.display().to_string(),
            source,
        })?;
        let mut out = Vec::new();
        let files = (self.value_files.iter().map(|f| (HELM_VALUE_FILES, f)))
            .chain(self.args.value_files.iter().map(|f| (HELM_ARGS, f)));
        for (i, (setting, f)) in files.enumerate() {
            let bad = |why: &str| super::invalid(setting, &format!("{f:?}: {why}"));
            let path = chart_dir
                .join(f)
                .canonicalize()
                .ok()
                .filter(|p| p.starts_with(&root) && p.is_file())
                .ok_or_else(|| bad("not a file inside the repository"))?;
            // One open file, read to at most the limit: what was checked is what is copied.
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| bad(&format!("cannot read: {e}")))?;
            let mut text = Vec::new();
            file.take(MAX_CHART_FILE_BYTES + 1)
                .read_to_end(&mut text)
                .await
                .map_err(|e| bad(&format!("cannot read: {e}")))?;
            if text.len() as u64 > MAX_CHART_FILE_BYTES {
                return Err(bad("larger than 5 MiB"));
            }
            out.push(
                write(
                    scratch.join(format!("avp-sidecar-value-file-{i}.yaml")),
                    &text,
                )
                .await?,
            );
        }
        Ok(out)
    }

    /// Writes the values files that carry plugin env settings (`HELM_VALUES`, `HELM_ARGS`'s
    /// `--set`s, then the image),
    /// in the order helm must read them.
    pub(crate) async fn write_values_files(
        &self,
        scratch: &Path,
    ) -> Result<Vec<PathBuf>, RenderError> {
        let mut files = Vec::new();
        if let Some(text) = &self.inline_values {
            files.push(write(scratch.join("avp-sidecar-helm-values.yaml"), text).await?);
        }
        if !self.args.set.is_empty() {
            let values = Value::Object(self.args.set.clone()).to_string();
            files.push(write(scratch.join("avp-sidecar-helm-set.json"), &values).await?);
        }
        if let Some(image) = &self.image {
            // JSON is YAML: helm reads this file with the exact string values we put in.
            let values = json!({"image": {"repository": image.name, "tag": image.tag}});
            files.push(write(scratch.join("avp-sidecar-values.json"), &values.to_string()).await?);
        }
        Ok(files)
    }
}

async fn write(path: PathBuf, text: impl AsRef<[u8]>) -> Result<PathBuf, RenderError> {
    tokio::fs::write(&path, text)
        .await
        .map_err(|source| RenderError::Io {
            path: path.display().to_string(),
            source,
        })?;
    Ok(path)
}

/// AVP's `${ARGOCD_ENV_HELM_ARGS}`: its helm plugin pasted it unquoted into `sh -c 'helm
/// template ... ${ARGOCD_ENV_HELM_ARGS} .'`, so the shell split it into words at whitespace
/// (quotes in the value stay literal) and helm honoured any flag, `--post-renderer` included.
/// Here the words are data and only flags with a safe meaning are honoured, as what they mean:
///
/// - `-f`/`--values FILE[,FILE]` (also `=FILE`, `-fFILE`): value files, after
///   `HELM_VALUE_FILES` and held to the same rules (inside the repository);
/// - `--set`/`--set-string KEY=VALUE[,KEY=VALUE]` with dotted keys of plain names: written to a
///   values file read after `HELM_VALUES` (as helm's `--set` beats files); `--set` types
///   `true`/`false`, `null` and integers as helm does, `--set-string` keeps strings; list and
///   escape syntax (`[0]`, `{a,b}`, `\`) is refused;
/// - `--include-crds` (always on) and `--skip-tests`.
///
/// Anything else is an error naming the word: the remaining flags can run code, read files
/// outside the repository or reach the network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HelmArgs {
    pub value_files: Vec<String>,
    pub set: Map<String, Value>,
    pub skip_tests: bool,
}

impl HelmArgs {
    pub(crate) fn parse(text: &str) -> Result<Self, RenderError> {
        let bad = |why: String| super::invalid(HELM_ARGS, &why);
        let mut out = Self::default();
        let mut words = text.split_whitespace();
        while let Some(word) = words.next() {
            let (flag, inline) = match word.split_once('=') {
                Some((f, v)) if f.starts_with("--") || f == "-f" => (f, Some(v)),
                _ => match word.strip_prefix("-f").filter(|v| !v.is_empty()) {
                    Some(v) if !word.starts_with("--") => ("-f", Some(v)),
                    _ => (word, None),
                },
            };
            let mut value = || {
                inline
                    .or_else(|| words.next())
                    .ok_or_else(|| bad(format!("{flag} needs a value")))
            };
            match flag {
                "-f" | "--values" => {
                    let files = comma_list(Some(value()?), |f| check_value_file(HELM_ARGS, f))?;
                    out.value_files.extend(files);
                }
                "--set" | "--set-string" => {
                    let typed = flag == "--set";
                    for pair in value()?.split(',') {
                        out.set_pair(pair, typed).map_err(&bad)?;
                    }
                }
                "--include-crds" if inline.is_none() => {}
                "--skip-tests" if inline.is_none() => out.skip_tests = true,
                _ => {
                    return Err(bad(format!(
                        "{word:?} is not supported: only -f/--values FILE, --set/--set-string KEY=VALUE, --include-crds and --skip-tests are (other helm flags can run code or read files; use HELM_VALUE_FILES, HELM_VALUES and HELM_RELEASE_NAME)"
                    )));
                }
            }
        }
        Ok(out)
    }

    /// One `key.path=value` of `--set` (typed as helm's `strvals` does) or `--set-string`.
    fn set_pair(&mut self, pair: &str, typed: bool) -> Result<(), String> {
        let (key, raw) = pair
            .split_once('=')
            .ok_or_else(|| format!("--set {pair:?}: expected KEY=VALUE"))?;
        let plain = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
        };
        if !key.split('.').all(plain) || raw.contains(['\\', '{', '[']) {
            return Err(format!(
                "--set {key:?}: only dotted keys of plain names and values without '\\', '{{' or '[' are supported"
            ));
        }
        let value = match raw {
            _ if !typed => Value::String(raw.to_owned()),
            "null" => Value::Null,
            v if v.eq_ignore_ascii_case("true") => Value::Bool(true),
            v if v.eq_ignore_ascii_case("false") => Value::Bool(false),
            // helm's typedVal: ParseInt, but not with a leading zero ("007" stays a string).
            v if !(v.len() > 1 && v.starts_with('0')) && v.parse::<i64>().is_ok() => {
                v.parse::<i64>().map(Value::from).unwrap_or(Value::Null)
            }
            v => Value::String(v.to_owned()),
        };
        let path: Vec<&str> = key.split('.').collect();
        insert_path(&mut self.set, &path, value);
        Ok(())
    }
}

/// Sets `path` in `map` to `value`, making (or replacing non-map values by) maps on the way;
/// a later `--set` of the same key wins, as in helm.
fn insert_path(map: &mut Map<String, Value>, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            map.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let slot = map
                .entry((*first).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(inner) = slot {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// A value file named by a setting: relative to the chart, never a URL or absolute path.
fn check_value_file(setting: &str, f: &str) -> Result<(), RenderError> {
    if f.contains("://") || f.starts_with('/') || f.contains('\0') {
        Err(super::invalid(
            setting,
            &format!("{f:?}: only paths relative to the chart, inside the repository"),
        ))
    } else {
        Ok(())
    }
}

/// The non-empty items of a comma-separated setting, each accepted by `check`.
fn comma_list(
    list: Option<&str>,
    check: impl Fn(&str) -> Result<(), RenderError>,
) -> Result<Vec<String>, RenderError> {
    list.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| check(item).map(|()| item.to_owned()))
        .collect()
}

fn invalid(name: &str, reason: &str) -> RenderError {
    RenderError::InvalidEnv {
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
}

/// `helm template <release> <chart dir> --namespace <ns> [-f ...] [...] --include-crds`, run in
/// the chart dir: the shape kustomize's `helmCharts` produce, so `sandbox::gate::check` holds
/// both paths to one set of rules. `values_files` in precedence order, lowest first.
pub(crate) fn command(
    tools: &ToolPaths,
    chart_dir: &Path,
    s: &HelmSettings,
    values_files: &[PathBuf],
    env: Vec<(String, String)>,
) -> ToolCommand {
    let mut args: Vec<OsString> = vec![
        "template".into(),
        s.release.clone().into(),
        chart_dir.as_os_str().to_owned(),
    ];
    if let Some(ns) = &s.namespace {
        args.extend(["--namespace".into(), ns.into()]);
    }
    for f in values_files {
        args.extend(["-f".into(), f.as_os_str().to_owned()]);
    }
    for v in &s.api_versions {
        args.extend(["--api-versions".into(), v.into()]);
    }
    if let Some(v) = &s.kube_version {
        args.extend(["--kube-version".into(), v.into()]);
    }
    args.push("--include-crds".into());
    if s.args.skip_tests {
        args.push("--skip-tests".into());
    }
    ToolCommand {
        program: tools.helm.clone(),
        args,
        cwd: chart_dir.to_path_buf(),
        env,
    }
}

/// Adds `github.com/url: <repo>` to every object's `metadata.annotations`.
pub(crate) fn annotate_repo(docs: &mut [Value], repo: &str) {
    for doc in docs {
        let Some(obj) = doc.as_object_mut() else {
            continue;
        };
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(meta) = meta.as_object_mut() else {
            continue;
        };
        let ann = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if ann.is_null() {
            *ann = Value::Object(Map::new());
        }
        if let Some(ann) = ann.as_object_mut() {
            ann.insert(REPO_ANNOTATION.to_owned(), Value::String(repo.to_owned()));
        }
    }
}

/// Helm release names are DNS-1123 labels of at most 53 characters. Apps outside the control
/// plane namespace arrive as `<namespace>_<name>`: the name part is used.
fn release_name(app_name: &str) -> String {
    let name = app_name.rsplit('_').next().unwrap_or(app_name);
    if is_dns_label(name, 53) {
        name.to_owned()
    } else {
        DEFAULT_RELEASE.to_owned()
    }
}

pub(crate) fn is_kube_version(s: &str) -> bool {
    let core = s.strip_prefix('v').unwrap_or(s);
    let core = core.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c))
}

#[cfg(test)]
mod tests {
    #[test]
    fn helm_args_are_read_as_data() {
        use super::HelmArgs;
        let a = HelmArgs::parse(
            "-f values-prod.yaml --values=a.yaml,b.yaml -fc.yaml --set image.tag=1.2,replicas=3 --set-string port=8080 --set on=TRUE --set ver=007 --include-crds --skip-tests",
        )
        .expect("valid");
        assert_eq!(
            a.value_files,
            ["values-prod.yaml", "a.yaml", "b.yaml", "c.yaml"]
        );
        assert_eq!(
            serde_json::Value::Object(a.set),
            serde_json::json!({"image": {"tag": "1.2"}, "replicas": 3, "port": "8080", "on": true, "ver": "007"})
        );
        assert!(a.skip_tests);
        assert_eq!(HelmArgs::parse("  ").expect("empty"), HelmArgs::default());
        for bad in [
            "--post-renderer /bin/sh",
            "--post-renderer=x",
            "-f",
            "-f /etc/passwd",
            "--values https://evil/x.yaml",
            "--set a[0]=x",
            "--set a={b,c}",
            "--set novalue",
            "--kube-context x",
            "chart-name",
            "--skip-tests=false",
        ] {
            let err = HelmArgs::parse(bad).expect_err(bad).to_string();
            assert!(err.starts_with("invalid HELM_ARGS"), "{bad}: {err}");
        }
    }

    use super::*;
    use crate::pipeline::context::testing::request_env as env;

    fn tools() -> ToolPaths {
        ToolPaths {
            kustomize: "/t/kustomize".into(),
            helm: "/t/helm".into(),
        }
    }

    #[test]
    fn argv_from_env() {
        let s = HelmSettings::from_env(&env(&[
            ("ARGOCD_APP_NAME", "argocd_web"),
            ("ARGOCD_APP_NAMESPACE", "demo"),
            ("KUBE_VERSION", "1.31.0"),
            (
                "KUBE_API_VERSIONS",
                "v1,apps/v1,monitoring.coreos.com/v1/ServiceMonitor",
            ),
        ]))
        .expect("valid");
        let cmd = command(
            &tools(),
            Path::new("/w/app"),
            &s,
            &["/w/repo/prod.yaml".into(), "/w/v.json".into()],
            vec![],
        );
        assert_eq!(
            cmd.display(),
            "/t/helm template web /w/app --namespace demo -f /w/repo/prod.yaml -f /w/v.json \
             --api-versions v1 --api-versions apps/v1 \
             --api-versions monitoring.coreos.com/v1/ServiceMonitor --kube-version 1.31.0 \
             --include-crds"
        );
    }

    #[test]
    fn values_from_plugin_env() {
        let s = HelmSettings::from_env(&env(&[
            ("ARGOCD_APP_NAME", "web"),
            ("ARGOCD_ENV_HELM_RELEASE_NAME", "web-prod"),
            (
                "ARGOCD_ENV_HELM_VALUE_FILES",
                "values-prod.yaml, ../shared/common.yaml",
            ),
            (
                "ARGOCD_ENV_HELM_VALUES",
                "replicas: 3\nimage:\n  pullPolicy: Always\n",
            ),
        ]))
        .expect("valid");
        assert_eq!(s.release, "web-prod");
        assert_eq!(s.value_files, ["values-prod.yaml", "../shared/common.yaml"]);
        for (k, v, why) in [
            ("ARGOCD_ENV_HELM_RELEASE_NAME", "Web_Prod", "release name"),
            (
                "ARGOCD_ENV_HELM_RELEASE_NAME",
                "--post-renderer=/bin/sh",
                "release name",
            ),
            ("ARGOCD_ENV_HELM_VALUE_FILES", "/etc/passwd", "relative"),
            (
                "ARGOCD_ENV_HELM_VALUE_FILES",
                "https://evil/values.yaml",
                "relative",
            ),
            ("ARGOCD_ENV_HELM_VALUES", "- a list", "mapping"),
            ("ARGOCD_ENV_HELM_VALUES", "a: [unclosed", "not YAML"),
        ] {
            let err = HelmSettings::from_env(&env(&[(k, v)]))
                .expect_err(k)
                .to_string();
            assert!(err.contains(k) && err.contains(why), "{k}={v}: {err}");
        }
    }

    #[tokio::test]
    async fn value_files_stay_inside_the_repository_and_are_copied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        let chart = repo.join("charts/web");
        let scratch = dir.path().join("scratch");
        std::fs::create_dir_all(&chart).expect("mkdir");
        std::fs::create_dir_all(&scratch).expect("mkdir");
        std::fs::write(repo.join("common.yaml"), "a: 1\n").expect("write");
        std::fs::write(chart.join("prod.yaml"), "b: 2\n").expect("write");
        std::fs::write(dir.path().join("outside.yaml"), "secret: 1\n").expect("write");
        std::os::unix::fs::symlink(dir.path().join("outside.yaml"), chart.join("link.yaml"))
            .expect("symlink");
        let settings = |files: &str| HelmSettings {
            value_files: files.split(',').map(str::to_owned).collect(),
            ..Default::default()
        };
        let ok = settings("prod.yaml,../../common.yaml")
            .value_files(&chart, &repo, &scratch)
            .await
            .expect("inside");
        // helm gets copies under fixed names (its --values splits paths on commas).
        assert_eq!(
            ok,
            [
                scratch.join("avp-sidecar-value-file-0.yaml"),
                scratch.join("avp-sidecar-value-file-1.yaml")
            ]
        );
        assert_eq!(std::fs::read_to_string(&ok[1]).expect("read"), "a: 1\n");
        for files in ["../../../outside.yaml", "link.yaml", "missing.yaml", "."] {
            let err = settings(files)
                .value_files(&chart, &repo, &scratch)
                .await
                .expect_err(files)
                .to_string();
            assert!(
                err.contains("not a file inside the repository"),
                "{files}: {err}"
            );
        }
    }

    #[test]
    fn hostile_values_rejected_or_neutralised() {
        for (k, v) in [
            ("ARGOCD_APP_NAMESPACE", "--post-renderer=/bin/sh"),
            ("KUBE_VERSION", "1.2; rm -rf /"),
            ("KUBE_API_VERSIONS", "v1,--set=x"),
        ] {
            assert!(HelmSettings::from_env(&env(&[(k, v)])).is_err(), "{k}={v}");
        }
        let s = HelmSettings::from_env(&env(&[("ARGOCD_APP_NAME", "--dry-run")])).expect("ok");
        assert_eq!(s.release, DEFAULT_RELEASE);
    }

    #[test]
    fn kube_versions() {
        for ok in ["1.31", "1.31.0", "v1.31.2", "1.31.2-gke.100", "1.30.1+k3s1"] {
            assert!(is_kube_version(ok), "{ok}");
        }
        for bad in ["", "1", "x.y", "1.2.3.4", "1..2", "1.2 3"] {
            assert!(!is_kube_version(bad), "{bad}");
        }
    }

    #[test]
    fn annotation_added_everywhere() {
        let mut docs = vec![
            json!({"kind": "A", "metadata": {"name": "a"}}),
            json!({"kind": "B", "metadata": {"annotations": null}}),
            json!({"kind": "C"}),
        ];
        annotate_repo(&mut docs, "https://x");
        for d in docs {
            assert_eq!(d["metadata"]["annotations"]["github.com/url"], "https://x");
        }
    }
}
