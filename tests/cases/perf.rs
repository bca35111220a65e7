//! Behaviour behind the performance work, checked for correctness (not timed): shared Vault
//! reads, the render cache, secret rotation after the TTL, token renewal.

use std::time::Duration;

use serde_json::json;

use crate::support::bao::Bao;
use crate::support::{self, ServerOptions, TestServer, argo_env, find};

#[tokio::test]
async fn concurrent_renders_share_one_vault_read_per_path() {
    // The shared server's audit log holds every test's calls: count this test's own login's.
    let bao = Bao::shared();
    let audit = bao.audit_log();
    let server = TestServer::start_with(ServerOptions {
        env: bao.own_approle("perf-concurrent"),
        ..Default::default()
    });
    let mut tasks = Vec::new();
    for i in 0..10 {
        let socket = server.socket.clone();
        tasks.push(tokio::spawn(async move {
            let spec = support::dir_stream(
                &support::repo_root().join("examples"),
                "helm-app",
                argo_env(&format!("app{i}"), "demo", &[]),
            );
            support::generate(&socket, &spec, None)
                .await
                .expect("generate")
        }));
    }
    for t in tasks {
        let docs = t.await.expect("join");
        let secret = docs
            .iter()
            .find(|d| d["kind"] == "Secret" && d["stringData"]["password"].is_string())
            .expect("secret");
        assert_eq!(secret["stringData"]["password"], "s3cr3t-v2");
    }
    // helm-app reads secret/data/demo/web (latest, three objects) and version 1: one read each,
    // for all ten renders together.
    assert_eq!(
        Bao::audited_as(&audit, "perf-concurrent", "read", "secret/data/demo/web").len(),
        2,
        "reads of the path (latest + #1)"
    );
    let logins = Bao::audited_logins_as(&audit, "perf-concurrent");
    assert_eq!(logins, 1, "one login for all renders");
}

