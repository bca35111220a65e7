//! The secret boundary, as a tenant would probe it, through the real server and OpenBao:
//! placeholders read KV secrets only (never the sidecar's token, its cubbyhole, identity or
//! system endpoints, nor another engine), a value reaches only a core Secret's data under
//! `--leak-guard deny`, and errors never quote a value.

use serde_json::json;
use tonic::Code;

use crate::support::bao::Bao;
use crate::support::{self, ServerOptions, TestServer, argo_env};

fn server(env: Vec<(String, String)>) -> TestServer {
    TestServer::start_with(ServerOptions {
        env,
        ..Default::default()
    })
}

fn with(mut env: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

/// A one-Secret kustomize app reading `placeholder` (KV version `kv` when given).
async fn read(
    server: &TestServer,
    placeholder: &str,
    kv: Option<&str>,
) -> Result<serde_json::Value, tonic::Status> {
    let annotations = kv
        .map(|v| format!("  annotations:\n    avp.kubernetes.io/kv-version: \"{v}\"\n"))
        .unwrap_or_default();
    let repo = support::kustomize_app(&[(
        "secret.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n{annotations}stringData:\n  v: \"{placeholder}\"\n"
        ),
    )]);
    let docs = support::render_app(server, &repo, argo_env("s", "demo", &[])).await?;
    Ok(docs[0]["stringData"]["v"].clone())
}

fn assert_refused(result: Result<serde_json::Value, tonic::Status>, needle: &str) -> String {
    let err = result.expect_err(needle);
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains(needle), "{needle}: {err:?}");
    err.message().to_owned()
}

