//! End-to-end tests of the engine: both phases together against an in-memory secret store.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::*;
use crate::secrets::{KvVersion, ReadError, SecretData, SecretRequest};

const V1: KvVersion = KvVersion::V1;
const V2: KvVersion = KvVersion::V2;

fn req(path: &str, kv_version: KvVersion, version: Option<&str>) -> SecretRequest {
    SecretRequest {
        path: path.to_owned(),
        kv_version,
        version: version.map(str::to_owned),
    }
}

fn data(value: Value) -> SecretData {
    match value {
        Value::Object(map) => SecretData::new(map),
        other => panic!("test secret data must be an object, got {other}"),
    }
}

/// A secret store: exact requests to data; anything else is not found.
struct FakeVault(Vec<(SecretRequest, SecretData)>);

impl FakeVault {
    fn fetch(&self, requests: &BTreeSet<SecretRequest>) -> Fetched {
        requests
            .iter()
            .map(|r| {
                let result = self
                    .0
                    .iter()
                    .find(|(known, _)| known == r)
                    .map(|(_, d)| d.clone())
                    .ok_or_else(|| ReadError::NotFound(r.clone()));
                (r.clone(), result)
            })
            .collect()
    }
}

/// The AVP integration-test Vault (its pkg/helpers/test_helpers.go): `secret/` is KV v1, `kv/` is KV v2.
fn avp_vault() -> FakeVault {
    let encoded_secret = modifiers::base64_encode(
        b"{\n  \"key1\": \"secret1\",\n  \"key2\": \"secret2\",\n  \"key3\": \"secret3\"\n}\n",
    );
    let testing_v2 = json!({
        "name": "test-kv-name", "namespace": "test-kv-namespace", "version": "1.2",
        "replicas": "3", "tag": "1.1", "target-port": 80
    });
    FakeVault(vec![
        (
            req("secret/testing", V1, None),
            data(json!({
                "name": "test-name", "namespace": "test-namespace", "version": "1.0",
                "replicas": "2", "tag": "1.0",
                "secret-var-value": "dGVzdC1wYXNzd29yZA==",
                "secret-var-value2": "dGVzdC1wYXNzd29yZDI=",
                "secret-num": "MQ==", "secret-var-clear": "test-password"
            })),
        ),
        (req("kv/data/testing", V2, None), data(testing_v2)),
        (
            req("secret/foo", V1, None),
            data(json!({ "secret": "bar" })),
        ),
        (
            req("secret/json", V1, None),
            data(json!({ "data": {
                "service": { "enableTLS": true, "ports": [80, 8080] },
                "deployment": { "replicas": 2, "image": { "name": "json-test", "tag": "latest" } }
            }})),
        ),
        (
            req("secret/jsonstring", V1, None),
            data(
                json!({ "secret": r#"{"credentials":{"user":"test-user","pass":"test-password"}}"# }),
            ),
        ),
        (
            req("kv/data/test", V2, None),
            data(json!({ "hello": "world" })),
        ),
        (
            req("secret/bad_test", V1, None),
            data(json!({ "hello": "world" })),
        ),
        (
            req("kv/data/versioned", V2, None),
            data(json!({ "secret": "version2" })),
        ),
        (
            req("kv/data/versioned", V2, Some("1")),
            data(json!({ "secret": "version1" })),
        ),
        (
            req("kv/data/versioned", V2, Some("2")),
            data(json!({ "secret": "version2" })),
        ),
        (
            req("secret/base64", V1, None),
            data(json!({ "encoded_secret": encoded_secret })),
        ),
        (
            req("secret/yaml", V1, None),
            data(json!({ "secret": "---\nkey1: secret1\nkey2: secret2\nkey3: secret3" })),
        ),
    ])
}

fn opts() -> Options {
    Options::default()
}

fn render_with(
    docs: Vec<Value>,
    opts: &Options,
    vault: &FakeVault,
) -> Result<Vec<Value>, SubstituteError> {
    let requests = collect(&docs, opts)?;
    let fetched = vault.fetch(&requests);
    let planned = planned_apply(&docs, opts, &fetched);
    let applied = apply(docs, opts, &fetched, &AliasBudget::for_output(0));
    assert_eq!(planned, applied, "plan + apply_planned differ from apply");
    applied
}

/// The server's path over the same documents: `plan` + `apply_planned` on shared documents,
/// checking that the documents it leaves alone come back as the same `Arc` and that the
/// shared input is unchanged.
fn planned_apply(
    docs: &[Value],
    opts: &Options,
    fetched: &Fetched,
) -> Result<Vec<Value>, SubstituteError> {
    let shared: Vec<Arc<Value>> = docs.iter().cloned().map(Arc::new).collect();
    let planned = plan(&shared, opts).expect("plan agrees with collect");
    let out = apply_planned(
        shared.clone(),
        &planned,
        opts,
        fetched,
        &AliasBudget::for_output(0),
    );
    for (before, after) in shared.iter().zip(docs) {
        assert_eq!(**before, *after, "the shared input was changed");
    }
    let out = out?;
    for (index, (before, after)) in shared.iter().zip(&out).enumerate() {
        assert_eq!(!planned.changes(index), Arc::ptr_eq(before, after));
    }
    Ok(out.iter().map(|d| (**d).clone()).collect())
}

/// A Secret's base64 value that hides a generic placeholder is re-encoded (canonically) even
/// where generic placeholders are not substituted, with no read: the plan must count it as a
/// change, or the server would answer with the original encoding.
#[test]
fn planned_apply_re_encodes_like_apply() {
    let docs = vec![
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
               "data": {"pw": "PGs+\neA=="}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
               "data": {"a": "plain"}}),
    ];
    let planned = plan(&docs, &opts()).expect("plan");
    assert!(planned.requests().is_empty());
    assert!(planned.changes(0) && !planned.changes(1));
    let out = render(docs).expect("render");
    assert_eq!(out[0]["data"]["pw"], "PGs+eA==");
}

fn render(docs: Vec<Value>) -> Result<Vec<Value>, SubstituteError> {
    render_with(docs, &opts(), &avp_vault())
}

fn render_one(doc: Value) -> Result<Value, SubstituteError> {
    render(vec![doc]).map(|mut docs| docs.remove(0))
}

/// A manifest with the given kind, annotations and extra top-level fields.
fn manifest(kind: &str, annotations: Value, body: Value) -> Value {
    let mut doc = json!({
        "apiVersion": "v1",
        "kind": kind,
        "metadata": { "name": "test", "namespace": "ns", "annotations": annotations },
    });
    if let (Some(target), Value::Object(extra)) = (doc.as_object_mut(), body) {
        target.extend(extra);
    }
    doc
}

fn messages(err: &SubstituteError) -> Vec<String> {
    err.problems.iter().map(ToString::to_string).collect()
}

// ---------------------------------------------------------------------------------------------
// AVP fixtures (argocd-vault-plugin v1.18.1): fixtures/input/nonempty → fixtures/output/all.yaml