#[tokio::test]
async fn vault_calls_wait_in_line_under_the_in_flight_cap() {
    let bao = Bao::shared();
    let metrics = support::free_port();
    let server = TestServer::start_with(ServerOptions {
        env: bao.approle_env(),
        args: vec![
            "--vault-max-in-flight".into(),
            "1".into(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{metrics}"),
        ],
        ..Default::default()
    });
    // Five distinct reads, asked eight at a time (--read-concurrency): four wait in line.
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  a: <path:kv/data/testing#name>\n  b: <path:kv/data/test#hello>\n  c: <path:kv/data/versioned#secret>\n  d: <path:secret/data/demo/web#username>\n  e: <path:kv/data/shop/payments#STRIPE_API_KEY>\n";
    let repo = support::kustomize_app(&[("secret.yaml", secret)]);
    let docs = support::render_app(&server, &repo, argo_env("web", "demo", &[]))
        .await
        .expect("render");
    assert_eq!(
        docs[0]["stringData"],
        json!({"a": "test-kv-name", "b": "world", "c": "version2", "d": "demo-user", "e": "sk_test_conventions"})
    );
    assert!(support::counter(metrics, "secret_backend_queued_total") >= 1);
}

#[tokio::test]
async fn render_cache_skips_the_tool_for_identical_requests() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let count = scratch.path().join("count");
    let server = TestServer::start_with(ServerOptions {
        kustomize: Some(support::repo_root().join("tests/fixtures/tools/counting-kustomize")),
        env: vec![("COUNT_FILE".into(), count.display().to_string())],
        ..Default::default()
    });
    let runs = || {
        std::fs::read_to_string(&count)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let spec = |tag: &str| {
        support::dir_stream(
            &support::fixture("mono"),
            "apps/kustomize-helm",
            argo_env(
                "web",
                "demo",
                &[("IMAGE_NAME", "nginx"), ("IMAGE_TAG", tag)],
            ),
        )
    };
    let first = support::generate(&server.socket, &spec("1.0"), None)
        .await
        .expect("first");
    let second = support::generate(&server.socket, &spec("1.0"), None)
        .await
        .expect("second");
    assert_eq!(first, second);
    assert_eq!(runs(), 1, "identical request served from the render cache");
    let other = support::generate(&server.socket, &spec("2.0"), None)
        .await
        .expect("other env");
    assert_eq!(runs(), 2, "different env, different key");
    assert_eq!(
        find(&other, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2.0"
    );
    // A cache hit (same metadata, so the same key) still verifies the bytes that arrive.
    let mut bad = spec("1.0");
    bad.checksum = Some(support::client_checksum(&bad.archive));
    if let Some(last) = bad.archive.last_mut() {
        *last ^= 0xff;
    }
    let err = support::generate(&server.socket, &bad, None)
        .await
        .expect_err("bytes that do not match the checksum");
    assert!(err.message().contains("checksum"), "{err:?}");
    assert_eq!(runs(), 2, "the tool did not run for it");
    assert!(server.log().contains("render_cache_hit=true"));
}

#[tokio::test]
async fn rotated_secret_visible_after_ttl() {
    // The helm example, reading this test's copy of demo/web: the test writes a new version.
    let bao = Bao::shared();
    let web = bao.own_demo_web("perf-ttl");
    let examples = support::copy_tree_replacing(
        &support::repo_root().join("examples/helm-app"),
        "secret/data/demo/web",
        &web,
    );
    let mut env = bao.approle_env();
    env.push(("AVP_SIDECAR_SECRET_CACHE_TTL_SECONDS".into(), "1".into()));
    let server = TestServer::start_with(ServerOptions {
        env,
        ..Default::default()
    });
    let spec = || support::dir_stream(examples.path(), "helm-app", argo_env("myapp", "demo", &[]));
    let password = |docs: &[serde_json::Value]| {
        find(docs, "Secret", "myapp-credentials")["stringData"]["password"].clone()
    };
    let docs = support::generate(&server.socket, &spec(), None)
        .await
        .expect("render");
    assert_eq!(password(&docs), json!("s3cr3t-v2"));
    bao.api(
        "POST",
        &web,
        Some(json!({"data": {"username": "demo-user", "password": "rotated-v3", "port": 5432, "enabled": true, "config": "{\"db\":{\"host\":\"db\"}}"}})),
    );
    let docs = support::generate(&server.socket, &spec(), None)
        .await
        .expect("render");
    assert_eq!(
        password(&docs),
        json!("s3cr3t-v2"),
        "within the TTL the cached read answers"
    );
    // As strict as sleeping 1.2 s and rendering once (the last try starts after 1.2 s), but
    // done as soon as the TTL is over.
    let docs = support::eventually_async(
        Duration::from_millis(1200),
        "the new version after the TTL",
        async || {
            let docs = support::generate(&server.socket, &spec(), None)
                .await
                .expect("render");
            if password(&docs) == json!("rotated-v3") {
                Ok(docs)
            } else {
                Err(password(&docs).to_string())
            }
        },
    )
    .await;
    assert_eq!(
        password(&docs),
        json!("rotated-v3"),
        "after the TTL the new version shows"
    );
    // A pinned version is unaffected by rotation.
    assert_eq!(
        find(&docs, "Secret", "myapp-credentials")["stringData"]["previous-password"],
        json!("s3cr3t-v1")
    );
}

#[tokio::test]
async fn short_lived_tokens_are_renewed_or_replaced() {
    let bao = Bao::shared();
    bao.api(
        "POST",
        "auth/approle/role/short",
        Some(json!({"token_policies": "avp-reader", "token_ttl": "3s", "token_max_ttl": "5s"})),
    );
    let role_id = bao.api("GET", "auth/approle/role/short/role-id", None)["data"]["role_id"]
        .as_str()
        .expect("role id")
        .to_owned();
    let secret_id = bao.api("POST", "auth/approle/role/short/secret-id", None)["data"]["secret_id"]
        .as_str()
        .expect("secret id")
        .to_owned();
    let mut env = bao.approle_env();
    env.retain(|(k, _)| k != "AVP_ROLE_ID" && k != "AVP_SECRET_ID");
    env.extend([
        ("AVP_ROLE_ID".into(), role_id),
        ("AVP_SECRET_ID".into(), secret_id),
        ("AVP_SIDECAR_SECRET_CACHE_TTL_SECONDS".into(), "0".into()),
    ]);
    let server = TestServer::start_with(ServerOptions {
        env,
        ..Default::default()
    });
    let spec = || {
        support::dir_stream(
            &support::repo_root().join("examples"),
            "helm-app",
            argo_env("myapp", "demo", &[]),
        )
    };
    // Renders span the token's TTL (3 s) and max TTL (5 s): renewal, then a new login.
    support::eventually_async(
        Duration::from_secs(30),
        "a token renewal and a re-login after max TTL, every render succeeding",
        async || {
            support::generate(&server.socket, &spec(), None)
                .await
                .expect("every render succeeds");
            let log = server.log();
            if log.contains("renewed vault token") && log.matches("logged in to vault").count() >= 2
            {
                Ok(())
            } else {
                Err(log)
            }
        },
    )
    .await;
}
