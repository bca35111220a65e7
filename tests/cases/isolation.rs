//! Operator configuration is immutable from requests: for every family of settings, a tenant
//! who sets them through `--plugin-env` (and, defensively, as raw request env) changes nothing.

use std::net::TcpListener;

use serde_json::json;
use tonic::Code;

use crate::support::bao::Bao;
use crate::support::{self, ServerOptions, TestServer, find};

/// A kustomize app: a Secret filled from `path` and a ConfigMap with `cm_value`.
fn repo(path: &str, cm_value: &str) -> tempfile::TempDir {
    support::kustomize_app(&[
        (
            "secret.yaml",
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  user: <path:{path}#username>\n"
            ),
        ),
        (
            "cm.yaml",
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  v: \"{cm_value}\"\n"
            ),
        ),
    ])
}

/// The env the repo-server sends, with `hostile` added both as plugin env and as raw names.
fn env_with(hostile: &[(&str, String)]) -> Vec<(String, String)> {
    let plugin: Vec<(&str, &str)> = hostile.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut env = support::argo_env("s", "demo", &plugin);
    env.extend(hostile.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

#[tokio::test]
async fn tenant_overrides_of_every_operator_setting_are_ignored() {
    let bao = Bao::shared();
    // Where a redirected Vault client would connect: must see no connection.
    let trap = TcpListener::bind("127.0.0.1:0").expect("bind");
    trap.set_nonblocking(true).expect("nonblocking");
    let trap_addr = format!("http://{}", trap.local_addr().expect("addr"));
    // No secret cache: every family's render reads Vault again through the (unchanged) client.
    let mut env = bao.approle_env();
    env.push(("AVP_SIDECAR_SECRET_CACHE_TTL_SECONDS".into(), "0".into()));
    let server = TestServer::start_with(ServerOptions {
        env,
        args: [
            "--path-allow",
            "secret/data/demo/*",
            "--leak-guard",
            "deny",
            "--max-output-mb",
            "16",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    });
    let ok_repo = repo("secret/data/demo/web", "plain");
    let baseline = support::render_app(&server, &ok_repo, env_with(&[]))
        .await
        .expect("baseline");
    assert_eq!(
        find(&baseline, "Secret", "s")["stringData"]["user"],
        "demo-user"
    );

    let s = String::from;
    let families: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "vault address, backend, auth and credentials",
            vec![
                ("AVP_TYPE", s("awssecretsmanager")),
                ("VAULT_ADDR", trap_addr.clone()),
                ("BAO_ADDR", trap_addr.clone()),
                ("AVP_AUTH_TYPE", s("token")),
                ("VAULT_TOKEN", s("attacker")),
                ("AVP_ROLE_ID", s("attacker")),
                ("AVP_SECRET_ID", s("attacker")),
                ("AVP_K8S_ROLE", s("admin")),
                ("AVP_K8S_TOKEN_PATH", s("/etc/shadow")),
            ],
        ),
        (
            "vault TLS",
            vec![
                ("VAULT_SKIP_VERIFY", s("true")),
                ("VAULT_CACERT", s("/tmp/evil.pem")),
                ("VAULT_CAPATH", s("/tmp")),
                ("VAULT_CLIENT_CERT", s("/tmp/c.pem")),
                ("VAULT_CLIENT_KEY", s("/tmp/k.pem")),
            ],
        ),
        (
            "mounts, engine and namespace",
            vec![
                ("AVP_MOUNT_PATH", s("auth/evil")),
                ("AVP_K8S_MOUNT_PATH", s("auth/evil")),
                ("AVP_KV_VERSION", s("1")),
                ("VAULT_NAMESPACE", s("other-team")),
                ("AVP_PATH_VALIDATION", s("^nothing$")),
            ],
        ),
        (
            "sidecar policy",
            vec![
                ("AVP_SIDECAR_PATH_ALLOW", s("**")),
                ("AVP_SIDECAR_LEAK_GUARD", s("allow")),
                ("AVP_SIDECAR_LEAK_GUARD_PROJECTS", s("default=allow")),
                ("AVP_SIDECAR_SECRET_ALLOW", s("*:*")),
            ],
        ),
        (
            "sidecar limits",
            vec![
                ("AVP_SIDECAR_MAX_OUTPUT_MB", s("0")),
                ("AVP_SIDECAR_MAX_SECRET_READS", s("0")),
                ("AVP_SIDECAR_MAX_EXTRACTED_MB", s("0")),
                ("AVP_SIDECAR_MAX_ENTRIES", s("0")),
                ("AVP_SIDECAR_MAX_CONCURRENT_RENDERS", s("0")),
                ("AVP_SIDECAR_DEFAULT_TIMEOUT_SECONDS", s("1")),
            ],
        ),
        (
            "tool paths and the loader",
            vec![
                ("AVP_SIDECAR_KUSTOMIZE", s("/bin/false")),
                ("AVP_SIDECAR_HELM", s("/bin/false")),
                ("PATH", s("/nonexistent")),
                ("HOME", s("/nonexistent")),
                ("LD_PRELOAD", s("/nonexistent.so")),
                ("KUSTOMIZE_PLUGIN_HOME", s("/nonexistent")),
                ("HELM_PLUGINS", s("/nonexistent")),
            ],
        ),
    ];
    for (family, hostile) in &families {
        let docs = support::render_app(&server, &ok_repo, env_with(hostile))
            .await
            .unwrap_or_else(|e| panic!("{family}: {e:?}"));
        assert_eq!(docs, baseline, "{family} changed the output");
        let log = server.log();
        for (name, _) in hostile {
            // Raw names are reported; plugin-env names when they name a Vault/AVP setting
            // (`ARGOCD_ENV_PATH` is just data for a child process).
            let mut reported = vec![format!("\"{name}\"")];
            if ["VAULT_", "AVP_", "BAO_"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                reported.push(format!("\"ARGOCD_ENV_{name}\""));
            }
            for r in reported {
                assert!(log.contains(&r), "{family}: ignored {r} not reported");
            }
        }
    }
    let all: Vec<(&str, String)> = families.into_iter().flat_map(|(_, h)| h).collect();
    // Policy still applies with every override attempted at once.
    let err = support::render_app(
        &server,
        &repo("secret/data/other/web", "plain"),
        env_with(&all),
    )
    .await
    .expect_err("path policy");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = support::render_app(
        &server,
        &repo(
            "secret/data/demo/web",
            "<path:secret/data/demo/web#username>",
        ),
        env_with(&all),
    )
    .await
    .expect_err("leak guard");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("leak guard: deny"), "{err:?}");
    assert!(
        trap.accept().is_err(),
        "a tenant redirected the Vault client"
    );
    assert!(
        !server.log().contains("attacker"),
        "values of ignored names are never logged"
    );
}