#[tokio::test]
async fn placeholders_read_secrets_only() {
    // The shared server's audit log holds every test's calls: this test's are those of its
    // own AppRole role and root token.
    let bao = Bao::shared();
    let audit = bao.audit_log();
    const ROLE: &str = "boundary-approle";
    const TOKEN: &str = "boundary-root";
    let ours = |e: &serde_json::Value| {
        e["auth"]["metadata"]["role_name"] == ROLE
            || e["auth"]["display_name"] == format!("token-{TOKEN}")
    };
    bao.api(
        "POST",
        "sys/mounts/transit",
        Some(json!({"type": "transit"})),
    );
    let approle_env = bao.own_approle(ROLE);
    let secret_id = approle_env
        .iter()
        .find(|(k, _)| k == "AVP_SECRET_ID")
        .map(|(_, v)| v.clone())
        .expect("secret id");
    let root_token = bao.own_token(TOKEN, &["root"]);
    let root_env: Vec<(String, String)> = bao
        .token_env()
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "VAULT_TOKEN" => (k, root_token.clone()),
            _ => (k, v),
        })
        .collect();
    bao.api(
        "POST",
        "secret/data/boundary/copied",
        Some(json!({"data": {"id": secret_id, "root": root_token}})),
    );

    // The red team's read: the token itself, as a KV v1 "secret". Refused before any call,
    // as are the other system mounts. (No readiness checks here: they look up the token.)
    let approle = server(with(
        approle_env,
        &[("AVP_SIDECAR_VAULT_READY_CHECK_SECONDS", "0")],
    ));
    let msg = assert_refused(
        read(&approle, "<path:auth/token/lookup-self#id>", Some("1")).await,
        "vault path auth/token/lookup-self is under auth/, a Vault system mount, not a secrets engine",
    );
    assert!(msg.contains("placeholder read refused"), "{msg}");
    for (placeholder, mount) in [
        ("<path:cubbyhole/stash#k>", "cubbyhole/"),
        ("<path:identity/entity/id/x#name>", "identity/"),
        ("<path:sys/internal/ui/resultant-acl#data>", "sys/"),
    ] {
        assert_refused(read(&approle, placeholder, Some("1")).await, mount);
    }
    for path in [
        "auth/token/lookup-self",
        "cubbyhole/stash",
        "identity/entity/id/x",
        "sys/internal/ui/resultant-acl",
    ] {
        let reads = Bao::audited(&audit, "read", path);
        assert_eq!(reads.iter().filter(|e| ours(e)).count(), 0, "{path}");
    }
    // A KV secret holding the sidecar's own login credential is not handed out either.
    assert_refused(
        read(&approle, "<path:secret/data/boundary/copied#id>", None).await,
        "contains this sidecar's own vault credentials",
    );
    // The ordinary read works, and secret/'s mount was described once for all its paths.
    for _ in 0..2 {
        assert_eq!(
            read(&approle, "<path:secret/data/demo/web#username>", None)
                .await
                .expect("kv read"),
            "demo-user"
        );
    }
    let lookups = |prefix: &str| {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| {
                e["type"] == "request"
                    && ours(e)
                    && e["request"]["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with(prefix))
            })
            .count()
    };
    assert_eq!(lookups("sys/internal/ui/mounts/secret/"), 1);

    // With a token that may read anything (root), the engine and version still decide.
    let root = server(root_env.clone());
    assert_refused(
        read(&root, "<path:transit/keys/k#name>", Some("1")).await,
        "is on mount transit/, a \"transit\" engine, not KV",
    );
    assert_refused(
        read(&root, "<path:secret/data/demo/web#password>", Some("1")).await,
        "is on mount secret/, which is KV version 2, but the placeholder reads it as version 1",
    );
    assert_refused(
        read(&root, "<path:secret/data/boundary/copied#root>", None).await,
        "own vault credentials",
    );
    assert_eq!(
        read(&root, "<path:kv1/demo/legacy#user>", Some("1"))
            .await
            .expect("kv1 read"),
        "alice"
    );

    // The operator's list: nothing else is read, and no mount is asked about.
    let before = lookups("sys/internal/ui/mounts/");
    let listed = server(with(
        root_env,
        &[("AVP_SIDECAR_SECRET_MOUNTS", "secret=2,kv1=1")],
    ));
    assert_refused(
        read(&listed, "<path:kv/data/versioned#secret>", None).await,
        "vault path kv/data/versioned is not under a secrets mount this sidecar reads (--secret-mounts: secret/, kv1/)",
    );
    assert_eq!(
        read(&listed, "<path:secret/data/demo/web#username>", None)
            .await
            .expect("listed"),
        "demo-user"
    );
    assert_eq!(lookups("sys/internal/ui/mounts/"), before);

    for s in [&approle, &root, &listed] {
        let log = s.log();
        for value in [secret_id.as_str(), &root_token, support::bao::ROOT_TOKEN] {
            assert!(!log.contains(value), "credential in the log:\n{log}");
        }
    }
    // A bad list stops the server at startup, naming the entry.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_avp-sidecar"))
        .args(["serve", "--secret-mounts", "auth", "--kustomize"])
        .arg(support::kustomize())
        .arg("--helm")
        .arg(support::tool("helm"))
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("invalid --secret-mounts entry \"auth\""),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[tokio::test]
async fn values_reach_only_core_secret_data() {
    let bao = Bao::shared();
    let deny = server(with(
        bao.approle_env(),
        &[("AVP_SIDECAR_LEAK_GUARD", "deny")],
    ));
    let placeholder = "<path:secret/data/demo/web#password>";
    // Helm prints a List as it is; Argo CD applies its items one by one.
    let chart = |template: &str| {
        support::repo_of(&[
            (
                "app/Chart.yaml",
                "apiVersion: v2\nname: c\nversion: 0.1.0\n",
            ),
            ("app/templates/t.yaml", template),
        ])
    };
    let secret = |api: &str, name: &str| {
        format!(
            "apiVersion: {api}\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  pw: \"{placeholder}\"\n"
        )
    };
    let render = |repo: tempfile::TempDir| {
        let deny = &deny;
        async move { support::render_app(deny, &repo, argo_env("c", "demo", &[])).await }
    };

    let err = render(chart(&secret("evil.example.com/v1", "fake")))
        .await
        .expect_err("lookalike Secret");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains(
            "placeholders outside kind Secret data/stringData in Secret/fake (evil.example.com/v1)"
        ),
        "{err:?}"
    );

    let docs = render(chart(&secret("v1", "real")))
        .await
        .expect("core Secret");
    assert_eq!(docs[0]["stringData"]["pw"], "s3cr3t-v2");

    let indent = |text: &str| text.replace('\n', "\n    ");
    let list = |items: &[String]| {
        let items: Vec<String> = items
            .iter()
            .map(|i| format!("  - {}", indent(i).trim_end()))
            .collect();
        format!("apiVersion: v1\nkind: List\nitems:\n{}\n", items.join("\n"))
    };
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  pw: \"{placeholder}\"\n"
    );
    let docs = render(chart(&list(&[secret("v1", "in-list")])))
        .await
        .expect("core Secret in a List");
    assert_eq!(docs[0]["items"][0]["stringData"]["pw"], "s3cr3t-v2");
    let err = render(chart(&list(&[secret("v1", "ok"), cm])))
        .await
        .expect_err("ConfigMap in a List");
    assert!(err.message().contains("in ConfigMap/cm"), "{err:?}");
    assert!(!err.message().contains("Secret/ok"), "{err:?}");
    assert!(!deny.log().contains("s3cr3t"), "{}", deny.log());
}

#[tokio::test]
async fn errors_never_quote_a_value() {
    let bao = Bao::shared();
    let value = "(unclosed-RGX-S3CRET";
    bao.api(
        "POST",
        "secret/data/boundary/cfg",
        Some(json!({"data": {"cfg": json!({"items": [{"n": "a", "pw": value}]}).to_string()}})),
    );
    let server = server(bao.approle_env());
    // The red team's regex: the pattern comes from the secret.
    let err = read(
        &server,
        "<path:secret/data/boundary/cfg#cfg | jsonParse | jsonPath {.items[?(@.n =~ @.pw)].n}>",
        None,
    )
    .await
    .expect_err("invalid regex");
    assert!(err.message().contains("jsonPath"), "{err:?}");
    assert!(!err.message().contains("RGX-S3CRET"), "{err:?}");
    assert!(!server.log().contains("RGX-S3CRET"), "{}", server.log());
}
