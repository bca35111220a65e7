//! Conventional Vault layouts and argocd-cm migrations, end to end: the real server with path
//! templates (`--default-path`, `--path-templates`, templated `--path-allow`) against a real
//! OpenBao, and `plugins import` / `serve --argocd-cm` against the built-in pipeline.

use std::process::Command;

use serde_json::json;
use tonic::Code;

use crate::support::bao::Bao;
use crate::support::{self, ServerOptions, TestServer, argo_env, find};

const DEFAULT_PATH: &str = "kv/data/{{namespace}}/{{app}}";

fn server(bao: &Bao, args: &[&str]) -> TestServer {
    server_as(bao.approle_env(), args)
}

/// `server` with the Vault login `env`.
fn server_as(env: Vec<(String, String)>, args: &[&str]) -> TestServer {
    TestServer::start_with(ServerOptions {
        env,
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    })
}

/// Writes `data` at the KV v2 path `kv/data/<path>`.
fn seed(bao: &Bao, path: &str, data: serde_json::Value) {
    bao.api(
        "POST",
        &format!("kv/data/{path}"),
        Some(json!({ "data": data })),
    );
}

/// The repo-server's env for an app, with its project.
fn app_env(
    app: &str,
    namespace: &str,
    project: &str,
    plugin_env: &[(&str, &str)],
) -> Vec<(String, String)> {
    argo_env(app, namespace, plugin_env)
        .into_iter()
        .map(|(k, v)| {
            let v = if k == "ARGOCD_APP_PROJECT_NAME" {
                project.to_owned()
            } else {
                v
            };
            (k, v)
        })
        .collect()
}

/// A repo whose `app/` holds one Secret with `string_data` (YAML flow map).
fn secret_repo(string_data: &str) -> tempfile::TempDir {
    support::kustomize_app(&[(
        "secret.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-env\nstringData: {string_data}\n"
        ),
    )])
}

#[tokio::test]
async fn bare_key_without_annotation_reads_namespace_app_path() {
    let bao = Bao::shared();
    seed(
        bao,
        "team-a/web",
        json!({ "DATABASE_URL": "postgres://team-a-web" }),
    );
    seed(
        bao,
        "team-b/web",
        json!({ "DATABASE_URL": "postgres://team-b-web" }),
    );
    let server = server(bao, &["--default-path", DEFAULT_PATH]);
    let repo = secret_repo("{DATABASE_URL: <DATABASE_URL>, URL: 'jdbc:<DATABASE_URL>'}");
    for (namespace, want) in [
        ("team-a", "postgres://team-a-web"),
        ("team-b", "postgres://team-b-web"),
    ] {
        let docs = support::render_app(&server, &repo, app_env("web", namespace, "default", &[]))
            .await
            .expect("generate");
        assert_eq!(
            find(&docs, "Secret", "app-env")["stringData"],
            json!({ "DATABASE_URL": want, "URL": format!("jdbc:{want}") })
        );
    }
    // A missing app path is Vault's 404, named by its rendered path.
    let err = support::render_app(&server, &repo, app_env("api", "team-a", "default", &[]))
        .await
        .expect_err("no secret at kv/data/team-a/api");
    assert!(err.message().contains("kv/data/team-a/api"), "{err:?}");

    // Without --default-path the same app keeps AVP semantics: nothing is substituted.
    let plain = TestServer::start_with(ServerOptions {
        env: bao.approle_env(),
        ..Default::default()
    });
    let docs = support::render_app(&plain, &repo, app_env("web", "team-a", "default", &[]))
        .await
        .expect("generate");
    assert_eq!(
        find(&docs, "Secret", "app-env")["stringData"]["DATABASE_URL"],
        "<DATABASE_URL>"
    );
}

#[tokio::test]
async fn conventions_example_renders() {
    let bao = Bao::shared();
    let server = server(bao, &["--default-path", DEFAULT_PATH]);
    let spec = support::dir_stream(
        &support::repo_root().join("examples"),
        "conventions/payments",
        app_env("payments", "shop", "shop", &[]),
    );
    let docs = support::generate(&server.socket, &spec, None)
        .await
        .expect("generate");
    assert_eq!(
        find(&docs, "Secret", "payments-env")["stringData"],
        json!({
            "DATABASE_URL": "postgres://payments:pay-s3cr3t@db.shop:5432/payments",
            "STRIPE_API_KEY": "sk_test_conventions",
        })
    );
    find(&docs, "Deployment", "payments");
}