#[tokio::test]
async fn distinct_secret_reads_are_capped() {
    let bao = Bao::shared();
    let server = TestServer::start_with(ServerOptions {
        env: bao.approle_env(),
        args: ["--max-secret-reads", "1"].map(String::from).to_vec(),
        ..Default::default()
    });
    let one = repo("secret/data/demo/web", "plain");
    let docs = support::render_app(&server, &one, env_with(&[]))
        .await
        .expect("one read");
    assert_eq!(
        find(&docs, "Secret", "s")["stringData"],
        json!({"user": "demo-user"})
    );
    let two = repo("secret/data/demo/web", "<path:kv/data/test#hello>");
    let err = support::render_app(&server, &two, env_with(&[]))
        .await
        .expect_err("two");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .contains("2 distinct secret reads, more than the limit of 1"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_project_can_have_its_own_vault_identity() {
    // The shared server's audit log: this test's identities are its own (AppRole role and
    // userpass user `isolation-identity`).
    let bao = Bao::shared();
    const WHO: &str = "isolation-identity";
    bao.api(
        "POST",
        &format!("auth/userpass/users/{WHO}"),
        Some(serde_json::json!({"password": "avp-password", "token_policies": "avp-reader"})),
    );
    let scratch = tempfile::tempdir().expect("tempdir");
    let team_a = scratch.path().join("team-a.env");
    std::fs::write(
        &team_a,
        format!("AVP_AUTH_TYPE=userpass\nAVP_USERNAME={WHO}\nAVP_PASSWORD=avp-password\n"),
    )
    .expect("write");
    let server = TestServer::start_with(ServerOptions {
        env: bao.own_approle(WHO),
        args: vec![
            "--project-vault-config".into(),
            format!("team-a={}", team_a.display()),
        ],
        ..Default::default()
    });
    // Vault records our attribution header once the operator lists it.
    bao.audit_header("x-avp-sidecar-app");
    let app = repo("secret/data/demo/web", "plain");
    for project in ["default", "team-a"] {
        let mut env = env_with(&[]);
        for (k, v) in &mut env {
            if k == "ARGOCD_APP_PROJECT_NAME" {
                *v = project.to_owned();
            }
        }
        let docs = support::render_app(&server, &app, env)
            .await
            .expect(project);
        assert_eq!(
            find(&docs, "Secret", "s")["stringData"]["user"],
            "demo-user"
        );
    }
    // Vault's audit log attributes each project's read to its own identity, and names the
    // Application whose render asked.
    let reads_by = |display_name: &str, app: &str| {
        Bao::audited(&bao.audit_log(), "read", "secret/data/demo/web")
            .iter()
            .filter(|e| {
                e["auth"]["display_name"] == display_name
                    && (e["auth"]["metadata"]["role_name"] == WHO
                        || e["auth"]["metadata"]["username"] == WHO)
                    && e["request"]["headers"]["x-avp-sidecar-app"] == serde_json::json!([app])
            })
            .count()
    };
    assert_eq!(reads_by("approle", "default/s"), 1);
    assert_eq!(reads_by(&format!("userpass-{WHO}"), "team-a/s"), 1);
    assert!(!server.log().contains("avp-password"));
}