fn fixture_inputs() -> Vec<Value> {
    let deployment = |path: &str, kv1: bool| {
        let mut annotations = json!({ "avp.kubernetes.io/path": path });
        if kv1 {
            annotations["avp.kubernetes.io/kv-version"] = json!("1");
        }
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "annotations": annotations,
                "name": "<name>", "namespace": "<namespace>",
                "labels": { "app": "<name>", "version": "<version>" }
            },
            "spec": {
                "selector": { "matchLabels": { "app": "<name>" } },
                "replicas": "<replicas>",
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 1 } },
                "minReadySeconds": 5, "revisionHistoryLimit": 10,
                "template": {
                    "metadata": { "name": "<name>", "labels": { "app": "<name>" } },
                    "spec": { "containers": [{
                        "name": "<name>", "image": "foo.com/<name>:<tag>", "imagePullPolicy": "Always"
                    }]}
                }
            }
        })
    };
    let kv1_secret = |name: &str, data: Value| {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "annotations": { "avp.kubernetes.io/kv-version": "1" }, "name": name, "namespace": "default" },
            "type": "Opaque", "data": data
        })
    };
    let folded_ports = concat!(
        "<data | jsonPath {'['} {range .service.ports[0:-1:1]} {'{\"protocol\":\"TCP\",'} ",
        "{'\"port\":'}{@} {',\"targetPort\":'}{@} {'},'} {end} {'{\"protocol\":\"TCP\",'} ",
        "{'\"port\":'}{.service.ports[-1]} {',\"targetPort\":'}{.service.ports[-1]} {'}]'} | jsonParse >"
    );
    let json_annotations =
        json!({ "avp.kubernetes.io/path": "secret/json", "avp.kubernetes.io/kv-version": "1" });
    vec![
        // deployment.yaml
        deployment("secret/testing", true),
        // full.yaml
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "annotations": { "avp.kubernetes.io/path": "kv/data/testing" },
                "name": "<name>", "namespace": "<namespace>", "labels": { "app": "<name>" }
            },
            "spec": {
                "selector": { "app": "<name>" },
                "ports": [{ "protocol": "TCP", "name": "http", "port": 80, "targetPort": "<target-port>" }],
                "type": "NodePort"
            }
        }),
        deployment("kv/data/testing", false),
        // ignored-secret.yaml
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "my-app", "namespace": "default", "annotations": { "avp.kubernetes.io/ignore": "True" } },
            "data": { "MY_SECRET_NUM": "<num>", "MY_SECRET_STRING": "<string>" }
        }),
        // modifers.yaml
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "annotations": json_annotations, "name": "modifiers-test", "namespace": "modifiers-test" },
            "spec": {
                "selector": { "matchLabels": { "app": "modifiers-test" } },
                "replicas": "<  data |jsonPath  {.deployment.replicas}|  jsonParse >",
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 1 } },
                "minReadySeconds": 5, "revisionHistoryLimit": 10,
                "template": {
                    "metadata": { "labels": { "app": "modifiers-test" } },
                    "spec": { "containers": [{
                        "name": "modifiers-test",
                        "image": "foo.com/<data | jsonPath {.deployment.image.name}>:<data | jsonPath {.deployment.image.tag}>",
                        "imagePullPolicy": "Always"
                    }]}
                }
            }
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "annotations": json_annotations, "name": "modifiers-test", "namespace": "modifiers-test",
                "labels": { "app": "modifiers-test" }
            },
            "spec": { "selector": { "app": "modifiers-test" }, "ports": folded_ports, "type": "NodePort" }
        }),
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "annotations": { "avp.kubernetes.io/kv-version": "1" }, "name": "modifiers-test", "namespace": "modifiers-test" },
            "type": "Opaque",
            "data": {
                "USER": "<path:secret/jsonstring#secret | jsonParse | jsonPath {.credentials.user} | base64encode>",
                "PASSWORD": "PHBhdGg6c2VjcmV0L2pzb25zdHJpbmcjc2VjcmV0IHwganNvblBhcnNlIHwganNvblBhdGggey5jcmVkZW50aWFscy5wYXNzfT4=",
                "ESECRET": "<path:secret/base64#encoded_secret | base64decode | jsonPath {.key2} | base64encode>",
                "YAML": "<path:secret/yaml#secret | yamlParse | jsonPath {.key1} | base64encode>",
                "SHA256SUM": "<path:secret/foo#secret | sha256sum | base64encode>"
            }
        }),
        // secret.json
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "annotations": { "avp.kubernetes.io/path": "secret/testing", "avp.kubernetes.io/kv-version": "1" },
                "name": "<name>-json", "namespace": "<namespace>"
            },
            "type": "Opaque",
            "data": { "SECRET_VAR": "<secret-var-value>", "SECRET_NUM": "<secret-num>" }
        }),
        // secret.yaml
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "annotations": { "avp.kubernetes.io/path": "secret/testing", "avp.kubernetes.io/kv-version": "1" },
                "name": "<name>", "namespace": "<namespace>"
            },
            "type": "Opaque",
            "data": { "SECRET_VAR": "<secret-var-value>", "SECRET_NUM": "<secret-num>" }
        }),
        // secret_embedded_base64.yaml
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "annotations": { "avp.kubernetes.io/kv-version": "1", "avp.kubernetes.io/path": "secret/testing" },
                "name": "embedded-secret-base64", "namespace": "default"
            },
            "type": "Opaque",
            "data": { "secret.yaml": "c29tZQ==<secret-var-clear | base64encode>dmFsdWU=" }
        }),
        // secret_path-multi.yaml
        kv1_secret(
            "example-secret-multi",
            json!({
                "SECRET_VAR": "<path:secret/testing#secret-var-value>,<path:secret/testing#secret-var-value2>"
            }),
        ),
        // secret_path.yaml
        kv1_secret(
            "example-secret",
            json!({
                "SECRET_VAR": "<path:secret/testing#secret-var-value>",
                "SECRET_VAR_VERSIONED": "<path:secret/testing#secret-var-value#version>"
            }),
        ),
        // secret_path_base64.yaml
        kv1_secret(
            "example-secret-base64",
            json!({
                "SECRET_VAR": "PHBhdGg6c2VjcmV0L3Rlc3Rpbmcjc2VjcmV0LXZhci1jbGVhcj4="
            }),
        ),
        // secret_path_base64_substring.yaml
        kv1_secret(
            "example-secret-base64-substring",
            json!({
                "secret.yaml": "cGFzc3dvcmQxOiA8cGF0aDpzZWNyZXQvdGVzdGluZyNzZWNyZXQtdmFyLWNsZWFyPgpwYXNzd29yZDI6IDxwYXRoOnNlY3JldC90ZXN0aW5nI3NlY3JldC12YXItY2xlYXI+"
            }),
        ),
        // secret_remove_missing.yaml
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "annotations": { "avp.kubernetes.io/path": "kv/data/testing", "avp.kubernetes.io/remove-missing": "true" },
                "name": "my-app", "namespace": "default"
            },
            "data": { "PORT": "<target-port>", "MISSING_VALUE": "<missing-value>" }
        }),
        // secret_versioned.yaml
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "annotations": {
                    "avp.kubernetes.io/path": "kv/data/versioned",
                    "avp.kubernetes.io/kv-version": "2",
                    "avp.kubernetes.io/secret-version": "1"
                },
                "name": "example-secret", "namespace": "default"
            },
            "type": "Opaque",
            "data": {
                "SECRET_VAR": "<secret>",
                "SECRET_VAR_CURRENT": "<path:kv/data/versioned#secret>",
                "SECRET_VAR_V2": "<path:kv/data/versioned#secret#2>"
            }
        }),
    ]
}

