//! Migration mode: a `kind: Secret` with placeholders becomes an External Secrets Operator
//! `ExternalSecret` that names the same Vault paths and keys, so the values are fetched in the
//! cluster by ESO and never pass through the sidecar, the repo-server or Argo CD's Redis.
//!
//! Pure, like the rest of the engine: the same placeholder grammar, annotations, path templates
//! and path validation decide *which* path/key/version each placeholder names; nothing is read.
//!
//! Mapping, per `data`/`stringData` field:
//! - exactly one placeholder and nothing else, no modifiers → a `spec.data` entry
//!   (`secretKey` = field, `remoteRef {key: <vault path>, property: <key>, version}`);
//! - text around placeholders, several placeholders, or modifiers ESO's templates can express
//!   (`base64encode` → `b64enc`, `base64decode` → `b64dec`, `sha256sum`) → a `spec.data` entry
//!   per placeholder plus a `spec.target.template.data` Go template for the field;
//! - no placeholder → the literal value, in the template.
//!
//! `remoteRef.key` is AVP's API path as written (`secret/data/app` for KV v2): ESO's Vault
//! provider accepts it both when the store's `path` is the mount and when it is unset.

use serde_json::{Map, Value, json};

use super::annotations;
use super::placeholder::{self, Placeholder, Source};
use super::{Kind, Manifest, Options, Problem, SubstituteError};
use crate::secrets::KvVersion;

/// Per-object switch: `external-secret` or `secret`.
pub const OUTPUT_ANNOTATION: &str = "avp.kubernetes.io/output";

/// When Secrets are converted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Only Secrets annotated `avp.kubernetes.io/output: external-secret`.
    #[default]
    Off,
    /// Every Secret with placeholders, unless annotated `avp.kubernetes.io/output: secret`.
    On,
    /// Every Secret with placeholders; the `secret` annotation is an error.
    Enforce,
}

/// The ESO store the generated `ExternalSecret`s use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    pub name: String,
    /// `ClusterSecretStore` or `SecretStore`.
    pub kind: String,
    /// `spec.refreshInterval`, e.g. `1h`.
    pub refresh_interval: String,
}

/// What to do with one document under `mode`: `Ok(true)` convert, `Ok(false)` leave it.
pub fn wants_conversion(doc: &Value, mode: Mode) -> Result<bool, String> {
    let Some(object) = doc.as_object() else {
        return Ok(false);
    };
    if object.get("kind").and_then(Value::as_str) != Some("Secret") {
        return Ok(false);
    }
    let annotation = object
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(OUTPUT_ANNOTATION))
        .and_then(Value::as_str);
    match (annotation, mode) {
        (Some("external-secret"), _) => Ok(true),
        (Some("secret"), Mode::Enforce) => Err(format!(
            "{OUTPUT_ANNOTATION}: secret is not allowed: the operator requires ExternalSecrets for this project"
        )),
        (Some("secret"), _) => Ok(false),
        (Some(other), _) => Err(format!(
            "{OUTPUT_ANNOTATION}: {other:?} is not one of external-secret, secret"
        )),
        (None, Mode::Off) => Ok(false),
        (None, Mode::On | Mode::Enforce) => Ok(true),
    }
}

/// The `ExternalSecret` for a Secret, or `None` when it has no placeholders (or is ignored):
/// then it stays as it is.
pub fn convert(
    object: &Map<String, Value>,
    index: usize,
    opts: &Options,
    store: &Store,
) -> Result<Option<Value>, SubstituteError> {
    let manifest = Manifest::new(object, index, opts);
    if manifest.annotations.ignore || manifest.kind != Kind::Secret {
        return Ok(None);
    }
    let mut builder = Builder {
        manifest: &manifest,
        remote: Vec::new(),
        template: Map::new(),
        templated: false,
        placeholders: 0,
        problems: Vec::new(),
    };
    for (section, base64) in [("data", true), ("stringData", false)] {
        let Some(fields) = object.get(section).and_then(Value::as_object) else {
            continue;
        };
        for (field, value) in fields {
            builder.field(field, value, base64);
        }
    }
    if !builder.problems.is_empty() {
        return Err(manifest.error(builder.problems));
    }
    if builder.placeholders == 0 {
        return Ok(None);
    }
    Ok(Some(builder.finish(object, store)))
}

