//! The deployment files: the repo-server patch builds with real kustomize and carries the
//! security settings operators expect; the Helm values and Application examples are valid.

use std::process::Command;

use serde_json::Value;

use crate::support::{self, find};

fn yaml_docs(text: &str) -> Vec<Value> {
    avp_sidecar::yaml::parse_documents(text)
        .expect("valid yaml")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn sidecar_container(pod_spec: &Value) -> &Value {
    pod_spec["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "avp-sidecar"))
        .expect("avp-sidecar container")
}

fn check_container(c: &Value) {
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsUser"], 999);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for m in ["/home/argocd/cmp-server/plugins", "/var/run/argocd", "/tmp"] {
        assert!(mounts.contains(&m), "{m} not mounted: {mounts:?}");
    }
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["limits"]["memory"].is_string());
}

#[test]
fn repo_server_patch_builds_with_kustomize() {
    let out = Command::new(support::tool("kustomize"))
        .arg("build")
        .arg(support::repo_root().join("sidecar/kustomize/example"))
        .output()
        .expect("kustomize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = yaml_docs(&String::from_utf8_lossy(&out.stdout));
    let deploy = find(&docs, "Deployment", "argocd-repo-server");
    let spec = &deploy["spec"]["template"]["spec"];
    check_container(sidecar_container(spec));
    assert!(
        spec["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .any(|c| c["name"] == "argocd-repo-server"),
        "the stock container is kept"
    );
    assert!(
        spec["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["name"] == "avp-sidecar-tmp")
    );
    let cm = find(&docs, "ConfigMap", "avp-sidecar-config");
    assert_eq!(cm["data"]["AVP_TYPE"], "vault");
    check_rotation_component(&docs, spec);
}

/// The optional rotation component: a Role in Argo CD's namespace to patch Applications, bound
/// to the repo-server's service account, rotation on, and a token for the sidecar only.
fn check_rotation_component(docs: &[Value], pod_spec: &Value) {
    let role = find(docs, "Role", "avp-sidecar-rotation");
    assert_eq!(role["metadata"]["namespace"], "argocd");
    let rules = role["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["apiGroups"], serde_json::json!(["argoproj.io"]));
    assert_eq!(rules[0]["resources"], serde_json::json!(["applications"]));
    assert_eq!(rules[0]["verbs"], serde_json::json!(["get", "patch"]));
    let binding = find(docs, "RoleBinding", "avp-sidecar-rotation");
    assert_eq!(binding["roleRef"]["name"], "avp-sidecar-rotation");
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(
        binding["subjects"][0]["name"],
        pod_spec["serviceAccountName"]
    );
    let cm = find(docs, "ConfigMap", "avp-sidecar-config");
    assert_eq!(cm["data"]["AVP_SIDECAR_ROTATION_POLL_SECONDS"], "60");
    let token_mount = |c: &Value| {
        c["volumeMounts"].as_array().is_some_and(|m| {
            m.iter().any(|m| {
                m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
                    && m["name"] == "avp-sidecar-sa-token"
            })
        })
    };
    assert!(token_mount(sidecar_container(pod_spec)));
    let others = pod_spec["containers"].as_array().expect("containers");
    assert!(
        !others
            .iter()
            .filter(|c| c["name"] != "avp-sidecar")
            .any(token_mount),
        "only the sidecar gets the token"
    );
    assert!(
        pod_spec["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["name"] == "avp-sidecar-sa-token"
                && v["projected"]["sources"][0]["serviceAccountToken"]["path"] == "token")
    );
}

#[test]
fn helm_values_snippet_is_valid() {
    let text = std::fs::read_to_string(support::repo_root().join("sidecar/helm-values.yaml"))
        .expect("read");
    let values = yaml_docs(&text).remove(0);
    let c = values["repoServer"]["extraContainers"]
        .as_array()
        .and_then(|c| c.first())
        .expect("extra container");
    check_container(c);
}

#[test]
fn application_examples_name_real_plugins_and_paths() {
    let dir = support::repo_root().join("examples/applications");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("dir") {
        let path = entry.expect("entry").path();
        let docs = yaml_docs(&std::fs::read_to_string(&path).expect("read"));
        for app in docs {
            assert_eq!(app["kind"], "Application", "{}", path.display());
            let plugin = app["spec"]["source"]["plugin"]["name"]
                .as_str()
                .expect("plugin name");
            assert!(
                avp_sidecar::plugin::Plugin::builtin(plugin).is_some(),
                "{plugin}"
            );
            let app_path = app["spec"]["source"]["path"].as_str().expect("path");
            assert!(
                support::repo_root()
                    .join("examples")
                    .join(app_path)
                    .is_dir(),
                "{app_path}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 3);
}

#[test]
fn render_command_matches_the_server_pipeline() {
    let out = Command::new(env!("CARGO_BIN_EXE_avp-sidecar"))
        .args(["render", "--no-secrets", "--app-path", "kustomize-app"])
        .arg(support::repo_root().join("examples"))
        .args([
            "--plugin-env",
            "IMAGE_NAME=nginx",
            "--plugin-env",
            "IMAGE_TAG=9.9",
        ])
        .arg("--kustomize")
        .arg(support::kustomize())
        .arg("--helm")
        .arg(support::tool("helm"))
        .env_remove("AVP_TYPE")
        .output()
        .expect("render");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = yaml_docs(&String::from_utf8_lossy(&out.stdout));
    let secret = find(&docs, "Secret", "web-db");
    assert_eq!(
        secret["stringData"]["DB_USER"],
        "<path:secret/data/demo/web#username>"
    );
    assert_eq!(
        find(&docs, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:9.9"
    );
    // The user's checkout is untouched (the render works on a copy).
    let k = std::fs::read_to_string(
        support::repo_root().join("examples/kustomize-app/kustomization.yaml"),
    )
    .expect("read");
    assert!(!k.contains("9.9"));
}
