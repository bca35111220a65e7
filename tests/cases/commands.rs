//! Operator-written Argo CD plugin.yaml files hosted unchanged: commands run as Argo runs them
//! (argv, cwd = app dir, server env then request env), Argo's discovery rules and parameter
//! announcements, and an `avp-sidecar generate -` pipeline against OpenBao.

use avp_sidecar::protocol::client::RepoStream;
use tonic::Code;

use crate::support::bao::Bao;
use crate::support::{self, ServerOptions, TestServer, argo_env, find};

/// A server hosting one plugin.yaml (`spec` given as YAML lines indented by 2).
fn host(spec: &str, env: Vec<(String, String)>) -> (TestServer, tempfile::TempDir) {
    let config = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        config.path().join("plugin.yaml"),
        format!("apiVersion: argoproj.io/v1alpha1\nkind: ConfigManagementPlugin\nmetadata:\n  name: cmp\nspec:\n{spec}"),
    )
    .expect("write");
    let server = TestServer::start_with(ServerOptions {
        plugin: Some("cmp".into()),
        config_dir: Some(config.path().to_path_buf()),
        env,
        ..Default::default()
    });
    (server, config)
}

/// A repo with `app/cm.yaml` and `app/kustomization.yaml`.
fn repo() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(d.path().join("app")).expect("mkdir");
    std::fs::write(
        d.path().join("app/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\ndata:\n  a: \"on\"\n",
    )
    .expect("write");
    std::fs::write(
        d.path().join("app/kustomization.yaml"),
        "resources: [cm.yaml]\n",
    )
    .expect("write");
    d
}

fn stream(repo: &tempfile::TempDir, plugin_env: &[(&str, &str)]) -> RepoStream {
    support::dir_stream(repo.path(), "app", argo_env("web", "demo", plugin_env))
}

#[tokio::test]
async fn init_and_generate_with_request_env() {
    let (server, _c) = host(
        r#"  init:
    command: [sh, -c]
    args: ["touch init-ran"]
  generate:
    command: [sh, -c]
    args:
      - |
        cat cm.yaml
        test -f init-ran || exit 3
        printf -- '---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: env\ndata:\n  foo: "%s"\n  app: "%s"\n' "$ARGOCD_ENV_FOO" "$ARGOCD_APP_NAME"
"#,
        vec![],
    );
    let r = repo();
    let docs = support::generate(
        &server.socket,
        &stream(&r, &[("FOO", "1; touch /tmp/x")]),
        None,
    )
    .await
    .expect("generate");
    assert_eq!(find(&docs, "ConfigMap", "plain")["data"]["a"], "on");
    let env = find(&docs, "ConfigMap", "env");
    assert_eq!(env["data"]["foo"], "1; touch /tmp/x");
    assert_eq!(env["data"]["app"], "web");
}

#[tokio::test]
async fn failures_carry_the_command_and_stderr() {
    let (server, _c) = host(
        "  generate:\n    command: [sh, -c, 'echo broken >&2; exit 4']\n",
        vec![],
    );
    let r = repo();
    let err = support::generate(&server.socket, &stream(&r, &[]), None)
        .await
        .expect_err("exit 4");
    assert_eq!(err.code(), Code::Unknown, "{err:?}");
    assert!(
        err.message().contains("failed exit status 4: broken"),
        "{err:?}"
    );
}

#[tokio::test]
async fn json_stream_output() {
    let (server, _c) = host(
        "  generate:\n    command: [sh, -c, 'echo ''{\"kind\":\"A\",\"metadata\":{\"name\":\"a\"}}{\"kind\":\"B\",\"metadata\":{\"name\":\"b\"}}''']\n",
        vec![],
    );
    let r = repo();
    let docs = support::generate(&server.socket, &stream(&r, &[]), None)
        .await
        .expect("generate");
    assert_eq!(docs.len(), 2);
}

#[tokio::test]
async fn discovery_rules() {
    let r = repo();
    for (discover, supported) in [
        ("fileName: '*.yaml'", true),
        ("fileName: '*.jsonnet'", false),
        ("find: {glob: '**/cm.yaml'}", true),
        ("find: {glob: '**/*.jsonnet'}", false),
        ("find: {command: [sh, -c, 'ls | grep kustomization']}", true),
        ("find: {command: [sh, -c, 'true']}", false),
    ] {
        let (server, _c) = host(
            &format!("  generate: {{command: [cat, cm.yaml]}}\n  discover:\n    {discover}\n"),
            vec![],
        );
        assert!(
            server
                .client()
                .await
                .check_plugin_configuration(())
                .await
                .expect("check")
                .into_inner()
                .is_discovery_configured
        );
        let resp = server
            .client()
            .await
            .match_repository(futures::stream::iter(stream(&r, &[]).messages()))
            .await
            .expect("match")
            .into_inner();
        assert_eq!(
            (resp.is_supported, resp.is_discovery_enabled),
            (supported, true),
            "{discover}"
        );
    }
    let (server, _c) = host(
        "  generate: {command: [cat, cm.yaml]}\n  discover:\n    find: {command: [sh, -c, 'exit 2']}\n",
        vec![],
    );
    let err = server
        .client()
        .await
        .match_repository(futures::stream::iter(stream(&r, &[]).messages()))
        .await
        .expect_err("a failing find command is an error, as in Argo");
    assert!(err.message().contains("exit status 2"), "{err:?}");
}

