//! Rollout hashes: an annotation on the pod templates of workloads that use a Secret filled from
//! Vault, whose value changes when any secret *version* behind that Secret changes. A new KV v2
//! version then changes the desired pod template, so Argo CD's next sync rolls the workload,
//! which would otherwise keep running with the old values until something else restarted it.
//!
//! Only paths and the KV v2 versions that were read go into the hash, never values: the
//! annotation is visible to anyone who can read the workload, and a hash of a low-entropy
//! secret could be brute-forced. The price is that a KV v1 secret (no versions) or a source
//! without versions cannot be tracked: its reads count as the path with the marker `-`, so
//! rewriting a KV v1 secret does not change the hash.
//!
//! Pure: documents and the reads the substitution stage made in, annotated documents out.
//! The stage computes [`plan`] before substitution (only then do Secrets still show their
//! placeholders) and calls [`annotate`] after it (only then are versions known). The render
//! cache holds pre-substitution output, so every request, cache hit or not, gets the hash of
//! what it actually read.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::config::per_project::{PerProject, PerProjectError, enum_value};
use crate::secrets::{Fetched, SecretRequest};
use crate::substitute::{self, Options};

/// The pod-template annotation that carries the hash.
pub const ANNOTATION: &str = "avp.kubernetes.io/secret-versions";

/// What a read without a version (KV v1) contributes in place of a version.
pub const UNVERSIONED: &str = "-";

/// Hex characters of the sha256 kept: 64 bits, plenty to tell versions apart, short to read.
const HASH_HEX_CHARS: usize = 16;

/// Prefix of the hashed text, so a future change of the canonical form is a deliberate,
/// visible change of every hash rather than an accidental one.
const CANONICAL_PREFIX: &str = "avp-sidecar/secret-versions/v1\n";

/// A `--rollout-hash-project` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    On,
    Off,
}

/// The operator's switch: off unless turned on, globally or per Argo CD project.
#[derive(Clone, Debug, Default)]
pub struct RolloutSettings {
    default: bool,
    by_project: PerProject<bool>,
}

impl RolloutSettings {
    /// `rules`: `--rollout-hash-project`, `project=on|off` (case ignored) by the per-project
    /// item rule of [`crate::config::per_project`].
    pub fn new(default: bool, rules: &[String]) -> Result<Self, PerProjectError> {
        let by_project = PerProject::parse("--rollout-hash-project", rules, |mode| {
            enum_value::<Switch>(mode).map(|s| s == Switch::On)
        })?;
        Ok(Self {
            default,
            by_project,
        })
    }

    pub fn enabled(&self, project: &str) -> bool {
        self.by_project.get_or(project, self.default)
    }
}

/// The reads each placeholder Secret of a render needs, by document position. Taken before
/// substitution, since afterwards the placeholders are gone.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    secrets: Vec<(usize, BTreeSet<SecretRequest>)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

/// Finds the core `v1` Secrets of `documents` that have placeholders, and the reads each uses.
/// Documents whose reads cannot be listed are skipped: the substitution stage reports those
/// errors itself.
pub fn plan(documents: &[Value], options: &Options) -> Plan {
    let secrets = documents
        .iter()
        .enumerate()
        .filter(|(_, doc)| is_core_secret(doc))
        .filter_map(|(index, doc)| {
            let reads = substitute::collect(std::slice::from_ref(doc), options).ok()?;
            (!reads.is_empty()).then_some((index, reads))
        })
        .collect();
    Plan { secrets }
}

/// [`plan`] from the substitution's own plan of the same `documents`, so they are not walked
/// for placeholders once more.
pub fn plan_from<D: Borrow<Value>>(documents: &[D], planned: &substitute::Planned) -> Plan {
    let secrets = documents
        .iter()
        .enumerate()
        .filter(|(_, doc)| is_core_secret((*doc).borrow()))
        .filter_map(|(index, _)| {
            let reads = planned.document_requests(index)?;
            (!reads.is_empty()).then(|| (index, reads.clone()))
        })
        .collect();
    Plan { secrets }
}

/// Sets [`ANNOTATION`] on the pod template of every workload in `documents` (substituted, in
/// the same order as given to [`plan`]) that references at least one planned Secret. Returns
/// how many workloads were annotated.
pub fn annotate(documents: &mut [Value], plan: &Plan, fetched: &Fetched) -> usize {
    fn itself(doc: &mut Value) -> &mut Value {
        doc
    }
    annotate_with(documents, plan, fetched, itself)
}

