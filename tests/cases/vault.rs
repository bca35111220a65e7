//! Substitution end to end: the real server renders the examples with real kustomize/helm and
//! fills placeholders from a real OpenBao dev server. No secret value may appear in any error
//! or log line.

use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::support::bao::Bao;
use crate::support::{self, ServerOptions, TestServer, argo_env, find};

fn examples() -> std::path::PathBuf {
    support::repo_root().join("examples")
}

fn server_with(env: Vec<(String, String)>) -> TestServer {
    TestServer::start_with(ServerOptions {
        env,
        ..Default::default()
    })
}

/// Values that must never show up in logs or errors.
const SECRETS: [&str; 4] = ["s3cr3t-v1", "s3cr3t-v2", "legacy-key-123", "avp-password"];

fn assert_no_secrets(text: &str, extra: &[String]) {
    for s in SECRETS
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
    {
        assert!(!text.contains(s), "secret {s:?} leaked into:\n{text}");
    }
}

#[tokio::test]
async fn kustomize_example_with_approle() {
    let bao = Bao::shared();
    let server = server_with(bao.approle_env());
    let spec = support::dir_stream(&examples(), "kustomize-app", argo_env("web", "demo", &[]));
    let docs = support::generate(&server.socket, &spec, Some(Duration::from_secs(60)))
        .await
        .expect("generate");
    let secret = find(&docs, "Secret", "web-db");
    assert_eq!(
        secret["stringData"],
        json!({"DB_USER": "demo-user", "DB_PASSWORD": "s3cr3t-v2", "DB_URL": "postgres://demo-user:s3cr3t-v2@db:5432/app"})
    );
    let cm = find(&docs, "ConfigMap", "web-legacy");
    assert_eq!(cm["data"]["API_USER"], "alice");
    let sha: String = Sha256::digest(b"legacy-key-123")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(cm["data"]["API_KEY_SHA256"], sha);
    assert_eq!(find(&docs, "Deployment", "web")["spec"]["replicas"], 2);
    assert_no_secrets(&server.log(), &[bao.file("approle_secret_id")]);
}

#[tokio::test]
async fn helm_example_versions_types_and_modifiers() {
    let bao = Bao::shared();
    let server = server_with(bao.approle_env());
    let spec = support::dir_stream(&examples(), "helm-app", argo_env("myapp", "demo", &[]));
    let docs = support::generate(&server.socket, &spec, None)
        .await
        .expect("generate");
    let creds = find(&docs, "Secret", "myapp-credentials");
    assert_eq!(
        creds["stringData"],
        json!({"password": "s3cr3t-v2", "previous-password": "s3cr3t-v1"})
    );
    let db = find(&docs, "Secret", "myapp-db");
    assert_eq!(
        db["stringData"],
        json!({"username": "demo-user", "db-host": "db.internal"})
    );
    let cm = find(&docs, "ConfigMap", "myapp-settings");
    assert_eq!(cm["data"], json!({"DB_PORT": "5432", "DB_ENABLED": "true"}));
}

#[tokio::test]
async fn token_userpass_and_agent_address() {
    let bao = Bao::shared();
    let base = |auth: &str| {
        vec![
            ("AVP_TYPE".to_owned(), "vault".to_owned()),
            ("VAULT_ADDR".to_owned(), bao.addr.clone()),
            ("AVP_AUTH_TYPE".to_owned(), auth.to_owned()),
        ]
    };
    let mut token = base("token");
    token.push(("VAULT_TOKEN".into(), bao.file("reader_token")));
    let mut userpass = base("userpass");
    userpass.extend([
        ("AVP_USERNAME".into(), "avp".into()),
        ("AVP_PASSWORD".into(), "avp-password".into()),
    ]);
    // Through an agent: VAULT_AGENT_ADDR wins over a VAULT_ADDR nobody listens on.
    let mut agent = token.clone();
    agent[1].1 = format!("http://127.0.0.1:{}", support::free_port());
    agent.push(("VAULT_AGENT_ADDR".into(), bao.addr.clone()));
    for env in [token, userpass, agent] {
        let server = server_with(env);
        let spec = support::dir_stream(&examples(), "helm-app", argo_env("myapp", "demo", &[]));
        let docs = support::generate(&server.socket, &spec, None)
            .await
            .expect("generate");
        assert_eq!(
            find(&docs, "Secret", "myapp-credentials")["stringData"]["password"],
            "s3cr3t-v2"
        );
        assert_no_secrets(&server.log(), &[bao.file("reader_token")]);
    }
}

