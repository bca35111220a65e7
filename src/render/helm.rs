//! `helm template` for a chart app. Settings from the request become argv only after
//! validation, and values from plugin env go through a generated values file (never `--set`,
//! whose `,` and `=` parsing would let a value set other keys).
//!
//! Seed-pipeline equivalents for charts: `IMAGE_NAME`/`IMAGE_TAG` set the values
//! `image.repository`/`image.tag` (the `helm create` convention); `APP_REPO` adds the
//! `github.com/url` annotation to every rendered object's metadata after rendering.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::{ImageOverride, REPO_ANNOTATION, RenderError, ToolPaths, validate_repo};
use crate::context::{APP_NAMESPACE, KUBE_API_VERSIONS, KUBE_VERSION, RequestEnv};
use crate::names::is_dns_label;
use crate::render::tool::ToolCommand;

/// Validated inputs of one `helm template` run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HelmSettings {
    pub release: String,
    pub namespace: Option<String>,
    pub kube_version: Option<String>,
    pub api_versions: Vec<String>,
    pub image: Option<ImageOverride>,
}

/// Release name when the request carries no usable app name.
const DEFAULT_RELEASE: &str = "release";

impl HelmSettings {
    pub fn from_env(env: &RequestEnv) -> Result<Self, RenderError> {
        if let Some(repo) = env.plugin(super::APP_REPO) {
            validate_repo(repo)?;
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
        let api_versions = env
            .non_empty(KUBE_API_VERSIONS)
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        if s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "./-".contains(c))
                        {
                            Ok(s.to_owned())
                        } else {
                            Err(invalid(
                                KUBE_API_VERSIONS,
                                "not a list of group/version strings",
                            ))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(Self {
            release: release_name(env.app_name()),
            namespace,
            kube_version,
            api_versions,
            image: ImageOverride::from_env(env)?,
        })
    }

    /// Writes the values file that carries plugin env settings, if any are set.
    pub async fn write_values_file(&self, scratch: &Path) -> Result<Option<PathBuf>, RenderError> {
        let Some(image) = &self.image else {
            return Ok(None);
        };
        let path = scratch.join("avp-sidecar-values.json");
        // JSON is YAML: helm reads this file with the exact string values we put in.
        let values = json!({"image": {"repository": image.name, "tag": image.tag}});
        tokio::fs::write(&path, values.to_string())
            .await
            .map_err(|source| RenderError::Io {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Some(path))
    }
}

fn invalid(name: &str, reason: &str) -> RenderError {
    RenderError::InvalidEnv {
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
}

/// `helm template <release> . --namespace <ns> --include-crds [...]`, run in the chart dir.
pub fn command(
    tools: &ToolPaths,
    chart_dir: &Path,
    s: &HelmSettings,
    values_file: Option<&Path>,
    env: Vec<(String, String)>,
) -> ToolCommand {
    let mut args: Vec<OsString> = vec!["template".into(), s.release.clone().into(), ".".into()];
    if let Some(ns) = &s.namespace {
        args.push(format!("--namespace={ns}").into());
    }
    args.push("--include-crds".into());
    if let Some(v) = &s.kube_version {
        args.push(format!("--kube-version={v}").into());
    }
    for v in &s.api_versions {
        args.push(format!("--api-versions={v}").into());
    }
    if let Some(f) = values_file {
        let mut a = OsString::from("--values=");
        a.push(f);
        args.push(a);
    }
    ToolCommand {
        program: tools.helm.clone(),
        args,
        cwd: chart_dir.to_path_buf(),
        env,
    }
}

/// Adds `github.com/url: <repo>` to every object's `metadata.annotations`.
pub fn annotate_repo(docs: &mut [Value], repo: &str) {
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

fn is_kube_version(s: &str) -> bool {
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
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> RequestEnv {
        RequestEnv::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

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
            Some(Path::new("/w/v.json")),
            vec![],
        );
        assert_eq!(
            cmd.display(),
            "/t/helm template web . --namespace=demo --include-crds --kube-version=1.31.0 \
             --api-versions=v1 --api-versions=apps/v1 \
             --api-versions=monitoring.coreos.com/v1/ServiceMonitor --values=/w/v.json"
        );
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