fn fixture_outputs() -> Vec<Value> {
    let deployment = |annotations: Value,
                      name: &str,
                      ns: &str,
                      version: &str,
                      replicas: &str,
                      tag: &str| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "annotations": annotations,
                "labels": { "app": name, "version": version },
                "name": name, "namespace": ns
            },
            "spec": {
                "minReadySeconds": 5, "replicas": replicas, "revisionHistoryLimit": 10,
                "selector": { "matchLabels": { "app": name } },
                "strategy": { "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 1 }, "type": "RollingUpdate" },
                "template": {
                    "metadata": { "labels": { "app": name }, "name": name },
                    "spec": { "containers": [{
                        "image": format!("foo.com/{name}:{tag}"), "imagePullPolicy": "Always", "name": name
                    }]}
                }
            }
        })
    };
    let kv1 = json!({ "avp.kubernetes.io/kv-version": "1" });
    let kv1_secret = |name: &str, data: Value| {
        json!({
            "apiVersion": "v1", "data": data, "kind": "Secret",
            "metadata": { "annotations": kv1, "name": name, "namespace": "default" },
            "type": "Opaque"
        })
    };
    let testing_kv1 =
        json!({ "avp.kubernetes.io/kv-version": "1", "avp.kubernetes.io/path": "secret/testing" });
    let json_annotations =
        json!({ "avp.kubernetes.io/kv-version": "1", "avp.kubernetes.io/path": "secret/json" });
    vec![
        deployment(
            testing_kv1.clone(),
            "test-name",
            "test-namespace",
            "1.0",
            "2",
            "1.0",
        ),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "annotations": { "avp.kubernetes.io/path": "kv/data/testing" },
                "labels": { "app": "test-kv-name" }, "name": "test-kv-name", "namespace": "test-kv-namespace"
            },
            "spec": {
                "ports": [{ "name": "http", "port": 80, "protocol": "TCP", "targetPort": 80 }],
                "selector": { "app": "test-kv-name" }, "type": "NodePort"
            }
        }),
        deployment(
            json!({ "avp.kubernetes.io/path": "kv/data/testing" }),
            "test-kv-name",
            "test-kv-namespace",
            "1.2",
            "3",
            "1.1",
        ),
        json!({
            "apiVersion": "v1", "data": { "MY_SECRET_NUM": "<num>", "MY_SECRET_STRING": "<string>" }, "kind": "Secret",
            "metadata": { "annotations": { "avp.kubernetes.io/ignore": "True" }, "name": "my-app", "namespace": "default" }
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "annotations": json_annotations, "name": "modifiers-test", "namespace": "modifiers-test" },
            "spec": {
                "minReadySeconds": 5, "replicas": 2, "revisionHistoryLimit": 10,
                "selector": { "matchLabels": { "app": "modifiers-test" } },
                "strategy": { "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 1 }, "type": "RollingUpdate" },
                "template": {
                    "metadata": { "labels": { "app": "modifiers-test" } },
                    "spec": { "containers": [{
                        "image": "foo.com/json-test:latest", "imagePullPolicy": "Always", "name": "modifiers-test"
                    }]}
                }
            }
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "annotations": json_annotations, "labels": { "app": "modifiers-test" },
                "name": "modifiers-test", "namespace": "modifiers-test"
            },
            "spec": {
                "ports": [
                    { "port": 80, "protocol": "TCP", "targetPort": 80 },
                    { "port": 8080, "protocol": "TCP", "targetPort": 8080 }
                ],
                "selector": { "app": "modifiers-test" }, "type": "NodePort"
            }
        }),
        json!({
            "apiVersion": "v1",
            "data": {
                "ESECRET": "c2VjcmV0Mg==",
                "PASSWORD": "dGVzdC1wYXNzd29yZA==",
                "SHA256SUM": "ZmNkZTJiMmVkYmE1NmJmNDA4NjAxZmI3MjFmZTliNWMzMzhkMTBlZTQyOWVhMDRmYWU1NTExYjY4ZmJmOGZiOQ==",
                "USER": "dGVzdC11c2Vy",
                "YAML": "c2VjcmV0MQ=="
            },
            "kind": "Secret",
            "metadata": { "annotations": kv1, "name": "modifiers-test", "namespace": "modifiers-test" },
            "type": "Opaque"
        }),
        json!({
            "apiVersion": "v1", "data": { "SECRET_NUM": "MQ==", "SECRET_VAR": "dGVzdC1wYXNzd29yZA==" }, "kind": "Secret",
            "metadata": { "annotations": testing_kv1, "name": "test-name-json", "namespace": "test-namespace" },
            "type": "Opaque"
        }),
        json!({
            "apiVersion": "v1", "data": { "SECRET_NUM": "MQ==", "SECRET_VAR": "dGVzdC1wYXNzd29yZA==" }, "kind": "Secret",
            "metadata": { "annotations": testing_kv1, "name": "test-name", "namespace": "test-namespace" },
            "type": "Opaque"
        }),
        json!({
            "apiVersion": "v1", "data": { "secret.yaml": "c29tZQ==dGVzdC1wYXNzd29yZA==dmFsdWU=" }, "kind": "Secret",
            "metadata": { "annotations": testing_kv1, "name": "embedded-secret-base64", "namespace": "default" },
            "type": "Opaque"
        }),
        kv1_secret(
            "example-secret-multi",
            json!({ "SECRET_VAR": "dGVzdC1wYXNzd29yZA==,dGVzdC1wYXNzd29yZDI=" }),
        ),
        kv1_secret(
            "example-secret",
            json!({
                "SECRET_VAR": "dGVzdC1wYXNzd29yZA==", "SECRET_VAR_VERSIONED": "dGVzdC1wYXNzd29yZA=="
            }),
        ),
        kv1_secret(
            "example-secret-base64",
            json!({ "SECRET_VAR": "dGVzdC1wYXNzd29yZA==" }),
        ),
        kv1_secret(
            "example-secret-base64-substring",
            json!({
                "secret.yaml": "cGFzc3dvcmQxOiB0ZXN0LXBhc3N3b3JkCnBhc3N3b3JkMjogdGVzdC1wYXNzd29yZA=="
            }),
        ),
        json!({
            "apiVersion": "v1", "data": { "PORT": 80 }, "kind": "Secret",
            "metadata": {
                "annotations": { "avp.kubernetes.io/path": "kv/data/testing", "avp.kubernetes.io/remove-missing": "true" },
                "name": "my-app", "namespace": "default"
            }
        }),
        json!({
            "apiVersion": "v1",
            "data": { "SECRET_VAR": "version1", "SECRET_VAR_CURRENT": "version2", "SECRET_VAR_V2": "version2" },
            "kind": "Secret",
            "metadata": {
                "annotations": {
                    "avp.kubernetes.io/kv-version": "2",
                    "avp.kubernetes.io/path": "kv/data/versioned",
                    "avp.kubernetes.io/secret-version": "1"
                },
                "name": "example-secret", "namespace": "default"
            },
            "type": "Opaque"
        }),
    ]
}

#[test]
fn avp_fixtures_match_all_yaml() {
    let got = render(fixture_inputs()).expect("fixtures render");
    let want = fixture_outputs();
    assert_eq!(got.len(), want.len());
    for (i, (got, want)) in got.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "document {i}");
    }
}

#[test]
fn avp_fixtures_need_deduplicated_reads() {
    let requests = collect(&fixture_inputs(), &opts()).expect("collect");
    let want: BTreeSet<_> = [
        req("secret/testing", V1, None),
        req("kv/data/testing", V2, None),
        req("secret/json", V1, None),
        req("secret/jsonstring", V1, None),
        req("secret/base64", V1, None),
        req("secret/yaml", V1, None),
        req("secret/foo", V1, None),
        req("kv/data/versioned", V2, Some("1")),
        req("kv/data/versioned", V2, None),
        req("kv/data/versioned", V2, Some("2")),
    ]
    .into_iter()
    .collect();
    assert_eq!(requests, want);
}

// ---------------------------------------------------------------------------------------------
// Grammar at document level

#[test]
fn grammar_in_documents() {
    let annotated =
        json!({ "avp.kubernetes.io/path": "secret/testing", "avp.kubernetes.io/kv-version": "1" });
    let kv1 = json!({ "avp.kubernetes.io/kv-version": "1" });
    let cases = [
        // Unannotated: only <path:...> counts; HTML and usage text stay.
        (kv1.clone(), "<b>bold</b> <KEY>", "<b>bold</b> <KEY>"),
        (kv1.clone(), "<path:secret/testing#name>", "test-name"),
        (
            kv1.clone(),
            "a <path:secret/testing#name>/<path:secret/testing#tag> b",
            "a test-name/1.0 b",
        ),
        (
            kv1.clone(),
            "< path:secret/testing#name>",
            "< path:secret/testing#name>",
        ),
        (kv1.clone(), "<path:secret/testing# name >", "test-name"),
        (
            kv1.clone(),
            "<path:secret/testing#name | base64encode>",
            "dGVzdC1uYW1l",
        ),
        (kv1.clone(), "<path:secret/testing#name#7>", "test-name"),
        // Annotated: generic keys, spacing, several per string, inline inside.
        (annotated.clone(), "<name>", "test-name"),
        (
            annotated.clone(),
            "foo.com/<name>:<tag>",
            "foo.com/test-name:1.0",
        ),
        (annotated.clone(), "<  name  >", "test-name"),
        (annotated.clone(), "<name|base64encode>", "dGVzdC1uYW1l"),
        (annotated.clone(), "<<name>>", "test-name>"),
        (annotated.clone(), "< path:secret/testing#tag >", "1.0"),
        (annotated.clone(), "x<mypath:secret/testing#tag>y", "x1.0y"),
        (annotated.clone(), "<name>\n<tag>", "test-name\n1.0"),
        (annotated.clone(), "no placeholders", "no placeholders"),
    ];
    for (annotations, input, want) in cases {
        let doc = manifest("ConfigMap", annotations, json!({ "data": { "k": input } }));
        let out = render_one(doc).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(out["data"]["k"], json!(want), "input {input:?}");
    }
}

