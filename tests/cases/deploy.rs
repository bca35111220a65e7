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
    check_sidecar_token(spec);
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
}

/// The service-account token the sidecar (and only it) gets, where AVP reads it by default:
/// Argo CD's repo-server pod mounts none (`automountServiceAccountToken: false`).
fn check_sidecar_token(pod_spec: &Value) {
    let token_dir = std::path::Path::new(avp_sidecar::secrets::settings::DEFAULT_K8S_TOKEN_PATH)
        .parent()
        .expect("dir")
        .to_str()
        .expect("utf-8");
    let token_mount = |c: &Value| {
        c["volumeMounts"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["mountPath"] == token_dir && m["name"] == "avp-sidecar-sa-token")
        })
    };
    assert!(token_mount(sidecar_container(pod_spec)));
    let all = pod_spec["containers"].as_array().expect("containers");
    let inits = pod_spec["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !all.iter()
            .chain(&inits)
            .filter(|c| c["name"] != "avp-sidecar")
            .any(|c| token_mount(c)
                || c["volumeMounts"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m["name"] == "avp-sidecar-sa-token"))),
        "only the sidecar gets the token"
    );
    let volume = pod_spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "avp-sidecar-sa-token")
        .expect("token volume");
    let sources = volume["projected"]["sources"].as_array().expect("sources");
    let token = sources
        .iter()
        .find_map(|s| s.get("serviceAccountToken"))
        .expect("serviceAccountToken source");
    assert_eq!(token["path"], "token");
    // Kubernetes' minimum is 600 s; the kubelet refreshes the file at 80% of it.
    let expiry = token["expirationSeconds"]
        .as_u64()
        .expect("expirationSeconds");
    assert!((600..=86_400).contains(&expiry), "{expiry}");
    // No audience: the API server's own, which the Kubernetes API (config Secrets, rotation)
    // requires and Vault's Kubernetes auth accepts through its TokenReview.
    assert!(token.get("audience").is_none(), "{token}");
    // The API client's CA, next to the token (kube.rs: <serviceaccount dir>/ca.crt).
    assert!(
        sources
            .iter()
            .any(|s| s["configMap"]["name"] == "kube-root-ca.crt"
                && s["configMap"]["items"][0]["path"] == "ca.crt")
    );
}

/// A kustomization over `resource` (a file copied in) with `components` (copies of
/// `sidecar/kustomize/<name>`; kustomize takes no absolute component paths).
fn build_overlay(resource: &std::path::Path, components: &[&str]) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(resource, dir.path().join("repo-server.yaml")).expect("copy");
    let mut comps = String::new();
    for c in components {
        let from = support::repo_root().join("sidecar/kustomize").join(c);
        std::fs::create_dir(dir.path().join(c)).expect("mkdir");
        for f in std::fs::read_dir(&from).expect("component dir") {
            let f = f.expect("entry").path();
            std::fs::copy(&f, dir.path().join(c).join(f.file_name().expect("name"))).expect("copy");
        }
        comps.push_str(&format!("  - {c}\n"));
    }
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: argocd\nresources:\n  - repo-server.yaml\ncomponents:\n{comps}"
        ),
    )
    .expect("write");
    let out = Command::new(support::kustomize())
        .arg("kustomize")
        .arg(dir.path())
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(&String::from_utf8_lossy(&out.stdout))
}

/// The component alone over Argo CD's repo-server in the shape of its install.yaml: the
/// sidecar gets a token, the pod keeps automountServiceAccountToken: false, and the
/// repo-server container and the init container are exactly as they were.
#[test]
fn install_component_mounts_a_token_in_the_sidecar_only() {
    let stock_file = support::repo_root().join("sidecar/kustomize/example/argocd-repo-server.yaml");
    let stock = yaml_docs(&std::fs::read_to_string(&stock_file).expect("read")).remove(0);
    let stock_spec = &stock["spec"]["template"]["spec"];
    // The fixture is in install.yaml's shape (manifests/base/repo-server).
    assert_eq!(stock_spec["automountServiceAccountToken"], false);
    let stock_volumes: Vec<&str> = stock_spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in [
        "ssh-known-hosts",
        "tls-certs",
        "gpg-keys",
        "gpg-keyring",
        "tmp",
        "helm-working-dir",
        "argocd-repo-server-tls",
        "var-files",
        "plugins",
    ] {
        assert!(stock_volumes.contains(&v), "{v}");
    }

    let docs = build_overlay(&stock_file, &["avp-sidecar"]);
    let deploy = find(&docs, "Deployment", "argocd-repo-server");
    let spec = &deploy["spec"]["template"]["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    check_container(sidecar_container(spec));
    check_sidecar_token(spec);
    let repo_server = |spec: &Value| {
        spec["containers"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "argocd-repo-server"))
            .cloned()
            .expect("repo-server container")
    };
    assert_eq!(
        repo_server(spec),
        repo_server(stock_spec),
        "repo-server container untouched"
    );
    assert_eq!(spec["initContainers"], stock_spec["initContainers"]);
    // Every volume the sidecar mounts exists in the pod.
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for m in sidecar_container(spec)["volumeMounts"]
        .as_array()
        .expect("mounts")
    {
        assert!(volumes.contains(&m["name"].as_str().expect("name")), "{m}");
    }
    let cm = find(&docs, "ConfigMap", "avp-sidecar-config");
    assert_eq!(cm["data"]["AVP_AUTH_TYPE"], "k8s");
    assert!(
        cm["data"].get("AVP_K8S_TOKEN_PATH").is_none(),
        "the default path is mounted"
    );
}