/// [`annotate`] for documents that may be shared (with the render cache): only the workloads
/// that get the annotation are copied (when shared) and changed.
pub fn annotate_shared(documents: &mut [Arc<Value>], plan: &Plan, fetched: &Fetched) -> usize {
    annotate_with(documents, plan, fetched, Arc::make_mut)
}

/// Finds the hashes with shared access first, so `make_mut` is called only on the documents
/// that change.
fn annotate_with<D: Borrow<Value>>(
    documents: &mut [D],
    plan: &Plan,
    fetched: &Fetched,
    mut make_mut: impl FnMut(&mut D) -> &mut Value,
) -> usize {
    if plan.is_empty() {
        return 0;
    }
    let hashes = hashes(documents, plan, fetched);
    let mut annotated = 0;
    for (index, template_path, hash) in hashes {
        let Some(doc) = documents.get_mut(index) else {
            continue;
        };
        if make_mut(doc)
            .pointer_mut(template_path)
            .is_some_and(|template| set_annotation(template, hash))
        {
            annotated += 1;
        }
    }
    annotated
}

/// For each workload that references at least one planned Secret: its position, where its pod
/// template is, and the hash.
fn hashes<D: Borrow<Value>>(
    documents: &[D],
    plan: &Plan,
    fetched: &Fetched,
) -> Vec<(usize, &'static str, String)> {
    let secrets: Vec<RenderedSecret> = plan
        .secrets
        .iter()
        .filter_map(|(index, reads)| {
            let doc = documents.get(*index)?.borrow();
            Some(RenderedSecret {
                name: meta_str(doc, "name")?.to_owned(),
                namespace: meta_str(doc, "namespace").map(str::to_owned),
                versions: version_set(reads, fetched),
            })
        })
        .collect();
    let mut out = Vec::new();
    for (index, doc) in documents.iter().enumerate() {
        let doc = doc.borrow();
        let Some(template_path) = pod_template_path(doc) else {
            continue;
        };
        if is_ignored(doc) {
            continue;
        }
        let namespace = meta_str(doc, "namespace");
        let Some(template) = doc.pointer(template_path) else {
            continue;
        };
        let names = referenced_secrets(template);
        let mut used: BTreeMap<&str, BTreeSet<&(String, String)>> = BTreeMap::new();
        for secret in &secrets {
            if names.contains(secret.name.as_str())
                && same_namespace(namespace, secret.namespace.as_deref())
            {
                used.entry(secret.name.as_str())
                    .or_default()
                    .extend(secret.versions.iter());
            }
        }
        if !used.is_empty() {
            out.push((index, template_path, hash(&used)));
        }
    }
    out
}

/// A placeholder Secret after substitution: its identity and the versions it was filled from.
struct RenderedSecret {
    name: String,
    namespace: Option<String>,
    versions: BTreeSet<(String, String)>,
}

/// Sorted unique `(path, version read)`; [`UNVERSIONED`] where no version is known.
fn version_set(reads: &BTreeSet<SecretRequest>, fetched: &Fetched) -> BTreeSet<(String, String)> {
    reads
        .iter()
        .map(|req| {
            let read = fetched.get(req).and_then(|r| r.as_ref().ok());
            let version = read
                .and_then(|data| data.version())
                .map(|v| v.to_string())
                .or_else(|| read.and(req.version.clone()))
                .unwrap_or_else(|| UNVERSIONED.to_owned());
            (req.path.clone(), version)
        })
        .collect()
}

/// sha256 over a JSON rendering of `[[name, [[path, version], ...]], ...]` (names and pairs
/// sorted), so no choice of names or paths can make two different inputs print alike.
fn hash(used: &BTreeMap<&str, BTreeSet<&(String, String)>>) -> String {
    let canonical: Vec<(&str, Vec<&(String, String)>)> = used
        .iter()
        .map(|(name, versions)| (*name, versions.iter().copied().collect()))
        .collect();
    let mut hasher = Sha256::new();
    hasher.update(CANONICAL_PREFIX.as_bytes());
    // Serializing strings and sequences cannot fail; an empty body would still hash the prefix.
    hasher.update(serde_json::to_vec(&canonical).unwrap_or_default());
    hasher
        .finalize()
        .iter()
        .flat_map(|b| [b >> 4, b & 0x0f])
        .take(HASH_HEX_CHARS)
        .map(|nibble| char::from_digit(u32::from(nibble), 16).unwrap_or('0'))
        .collect()
}

