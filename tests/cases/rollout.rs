//! Rollout hashes end to end: the real server renders a kustomize app with real kustomize and
//! reads from a real OpenBao; a new KV v2 version must change the pod-template annotation of
//! the workload that uses the Secret, and nothing else, and no value may show anywhere.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::bao::Bao;
use crate::support::{self, ServerOptions, TestServer, argo_env, find};

const ANNOTATION: &str = "avp.kubernetes.io/secret-versions";
/// The seeded path the renders read unless a test changes it (then it reads a copy).
const SEEDED: &str = "secret/data/demo/web";
/// Seeded values of `secret/data/demo/web`, and the one the test rotates to.
const VALUES: [&str; 4] = ["s3cr3t-v1", "s3cr3t-v2", "demo-user", "r0tated-v3"];

/// A kustomize app: a Secret filled from Vault (`web`: the seeded `secret/data/demo/web` or a
/// copy of it), a Deployment that uses it through `envFrom`, and one that uses nothing.
fn app_repo(web: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).expect("mkdir");
    let write = |name: &str, text: &str| std::fs::write(app.join(name), text).expect("write");
    write(
        "kustomization.yaml",
        "resources: [secret.yaml, web.yaml, idle.yaml]\n",
    );
    write(
        "secret.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-db\nstringData:\n  DB_PASSWORD: <path:{web}#password>\n"
        ),
    );
    let deployment = |name: &str, container: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n{container}"
        )
    };
    write(
        "web.yaml",
        &deployment(
            "web",
            "      - name: web\n        image: nginx\n        envFrom:\n        - secretRef:\n            name: web-db\n",
        ),
    );
    write(
        "idle.yaml",
        &deployment("idle", "      - name: idle\n        image: nginx\n"),
    );
    dir
}

fn server(bao: &Bao, args: &[&str]) -> TestServer {
    TestServer::start_with(ServerOptions {
        env: bao.token_env(),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    })
}

async fn render(server: &TestServer, web: &str) -> Vec<Value> {
    let repo = app_repo(web);
    let spec = support::dir_stream(repo.path(), "app", argo_env("web", "demo", &[]));
    support::generate(&server.socket, &spec, Some(Duration::from_secs(60)))
        .await
        .expect("generate")
}

fn annotation(docs: &[Value], name: &str) -> Option<String> {
    find(docs, "Deployment", name)["spec"]["template"]["metadata"]["annotations"][ANNOTATION]
        .as_str()
        .map(str::to_owned)
}

fn assert_no_values(text: &str) {
    for value in VALUES {
        assert!(!text.contains(value), "{value:?} leaked into:\n{text}");
    }
}

#[tokio::test]
async fn new_version_changes_the_hash_of_the_user_only() {
    // This test's copy of demo/web: it writes a new version.
    let bao = Bao::shared();
    let web = bao.own_demo_web("rollout-new-version");
    let server = server(bao, &["--rollout-hash", "--secret-cache-ttl-seconds", "0"]);

    let first = render(&server, &web).await;
    let hash = annotation(&first, "web").expect("web uses a placeholder Secret");
    assert_eq!(hash.len(), 16, "{hash}");
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    assert_eq!(annotation(&first, "idle"), None);
    assert!(
        find(&first, "Deployment", "idle")["spec"]["template"]["metadata"]
            .get("annotations")
            .is_none()
    );
    assert_eq!(
        find(&first, "Secret", "web-db")["stringData"]["DB_PASSWORD"],
        "s3cr3t-v2"
    );

    // Same inputs, same versions: stable (this render is a render-cache hit).
    let again = render(&server, &web).await;
    assert_eq!(annotation(&again, "web").as_deref(), Some(hash.as_str()));

    // A new KV v2 version: the render cache still answers, the hash follows the new version.
    bao.api(
        "POST",
        &web,
        Some(json!({"data": {"username": "demo-user", "password": "r0tated-v3"}})),
    );
    let rotated = render(&server, &web).await;
    assert_eq!(
        find(&rotated, "Secret", "web-db")["stringData"]["DB_PASSWORD"],
        "r0tated-v3"
    );
    let new_hash = annotation(&rotated, "web").expect("still annotated");
    assert_ne!(new_hash, hash);
    assert_eq!(annotation(&rotated, "idle"), None);
    let stable = render(&server, &web).await;
    assert_eq!(annotation(&stable, "web"), Some(new_hash.clone()));

    let log = server.log();
    assert!(
        log.matches("render_cache_hit=true").count() >= 3,
        "later renders should come from the render cache:\n{log}"
    );
    assert_no_values(&log);
}

/// `avp-sidecar generate` (a command plugin's `... | avp-sidecar generate -`) with `env`;
/// the rendered YAML.
fn pipe_generate(bao: &Bao, env: &[(&str, &str)]) -> String {
    let repo = app_repo(SEEDED);
    let built = Command::new(support::tool("kustomize"))
        .arg("build")
        .arg(repo.path().join("app"))
        .output()
        .expect("kustomize");
    assert!(built.status.success(), "kustomize build failed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_avp-sidecar"))
        .args(["generate", "-"])
        .env_remove("AVP_SIDECAR_ROLLOUT_HASH")
        .env_remove("AVP_SIDECAR_ROLLOUT_HASH_PROJECTS")
        .envs(bao.token_env())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&built.stdout)
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "generate failed: {stderr}");
    assert_no_values(&stderr);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn off_by_default_per_project_and_in_generate() {
    let bao = Bao::shared();
    for (args, want) in [
        (&[][..], false),
        (
            &["--rollout-hash", "--rollout-hash-project", "default=off"][..],
            false,
        ),
        (
            &["--rollout-hash-project", "other=off,default=on"][..],
            true,
        ),
    ] {
        let server = server(bao, args);
        let docs = render(&server, SEEDED).await;
        assert_eq!(annotation(&docs, "web").is_some(), want, "{args:?}");
        assert_eq!(annotation(&docs, "idle"), None, "{args:?}");
        assert_no_values(&server.log());
    }
    // A command plugin's `generate` takes the operator's env and the project from its own env.
    for (env, want) in [
        (vec![("ARGOCD_APP_PROJECT_NAME", "team")], 0),
        (vec![("AVP_SIDECAR_ROLLOUT_HASH", "true")], 1),
        (
            vec![
                ("ARGOCD_APP_PROJECT_NAME", "team"),
                ("AVP_SIDECAR_ROLLOUT_HASH_PROJECTS", "team=on"),
            ],
            1,
        ),
        (
            vec![
                ("ARGOCD_APP_PROJECT_NAME", "other"),
                ("AVP_SIDECAR_ROLLOUT_HASH_PROJECTS", "team=on"),
            ],
            0,
        ),
    ] {
        let yaml = pipe_generate(bao, &env);
        assert_eq!(yaml.matches(ANNOTATION).count(), want, "{env:?}:\n{yaml}");
    }
}