#[test]
fn annotated_mode_rejects_non_placeholders() {
    let doc = manifest(
        "Deployment",
        json!({ "avp.kubernetes.io/path": "secret/testing", "avp.kubernetes.io/kv-version": "1" }),
        json!({ "spec": { "description": "use <b>bold</b> here" } }),
    );
    let err = render_one(doc).expect_err("generic mode treats <b> as a key");
    assert_eq!(
        messages(&err),
        [
            "missing vault value for placeholder b in string description: use <b>bold</b> here",
            "missing vault value for placeholder /b in string description: use <b>bold</b> here",
        ]
    );
}

#[test]
fn only_values_are_walked() {
    let doc = manifest(
        "Deployment",
        json!({ "avp.kubernetes.io/path": "secret/testing", "avp.kubernetes.io/kv-version": "1" }),
        json!({
            "spec": {
                "<name>": "key stays",
                "list": ["<name>", { "inner": "<tag>" }, ["<name>"], 5, null, true],
                "number": 3,
                "nested": { "deeper": { "v": "<version>" } }
            }
        }),
    );
    let out = render_one(doc).expect("renders");
    assert_eq!(
        out["spec"],
        json!({
            "<name>": "key stays",
            "list": ["test-name", { "inner": "1.0" }, ["<name>"], 5, null, true],
            "number": 3,
            "nested": { "deeper": { "v": "1.0" } }
        })
    );
    // Keys keep their order.
    let keys: Vec<_> = out["spec"]
        .as_object()
        .expect("map")
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["<name>", "list", "number", "nested"]);
}

#[test]
fn every_field_is_substituted_including_metadata() {
    let doc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "annotations": { "avp.kubernetes.io/path": "kv/data/testing", "note": "<tag>" },
            "name": "<name>", "namespace": "<namespace>"
        }
    });
    let out = render_one(doc).expect("renders");
    assert_eq!(out["metadata"]["name"], "test-kv-name");
    assert_eq!(out["metadata"]["namespace"], "test-kv-namespace");
    assert_eq!(out["metadata"]["annotations"]["note"], "1.1");
}

// ---------------------------------------------------------------------------------------------
// Typed insertion, ConfigMap stringification, Secret base64

fn typed_vault() -> FakeVault {
    FakeVault(vec![(
        req("kv/data/typed", V2, None),
        data(json!({
            "num": 80, "float": 2.5, "bool": true, "str": "2", "obj": { "a": 1 }, "list": [1, "x"],
            "json": "{\"b\": [1, 2]}", "null": null, "empty": "", "nullstr": "null"
        })),
    )])
}

#[test]
fn typed_insertion() {
    let cases = [
        ("<num>", json!(80)),
        ("<float>", json!(2.5)),
        ("<bool>", json!(true)),
        ("<obj>", json!({ "a": 1 })),
        ("<list>", json!([1, "x"])),
        ("<json | jsonParse>", json!({ "b": [1, 2] })),
        ("<json | jsonPath {.b[0]} | jsonParse>", json!(1)),
        // AVP quirk: a typed value replaces the whole field, dropping surrounding text...
        ("http://host:<num>/x", json!(80)),
        // ...and the last typed value wins over strings and earlier typed values.
        ("<str>-<num>-<bool>", json!(true)),
        // Vault strings stay strings.
        ("<str>", json!("2")),
        ("<empty>", json!("")),
        ("<num | jsonPath {@}>", json!("80")),
    ];
    for (input, want) in cases {
        let doc = manifest(
            "Deployment",
            json!({ "avp.kubernetes.io/path": "kv/data/typed" }),
            json!({ "spec": { "v": input, "l": [input] } }),
        );
        let out = render_with(vec![doc], &opts(), &typed_vault())
            .unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(out[0]["spec"]["v"], want, "field {input}");
        assert_eq!(out[0]["spec"]["l"][0], want, "list element {input}");
    }
}