fn is_core_secret(doc: &Value) -> bool {
    doc.get("kind").and_then(Value::as_str) == Some("Secret")
        && doc.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

/// Where a workload kind keeps its pod template.
fn pod_template_path(doc: &Value) -> Option<&'static str> {
    match doc.get("kind").and_then(Value::as_str)? {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "Rollout" => {
            Some("/spec/template")
        }
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// `metadata.<key>` as a non-empty string.
fn meta_str<'a>(doc: &'a Value, key: &str) -> Option<&'a str> {
    doc.get("metadata")?
        .get(key)?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// An unset namespace is the Application's destination namespace, which may be either side's.
fn same_namespace(workload: Option<&str>, secret: Option<&str>) -> bool {
    match (workload, secret) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// `avp.kubernetes.io/ignore: "true"` (Go `ParseBool` spellings) asks for the object to be left
/// exactly as rendered, so it gets no annotation either.
fn is_ignored(doc: &Value) -> bool {
    // AVP's reading of the annotation, so a manifest is skipped here exactly when substitution
    // skips it.
    doc.as_object()
        .is_some_and(|o| crate::substitute::annotations::Annotations::from_object(o).ignore)
}

/// Secret names a pod template uses: env, envFrom, volumes (plain and projected), image pull
/// secrets, in every kind of container.
fn referenced_secrets(template: &Value) -> BTreeSet<&str> {
    let mut names = BTreeSet::new();
    let Some(spec) = template.get("spec") else {
        return names;
    };
    for kind in ["containers", "initContainers", "ephemeralContainers"] {
        for container in items(spec, kind) {
            for from in items(container, "envFrom") {
                names.extend(str_at(from, "/secretRef/name"));
            }
            for env in items(container, "env") {
                names.extend(str_at(env, "/valueFrom/secretKeyRef/name"));
            }
        }
    }
    for volume in items(spec, "volumes") {
        names.extend(str_at(volume, "/secret/secretName"));
        if let Some(projected) = volume.get("projected") {
            for source in items(projected, "sources") {
                names.extend(str_at(source, "/secret/name"));
            }
        }
    }
    for pull in items(spec, "imagePullSecrets") {
        names.extend(str_at(pull, "/name"));
    }
    names
}

/// The elements of the list at `value[key]`; nothing when absent or not a list.
fn items<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Sets the annotation, creating `metadata` and `annotations` when absent (or `null`). A
/// template whose metadata or annotations are some other type is malformed: it is left for
/// the API server to reject rather than rewritten.
fn set_annotation(template: &mut Value, value: String) -> bool {
    let Some(template) = template.as_object_mut() else {
        return false;
    };
    let Some(metadata) = object_entry(template, "metadata") else {
        return false;
    };
    let Some(annotations) = object_entry(metadata, "annotations") else {
        return false;
    };
    annotations.insert(ANNOTATION.to_owned(), Value::String(value));
    true
}

fn object_entry<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    let entry = map
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if entry.is_null() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::secrets::{KvVersion, ReadError, SecretData};

    fn secret(name: &str, namespace: Option<&str>, placeholder: &str) -> Value {
        let mut doc = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"v": placeholder},
        });
        if let Some(ns) = namespace {
            doc["metadata"]["namespace"] = json!(ns);
        }
        doc
    }

    fn pod_spec_env_from(secret: &str) -> Value {
        json!({"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": secret}}]}]})
    }

    fn workload(kind: &str, name: &str, pod_spec: Value) -> Value {
        let template = json!({"metadata": {"labels": {"app": name}}, "spec": pod_spec});
        let spec = if kind == "CronJob" {
            json!({"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}})
        } else {
            json!({"template": template})
        };
        json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec})
    }

    fn kv2(path: &str) -> SecretRequest {
        SecretRequest {
            path: path.to_owned(),
            kv_version: KvVersion::V2,
            version: None,
        }
    }

    fn data(value: &str, version: Option<u64>) -> Result<SecretData, ReadError> {
        let mut values = Map::new();
        values.insert("k".to_owned(), json!(value));
        values.insert("password".to_owned(), json!(value));
        Ok(SecretData::new(values).with_version(version))
    }

    /// Runs plan → the engine's own apply → annotate, with `fetched` as Vault's answers.
    fn render(docs: Vec<Value>, fetched: &Fetched) -> Vec<Value> {
        render_with(docs, fetched, &Options::default())
    }

    fn render_with(docs: Vec<Value>, fetched: &Fetched, options: &Options) -> Vec<Value> {
        let plan = plan(&docs, options);
        let mut out = substitute::apply(
            docs,
            options,
            fetched,
            &crate::yaml::AliasBudget::for_output(0),
        )
        .expect("apply");
        annotate(&mut out, &plan, fetched);
        out
    }

    fn fetched(entries: &[(&str, &str, Option<u64>)]) -> Fetched {
        entries
            .iter()
            .map(|(path, value, version)| (kv2(path), data(value, *version)))
            .collect()
    }

    fn annotation(doc: &Value) -> Option<&str> {
        let template = if doc["kind"] == "CronJob" {
            &doc["spec"]["jobTemplate"]["spec"]["template"]
        } else {
            &doc["spec"]["template"]
        };
        template["metadata"]["annotations"][ANNOTATION].as_str()
    }

    const DB: &str = "<path:secret/data/db#k>";

    #[test]
    fn every_workload_kind_is_annotated() {
        let f = fetched(&[("secret/data/db", "v", Some(3))]);
        for kind in [
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "Job",
            "CronJob",
            "Rollout",
        ] {
            let out = render(
                vec![
                    secret("db", None, DB),
                    workload(kind, "w", pod_spec_env_from("db")),
                ],
                &f,
            );
            let value = annotation(&out[1]).unwrap_or_else(|| panic!("{kind}: no annotation"));
            assert_eq!(value.len(), 16, "{kind}");
            assert!(value.chars().all(|c| c.is_ascii_hexdigit()), "{kind}");
            // Other template metadata is kept.
            let labels = if kind == "CronJob" {
                &out[1]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
            } else {
                &out[1]["spec"]["template"]["metadata"]["labels"]
            };
            assert_eq!(labels["app"], "w", "{kind}");
        }
        // A pod, a Service: no pod template of ours to change.
        let out = render(
            vec![
                secret("db", None, DB),
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                       "spec": pod_spec_env_from("db")}),
            ],
            &f,
        );
        assert!(out[1]["metadata"].get("annotations").is_none());
    }

    #[test]
    fn every_reference_style_counts() {
        let f = fetched(&[("secret/data/db", "v", Some(3))]);
        let specs = [
            pod_spec_env_from("db"),
            json!({"initContainers": [{"name": "i", "env": [
                {"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "v"}}}]}],
                "containers": [{"name": "c"}]}),
            json!({"ephemeralContainers": [{"name": "e", "envFrom": [{"secretRef": {"name": "db"}}]}]}),
            json!({"containers": [{"name": "c"}], "volumes": [{"name": "s", "secret": {"secretName": "db"}}]}),
            json!({"containers": [{"name": "c"}], "volumes": [{"name": "p", "projected": {"sources": [
                {"configMap": {"name": "cm"}}, {"secret": {"name": "db"}}]}}]}),
            json!({"containers": [{"name": "c"}], "imagePullSecrets": [{"name": "db"}]}),
        ];
        let mut values = BTreeSet::new();
        for spec in specs {
            let out = render(
                vec![
                    secret("db", None, DB),
                    workload("Deployment", "w", spec.clone()),
                ],
                &f,
            );
            let value = annotation(&out[1]).unwrap_or_else(|| panic!("no annotation for {spec}"));
            values.insert(value.to_owned());
        }
        // The hash depends on what is referenced, not how.
        assert_eq!(values.len(), 1);
    }

    #[test]
    fn unreferenced_and_plain_secrets_leave_workloads_untouched() {
        let f = fetched(&[("secret/data/db", "v", Some(3))]);
        let plain = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "plain"},
                           "stringData": {"v": "literal"}});
        let none = workload("Deployment", "none", json!({"containers": [{"name": "c"}]}));
        let other = workload("Deployment", "other", pod_spec_env_from("plain"));
        let docs = vec![secret("db", None, DB), plain, none, other];
        let out = render(docs.clone(), &f);
        assert_eq!(out[2], docs[2]);
        assert_eq!(out[3], docs[3]);
        // No placeholder Secret at all: nothing changes.
        let out = render(docs[1..].to_vec(), &f);
        assert_eq!(out, docs[1..].to_vec());
    }

    #[test]
    fn namespaces_must_match_unless_one_is_unset() {
        let f = fetched(&[("secret/data/db", "v", Some(3))]);
        let in_ns = |doc: Value, ns: &str| {
            let mut doc = doc;
            doc["metadata"]["namespace"] = json!(ns);
            doc
        };
        let w = workload("Deployment", "w", pod_spec_env_from("db"));
        for (secret_ns, workload_ns, want) in [
            (Some("a"), Some("a"), true),
            (Some("a"), Some("b"), false),
            (None, Some("b"), true),
            (Some("a"), None, true),
            (None, None, true),
        ] {
            let w = workload_ns.map_or_else(|| w.clone(), |ns| in_ns(w.clone(), ns));
            let out = render(vec![secret("db", secret_ns, DB), w], &f);
            assert_eq!(
                annotation(&out[1]).is_some(),
                want,
                "secret {secret_ns:?}, workload {workload_ns:?}"
            );
        }
    }

    #[test]
    fn deterministic_and_version_sensitive() {
        let docs = || {
            vec![
                secret("db", None, DB),
                secret("api", None, "<path:secret/data/api#k>"),
                workload(
                    "Deployment",
                    "w",
                    json!({"containers": [{"name": "c",
                        "envFrom": [{"secretRef": {"name": "db"}}, {"secretRef": {"name": "api"}}]}]}),
                ),
            ]
        };
        let v = |db: u64, api: u64| {
            let f = fetched(&[
                ("secret/data/db", "x", Some(db)),
                ("secret/data/api", "y", Some(api)),
            ]);
            annotation(&render(docs(), &f)[2])
                .expect("annotated")
                .to_owned()
        };
        assert_eq!(v(1, 1), v(1, 1));
        assert_ne!(v(1, 1), v(2, 1));
        assert_ne!(v(1, 1), v(1, 2));
        assert_ne!(v(2, 1), v(1, 2));
        // Document order does not matter.
        let f = fetched(&[
            ("secret/data/db", "x", Some(1)),
            ("secret/data/api", "y", Some(1)),
        ]);
        let mut reversed = docs();
        reversed.reverse();
        assert_eq!(
            annotation(&render(reversed, &f)[0]).expect("annotated"),
            v(1, 1)
        );
    }

    #[test]
    fn values_never_influence_the_hash() {
        let docs = || {
            vec![
                secret("db", None, DB),
                workload("Deployment", "w", pod_spec_env_from("db")),
            ]
        };
        let one = render(
            docs(),
            &fetched(&[("secret/data/db", "first-value", Some(4))]),
        );
        let two = render(
            docs(),
            &fetched(&[("secret/data/db", "other-value", Some(4))]),
        );
        assert_ne!(one[0], two[0], "the values differ");
        let hash = annotation(&one[1]).expect("annotated");
        assert_eq!(Some(hash), annotation(&two[1]));
        assert!(!hash.contains("value"));
    }

    #[test]
    fn kv1_reads_count_as_unversioned() {
        let options = Options {
            default_kv_version: KvVersion::V1,
            ..Options::default()
        };
        let request = SecretRequest {
            path: "kv/db".to_owned(),
            kv_version: KvVersion::V1,
            version: None,
        };
        let docs = || {
            vec![
                secret("db", None, "<path:kv/db#k>"),
                workload("Deployment", "w", pod_spec_env_from("db")),
            ]
        };
        let run = |value: &str| {
            let f: Fetched = [(request.clone(), data(value, None))].into();
            render_with(docs(), &f, &options)
        };
        let (a, b) = (run("old"), run("rotated"));
        let hash = annotation(&a[1]).expect("annotated");
        // A KV v1 rotation is invisible: same path, no version, and values are not hashed.
        assert_eq!(Some(hash), annotation(&b[1]));

        let plan = plan(&docs(), &options);
        let f: Fetched = [(request.clone(), data("old", None))].into();
        let versions = version_set(&plan.secrets[0].1, &f);
        assert_eq!(
            versions,
            BTreeSet::from([("kv/db".to_owned(), UNVERSIONED.to_owned())])
        );
    }

    #[test]
    fn pinned_and_latest_reads_of_one_path_both_count() {
        let pinned = SecretRequest {
            version: Some("1".to_owned()),
            ..kv2("secret/data/db")
        };
        let docs = vec![
            secret(
                "db",
                None,
                "<path:secret/data/db#k> <path:secret/data/db#k#1>",
            ),
            workload("Deployment", "w", pod_spec_env_from("db")),
        ];
        let plan = plan(&docs, &Options::default());
        let f: Fetched = [
            (kv2("secret/data/db"), data("new", Some(2))),
            (pinned, data("old", Some(1))),
        ]
        .into();
        assert_eq!(
            version_set(&plan.secrets[0].1, &f),
            BTreeSet::from([
                ("secret/data/db".to_owned(), "1".to_owned()),
                ("secret/data/db".to_owned(), "2".to_owned()),
            ])
        );
    }

    #[test]
    fn metadata_is_created_kept_or_left_alone() {
        let f = fetched(&[("secret/data/db", "v", Some(3))]);
        let mut bare = workload("Deployment", "w", pod_spec_env_from("db"));
        bare["spec"]["template"]
            .as_object_mut()
            .expect("template")
            .remove("metadata");
        let mut existing = workload("Deployment", "w", pod_spec_env_from("db"));
        existing["spec"]["template"]["metadata"]["annotations"] = json!({"keep": "me"});
        let mut broken = workload("Deployment", "w", pod_spec_env_from("db"));
        broken["spec"]["template"]["metadata"] = json!("not a map");
        let mut ignored = workload("Deployment", "w", pod_spec_env_from("db"));
        ignored["metadata"]["annotations"] = json!({"avp.kubernetes.io/ignore": "true"});

        let out = render(vec![secret("db", None, DB), bare], &f);
        assert!(annotation(&out[1]).is_some());
        let out = render(vec![secret("db", None, DB), existing], &f);
        assert!(annotation(&out[1]).is_some());
        assert_eq!(
            out[1]["spec"]["template"]["metadata"]["annotations"]["keep"],
            "me"
        );
        for untouched in [broken, ignored] {
            let out = render(vec![secret("db", None, DB), untouched.clone()], &f);
            assert_eq!(out[1], untouched);
        }
    }

    #[test]
    fn ignored_secrets_are_not_placeholder_secrets() {
        let f = fetched(&[("secret/data/db", "v", Some(3))]);
        let mut s = secret("db", None, DB);
        s["metadata"]["annotations"] = json!({"avp.kubernetes.io/ignore": "true"});
        let w = workload("Deployment", "w", pod_spec_env_from("db"));
        let out = render(vec![s, w.clone()], &f);
        assert_eq!(out[1], w);
    }

    /// The canonical form is part of the contract (a change re-rolls every annotated
    /// workload once): this pins it. `examples/rollout/` shows the same value.
    #[test]
    fn canonical_form_is_pinned() {
        let versions = BTreeSet::from([("secret/data/demo/web".to_owned(), "2".to_owned())]);
        let used = BTreeMap::from([("web-db", versions.iter().collect())]);
        assert_eq!(hash(&used), "f0034bed8fac885f");
    }

    #[test]
    fn settings_per_project() {
        let s = RolloutSettings::new(false, &["team-a=on, team-b=OFF".into(), "c=off".into()])
            .expect("valid");
        assert!(s.enabled("team-a"));
        assert!(!s.enabled("team-b"));
        assert!(!s.enabled("other"));
        let s = RolloutSettings::new(true, &["team-b=off".into()]).expect("valid");
        assert!(s.enabled("other"));
        assert!(!s.enabled("team-b"));
        assert!(!RolloutSettings::default().enabled("any"));
        for bad in ["team-a", "team-a=maybe", "=on", "team-a=on,team-a=off"] {
            let err = RolloutSettings::new(false, &[bad.into()]).expect_err(bad);
            assert_eq!(err.flag, "--rollout-hash-project");
        }
    }
}