/// A one-file repo whose Secret holds `value`.
fn secret_repo(value: &str) -> tempfile::TempDir {
    support::kustomize_app(&[(
        "secret.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  v: \"{value}\"\n"
        ),
    )])
}

async fn render_value(
    server: &TestServer,
    value: &str,
    env: &[(&str, &str)],
) -> Result<serde_json::Value, tonic::Status> {
    let repo = secret_repo(value);
    let spec = support::dir_stream(repo.path(), "app", argo_env("s", "demo", env));
    let docs = support::generate(&server.socket, &spec, Some(Duration::from_secs(30))).await?;
    Ok(docs[0]["stringData"]["v"].clone())
}

#[tokio::test]
async fn kv1_v2_versions_and_errors() {
    let bao = Bao::shared();
    let server = server_with(bao.approle_env());
    for (placeholder, want) in [
        ("<path:secret/data/demo/web#password>", "s3cr3t-v2"),
        ("<path:secret/data/demo/web#password#1>", "s3cr3t-v1"),
        ("<path:kv/data/versioned#secret#1>", "version1"),
        ("<path:kv/data/versioned#secret>", "version2"),
    ] {
        assert_eq!(
            render_value(&server, placeholder, &[])
                .await
                .expect(placeholder),
            json!(want),
            "{placeholder}"
        );
    }
    for (placeholder, code, needle) in [
        (
            "<path:secret/data/demo/web#nope>",
            Code::FailedPrecondition,
            "missing",
        ),
        (
            "<path:secret/data/demo/missing#k>",
            Code::FailedPrecondition,
            "could not find secrets at path secret/data/demo/missing",
        ),
        (
            "<path:secret/demo/web#password>",
            Code::FailedPrecondition,
            "did you forget to include /data/",
        ),
        (
            "<path:not-allowed/data/x#k>",
            Code::FailedPrecondition,
            "permission denied",
        ),
        (
            "<path:secret/data/demo/web#password#99>",
            Code::FailedPrecondition,
            "version 99",
        ),
    ] {
        let err = render_value(&server, placeholder, &[])
            .await
            .expect_err(placeholder);
        assert_eq!(err.code(), code, "{placeholder}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{placeholder}: {needle:?} not in {:?}",
            err.message()
        );
        assert_no_secrets(err.message(), &[]);
    }
    assert_no_secrets(&server.log(), &[bao.file("approle_secret_id")]);
}

#[tokio::test]
async fn kv1_with_default_kv_version() {
    let bao = Bao::shared();
    let mut env = bao.approle_env();
    env.push(("AVP_KV_VERSION".into(), "1".into()));
    let server = server_with(env);
    let v = render_value(
        &server,
        "x-<path:avp-v1/foo#secret>-<path:avp-v1/testing#name>",
        &[],
    )
    .await
    .expect("kv1");
    assert_eq!(v, "x-bar-test-name");
}