struct Builder<'m, 'o> {
    manifest: &'m Manifest<'o>,
    /// `spec.data` entries.
    remote: Vec<Value>,
    /// Go template per field, used when any field needs one.
    template: Map<String, Value>,
    templated: bool,
    placeholders: usize,
    problems: Vec<Problem>,
}

impl Builder<'_, '_> {
    fn field(&mut self, field: &str, value: &Value, base64: bool) {
        let text = match value {
            Value::String(s) if base64 => match self.manifest.decoded_secret_template(s) {
                Some(decoded) => decoded,
                // A static base64 value: its text goes into the template.
                None => match super::modifiers::go_base64_decode(s)
                    .and_then(|b| String::from_utf8(b).ok())
                {
                    Some(text) => text,
                    None => {
                        self.problems.push(not_convertible(
                            field,
                            "a data value that is not base64 of UTF-8 text cannot be templated",
                        ));
                        return;
                    }
                },
            },
            Value::String(s) => s.clone(),
            Value::Null => return,
            other => other.to_string(),
        };
        let found: Vec<regex::Match<'_>> = placeholder::find(&text, self.manifest.mode).collect();
        if let [only] = found.as_slice()
            && only.as_str() == text
        {
            let ph = Placeholder::parse(only.as_str());
            if ph.modifiers.is_empty() {
                if let Some(entry) = self.remote_ref(field, &ph) {
                    self.remote.push(entry);
                    self.template
                        .insert(field.to_owned(), Value::String(go_ref(field, &[])));
                }
                self.placeholders += 1;
                return;
            }
        }
        self.templated = true;
        let mut out = String::new();
        let mut last = 0;
        for (n, m) in found.iter().enumerate() {
            out.push_str(&escape_template_text(&text[last..m.start()]));
            last = m.end();
            self.placeholders += 1;
            let ph = Placeholder::parse(m.as_str());
            let key = format!("_avp_{field}_{n}");
            let Some(filters) = self.filters(field, &ph) else {
                continue;
            };
            if let Some(entry) = self.remote_ref(&key, &ph) {
                self.remote.push(entry);
                out.push_str(&go_ref(&key, &filters));
            }
        }
        out.push_str(&escape_template_text(&text[last..]));
        self.template.insert(field.to_owned(), Value::String(out));
    }

    /// The `spec.data` entry for one placeholder.
    fn remote_ref(&mut self, secret_key: &str, ph: &Placeholder<'_>) -> Option<Value> {
        let (path, key, version) = match &ph.source {
            Source::Inline { path, key, version } => {
                ((*path).to_owned(), *key, (*version).to_owned())
            }
            Source::Generic { key } => match self.manifest.generic_path() {
                Ok(Some(path)) => (
                    path.to_owned(),
                    *key,
                    self.manifest.annotations.secret_version.clone(),
                ),
                Ok(None) => {
                    self.problems.push(not_convertible(
                        ph.name,
                        "a generic placeholder needs a path (annotation or default path)",
                    ));
                    return None;
                }
                Err(problem) => {
                    self.problems.push(problem);
                    return None;
                }
            },
        };
        let request = match self.manifest.request(&path, &version) {
            Ok(r) => r,
            Err(problem) => {
                self.problems.push(problem);
                return None;
            }
        };
        if request.kv_version == KvVersion::V1 {
            self.problems.push(not_convertible(
                ph.name,
                "KV v1 paths are not converted (an ESO Vault store serves one KV version; use KV v2)",
            ));
            return None;
        }
        let mut remote = json!({ "key": request.path, "property": key.trim() });
        if let Some(v) = request.version {
            remote["version"] = Value::String(v);
        }
        Some(json!({ "secretKey": secret_key, "remoteRef": remote }))
    }

