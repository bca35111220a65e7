//! Plugin definitions: Argo CD `ConfigManagementPlugin` documents, with avp-sidecar's
//! `spec.avp` extension selecting the built-in pipeline. Parsed and validated once at startup;
//! an invalid definition stops the server with a message naming the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::discovery::Accept;

/// The three definitions shipped in `plugins/`, compiled in so the binary works without them.
pub const BUILTIN: [(&str, &str); 3] = [
    ("avp", include_str!("../plugins/avp.yaml")),
    (
        "avp-kustomize",
        include_str!("../plugins/avp-kustomize.yaml"),
    ),
    ("avp-helm", include_str!("../plugins/avp-helm.yaml")),
];

/// The plugin served when `serve --socket PATH` names none.
pub const DEFAULT_PLUGIN: &str = "avp";

#[derive(Clone, Debug, PartialEq)]
pub struct Plugin {
    pub name: String,
    pub version: String,
    pub pipeline: Builtin,
    pub preserve_file_mode: bool,
    pub provide_git_creds: bool,
    pub static_parameters: Vec<Parameter>,
}

/// avp-sidecar's built-in pipeline settings (`spec.avp`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Builtin {
    pub render: Accept,
    #[serde(default = "yes")]
    pub substitute: bool,
    #[serde(default)]
    pub discover: bool,
}

fn yes() -> bool {
    true
}

/// One parameter announcement (`repository.ParameterAnnouncement`, JSON field names).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Parameter {
    pub name: String,
    pub title: String,
    pub tooltip: String,
    pub required: bool,
    pub item_type: String,
    pub collection_type: String,
    pub string: String,
    pub array: Vec<String>,
    pub map: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin definition {source_name}: {reason}")]
    Invalid { source_name: String, reason: String },
    #[error("reading plugin definitions in {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown plugin {0:?}: not a built-in and not found in the config dir")]
    Unknown(String),
}

#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: Spec,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Spec {
    version: String,
    avp: Option<Builtin>,
    generate: Option<Value>,
    preserve_file_mode: bool,
    provide_git_creds: bool,
    parameters: Parameters,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Parameters {
    #[serde(rename = "static")]
    static_: Vec<Parameter>,
}

impl Plugin {
    /// Parses one definition; `source_name` names it in errors (a file path or built-in name).
    pub fn parse(text: &str, source_name: &str) -> Result<Self, PluginError> {
        let invalid = |reason: String| PluginError::Invalid {
            source_name: source_name.to_owned(),
            reason,
        };
        let value = crate::yaml::parse_documents(text)
            .map_err(|e| invalid(e.to_string()))?
            .into_iter()
            .find(|d| !d.is_null())
            .ok_or_else(|| invalid("empty document".to_owned()))?;
        let doc: Document = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        if doc.kind != "ConfigManagementPlugin" {
            return Err(invalid(format!(
                "kind must be ConfigManagementPlugin, got {:?}",
                doc.kind
            )));
        }
        let name = doc.metadata.name;
        if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') {
            return Err(invalid(format!("invalid metadata.name {name:?}")));
        }
        let Some(pipeline) = doc.spec.avp else {
            let reason = if doc.spec.generate.is_some() {
                "command-based plugins (spec.generate) are not supported yet; use spec.avp"
            } else {
                "spec.avp is required"
            };
            return Err(invalid(reason.to_owned()));
        };
        Ok(Self {
            name,
            version: doc.spec.version,
            pipeline,
            preserve_file_mode: doc.spec.preserve_file_mode,
            provide_git_creds: doc.spec.provide_git_creds,
            static_parameters: doc.spec.parameters.static_,
        })
    }

    /// `<name>` or `<name>-<version>`: the socket's file stem and the name Applications use.
    pub fn full_name(&self) -> String {
        if self.version.is_empty() {
            self.name.clone()
        } else {
            format!("{}-{}", self.name, self.version)
        }
    }

    pub fn socket_path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.sock", self.full_name()))
    }

    pub fn builtin(name: &str) -> Option<Self> {
        BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, text)| Self::parse(text, n).expect("built-in plugin definitions are valid"))
    }
}

/// Every `*.yaml`/`*.yml` definition in `dir`, sorted by file name.
pub fn load_dir(dir: &Path) -> Result<Vec<Plugin>, PluginError> {
    let io = |source| PluginError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|source| PluginError::Io {
                path: f.display().to_string(),
                source,
            })?;
            Plugin::parse(&text, &f.display().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse() {
        for (name, _) in BUILTIN {
            let p = Plugin::builtin(name).expect("exists");
            assert_eq!(p.name, name);
            assert!(p.pipeline.substitute);
            assert_eq!(
                p.socket_path(Path::new("/s")),
                PathBuf::from(format!("/s/{name}.sock"))
            );
        }
        assert!(
            Plugin::builtin("avp-kustomize")
                .expect("exists")
                .pipeline
                .discover
        );
        assert!(!Plugin::builtin("avp").expect("exists").pipeline.discover);
    }

    #[test]
    fn versioned_socket_and_errors() {
        let p = Plugin::parse(
            "kind: ConfigManagementPlugin\nmetadata: {name: x}\nspec: {version: v1.0, avp: {render: helm}}\n",
            "t",
        )
        .expect("valid");
        assert_eq!(p.full_name(), "x-v1.0");
        for bad in [
            "kind: Other\nmetadata: {name: x}\nspec: {avp: {render: helm}}",
            "kind: ConfigManagementPlugin\nmetadata: {name: ''}\nspec: {avp: {render: helm}}",
            "kind: ConfigManagementPlugin\nmetadata: {name: ../x}\nspec: {avp: {render: helm}}",
            "kind: ConfigManagementPlugin\nmetadata: {name: x}\nspec: {generate: {command: [sh]}}",
            "kind: ConfigManagementPlugin\nmetadata: {name: x}\nspec: {avp: {render: jsonnet}}",
        ] {
            assert!(Plugin::parse(bad, "t").is_err(), "{bad}");
        }
    }
}