/// Volumes argo-helm's chart defines in the repo-server pod itself
/// (charts/argo-cd/templates/argocd-repo-server/deployment.yaml, `volumes:`; `helm-working-dir`
/// with the default `repoServer.useEphemeralHelmWorkingDir: true`).
const CHART_REPO_SERVER_VOLUMES: [&str; 9] = [
    "helm-working-dir",
    "plugins",
    "var-files",
    "tmp",
    "ssh-known-hosts",
    "tls-certs",
    "gpg-keys",
    "gpg-keyring",
    "argocd-repo-server-tls",
];

/// ConfigMaps that exist without the values creating them: `kube-root-ca.crt`, which
/// Kubernetes publishes in every namespace, and the ones the chart itself creates
/// (charts/argo-cd/templates/argocd-configs/).
const EXISTING_CONFIGMAPS: [&str; 6] = [
    "kube-root-ca.crt",
    "argocd-cm",
    "argocd-cmd-params-cm",
    "argocd-ssh-known-hosts-cm",
    "argocd-tls-certs-cm",
    "argocd-gpg-keys-cm",
];

/// `helm install` with only this values file works: every volume the sidecar mounts is in the
/// pod, every ConfigMap it references is created (extraObjects) or exists anyway, and every
/// Secret it references is optional or created. (argo-helm's chart is not available offline,
/// so this checks the values against the chart's templates as cited above.)
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
    let extra_volumes = values["repoServer"]["volumes"].as_array().expect("volumes");
    let created = |kind: &str, name: &str| {
        values["extraObjects"].as_array().is_some_and(|o| {
            o.iter()
                .any(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        })
    };
    for m in c["volumeMounts"].as_array().expect("mounts") {
        let name = m["name"].as_str().expect("name");
        assert!(
            CHART_REPO_SERVER_VOLUMES.contains(&name)
                || extra_volumes.iter().any(|v| v["name"] == name),
            "volume {name} is neither the chart's nor in repoServer.volumes"
        );
    }
    let config_map_ok =
        |name: &str| EXISTING_CONFIGMAPS.contains(&name) || created("ConfigMap", name);
    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    for e in c["envFrom"].as_array().expect("envFrom") {
        if let Some(r) = e.get("configMapRef") {
            config_maps.push(r.clone());
        }
        if let Some(r) = e.get("secretRef") {
            secrets.push(r.clone());
        }
    }
    for v in extra_volumes {
        if let Some(r) = v.get("configMap") {
            config_maps.push(r.clone());
        }
        if let Some(r) = v.get("secret") {
            secrets.push(serde_json::json!({"name": r["secretName"], "optional": r["optional"]}));
        }
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            if let Some(r) = s.get("configMap") {
                config_maps.push(r.clone());
            }
            if let Some(r) = s.get("secret") {
                secrets.push(r.clone());
            }
        }
    }
    assert!(!config_maps.is_empty());
    for r in &config_maps {
        let name = r["name"].as_str().expect("name");
        assert!(
            config_map_ok(name) || r["optional"] == true,
            "ConfigMap {name} is not created"
        );
    }
    for r in &secrets {
        let name = r["name"].as_str().expect("name");
        assert!(
            created("Secret", name) || r["optional"] == true,
            "Secret {name} is neither created nor optional"
        );
    }
    let cm = values["extraObjects"]
        .as_array()
        .and_then(|o| {
            o.iter()
                .find(|o| o["metadata"]["name"] == "avp-sidecar-config")
        })
        .expect("the ConfigMap");
    assert_eq!(cm["apiVersion"], "v1");
    assert_eq!(cm["data"]["AVP_TYPE"], "vault");
    // The same settings as the kustomize component's ConfigMap.
    let kustomize_cm = yaml_docs(
        &std::fs::read_to_string(
            support::repo_root().join("sidecar/kustomize/avp-sidecar/configmap.yaml"),
        )
        .expect("read"),
    )
    .remove(0);
    assert_eq!(cm["data"], kustomize_cm["data"]);
    // The token, as in the kustomize component.
    let pod_spec = serde_json::json!({
        "containers": [c, {"name": "argocd-repo-server"}],
        "volumes": extra_volumes,
    });
    check_sidecar_token(&pod_spec);
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
                avp_sidecar::pipeline::plugin::Plugin::builtin(plugin).is_some(),
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