#[test]
fn configmap_values_are_stringified() {
    let cases = [
        ("<num>", "80"),
        ("<float>", "2.5"),
        ("<bool>", "true"),
        ("<str>", "2"),
        ("port <num>", "80"),
        // AVP panics on these; we write compact JSON.
        ("<obj>", r#"{"a":1}"#),
        ("<list>", r#"[1,"x"]"#),
        ("<json | jsonParse>", r#"{"b":[1,2]}"#),
    ];
    for (input, want) in cases {
        let doc = manifest(
            "ConfigMap",
            json!({ "avp.kubernetes.io/path": "kv/data/typed" }),
            json!({ "data": { "v": input }, "binaryData": { "n": 5 } }),
        );
        let out = render_with(vec![doc], &opts(), &typed_vault())
            .unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(out[0]["data"]["v"], json!(want), "{input}");
        // Non-string manifest values are not touched.
        assert_eq!(out[0]["binaryData"]["n"], json!(5));
    }
}

#[test]
fn null_results_are_errors() {
    for input in ["<null>", "<nullstr | jsonParse>"] {
        let doc = manifest(
            "Deployment",
            json!({ "avp.kubernetes.io/path": "kv/data/typed" }),
            json!({ "spec": { "v": input } }),
        );
        let err = render_with(vec![doc], &opts(), &typed_vault()).expect_err(input);
        let want = if input == "<null>" {
            format!("missing vault value for placeholder null in string v: {input}")
        } else {
            format!("null value for placeholder nullstr in string v: {input}")
        };
        assert_eq!(messages(&err), [want]);
    }
}

#[test]
fn secret_base64_round_trip() {
    let b64 = |s: &str| modifiers::base64_encode(s.as_bytes());
    let wrapped = |s: &str| {
        let mut encoded = b64(s);
        encoded.insert_str(10, "\r\n");
        encoded
    };
    let annotated =
        json!({ "avp.kubernetes.io/path": "secret/testing", "avp.kubernetes.io/kv-version": "1" });
    let kv1 = json!({ "avp.kubernetes.io/kv-version": "1" });
    let cases = [
        // kustomize secretGenerator: a whole file with inline placeholders, base64-encoded.
        (
            kv1.clone(),
            b64("user: <path:secret/testing#name>\npass: <path:secret/testing#secret-var-clear>\n"),
            b64("user: test-name\npass: test-password\n"),
        ),
        // util_test TestSecretReplacement_Base64: base64encode inside gives double encoding.
        (
            annotated.clone(),
            b64("<name | base64encode>"),
            b64(&b64("test-name")),
        ),
        // Generic mode inside base64.
        (
            annotated.clone(),
            b64("[default]\nkey=<name>\n"),
            b64("[default]\nkey=test-name\n"),
        ),
        // Go's decoder skips line breaks (wrapped base64).
        (
            kv1.clone(),
            wrapped("<path:secret/testing#name>"),
            b64("test-name"),
        ),
        // Decoded text with <...> but no <path:> in inline-only mode: re-encoded unchanged.
        (kv1.clone(), b64("<html>"), b64("<html>")),
        // Base64 without a placeholder inside is left alone.
        (annotated.clone(), b64("plain value"), b64("plain value")),
        // Raw data is not auto-encoded.
        (
            annotated.clone(),
            "<secret-num>".to_owned(),
            "MQ==".to_owned(),
        ),
        (
            kv1.clone(),
            "<path:secret/testing#name>".to_owned(),
            "test-name".to_owned(),
        ),
    ];
    for (annotations, input, want) in cases {
        let doc = manifest("Secret", annotations, json!({ "data": { "k": input } }));
        let out = render_one(doc).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(out["data"]["k"], json!(want), "input {input}");
    }
}

#[test]
fn secret_base64_with_typed_value_is_stringified() {
    let doc = manifest(
        "Secret",
        json!({ "avp.kubernetes.io/path": "kv/data/typed" }),
        json!({ "data": {
            "port": modifiers::base64_encode(b"port=<num>"),
            "obj": modifiers::base64_encode(b"<obj>"),
            "typed": "<num>"
        }}),
    );
    let out = render_with(vec![doc], &opts(), &typed_vault()).expect("renders");
    assert_eq!(
        out[0]["data"]["port"],
        json!(modifiers::base64_encode(b"80"))
    );
    assert_eq!(
        out[0]["data"]["obj"],
        json!(modifiers::base64_encode(br#"{"a":1}"#))
    );
    // Outside base64, typed insertion applies to Secrets too (AVP fixture: PORT: 80).
    assert_eq!(out[0]["data"]["typed"], json!(80));
}

#[test]
fn secret_binary_base64_is_left_alone() {
    // Valid base64 of non-UTF-8 bytes containing '<' and '>'.
    let binary = modifiers::base64_encode(&[0xff, b'<', b'x', b'>', 0xfe]);
    let doc = manifest(
        "Secret",
        json!({ "avp.kubernetes.io/path": "secret/testing", "avp.kubernetes.io/kv-version": "1" }),
        json!({ "data": { "bin": binary.clone() } }),
    );
    assert_eq!(
        render_one(doc).expect("renders")["data"]["bin"],
        json!(binary)
    );
}

// ---------------------------------------------------------------------------------------------
// Annotations

#[test]
fn remove_missing() {
    let annotations = json!({
        "avp.kubernetes.io/path": "kv/data/testing",
        "avp.kubernetes.io/remove-missing": "true"
    });
    for kind in ["Secret", "ConfigMap"] {
        let doc = manifest(
            kind,
            annotations.clone(),
            json!({
                "data": { "KEEP": "<name>", "GONE": "<missing>", "PARTIAL": "x-<missing>-<name>", "INLINE": "<path:kv/data/testing#nope>" },
                "stringData": { "nested": { "GONE": "<missing>" } }
            }),
        );
        let out = render_one(doc).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(out["data"], json!({ "KEEP": "test-kv-name" }), "{kind}");
        assert_eq!(out["stringData"], json!({ "nested": {} }), "{kind}");
        assert_eq!(out["metadata"]["name"], "test");
    }
}

#[test]
fn remove_missing_keeps_other_errors() {
    let annotations = json!({
        "avp.kubernetes.io/path": "kv/data/testing",
        "avp.kubernetes.io/remove-missing": "1"
    });
    let cases = [
        // List elements are never removed.
        (
            json!({ "list": ["<missing>"] }),
            "missing vault value for placeholder missing in string list",
        ),
        // A missing path is a read error, not a missing key.
        (
            json!({ "x": "<path:kv/data/nothere#k>" }),
            "could not find secrets at path kv/data/nothere",
        ),
        // Modifier errors still fail (the field is removed as well).
        (
            json!({ "x": "<missing> <name | nope>" }),
            "invalid modifier: nope for placeholder name in string x",
        ),
    ];
    for (data, want) in cases {
        let doc = manifest("Secret", annotations.clone(), json!({ "data": data }));
        let err = render_one(doc).expect_err(want);
        assert_eq!(messages(&err), [want]);
    }
}

#[test]
fn remove_missing_only_on_secret_or_configmap() {
    let doc = manifest(
        "Deployment",
        json!({ "avp.kubernetes.io/path": "kv/data/testing", "avp.kubernetes.io/remove-missing": "true" }),
        json!({ "spec": { "x": "<missing>" } }),
    );
    let err = collect(std::slice::from_ref(&doc), &opts()).expect_err("collect refuses");
    assert_eq!(
        err.to_string(),
        "could not replace all placeholders in Deployment/ns/test:\n\
         avp.kubernetes.io/remove-missing annotation can only be used on Secret or ConfigMap resources"
    );
    assert_eq!(
        apply(
            vec![doc],
            &opts(),
            &Fetched::new(),
            &AliasBudget::for_output(0)
        ),
        Err(err)
    );
    // A false value is fine anywhere.
    let doc = manifest(
        "Deployment",
        json!({ "avp.kubernetes.io/remove-missing": "false" }),
        json!({}),
    );
    assert!(render_one(doc).is_ok());
}

#[test]
fn ignore_makes_no_reads_and_changes_nothing() {
    let strict = Options {
        path_validation: Some(regex::Regex::new("^allowed/").expect("regex")),
        ..opts()
    };
    for value in ["true", "True", "1", "t"] {
        let doc = manifest(
            "Secret",
            json!({
                "avp.kubernetes.io/ignore": value,
                "avp.kubernetes.io/path": "secret/does-not-exist",
                "avp.kubernetes.io/kv-version": "7",
                "avp.kubernetes.io/remove-missing": "true"
            }),
            json!({ "data": { "a": "<num>", "b": "<path:x/y#z>" } }),
        );
        assert_eq!(
            collect(std::slice::from_ref(&doc), &strict),
            Ok(BTreeSet::new()),
            "{value}"
        );
        assert_eq!(
            apply(
                vec![doc.clone()],
                &strict,
                &Fetched::new(),
                &AliasBudget::for_output(0)
            ),
            Ok(vec![doc]),
            "{value}"
        );
    }
    // Anything ParseBool rejects means "not ignored".
    let doc = manifest(
        "Secret",
        json!({ "avp.kubernetes.io/ignore": "yes" }),
        json!({ "data": { "a": "<path:secret/testing#name>" } }),
    );
    assert_eq!(collect(&[doc], &opts()).expect("collect").len(), 1);
}

#[test]
fn kv_and_secret_version_shape_requests() {
    let cases = [
        // (annotations, field, default kv, expected requests)
        (
            json!({}),
            "<path:kv/data/a#k>",
            V2,
            vec![req("kv/data/a", V2, None)],
        ),
        (
            json!({}),
            "<path:secret/a#k>",
            V1,
            vec![req("secret/a", V1, None)],
        ),
        (
            json!({}),
            "<path:kv/data/a#k#3>",
            V2,
            vec![req("kv/data/a", V2, Some("3"))],
        ),
        // KV v1 ignores versions, so they are dropped and reads dedupe.
        (
            json!({ "avp.kubernetes.io/kv-version": "1" }),
            "<path:a#k#3> <path:a#k>",
            V2,
            vec![req("a", V1, None)],
        ),
        (
            json!({ "avp.kubernetes.io/kv-version": "2" }),
            "<path:a#k>",
            V1,
            vec![req("a", V2, None)],
        ),
        // secret-version applies to the annotation path only.
        (
            json!({ "avp.kubernetes.io/path": "kv/data/p", "avp.kubernetes.io/secret-version": "4" }),
            "<k> <path:kv/data/p#k>",
            V2,
            vec![req("kv/data/p", V2, None), req("kv/data/p", V2, Some("4"))],
        ),
        (
            json!({ "avp.kubernetes.io/path": "p", "avp.kubernetes.io/secret-version": "4", "avp.kubernetes.io/kv-version": "1" }),
            "<k>",
            V2,
            vec![req("p", V1, None)],
        ),
        // The annotation path is read only when a generic placeholder uses it.
        (
            json!({ "avp.kubernetes.io/path": "kv/data/p" }),
            "no placeholders",
            V2,
            vec![],
        ),
        (
            json!({ "avp.kubernetes.io/path": "kv/data/p" }),
            "<path:kv/data/q#k>",
            V2,
            vec![req("kv/data/q", V2, None)],
        ),
        // An empty path annotation enables generic mode but reads nothing.
        (json!({ "avp.kubernetes.io/path": "" }), "<k>", V2, vec![]),
        // Non-string annotations hide all AVP annotations: inline-only mode, default kv.
        (
            json!({ "avp.kubernetes.io/path": "kv/data/p", "avp.kubernetes.io/kv-version": 1 }),
            "<k> <path:kv/data/q#k>",
            V2,
            vec![req("kv/data/q", V2, None)],
        ),
    ];
    for (annotations, field, default_kv_version, want) in cases {
        let doc = manifest(
            "Deployment",
            annotations.clone(),
            json!({ "spec": { "f": field } }),
        );
        let opts = Options {
            default_kv_version,
            path_validation: None,
            ..Options::default()
        };
        let got = collect(&[doc], &opts).unwrap_or_else(|e| panic!("{annotations} {field}: {e}"));
        assert_eq!(got, want.into_iter().collect(), "{annotations} {field}");
    }
}

#[test]
fn bad_kv_version_is_an_error_only_when_reading() {
    let doc = |field: &str| {
        manifest(
            "Deployment",
            json!({ "avp.kubernetes.io/kv-version": "3", "avp.kubernetes.io/path": "kv/data/p" }),
            json!({ "spec": { "f": field } }),
        )
    };
    let err = collect(&[doc("<k> <path:a#b> <path:c#d>")], &opts()).expect_err("bad kv");
    assert_eq!(
        messages(&err),
        [r#"unsupported kvVersion specified in avp.kubernetes.io/kv-version: "3""#]
    );
    assert!(collect(&[doc("nothing to read")], &opts()).is_ok());
}

#[test]
fn empty_path_annotation_makes_generic_keys_missing() {
    let doc = manifest(
        "Deployment",
        json!({ "avp.kubernetes.io/path": "" }),
        json!({ "spec": { "f": "<k>" } }),
    );
    let err = render_one(doc).expect_err("missing");
    assert_eq!(
        messages(&err),
        ["missing vault value for placeholder k in string f: <k>"]
    );
}

#[test]
fn path_validation() {
    let opts = Options {
        default_kv_version: V1,
        path_validation: Some(regex::Regex::new(r"^secret/[a-z]+$").expect("regex")),
        ..Options::default()
    };
    let allowed = manifest(
        "Deployment",
        json!({ "avp.kubernetes.io/path": "secret/testing" }),
        json!({ "spec": { "a": "<name>", "b": "<path:secret/foo#secret>" } }),
    );
    let out = render_with(vec![allowed], &opts, &avp_vault()).expect("allowed");
    assert_eq!(out[0]["spec"], json!({ "a": "test-name", "b": "bar" }));

    let rejected = manifest(
        "Deployment",
        json!({ "avp.kubernetes.io/path": "secret/../sys" }),
        json!({ "spec": {
            "a": "<name>",
            "b": "<path:../blah/blah#k> <path:../blah/blah#k2>",
            "c": "<path:secret/foo#secret>",
            "d": "<path:kv/data/x#k>"
        }}),
    );
    let err = collect(std::slice::from_ref(&rejected), &opts).expect_err("rejected");
    assert_eq!(
        messages(&err),
        [
            "the path secret/../sys is disallowed by AVP_PATH_VALIDATION restriction",
            "the path ../blah/blah is disallowed by AVP_PATH_VALIDATION restriction",
            "the path kv/data/x is disallowed by AVP_PATH_VALIDATION restriction",
        ]
    );
    // apply re-checks, so skipping collect cannot bypass validation.
    assert_eq!(
        apply(
            vec![rejected],
            &opts,
            &Fetched::new(),
            &AliasBudget::for_output(0)
        ),
        Err(err)
    );
    // Unanchored like Go's MatchString.
    let loose = Options {
        default_kv_version: V1,
        path_validation: Some(regex::Regex::new("testing").expect("regex")),
        ..Options::default()
    };
    let doc = manifest(
        "Deployment",
        json!({}),
        json!({ "spec": { "a": "<path:secret/testing#name>" } }),
    );
    assert!(collect(&[doc], &loose).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn modifier_problems_in_documents() {
    let annotated = json!({ "avp.kubernetes.io/path": "kv/data/typed" });
    let cases = [
        // AVP panics on these.
        (
            "<str |>",
            "empty modifier for placeholder str in string v: <str |>",
        ),
        (
            "<str || base64encode>",
            "empty modifier for placeholder str in string v: <str || base64encode>",
        ),
        (
            "<num | sha256sum>",
            "sha256sum: invalid datatype number, expected string for placeholder num in string v: <num | sha256sum>",
        ),
        // AVP's documented errors.
        (
            "<obj | jsonPath {.missingPath}>",
            "jsonPath: missingPath is not found for placeholder obj in string v: <obj | jsonPath {.missingPath}>",
        ),
        (
            "<str | undefinedModifier>",
            "invalid modifier: undefinedModifier for placeholder str in string v: <str | undefinedModifier>",
        ),
        (
            "<obj | base64encode>",
            "base64encode: invalid datatype object for placeholder obj in string v: <obj | base64encode>",
        ),
        (
            "<str | indent x>",
            "indent: invalid indentation level for placeholder str in string v: <str | indent x>",
        ),
        (
            "<str | base64decode>",
            "base64decode: value is not valid base64 for placeholder str in string v: <str | base64decode>",
        ),
    ];
    for (input, want) in cases {
        let doc = manifest(
            "Deployment",
            annotated.clone(),
            json!({ "spec": { "v": input } }),
        );
        let err = render_with(vec![doc], &opts(), &typed_vault()).expect_err(input);
        assert_eq!(messages(&err), [want], "{input}");
    }
    // A missing key is reported before (instead of) modifier problems, as in AVP.
    let doc = manifest(
        "Deployment",
        annotated,
        json!({ "spec": { "v": "<nope |>" } }),
    );
    let err = render_with(vec![doc], &opts(), &typed_vault()).expect_err("missing");
    assert_eq!(
        messages(&err),
        ["missing vault value for placeholder nope in string v: <nope |>"]
    );
}

#[test]
fn errors_are_aggregated_per_manifest_and_stop_the_run() {
    let docs = vec![
        manifest(
            "ConfigMap",
            json!({}),
            json!({ "data": { "ok": "<path:secret/testing#name>" } }),
        ),
        json!({
            "kind": "Deployment",
            "metadata": { "name": "web", "namespace": "prod", "annotations": { "avp.kubernetes.io/path": "kv/data/testing" } },
            "spec": {
                "a": "<nope1>",
                "list": ["x <nope2>"],
                "b": "<path:kv/data/missing#k> and <path:kv/data/missing#k2>",
                "c": "<name | bogus>"
            }
        }),
        manifest(
            "ConfigMap",
            json!({}),
            json!({ "data": { "never": "<path:kv/data/missing#k>" } }),
        ),
    ];
    let opts = Options {
        default_kv_version: V1,
        path_validation: None,
        ..Options::default()
    };
    let mut vault = avp_vault();
    vault.0.push((
        req("kv/data/testing", V1, None),
        data(json!({ "name": "n" })),
    ));
    let err = render_with(docs, &opts, &vault).expect_err("second manifest fails");
    assert_eq!(
        err.object,
        ObjectRef {
            index: 1,
            kind: "Deployment".into(),
            namespace: "prod".into(),
            name: "web".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "could not replace all placeholders in Deployment/prod/web:\n\
         missing vault value for placeholder nope1 in string a: <nope1>\n\
         missing vault value for placeholder nope2 in string list: x <nope2>\n\
         could not find secrets at path kv/data/missing\n\
         invalid modifier: bogus for placeholder name in string c: <name | bogus>"
    );
}

#[test]
fn annotation_read_failure_stops_the_manifest() {
    let doc = manifest(
        "Deployment",
        json!({ "avp.kubernetes.io/path": "kv/data/nowhere" }),
        json!({ "spec": { "a": "<x>", "b": "<y>" } }),
    );
    let err = render_one(doc).expect_err("not found");
    assert_eq!(
        err.to_string(),
        "could not replace all placeholders in Deployment/ns/test:\ncould not find secrets at path kv/data/nowhere"
    );
}

#[test]
fn read_errors_are_passed_through() {
    let doc = manifest(
        "Deployment",
        json!({}),
        json!({ "spec": { "a": "<path:kv/data/locked#k>" } }),
    );
    let request = req("kv/data/locked", V2, None);
    assert_eq!(
        collect(std::slice::from_ref(&doc), &opts()),
        Ok([request.clone()].into_iter().collect())
    );
    let fetched: Fetched = [(
        request,
        Err(ReadError::PermissionDenied("kv/data/locked".into())),
    )]
    .into_iter()
    .collect();
    let err = apply(vec![doc], &opts(), &fetched, &AliasBudget::for_output(0)).expect_err("denied");
    assert_eq!(
        err.problems,
        [Problem::Read(ReadError::PermissionDenied(
            "kv/data/locked".into()
        ))]
    );
    assert_eq!(messages(&err), ["permission denied reading kv/data/locked"]);
}

#[test]
fn absent_fetch_result_is_an_internal_error() {
    let docs = vec![
        manifest(
            "Deployment",
            json!({}),
            json!({ "spec": { "a": "<path:kv/data/x#k>" } }),
        ),
        manifest(
            "Deployment",
            json!({ "avp.kubernetes.io/path": "kv/data/y" }),
            json!({ "spec": { "a": "<k>" } }),
        ),
    ];
    for doc in docs {
        let err = apply(
            vec![doc],
            &opts(),
            &Fetched::new(),
            &AliasBudget::for_output(0),
        )
        .expect_err("not fetched");
        assert!(
            matches!(err.problems.as_slice(), [Problem::NotFetched(_)]),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("internal error: no fetched result for kv/data/"),
            "{err}"
        );
    }
}

#[test]
fn object_names_in_errors() {
    let cases = [
        (
            json!({ "kind": "Secret", "metadata": { "name": "s", "namespace": "n" } }),
            "Secret/n/s",
        ),
        (
            json!({ "kind": "ClusterRole", "metadata": { "name": "r" } }),
            "ClusterRole/r",
        ),
        (json!({ "kind": "Job" }), "Job (document 1)"),
        (json!({ "metadata": { "name": 5 } }), "object (document 1)"),
        (
            json!({ "kind": "Deployment", "metadata": { "name": "<name>" } }),
            "Deployment/<name>",
        ),
    ];
    for (mut doc, want) in cases {
        doc["spec"] = json!({ "x": "<path:kv/data/nowhere#k>" });
        let err = render_one(doc).expect_err(want);
        assert_eq!(err.object.to_string(), want);
    }
}

#[test]
fn long_field_text_is_truncated_in_errors() {
    let long = format!("<path:kv/data/testing#nope> {}", "x".repeat(500));
    let doc = manifest("ConfigMap", json!({}), json!({ "data": { "f": long } }));
    let err = render_one(doc).expect_err("missing");
    let msg = err.to_string();
    assert!(msg.ends_with("x…"), "{msg}");
    assert!(msg.len() < 400, "{msg}");
}

#[test]
fn non_object_documents_pass_through() {
    let docs = vec![json!(null), json!(["<path:a#b>"]), json!("<path:a#b>")];
    assert_eq!(collect(&docs, &opts()), Ok(BTreeSet::new()));
    assert_eq!(
        apply(
            docs.clone(),
            &opts(),
            &Fetched::new(),
            &AliasBudget::for_output(0)
        ),
        Ok(docs)
    );
}

/// No error text ever carries a secret value: not for missing keys next to substituted values,
/// not for modifier failures on secret input, not for Secrets (whose field text is withheld).
#[test]
fn errors_never_contain_secret_values() {
    const MARK: &str = "S3CR3T";
    let secret_data = json!({
        "plain": "S3CR3T-plain-value",
        "json": "{\"S3CR3T-json\": \"S3CR3T-inner\"}",
        "notjson": "S3CR3T-not-json",
        "b64": modifiers::base64_encode(b"S3CR3T-decoded"),
        "obj": { "S3CR3T-key": "S3CR3T-obj-value" },
        "list": ["S3CR3T-list"],
        "num": 424242,
        "filter": "{\"items\": [{\"n\": \"S3CR3T-n\", \"pw\": \"S3CR3T-pw(\", \"x\": 1}]}"
    });
    let vault = FakeVault(vec![
        (req("kv/data/s", V2, None), data(secret_data.clone())),
        (req("kv/data/s", V2, Some("9")), data(secret_data)),
    ]);
    let fields = [
        "<plain> <missing>",
        "<plain> <path:kv/data/s#missing>",
        "<notjson | jsonParse>",
        "<notjson | jsonPath {.a}>",
        "<json | jsonPath {.nope}>",
        "<plain | yamlParse | jsonPath {.x}>",
        "<obj | jsonPath {.x}>",
        "<obj | base64encode>",
        "<obj | sha256sum>",
        "<list | indent 2>",
        "<plain | base64decode>",
        "<notjson | bogus>",
        "<plain |>",
        "<b64 | base64decode | jsonParse>",
        "<plain | jsonPath {.x[?(@ == 1)]}>",
        "<filter | jsonParse | jsonPath {.items[?(@.n =~ @.pw)].n}>",
        "<filter | jsonParse | jsonPath {.items[?(@.n < @.x)].n}>",
        "<filter | jsonParse | jsonPath {.items[?(@.n == @.x)].n}>",
        "<filter | jsonParse | jsonPath {.items[?(@.x =~ @.n)].n}>",
        "<filter | jsonParse | jsonPath {.items[?(@.n =~ '(')].n}>",
        "<filter | jsonParse | indent 2>",
    ];
    for kind in ["Deployment", "ConfigMap", "Secret"] {
        for field in fields {
            let doc = manifest(
                kind,
                json!({ "avp.kubernetes.io/path": "kv/data/s", "avp.kubernetes.io/secret-version": "9" }),
                json!({ "data": { "f": field, "l": [field] } }),
            );
            let err = render_with(vec![doc], &opts(), &vault)
                .expect_err(&format!("{kind} {field} should fail"));
            let shown = format!("{err}\n{err:?}");
            assert!(!shown.contains(MARK), "{kind} {field}: {shown}");
            assert!(!shown.contains("424242"), "{kind} {field}: {shown}");
        }
    }
    // Secrets: even the template text stays out, since a base64 field may embed other data.
    let doc = manifest(
        "Secret",
        json!({ "avp.kubernetes.io/path": "kv/data/s" }),
        json!({ "data": { "f": modifiers::base64_encode(b"hardcoded-S3CR3T <missing>") } }),
    );
    let err = render_with(vec![doc], &opts(), &vault).expect_err("missing");
    assert_eq!(
        messages(&err),
        ["missing vault value for placeholder missing in string f"]
    );
}

#[test]
fn invalid_regex_from_a_value_is_reported_without_it() {
    // The tenant's case (issue 18): the pattern right of `=~` is a secret value.
    let vault = FakeVault(vec![(
        req("secret/data/x", V2, None),
        data(json!({ "cfg": "{\"items\": [{\"n\": \"a\", \"pw\": \"hunter2(\"}]}" })),
    )]);
    let field = "<path:secret/data/x#cfg | jsonParse | jsonPath {.items[?(@.n =~ @.pw)].n}>";
    let doc = manifest("Deployment", json!({}), json!({ "spec": { "v": field } }));
    let err = render_with(vec![doc], &opts(), &vault).expect_err("invalid regex");
    assert_eq!(
        messages(&err),
        [format!(
            "jsonPath: invalid regular expression in filter: the pattern right of =~ comes from \
             the value and is not shown for placeholder path:secret/data/x#cfg in string v: {field}"
        )]
    );
    // A pattern written in the template is the tenant's own text and is quoted.
    let field = "<path:secret/data/x#cfg | jsonParse | jsonPath {.items[?(@.pw =~ 'x(')].n}>";
    let doc = manifest("Deployment", json!({}), json!({ "spec": { "v": field } }));
    let err = render_with(vec![doc], &opts(), &vault).expect_err("invalid regex");
    let shown = format!("{err}\n{err:?}");
    assert!(shown.contains("x("), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn errors_quote_the_field_before_any_substitution() {
    // The first placeholder succeeds, the second fails: the quoted field is the template, not
    // a half-substituted text holding the first value.
    let vault = FakeVault(vec![(
        req("kv/data/s", V2, None),
        data(json!({ "user": "alice-S3CR3T", "cfg": "not json S3CR3T" })),
    )]);
    let field = "<path:kv/data/s#user>:<path:kv/data/s#cfg | jsonParse>";
    for kind in ["Deployment", "ConfigMap"] {
        let doc = manifest(
            kind,
            json!({}),
            json!({ "data": { "v": field, "l": [field] } }),
        );
        let err = render_with(vec![doc], &opts(), &vault).expect_err("invalid json");
        let want = format!(
            "jsonParse: expected ident at line 1 column 2 for placeholder path:kv/data/s#cfg in string v: {field}"
        );
        assert_eq!(
            messages(&err),
            [want.clone(), want.replace("string v", "string l")]
        );
        assert!(!format!("{err:?}").contains("S3CR3T"), "{err:?}");
    }
}

/// Options with path templating for an app `web` in namespace `team-a`, project `proj`.
fn templated(default_path: Option<&str>, templates_in_paths: bool, team: &str) -> Options {
    let settings = crate::secrets::path_template::PathSettings::new(
        default_path,
        templates_in_paths,
        &["TEAM".to_owned()],
    )
    .expect("valid settings");
    let env = crate::pipeline::context::RequestEnv::new(
        [
            ("ARGOCD_APP_NAME", "web"),
            ("ARGOCD_APP_NAMESPACE", "team-a"),
            ("ARGOCD_APP_PROJECT_NAME", "proj"),
            ("ARGOCD_ENV_TEAM", team),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    Options {
        paths: Some(Arc::new(settings.for_request(&env))),
        ..Options::default()
    }
}

fn conventions_vault() -> FakeVault {
    FakeVault(vec![
        (
            req("kv/data/team-a/web", V2, None),
            data(json!({ "DATABASE_URL": "postgres://db", "USER": "u" })),
        ),
        (
            req("kv/data/team-a/web", V2, Some("1")),
            data(json!({ "DATABASE_URL": "postgres://old" })),
        ),
        (
            req("kv/data/blue/shared", V2, None),
            data(json!({ "TOKEN": "t" })),
        ),
    ])
}

#[test]
fn default_path_fills_bare_placeholders_without_annotation() {
    let opts = templated(Some("kv/data/{{namespace}}/{{app}}"), false, "blue");
    let secret = manifest(
        "Secret",
        json!({}),
        json!({ "stringData": { "url": "<DATABASE_URL>", "user": "<USER>" } }),
    );
    let out = render_with(vec![secret.clone()], &opts, &conventions_vault()).expect("renders");
    assert_eq!(
        out[0]["stringData"],
        json!({ "url": "postgres://db", "user": "u" })
    );
    // Without the setting, AVP semantics: no annotation, no generic placeholders.
    let out = render_with(vec![secret], &Options::default(), &conventions_vault()).expect("ok");
    assert_eq!(out[0]["stringData"]["url"], "<DATABASE_URL>");
}

#[test]
fn default_path_keeps_annotations_and_versions() {
    let opts = templated(Some("kv/data/{{namespace}}/{{app}}"), false, "blue");
    let annotated = manifest(
        "Secret",
        json!({ "avp.kubernetes.io/path": "kv/data/blue/shared" }),
        json!({ "stringData": { "t": "<TOKEN>" } }),
    );
    let versioned = manifest(
        "Secret",
        json!({ "avp.kubernetes.io/secret-version": "1" }),
        json!({ "stringData": { "url": "<DATABASE_URL>" } }),
    );
    let ignored = manifest(
        "ConfigMap",
        json!({ "avp.kubernetes.io/ignore": "true" }),
        json!({ "data": { "html": "<b>" } }),
    );
    let out = render_with(
        vec![annotated, versioned, ignored],
        &opts,
        &conventions_vault(),
    )
    .expect("renders");
    assert_eq!(out[0]["stringData"]["t"], "t");
    assert_eq!(out[1]["stringData"]["url"], "postgres://old");
    assert_eq!(out[2]["data"]["html"], "<b>");
}

#[test]
fn unsafe_env_value_fails_before_reads() {
    let opts = templated(Some("kv/data/{{env.TEAM}}/{{app}}"), false, "../other");
    let secret = manifest(
        "Secret",
        json!({}),
        json!({ "stringData": { "url": "<DATABASE_URL>" } }),
    );
    let err = collect(std::slice::from_ref(&secret), &opts).expect_err("rejected");
    assert!(
        matches!(err.problems[..], [Problem::PathTemplate(_)]),
        "{err}"
    );
    assert!(err.to_string().contains("env.TEAM"), "{err}");
    // No placeholders: the default path is never rendered, so nothing fails.
    let plain = manifest("Secret", json!({}), json!({ "stringData": { "a": "b" } }));
    assert!(collect(&[plain], &opts).expect("ok").is_empty());
}

#[test]
fn templates_in_annotation_and_inline_paths_are_opt_in() {
    let docs = vec![
        manifest(
            "Secret",
            json!({ "avp.kubernetes.io/path": "kv/data/{{env.TEAM}}/shared" }),
            json!({ "stringData": { "t": "<TOKEN>" } }),
        ),
        manifest(
            "Secret",
            json!({}),
            json!({ "stringData": { "u": "<path:kv/data/{{namespace}}/{{app}}#DATABASE_URL>" } }),
        ),
    ];
    let on = templated(None, true, "blue");
    let out = render_with(docs.clone(), &on, &conventions_vault()).expect("renders");
    assert_eq!(out[0]["stringData"]["t"], "t");
    assert_eq!(out[1]["stringData"]["u"], "postgres://db");
    // Off: `{{` is literal, so the literal path is read (and is not found).
    let off = templated(None, false, "blue");
    let requests = collect(&docs, &off).expect("collects");
    assert!(
        requests
            .iter()
            .any(|r| r.path == "kv/data/{{env.TEAM}}/shared")
    );
    assert!(render_with(docs.clone(), &off, &conventions_vault()).is_err());
    // On, with an unsafe value: rejected in collect.
    let bad = templated(None, true, "a/b");
    let err = collect(&docs, &bad).expect_err("rejected");
    assert!(
        matches!(err.problems[..], [Problem::PathTemplate(_)]),
        "{err}"
    );
}

/// `yamlParse` spends the render's alias budget (left over by parsing the tool output), and
/// running out is its own problem, naming the placeholder but never the value.
#[test]
fn yaml_parse_shares_the_render_alias_budget() {
    let secret = format!(
        "v: &v S3CR3T-{}\nl: [{}]\n",
        "y".repeat(10_000),
        vec!["*v"; 100].join(", ")
    );
    let vault = FakeVault(vec![(
        req("kv/data/y", V2, None),
        data(json!({ "doc": secret })),
    )]);
    let doc = manifest(
        "ConfigMap",
        json!({ "avp.kubernetes.io/path": "kv/data/y" }),
        json!({ "data": { "n": "<doc | yamlParse | jsonPath {.l[99]}>" } }),
    );
    let run = |budget: &AliasBudget| {
        let docs = vec![doc.clone()];
        let fetched = vault.fetch(&collect(&docs, &opts()).expect("collect"));
        apply(docs, &opts(), &fetched, budget)
    };
    // On its own, the value fits the floor (~1 MB of copies).
    let fresh = AliasBudget::for_output(0);
    let out = run(&fresh).expect("fits");
    assert!(
        out[0]["data"]["n"]
            .as_str()
            .is_some_and(|s| s.len() > 10_000)
    );
    let one_value = fresh.used();
    // After the tool output used most of the render's budget, it does not.
    let spent = AliasBudget::for_output(0);
    let big = format!(
        "a: &a {}\nb: [{}]\n",
        "z".repeat(100_000),
        vec!["*a"; 38].join(",")
    );
    crate::yaml::parse_documents_within(&big, &spent).expect("tool output fits");
    assert!(spent.used() + one_value > spent.limit());
    let err = run(&spent).expect_err("over budget");
    assert!(
        matches!(&err.problems[..], [Problem::AliasBudget { site, .. }] if site.placeholder == "doc"),
        "{err:?}"
    );
    let shown = format!("{err}\n{err:?}");
    assert!(!shown.contains("S3CR3T"), "{shown}");
    assert!(
        shown.contains("yamlParse: YAML anchors and aliases would materialise more than 4194304"),
        "{shown}"
    );
}
