//! Plugin definitions: Argo CD `ConfigManagementPlugin` documents, with avp-sidecar's
//! `spec.avp` extension selecting the built-in pipeline. Parsed and validated once at startup;
//! an invalid definition stops the server with a message naming the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::pipeline::discovery::Accept;

/// The definitions shipped in `plugins/`, compiled in so the binary works without them: ours,
/// and argocd-vault-plugin's documented sidecar plugin names as aliases (an AVP user changes
/// the image and nothing else).
pub const BUILTIN: [(&str, &str); 6] = [
    ("avp", include_str!("../../plugins/avp.yaml")),
    (
        "avp-kustomize",
        include_str!("../../plugins/avp-kustomize.yaml"),
    ),
    ("avp-helm", include_str!("../../plugins/avp-helm.yaml")),
    (
        "argocd-vault-plugin",
        include_str!("../../plugins/argocd-vault-plugin.yaml"),
    ),
    (
        "argocd-vault-plugin-kustomize",
        include_str!("../../plugins/argocd-vault-plugin-kustomize.yaml"),
    ),
    (
        "argocd-vault-plugin-helm",
        include_str!("../../plugins/argocd-vault-plugin-helm.yaml"),
    ),
];

/// The plugin served when `serve --socket PATH` names none.
pub const DEFAULT_PLUGIN: &str = "avp";

#[derive(Clone, Debug, PartialEq)]
pub struct Plugin {
    pub name: String,
    pub version: String,
    pub kind: Kind,
    pub preserve_file_mode: bool,
    pub provide_git_creds: bool,
    pub static_parameters: Vec<Parameter>,
}

/// How a plugin renders.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// avp-sidecar's pipeline (`spec.avp`): no shell, built-in discovery and substitution.
    Builtin(Builtin),
    /// An Argo CD plugin written by the operator (`spec.generate`, `init`, `discover`,
    /// `parameters.dynamic`), run exactly as `argocd-cmp-server` runs it.
    Commands(Box<Commands>),
}

impl Plugin {
    /// What `CheckPluginConfiguration` reports as `isDiscoveryConfigured`.
    pub fn discovery_configured(&self) -> bool {
        match &self.kind {
            Kind::Builtin(b) => b.discover,
            Kind::Commands(c) => c.discover.is_configured(),
        }
    }

    pub fn substitutes(&self) -> bool {
        matches!(&self.kind, Kind::Builtin(b) if b.substitute)
    }
}

/// `command` + `args`, as in Argo's `Command` (argv, no implicit shell).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CommandSpec {
    pub command: Vec<String>,
    pub args: Vec<String>,
}

impl CommandSpec {
    pub fn argv(&self) -> Vec<String> {
        self.command.iter().chain(&self.args).cloned().collect()
    }
}

/// Argo's discovery rules; the first configured one decides.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Discover {
    #[serde(rename = "filename")]
    pub file_name: String,
    pub find: Find,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Find {
    pub glob: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
}

impl Discover {
    /// Argo: `fileName != "" || find.glob != "" || len(find.command) > 0`.
    pub fn is_configured(&self) -> bool {
        !self.file_name.is_empty() || !self.find.glob.is_empty() || !self.find.command.is_empty()
    }
}

/// A command-based plugin.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Commands {
    pub init: Option<CommandSpec>,
    pub generate: CommandSpec,
    pub discover: Discover,
    pub dynamic_parameters: Option<CommandSpec>,
    /// `spec.sandbox: true` (an avp-sidecar extension, ignored by Argo's own sidecar): the
    /// commands run confined like kustomize and helm (docs/security.md).
    pub sandbox: bool,
}

/// avp-sidecar's built-in pipeline settings (`spec.avp`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
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
#[serde(rename_all = "lowercase", default)]
pub struct Parameter {
    pub name: String,
    pub title: String,
    pub tooltip: String,
    pub required: bool,
    #[serde(rename = "itemtype")]
    pub item_type: String,
    #[serde(rename = "collectiontype")]
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
#[serde(rename_all = "lowercase", default)]
struct Spec {
    version: String,
    avp: Option<Builtin>,
    init: Option<CommandSpec>,
    generate: Option<CommandSpec>,
    discover: Discover,
    #[serde(rename = "preservefilemode")]
    preserve_file_mode: bool,
    #[serde(rename = "providegitcreds")]
    provide_git_creds: bool,
    parameters: Parameters,
    sandbox: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Parameters {
    #[serde(rename = "static")]
    static_: Vec<Parameter>,
    dynamic: Option<CommandSpec>,
}

/// Go's encoding/json matches struct fields case-insensitively: lower-case every key, except
/// the user's own keys inside a parameter's `map`.
fn lowercase_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let key = k.to_lowercase();
                    let v = if key == "map" { v } else { lowercase_keys(v) };
                    (key, v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(lowercase_keys).collect()),
        other => other,
    }
}