#[tokio::test]
async fn dynamic_then_static_parameters() {
    let (server, _c) = host(
        "  generate: {command: [cat, cm.yaml]}\n  parameters:\n    static: [{name: static-one}]\n    dynamic: {command: [echo, '[{\"name\":\"dyn\",\"title\":\"D\",\"collectionType\":\"map\",\"itemType\":\"string\",\"map\":{\"K\":\"v\"}}]']}\n",
        vec![],
    );
    let r = repo();
    let resp = server
        .client()
        .await
        .get_parameters_announcement(futures::stream::iter(stream(&r, &[]).messages()))
        .await
        .expect("params")
        .into_inner();
    let names: Vec<_> = resp
        .parameter_announcements
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["dyn", "static-one"]);
    assert_eq!(
        resp.parameter_announcements[0]
            .map
            .get("K")
            .map(String::as_str),
        Some("v")
    );
    // Go's JSON decoding matches keys case-insensitively: camelCase keys keep their meaning.
    assert_eq!(resp.parameter_announcements[0].collection_type, "map");
    assert_eq!(resp.parameter_announcements[0].item_type, "string");
    let (server, _c) = host(
        "  generate: {command: [cat, cm.yaml]}\n  parameters:\n    dynamic: {command: [echo, '{}']}\n",
        vec![],
    );
    let err = server
        .client()
        .await
        .get_parameters_announcement(futures::stream::iter(stream(&r, &[]).messages()))
        .await
        .expect_err("an object, not an array");
    assert!(
        err.message()
            .contains("error unmarshaling dynamic parameter output"),
        "{err:?}"
    );
}

#[tokio::test]
async fn avp_pipeline_in_a_plugin_yaml() {
    // The shared server's audit log: this test's reads are its own role's.
    let bao = Bao::shared();
    bao.audit_header("x-avp-sidecar-app");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_avp-sidecar"))
        .parent()
        .expect("dir")
        .to_path_buf();
    let tools = support::repo_root().join(".tools/bin");
    let mut env = bao.own_approle("commands-pipeline");
    env.push((
        "PATH".into(),
        format!(
            "{}:{}:{}",
            tools.display(),
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    ));
    let (server, _c) = host(
        "  generate:\n    command: [bash, -c]\n    args: ['set -o pipefail; kustomize build . | avp-sidecar generate -']\n",
        env,
    );
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(d.path().join("app")).expect("mkdir");
    std::fs::write(
        d.path().join("app/kustomization.yaml"),
        "resources: [s.yaml]\n",
    )
    .expect("write");
    std::fs::write(
        d.path().join("app/s.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  p: <path:secret/data/demo/web#password>\n",
    )
    .expect("write");
    let docs = support::generate(
        &server.socket,
        &support::dir_stream(d.path(), "app", argo_env("s", "demo", &[])),
        None,
    )
    .await
    .expect("generate");
    assert_eq!(find(&docs, "Secret", "s")["stringData"]["p"], "s3cr3t-v2");
    // `generate` in the plugin names the Application to Vault's audit log too.
    assert_eq!(
        Bao::audited_header_as(
            &bao.audit_log(),
            "commands-pipeline",
            "secret/data/demo/web",
            "x-avp-sidecar-app"
        ),
        ["default/s"]
    );
}

#[tokio::test]
async fn deadline_stops_a_command_plugin() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let trap = support::repo_root().join("tests/fixtures/tools/sleep-trap");
    let (server, _c) = host(
        &format!("  generate:\n    command: ['{}']\n", trap.display()),
        vec![
            (
                "SLEEP_TRAP_PIDFILE".into(),
                scratch.path().join("pid").display().to_string(),
            ),
            // The trap ignores SIGTERM: SIGKILL follows after 1 s instead of the default 5.
            ("AVP_SIDECAR_KILL_GRACE_SECONDS".into(), "1".into()),
        ],
    );
    let r = repo();
    let err = support::generate(
        &server.socket,
        &stream(&r, &[]),
        Some(std::time::Duration::from_secs(4)),
    )
    .await
    .expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let pgid: i32 = std::fs::read_to_string(scratch.path().join("pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    support::assert_group_gone(pgid, std::time::Duration::from_secs(8)).await;
}