#[tokio::test]
async fn vault_down_is_a_clear_error_and_server_recovers() {
    // Private: this test stops its OpenBao.
    let bao = Bao::start();
    let mut env = bao.approle_env();
    env.push(("VAULT_CLIENT_TIMEOUT".into(), "2s".into()));
    // No secret cache: otherwise the read made while Vault was up would answer the next one.
    env.push(("AVP_SIDECAR_SECRET_CACHE_TTL_SECONDS".into(), "0".into()));
    let server = server_with(env);
    assert_eq!(
        render_value(&server, "<path:secret/data/demo/web#username>", &[])
            .await
            .expect("up"),
        "demo-user"
    );
    bao.stop();
    let started = std::time::Instant::now();
    let err = render_value(&server, "<path:secret/data/demo/web#username>", &[])
        .await
        .expect_err("vault down");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("vault read of secret/data/demo/web failed"),
        "{err:?}"
    );
    // Renders without placeholders still work.
    let docs = support::generate(
        &server.socket,
        &support::dir_stream(
            &support::fixture("mono"),
            "apps/chart",
            argo_env("web", "demo", &[]),
        ),
        None,
    )
    .await
    .expect("no vault needed");
    assert_eq!(docs.len(), 2);
    assert!(server.leftover_workdirs().is_empty());
}

#[tokio::test]
async fn placeholders_without_backend_are_an_error() {
    let server = TestServer::start();
    let err = render_value(&server, "<path:secret/data/demo/web#username>", &[])
        .await
        .expect_err("no backend");
    assert!(
        err.message().contains("no secret backend is configured"),
        "{err:?}"
    );
}

#[tokio::test]
async fn avp_secret_from_kubernetes_with_operator_allowlist() {
    use std::collections::HashMap;

    use crate::support::kubeapi::KubeApi;

    let bao = Bao::shared();
    let config: Vec<(String, String)> = bao
        .approle_env()
        .into_iter()
        .map(|(k, v)| (k.to_lowercase(), v)) // AVP reads Secret keys case-insensitively
        .collect();
    let api = KubeApi::start(HashMap::from([
        (
            ("argocd".to_owned(), "avp-config".to_owned()),
            config.clone(),
        ),
        (("team-b".to_owned(), "avp-config".to_owned()), config),
    ]));
    let env = vec![
        (
            "AVP_SIDECAR_SECRET_ALLOW".to_owned(),
            "default=argocd:avp-*".to_owned(),
        ),
        ("AVP_SIDECAR_KUBE_API".to_owned(), api.url.clone()),
        (
            "AVP_SIDECAR_KUBE_TOKEN_PATH".to_owned(),
            api.token_file.path().display().to_string(),
        ),
    ];
    let server = server_with(env);
    let placeholder = "<path:secret/data/demo/web#username>";
    // Twice: the second render reuses the backend (and its Vault login).
    for _ in 0..2 {
        let v = render_value(&server, placeholder, &[("AVP_SECRET", "avp-config")])
            .await
            .expect("allowed secret");
        assert_eq!(v, "demo-user");
    }
    assert_eq!(
        server.log().matches("logged in to vault").count(),
        1,
        "one login for both renders"
    );
    for (name, needle) in [
        (
            "team-b:avp-config",
            "may not use the AVP config secret team-b:avp-config",
        ),
        ("argocd:avp-missing", "not found or not readable: HTTP 404"),
        ("../evil", "invalid secret name"),
    ] {
        let err = render_value(&server, placeholder, &[("AVP_SECRET", name)])
            .await
            .expect_err(name);
        assert!(err.message().contains(needle), "{name}: {err:?}");
    }
    // Without an allowlist, naming a Secret is an error rather than silently ignored.
    let plain = TestServer::start();
    let err = render_value(&plain, placeholder, &[("AVP_SECRET", "avp-config")])
        .await
        .expect_err("disabled");
    assert!(err.message().contains("reads no config secrets"), "{err:?}");
    assert_no_secrets(&server.log(), &[bao.file("approle_secret_id")]);
}