/// A `parameters.dynamic` command's output: JSON as Argo's Go code decodes it, with object keys
/// matched case-insensitively (`itemType`, `collectionType`, `ITEMTYPE` alike; a `map`'s keys
/// are data and keep their case). `null` is no parameters.
pub fn parse_dynamic_parameters(text: &str) -> Result<Vec<Parameter>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let parsed: Option<Vec<Parameter>> =
        serde_json::from_value(lowercase_keys(value)).map_err(|e| e.to_string())?;
    Ok(parsed.unwrap_or_default())
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
        let doc: Document =
            serde_json::from_value(lowercase_keys(value)).map_err(|e| invalid(e.to_string()))?;
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
        let spec = doc.spec;
        let kind = match (spec.avp, spec.generate) {
            (Some(builtin), None) => Kind::Builtin(builtin),
            (None, Some(generate)) if !generate.command.is_empty() => {
                Kind::Commands(Box::new(Commands {
                    init: spec.init.filter(|c| !c.command.is_empty()),
                    generate,
                    discover: spec.discover,
                    dynamic_parameters: spec.parameters.dynamic.filter(|c| !c.command.is_empty()),
                    sandbox: spec.sandbox,
                }))
            }
            (None, Some(_)) => return Err(invalid("spec.generate.command is empty".to_owned())),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "spec.avp and spec.generate exclude each other".to_owned(),
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "spec.generate (or avp-sidecar's spec.avp) is required".to_owned(),
                ));
            }
        };
        Ok(Self {
            name,
            version: spec.version,
            kind,
            preserve_file_mode: spec.preserve_file_mode,
            provide_git_creds: spec.provide_git_creds,
            static_parameters: spec.parameters.static_,
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
            assert!(p.substitutes());
            assert_eq!(
                p.socket_path(Path::new("/s")),
                PathBuf::from(format!("/s/{name}.sock"))
            );
        }
        assert!(
            Plugin::builtin("avp-kustomize")
                .expect("exists")
                .discovery_configured()
        );
        assert!(
            !Plugin::builtin("avp")
                .expect("exists")
                .discovery_configured()
        );
    }

    /// The UI offers exactly what the pipeline reads, so a parameter a user sets is never
    /// silently ignored.
    #[test]
    fn builtins_announce_exactly_the_settings_they_read() {
        for (name, _) in BUILTIN {
            let p = Plugin::builtin(name).expect("exists");
            let Kind::Builtin(b) = &p.kind else {
                panic!("{name} is built in");
            };
            let mut announced: Vec<&str> = p
                .static_parameters
                .iter()
                .map(|a| a.name.as_str())
                .collect();
            let mut read = crate::pipeline::render::settings(b.render).to_vec();
            read.push(crate::pipeline::substitute::AVP_SECRET);
            announced.sort_unstable();
            read.sort_unstable();
            assert_eq!(announced, read, "{name}");
            for a in &p.static_parameters {
                assert!(
                    !a.title.is_empty() && !a.tooltip.is_empty(),
                    "{name}: {a:?}"
                );
            }
        }
    }

    #[test]
    fn dynamic_parameters_use_go_key_rules() {
        let text = r#"[{"name":"values","title":"Values","itemType":"string","collectionType":"map","map":{"KeepCase":"x"}},
            {"NAME":"list","CollectionType":"array","array":["a"]}]"#;
        let params = parse_dynamic_parameters(text).expect("valid");
        assert_eq!(params[0].item_type, "string");
        assert_eq!(params[0].collection_type, "map");
        assert_eq!(params[0].map.get("KeepCase").map(String::as_str), Some("x"));
        assert_eq!(params[1].name, "list");
        assert_eq!(params[1].collection_type, "array");
        assert_eq!(params[1].array, ["a"]);
        assert_eq!(parse_dynamic_parameters("null").expect("null"), []);
        assert!(parse_dynamic_parameters("{").is_err());
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
            "kind: ConfigManagementPlugin\nmetadata: {name: x}\nspec: {generate: {command: []}}",
            "kind: ConfigManagementPlugin\nmetadata: {name: x}\nspec: {}",
            "kind: ConfigManagementPlugin\nmetadata: {name: x}\nspec: {avp: {render: jsonnet}}",
        ] {
            assert!(Plugin::parse(bad, "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn argo_plugin_yaml_case_insensitive_and_unknown_keys_ignored() {
        let p = Plugin::parse(
            r#"
apiVersion: argoproj.io/v1alpha1
kind: ConfigManagementPlugin
metadata:
  name: cmp
spec:
  Version: v2
  init: {command: [sh, -c], args: ["echo init"]}
  generate:
    command: [sh, -c]
    args: ["cat *.yaml"]
  discover:
    FileName: "*.yaml"
  parameters:
    static:
      - {name: p, itemType: number, collectionType: map, map: {KeepCase: x}}
    dynamic: {command: [echo, "[]"]}
  preserveFileMode: true
  allowConcurrency: true
  somethingNew: 1
"#,
            "t",
        )
        .expect("valid");
        assert_eq!(p.full_name(), "cmp-v2");
        assert!(p.preserve_file_mode && p.discovery_configured() && !p.substitutes());
        assert_eq!(p.static_parameters[0].item_type, "number");
        assert_eq!(
            p.static_parameters[0]
                .map
                .get("KeepCase")
                .map(String::as_str),
            Some("x")
        );
        let Kind::Commands(c) = p.kind else {
            panic!("commands")
        };
        assert_eq!(c.generate.argv(), ["sh", "-c", "cat *.yaml"]);
        assert_eq!(c.init.expect("init").argv(), ["sh", "-c", "echo init"]);
        assert_eq!(c.discover.file_name, "*.yaml");
        assert!(c.dynamic_parameters.is_some());
    }
}