/// Reads of Vault paths containing `needle` by AppRole role `role`, from the audit log.
fn audited_paths_containing(bao: &Bao, role: &str, needle: &str) -> Vec<String> {
    std::fs::read_to_string(bao.audit_log())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "request" && e["request"]["operation"] == "read")
        .filter(|e| e["auth"]["metadata"]["role_name"] == role)
        .filter_map(|e| e["request"]["path"].as_str().map(str::to_owned))
        .filter(|p| p.contains(needle))
        .collect()
}

#[tokio::test]
async fn tenant_env_value_cannot_escape_its_segment() {
    // The shared server's audit log: this test's reads are its own role's.
    let bao = Bao::shared();
    const ROLE: &str = "conventions-tenant";
    seed(
        bao,
        "blue/web",
        json!({ "DATABASE_URL": "postgres://blue" }),
    );
    seed(
        bao,
        "other/web",
        json!({ "DATABASE_URL": "postgres://other" }),
    );
    let server = server_as(
        bao.own_approle(ROLE),
        &[
            "--default-path",
            "kv/data/{{env.TEAM}}/{{app}}",
            "--path-template-env",
            "TEAM",
            "--path-templates",
        ],
    );
    let bare = secret_repo("{DATABASE_URL: <DATABASE_URL>}");
    let inline = secret_repo("{DATABASE_URL: '<path:kv/data/{{env.TEAM}}/web#DATABASE_URL>'}");

    for repo in [&bare, &inline] {
        let docs = support::render_app(
            &server,
            repo,
            app_env("web", "ns", "default", &[("TEAM", "blue")]),
        )
        .await
        .expect("generate");
        assert_eq!(
            find(&docs, "Secret", "app-env")["stringData"]["DATABASE_URL"],
            "postgres://blue"
        );
        for (team, want) in [
            (Some("../other"), "\"../other\""),
            (Some("blue/../other"), "one path segment"),
            (Some(".."), "only dots"),
            (Some(""), "is empty or not set"),
            (None, "is empty or not set"),
        ] {
            let plugin_env: Vec<(&str, &str)> = team.map(|t| ("TEAM", t)).into_iter().collect();
            let err =
                support::render_app(&server, repo, app_env("web", "ns", "default", &plugin_env))
                    .await
                    .expect_err("rejected");
            assert_eq!(err.code(), Code::InvalidArgument, "{team:?}: {err:?}");
            assert!(
                err.message().contains("env.TEAM") && err.message().contains(want),
                "{team:?}: {}",
                err.message()
            );
        }
    }
    // The audit log does record this sidecar's reads; none went to `other`.
    assert!(!audited_paths_containing(bao, ROLE, "kv/data/blue/web").is_empty());
    assert_eq!(
        audited_paths_containing(bao, ROLE, "other"),
        Vec::<String>::new()
    );
    assert!(!server.log().contains("postgres://"));
}

#[tokio::test]
async fn path_policy_rules_use_the_project() {
    // Namespaces and projects of its own on the shared server: others write proj-a/web.
    let bao = Bao::shared();
    seed(
        bao,
        "proj-a/web",
        json!({ "DATABASE_URL": "postgres://proj-a" }),
    );
    let server = server(
        bao,
        &[
            "--default-path",
            DEFAULT_PATH,
            "--path-allow",
            "kv/data/{{project}}/*",
        ],
    );
    let repo = secret_repo("{DATABASE_URL: <DATABASE_URL>}");
    let docs = support::render_app(&server, &repo, app_env("web", "proj-a", "proj-a", &[]))
        .await
        .expect("project proj-a reads kv/data/proj-a/*");
    assert_eq!(
        find(&docs, "Secret", "app-env")["stringData"]["DATABASE_URL"],
        "postgres://proj-a"
    );
    // Project proj-b deploying into namespace proj-a may not read proj-a's secrets.
    let err = support::render_app(&server, &repo, app_env("web", "proj-a", "proj-b", &[]))
        .await
        .expect_err("denied");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("proj-b") && err.message().contains("kv/data/proj-a/web"),
        "{}",
        err.message()
    );
}

const ARGOCD_CM: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
data:
  configManagementPlugins: |
    - name: argocd-vault-plugin-kustomize
      lockRepo: true
      generate:
        command: ["sh", "-c"]
        args: ["kustomize build . | argocd-vault-plugin generate -"]
"#;