#[tokio::test]
async fn per_project_path_policy_and_leak_guard() {
    let bao = Bao::shared();
    let mut env = bao.approle_env();
    env.push((
        "AVP_SIDECAR_PATH_ALLOW".into(),
        "default=secret/data/demo/*,secret/data/shared/**".into(),
    ));
    let server = server_with(env);
    assert_eq!(
        render_value(&server, "<path:secret/data/demo/web#username>", &[])
            .await
            .expect("allowed"),
        "demo-user"
    );
    let err = render_value(&server, "<path:kv/data/test#hello>", &[])
        .await
        .expect_err("denied");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("project \"default\" may not read vault path kv/data/test"),
        "{err:?}"
    );

    // Leak guard: the helm example puts values into a ConfigMap.
    let helm_app = || support::dir_stream(&examples(), "helm-app", argo_env("myapp", "demo", &[]));
    let mut env = bao.approle_env();
    env.push(("AVP_SIDECAR_LEAK_GUARD".into(), "deny".into()));
    let strict = server_with(env.clone());
    let err = support::generate(&strict.socket, &helm_app(), None)
        .await
        .expect_err("leak denied");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("ConfigMap/myapp-settings"),
        "{err:?}"
    );
    assert!(
        !err.message().contains("Secret/"),
        "Secrets' data is where values belong: {err:?}"
    );
    env.push((
        "AVP_SIDECAR_LEAK_GUARD_PROJECTS".into(),
        "default=allow".into(),
    ));
    let relaxed = server_with(env);
    support::generate(&relaxed.socket, &helm_app(), None)
        .await
        .expect("project override allows");
    // Default: warn, once per project and objects however often they render.
    let warn = server_with(bao.approle_env());
    for _ in 0..3 {
        support::generate(&warn.socket, &helm_app(), None)
            .await
            .expect("warn only");
    }
    assert_eq!(
        warn.log()
            .matches("placeholders outside kind Secret data")
            .count(),
        1,
        "{}",
        warn.log()
    );
    assert_no_secrets(&warn.log(), &[]);
}

#[tokio::test]
async fn secret_values_never_reach_errors_logs_or_metrics() {
    let bao = Bao::shared();
    bao.api(
        "POST",
        "secret/data/hygiene/app",
        Some(json!({"data": {
            "plain": "HYG-S3CRET-PLAIN",
            "json": "{\"a\":\"HYG-S3CRET-JSON\"}",
            "notb64": "HYG!S3CRET!NOTB64",
            "obj": {"k": "HYG-S3CRET-OBJ"},
        }})),
    );
    let port = support::free_port();
    let mut env = bao.approle_env();
    env.push(("AVP_SIDECAR_LEAK_GUARD".into(), "deny".into()));
    let server = TestServer::start_with(ServerOptions {
        env,
        args: vec![
            "--metrics-addr".into(),
            format!("127.0.0.1:{port}"),
            "--path-allow".into(),
            "secret/data/hygiene/*".into(),
        ],
        ..Default::default()
    });
    let p = "secret/data/hygiene/app";
    // Every error path with a secret value in hand (or about to be), then successes whose
    // logs must stay clean too.
    let failing = [
        format!("<path:{p}#plain | jsonPath {{.x}}>"),
        format!("<path:{p}#json | jsonPath {{.nope}}>"),
        format!("<path:{p}#notb64 | base64decode>"),
        format!("<path:{p}#plain | nosuchmodifier>"),
        format!("<path:{p}#nokey>"),
        format!("<path:{p}#obj | jsonPath {{.k.z}}>"),
        "<path:secret/data/demo/web#password>".to_owned(),
    ];
    let succeeding = [
        format!("x-<path:{p}#obj>-x"),
        format!("<path:{p}#json | jsonParse>"),
        format!("<path:{p}#plain>"),
    ];
    let mut errors = String::new();
    for value in &failing {
        let err = render_value(&server, value, &[]).await.expect_err(value);
        errors.push_str(&format!("{}\n", err.message()));
    }
    for value in &succeeding {
        render_value(&server, value, &[]).await.expect(value);
    }
    // A placeholder outside Secret data with the leak guard on deny.
    let repo = support::kustomize_app(&[(
        "cm.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  v: <path:{p}#plain>\n"
        ),
    )]);
    let spec = support::dir_stream(repo.path(), "app", argo_env("c", "demo", &[]));
    let err = support::generate(&server.socket, &spec, None)
        .await
        .expect_err("leak guard");
    errors.push_str(err.message());
    let metrics = support::http_get(port, "/metrics");
    for (what, text) in [
        ("errors", &errors),
        ("log", &server.log()),
        ("metrics", &metrics),
    ] {
        assert!(
            !text.contains("S3CRET"),
            "a secret value reached the {what}:\n{text}"
        );
        assert_no_secrets(text, &[bao.file("approle_secret_id")]);
    }
}