    /// ESO template functions for AVP modifiers, where one exists.
    fn filters(&mut self, field: &str, ph: &Placeholder<'_>) -> Option<Vec<&'static str>> {
        let mut out = Vec::new();
        for segment in &ph.modifiers {
            let mut words = segment.split_whitespace();
            let name = words.next().unwrap_or_default();
            let filter = match (name, words.next()) {
                ("base64encode", None) => "b64enc",
                ("base64decode", None) => "b64dec",
                ("sha256sum", None) => "sha256sum",
                _ => {
                    self.problems.push(not_convertible(
                        field,
                        "only the base64encode, base64decode and sha256sum modifiers have ExternalSecret template equivalents",
                    ));
                    return None;
                }
            };
            out.push(filter);
        }
        Some(out)
    }

    fn finish(self, object: &Map<String, Value>, store: &Store) -> Value {
        let metadata = object
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let name = metadata.get("name").cloned().unwrap_or(Value::Null);
        let labels = metadata.get("labels").cloned();
        let annotations: Option<Map<String, Value>> = metadata
            .get("annotations")
            .and_then(Value::as_object)
            .map(|a| {
                a.iter()
                    .filter(|(k, _)| !k.starts_with(annotations::PREFIX))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .filter(|a: &Map<String, Value>| !a.is_empty());

        let mut out_meta = Map::new();
        out_meta.insert("name".into(), name.clone());
        if let Some(ns) = metadata.get("namespace") {
            out_meta.insert("namespace".into(), ns.clone());
        }
        let mut template_meta = Map::new();
        if let Some(l) = &labels {
            out_meta.insert("labels".into(), l.clone());
            template_meta.insert("labels".into(), l.clone());
        }
        if let Some(a) = &annotations {
            out_meta.insert("annotations".into(), Value::Object(a.clone()));
            template_meta.insert("annotations".into(), Value::Object(a.clone()));
        }
        let mut template = Map::new();
        if let Some(t) = object.get("type") {
            template.insert("type".into(), t.clone());
        }
        if !template_meta.is_empty() {
            template.insert("metadata".into(), Value::Object(template_meta));
        }
        if self.templated {
            template.insert("engineVersion".into(), json!("v2"));
            template.insert("data".into(), Value::Object(self.template));
        }
        let mut target = json!({ "name": name, "creationPolicy": "Owner" });
        if !template.is_empty() {
            target["template"] = Value::Object(template);
        }
        json!({
            "apiVersion": "external-secrets.io/v1",
            "kind": "ExternalSecret",
            "metadata": out_meta,
            "spec": {
                "refreshInterval": store.refresh_interval,
                "secretStoreRef": { "kind": store.kind, "name": store.name },
                "target": target,
                "data": self.remote,
            },
        })
    }
}

fn not_convertible(what: &str, reason: &str) -> Problem {
    Problem::NotConvertible {
        what: what.to_owned(),
        reason: reason.to_owned(),
    }
}

/// `{{ index . "key" | f1 | f2 }}`: `index` works for any key, also with `-` or `.`.
fn go_ref(key: &str, filters: &[&str]) -> String {
    // A JSON string literal is a valid Go string literal for any key.
    let quoted = serde_json::to_string(key).unwrap_or_else(|_| format!("{key:?}"));
    let mut out = format!("{{{{ index . {quoted}");
    for f in filters {
        out.push_str(" | ");
        out.push_str(f);
    }
    out.push_str(" }}");
    out
}

/// Literal text inside a Go template: only `{{` starts an action.
fn escape_template_text(text: &str) -> String {
    text.replace("{{", "{{ \"{{\" }}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store {
            name: "vault".into(),
            kind: "ClusterSecretStore".into(),
            refresh_interval: "1h".into(),
        }
    }

    fn conv(doc: Value) -> Result<Option<Value>, SubstituteError> {
        convert(
            doc.as_object().expect("object"),
            0,
            &Options::default(),
            &store(),
        )
    }

    #[test]
    fn single_placeholders_become_remote_refs() {
        let out = conv(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
            "metadata": {"name": "db", "namespace": "web", "labels": {"app": "web"},
                "annotations": {"avp.kubernetes.io/output": "external-secret", "team": "a"}},
            "stringData": {
                "username": "<path:secret/data/demo/web#username>",
                "old": "<path:secret/data/demo/web#password#1>",
            },
            // base64 of "<path:secret/data/demo/web#password>"
            "data": {"password": "PHBhdGg6c2VjcmV0L2RhdGEvZGVtby93ZWIjcGFzc3dvcmQ+"},
        }))
        .expect("converts")
        .expect("has placeholders");
        assert_eq!(
            out,
            json!({
                "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "metadata": {"name": "db", "namespace": "web", "labels": {"app": "web"},
                    "annotations": {"team": "a"}},
                "spec": {
                    "refreshInterval": "1h",
                    "secretStoreRef": {"kind": "ClusterSecretStore", "name": "vault"},
                    "target": {"name": "db", "creationPolicy": "Owner", "template": {
                        "type": "kubernetes.io/basic-auth",
                        "metadata": {"labels": {"app": "web"}, "annotations": {"team": "a"}},
                    }},
                    "data": [
                        {"secretKey": "password", "remoteRef": {"key": "secret/data/demo/web", "property": "password"}},
                        {"secretKey": "username", "remoteRef": {"key": "secret/data/demo/web", "property": "username"}},
                        {"secretKey": "old", "remoteRef": {"key": "secret/data/demo/web", "property": "password", "version": "1"}},
                    ],
                },
            })
        );
    }

    #[test]
    fn text_around_placeholders_and_modifiers_become_templates() {
        let out = conv(json!({
            "kind": "Secret",
            "metadata": {"name": "s", "annotations": {"avp.kubernetes.io/path": "secret/data/demo/web"}},
            "stringData": {
                "url": "postgres://<username>:<password | base64encode>@db/{{x}}",
                "static": "plain",
            },
        }))
        .expect("converts")
        .expect("has placeholders");
        let spec = &out["spec"];
        assert_eq!(
            spec["target"]["template"]["data"],
            json!({
                "url": "postgres://{{ index . \"_avp_url_0\" }}:{{ index . \"_avp_url_1\" | b64enc }}@db/{{ \"{{\" }}x}}",
                "static": "plain",
            })
        );
        assert_eq!(spec["target"]["template"]["engineVersion"], "v2");
        assert_eq!(
            spec["data"],
            json!([
                {"secretKey": "_avp_url_0", "remoteRef": {"key": "secret/data/demo/web", "property": "username"}},
                {"secretKey": "_avp_url_1", "remoteRef": {"key": "secret/data/demo/web", "property": "password"}},
            ])
        );
        assert!(
            out["metadata"].get("annotations").is_none(),
            "avp annotations are dropped"
        );
    }

    #[test]
    fn what_cannot_be_converted_is_an_error() {
        for (value, needle) in [
            (
                "<path:secret/data/a#k | jsonPath {.x}>",
                "modifiers have ExternalSecret",
            ),
            ("<generic>", "needs a path"),
        ] {
            // An empty path annotation: generic placeholders are on, but name no path.
            let err = conv(json!({"kind": "Secret",
                "metadata": {"name": "s", "annotations": {"avp.kubernetes.io/path": ""}},
                "stringData": {"v": value}}))
            .expect_err(value);
            assert!(err.to_string().contains(needle), "{err}");
        }
        let err = conv(json!({"kind": "Secret", "metadata": {"name": "s",
            "annotations": {"avp.kubernetes.io/kv-version": "1"}},
            "stringData": {"v": "<path:kv1/a#k>"}}))
        .expect_err("kv1");
        assert!(err.to_string().contains("KV v1"), "{err}");
    }

    #[test]
    fn secrets_without_placeholders_stay() {
        assert_eq!(
            conv(json!({"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"a": "b"}}))
                .expect("ok"),
            None
        );
    }

    #[test]
    fn modes_and_the_output_annotation() {
        let secret = |a: Option<&str>| {
            let mut doc = json!({"kind": "Secret", "metadata": {"name": "s", "annotations": {}}});
            if let Some(a) = a {
                doc["metadata"]["annotations"][OUTPUT_ANNOTATION] = json!(a);
            }
            doc
        };
        assert_eq!(wants_conversion(&secret(None), Mode::Off), Ok(false));
        assert_eq!(wants_conversion(&secret(None), Mode::On), Ok(true));
        assert_eq!(
            wants_conversion(&secret(Some("external-secret")), Mode::Off),
            Ok(true)
        );
        assert_eq!(
            wants_conversion(&secret(Some("secret")), Mode::On),
            Ok(false)
        );
        assert!(wants_conversion(&secret(Some("secret")), Mode::Enforce).is_err());
        assert!(wants_conversion(&secret(Some("nope")), Mode::On).is_err());
        assert_eq!(
            wants_conversion(&json!({"kind": "ConfigMap"}), Mode::Enforce),
            Ok(false)
        );
    }
}