#[tokio::test]
async fn imported_argocd_cm_plugin_renders_like_the_builtin() {
    let bao = Bao::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let cm = dir.path().join("argocd-cm.yaml");
    std::fs::write(&cm, ARGOCD_CM).expect("write");
    let config = dir.path().join("config");
    let out = Command::new(env!("CARGO_BIN_EXE_avp-sidecar"))
        .args(["plugins", "import"])
        .arg(&cm)
        .arg("--out")
        .arg(&config)
        .output()
        .expect("run plugins import");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("lockRepo"), "{stderr}");
    let written =
        std::fs::read_to_string(config.join("argocd-vault-plugin-kustomize.yaml")).expect("file");
    assert!(
        written.contains("render: kustomize") && !written.contains("command:"),
        "{written}"
    );

    let spec = support::dir_stream(
        &support::repo_root().join("examples"),
        "kustomize-app",
        argo_env(
            "web",
            "demo",
            &[("IMAGE_NAME", "nginx"), ("IMAGE_TAG", "1.27.3")],
        ),
    );
    let builtin = TestServer::start_with(ServerOptions {
        env: bao.approle_env(),
        plugin: Some("avp-kustomize".into()),
        ..Default::default()
    });
    let want = support::generate(&builtin.socket, &spec, None)
        .await
        .expect("built-in");
    assert_eq!(
        find(&want, "Secret", "web-db")["stringData"]["DB_PASSWORD"],
        "s3cr3t-v2"
    );

    let from_dir = TestServer::start_with(ServerOptions {
        env: bao.approle_env(),
        plugin: Some("argocd-vault-plugin-kustomize".into()),
        config_dir: Some(config),
        ..Default::default()
    });
    let from_cm = TestServer::start_with(ServerOptions {
        env: bao.approle_env(),
        plugin: Some("argocd-vault-plugin-kustomize".into()),
        args: vec!["--argocd-cm".into(), cm.display().to_string()],
        ..Default::default()
    });
    for server in [&from_dir, &from_cm] {
        let got = support::generate(&server.socket, &spec, None)
            .await
            .expect("imported");
        assert_eq!(got, want);
    }
    assert!(from_cm.log().contains("lockRepo"), "{}", from_cm.log());
}

#[test]
fn invalid_operator_templates_stop_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (flag, value, want) in [
        (
            "--default-path",
            "kv/data/{{nope}}",
            "unknown variable \"nope\"",
        ),
        (
            "--default-path",
            "kv/{{#if app}}x{{/if}}",
            "only {{variable}}",
        ),
        (
            "--path-allow",
            "kv/data/{{env.TEAM}}/*",
            "unknown variable \"env.TEAM\"",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_avp-sidecar"))
            .arg("serve")
            .arg("--socket")
            .arg(dir.path().join("s.sock"))
            .arg("--workdir")
            .arg(dir.path())
            .args(["--kustomize", &support::kustomize().display().to_string()])
            .args(["--helm", &support::tool("helm").display().to_string()])
            .args([flag, value])
            .output()
            .expect("run serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value}");
        assert!(stderr.contains(want), "{flag} {value}: {stderr}");
    }
}

/// `| avp-sidecar generate -` in a command plugin (what `plugins import` keeps for custom
/// pipelines) applies the operator's default path with the app context the repo-server sent.
#[tokio::test]
async fn default_path_in_a_command_plugin_pipeline() {
    // A namespace of its own on the shared server.
    let bao = Bao::shared();
    seed(
        bao,
        "team-c/web",
        json!({ "DATABASE_URL": "postgres://team-c-web" }),
    );
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_avp-sidecar"))
        .parent()
        .expect("dir")
        .to_path_buf();
    let tools = support::repo_root().join(".tools/bin");
    let mut env = bao.approle_env();
    env.push(("AVP_SIDECAR_DEFAULT_PATH".into(), DEFAULT_PATH.into()));
    env.push((
        "PATH".into(),
        format!(
            "{}:{}:{}",
            tools.display(),
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    ));
    let config = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        config.path().join("plugin.yaml"),
        "apiVersion: argoproj.io/v1alpha1\nkind: ConfigManagementPlugin\nmetadata:\n  name: cmp\nspec:\n  generate:\n    command: [bash, -c]\n    args: ['set -o pipefail; kustomize build . | avp-sidecar generate -']\n",
    )
    .expect("write");
    let server = TestServer::start_with(ServerOptions {
        plugin: Some("cmp".into()),
        config_dir: Some(config.path().to_path_buf()),
        env,
        ..Default::default()
    });
    let repo = secret_repo("{DATABASE_URL: <DATABASE_URL>}");
    let docs = support::render_app(&server, &repo, app_env("web", "team-c", "default", &[]))
        .await
        .expect("generate");
    assert_eq!(
        find(&docs, "Secret", "app-env")["stringData"]["DATABASE_URL"],
        "postgres://team-c-web"
    );
}