/// Polls `/readyz` until `want` holds for the whole answer (head and body), or panics.
fn readyz_until(port: u16, what: &str, want: impl Fn(&str) -> bool) -> String {
    support::eventually(Duration::from_secs(20), &format!("/readyz {what}"), || {
        let answer = support::http_get(port, "/readyz");
        if want(&answer) {
            Ok(answer)
        } else {
            Err(answer)
        }
    })
}

fn ready_check_server(env: Vec<(String, String)>, port: u16) -> TestServer {
    TestServer::start_with(ServerOptions {
        env,
        args: vec![
            "--metrics-addr".into(),
            format!("127.0.0.1:{port}"),
            "--vault-ready-check-seconds".into(),
            "1".into(),
        ],
        ..Default::default()
    })
}

#[tokio::test]
async fn readyz_follows_the_vault_login() {
    // Private: this test stops its OpenBao.
    let bao = Bao::start();
    let port = support::free_port();
    let server = ready_check_server(bao.approle_env(), port);
    readyz_until(port, "ready", |a| a.starts_with("HTTP/1.1 200"));
    // Checks every second reuse the one session: no login per check.
    support::eventually(Duration::from_secs(10), "three ready checks", || {
        support::counter_with(
            port,
            "vault_requests_total",
            &[("operation", "token_lookup")],
        ) >= 3
    });
    let logins = [("operation", "login"), ("result", "ok")];
    assert_eq!(
        support::counter_with(port, "vault_requests_total", &logins),
        1
    );
    assert_eq!(support::counter(port, "vault_login_ok"), 1);
    // Vault down: not ready, with the reason.
    bao.stop();
    let down = readyz_until(port, "not ready", |a| a.starts_with("HTTP/1.1 503"));
    assert!(down.contains("not ready: vault"), "{down}");
    assert!(!down.contains(&bao.file("approle_secret_id")), "{down}");
    // "Vault down" in the metrics: no connection, not a denial; the readiness gauge follows.
    let unreachable = [("operation", "token_lookup"), ("result", "unreachable")];
    assert!(support::counter_with(port, "vault_requests_total", &unreachable) >= 1);
    let denied = [("result", "denied")];
    assert_eq!(
        support::counter_with(port, "vault_requests_total", &denied),
        0
    );
    assert_eq!(support::counter(port, "vault_login_ok"), 0);
    drop(server);
}

#[tokio::test]
async fn readyz_names_a_rejected_login_never_its_secret() {
    let bao = Bao::shared();
    let port = support::free_port();
    let wrong = "0badc0de-1111-2222-3333-444455556666";
    let env: Vec<(String, String)> = bao
        .approle_env()
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "AVP_SECRET_ID" => (k, wrong.to_owned()),
            _ => (k, v),
        })
        .collect();
    let server = ready_check_server(env, port);
    let answer = readyz_until(port, "rejected", |a| a.contains("approle at auth/approle"));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("not ready: vault login"), "{answer}");
    // "Vault denies" in the metrics, told apart from "Vault down".
    let denied = [("operation", "login"), ("result", "denied")];
    assert!(support::counter_with(port, "vault_requests_total", &denied) >= 1);
    let unreachable = [("result", "unreachable")];
    assert_eq!(
        support::counter_with(port, "vault_requests_total", &unreachable),
        0
    );
    for secret in [wrong, bao.file("approle_role_id").trim()] {
        assert!(!answer.contains(secret), "{answer}");
        assert!(!server.log().contains(secret), "{}", server.log());
    }
}
