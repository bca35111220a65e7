//! Migration to External Secrets through the real server: converted Secrets become
//! `ExternalSecret`s naming the same Vault paths, and their values are never read.

use serde_json::json;
use tonic::Code;

use crate::support::bao::Bao;
use crate::support::{self, ServerOptions, TestServer, argo_env, find};

/// Secret `a` (opted in by annotation when `annotate_a`) reads only `kv/data/test`; Secret `b`
/// reads `secret/data/demo/web`, with `b_output` as its output annotation if set.
fn repo(annotate_a: bool, b_output: Option<&str>) -> tempfile::TempDir {
    let annotations = |a: Option<&str>| {
        a.map(|v| format!("  annotations:\n    avp.kubernetes.io/output: {v}\n"))
            .unwrap_or_default()
    };
    support::kustomize_app(&[
        (
            "a.yaml",
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: a\n{}stringData:\n  hello: <path:kv/data/test#hello>\n  greeting: \"say <path:kv/data/test#hello>!\"\n",
                annotations(annotate_a.then_some("external-secret"))
            ),
        ),
        (
            "b.yaml",
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: b\n{}stringData:\n  user: <path:secret/data/demo/web#username>\n",
                annotations(b_output)
            ),
        ),
    ])
}

async fn render(
    server: &TestServer,
    repo: &tempfile::TempDir,
) -> Result<Vec<serde_json::Value>, tonic::Status> {
    support::render_app(server, repo, argo_env("m", "demo", &[])).await
}

fn server(bao: &Bao, extra: &[&str]) -> TestServer {
    server_as(bao.approle_env(), extra)
}

/// `server` with the Vault login `env`.
fn server_as(env: Vec<(String, String)>, extra: &[&str]) -> TestServer {
    let mut args = vec![
        "--external-secrets-store".to_owned(),
        "vault-backend".to_owned(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    TestServer::start_with(ServerOptions {
        env,
        args,
        ..Default::default()
    })
}

#[tokio::test]
async fn annotated_secrets_become_external_secrets_and_are_never_read() {
    // The shared server's audit log: this test's reads are its own role's.
    let bao = Bao::shared();
    let server = server_as(bao.own_approle("migration-annotated"), &[]);
    let docs = render(&server, &repo(true, None)).await.expect("render");
    let es = find(&docs, "ExternalSecret", "a");
    assert_eq!(es["apiVersion"], "external-secrets.io/v1");
    assert_eq!(
        es["spec"]["secretStoreRef"],
        json!({"kind": "ClusterSecretStore", "name": "vault-backend"})
    );
    let data = es["spec"]["data"].as_array().expect("spec.data");
    assert!(
        data.contains(
            &json!({"secretKey": "hello", "remoteRef": {"key": "kv/data/test", "property": "hello"}})
        ),
        "{data:?}"
    );
    assert_eq!(
        es["spec"]["target"]["template"]["data"]["greeting"],
        "say {{ index . \"_avp_greeting_0\" }}!"
    );
    // The unconverted Secret is filled as before.
    assert_eq!(
        find(&docs, "Secret", "b")["stringData"]["user"],
        "demo-user"
    );
    let text = serde_json::to_string(&docs).expect("json");
    assert!(
        !text.contains("world"),
        "a converted value was inlined: {text}"
    );
    let audit = bao.audit_log();
    let reads = |path| Bao::audited_as(&audit, "migration-annotated", "read", path).len();
    assert_eq!(reads("kv/data/test"), 0);
    assert_eq!(reads("secret/data/demo/web"), 1);
}

#[tokio::test]
async fn a_project_can_enforce_external_secrets() {
    let bao = Bao::shared();
    let server = server(bao, &["--external-secrets-project", "default=enforce"]);
    let docs = render(&server, &repo(false, None)).await.expect("render");
    for name in ["a", "b"] {
        find(&docs, "ExternalSecret", name);
    }
    assert!(
        docs.iter().all(|d| d["kind"] != "Secret"),
        "no Secret is rendered inline: {docs:?}"
    );
    let err = render(&server, &repo(false, Some("secret")))
        .await
        .expect_err("opt-out refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("Secret/b"), "{err:?}");
    assert!(
        err.message().contains("requires ExternalSecrets"),
        "{err:?}"
    );
}

#[tokio::test]
async fn conversion_without_a_store_is_refused() {
    let server = TestServer::start();
    let err = render(&server, &repo(true, None))
        .await
        .expect_err("no store");
    assert!(
        err.message().contains("no --external-secrets-store"),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_example_renders_as_documented() {
    let server = TestServer::start_with(ServerOptions {
        args: vec!["--external-secrets-store".into(), "vault-backend".into()],
        ..Default::default()
    });
    let spec = support::dir_stream(
        &support::repo_root().join("examples/external-secrets"),
        "app",
        argo_env("web", "demo", &[]),
    );
    let docs = support::generate(&server.socket, &spec, None)
        .await
        .expect("no Vault needed: nothing is read");
    let es = find(&docs, "ExternalSecret", "web-db");
    assert_eq!(es["spec"]["data"].as_array().map(Vec::len), Some(4));
    assert_eq!(
        es["spec"]["target"]["template"]["data"]["DB_URL"],
        "postgres://{{ index . \"_avp_DB_URL_0\" }}:{{ index . \"_avp_DB_URL_1\" }}@db:5432/app"
    );
}
