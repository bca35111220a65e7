//! The happy paths of the CMP protocol against real tools.

use std::time::Duration;

use avp_sidecar::protocol::pb::app_stream_request::Request;
use serde_json::json;

use crate::support::{self, ServerOptions, StreamSpec, TestServer, argo_env, find, fixture};

fn mono(app: &str, plugin_env: &[(&str, &str)]) -> StreamSpec {
    support::dir_stream(&fixture("mono"), app, argo_env("web", "demo", plugin_env))
}

#[tokio::test]
async fn check_plugin_configuration_reports_discovery() {
    let server = TestServer::start();
    let resp = server
        .client()
        .await
        .check_plugin_configuration(())
        .await
        .expect("check")
        .into_inner();
    assert!(
        !resp.is_discovery_configured,
        "the built-in `avp` plugin is name-only"
    );
    assert!(!resp.provide_git_creds);

    let server = TestServer::start_with(ServerOptions {
        plugin: Some("avp-kustomize".into()),
        ..Default::default()
    });
    let resp = server
        .client()
        .await
        .check_plugin_configuration(())
        .await
        .expect("check")
        .into_inner();
    assert!(resp.is_discovery_configured);
}

#[tokio::test]
async fn kustomize_app_with_local_helm_chart() {
    let server = TestServer::start();
    let docs = support::generate(
        &server.socket,
        &mono("apps/kustomize-helm", &[]),
        Some(Duration::from_secs(60)),
    )
    .await
    .expect("generate");
    assert_eq!(docs.len(), 4, "{docs:#?}");
    // From the chart inflated by kustomize.
    let greeting = find(&docs, "ConfigMap", "mini-greeting");
    assert_eq!(greeting["data"]["greeting"], "hello");
    assert_eq!(greeting["metadata"]["namespace"], "demo");
    // Scalar meaning as Go's YAML 1.1 parser reads it.
    let scalars = find(&docs, "ConfigMap", "scalars");
    assert_eq!(
        scalars["data"],
        json!({"quoted_on": "on", "octal_string": "0777", "plain": "hello world"})
    );
    // kustomize (YAML 1.2) re-quotes `yes` in its output, so the repo-server sees a string.
    assert_eq!(find(&docs, "ConfigMap", "typed")["immutable"], json!("yes"));
    let web = find(&docs, "Deployment", "web");
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        json!(80)
    );
    assert!(server.leftover_workdirs().is_empty());
}

#[tokio::test]
async fn kustomize_image_and_repo_annotation_from_plugin_env() {
    let server = TestServer::start();
    let spec = mono(
        "apps/kustomize-helm",
        &[
            ("IMAGE_NAME", "nginx"),
            ("IMAGE_TAG", "1.27.3"),
            ("APP_REPO", "https://github.com/acme/apps"),
        ],
    );
    let docs = support::generate(&server.socket, &spec, None)
        .await
        .expect("generate");
    let web = find(&docs, "Deployment", "web");
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27.3"
    );
    for d in &docs {
        assert_eq!(
            d["metadata"]["annotations"]["github.com/url"], "https://github.com/acme/apps",
            "{d}"
        );
    }
}

/// Values a user enters in the Argo CD UI arrive as `PARAM_<NAME>` and in the
/// `ARGOCD_APP_PARAMETERS` JSON (arrays only there, in order), and win over the plugin env.
#[tokio::test]
async fn ui_parameters_are_read_and_win_over_plugin_env() {
    let server = TestServer::start();
    let with_params = |app: &str, plugin_env: &[(&str, &str)], params: &[(&str, &str)]| {
        let mut env = argo_env("web", "demo", plugin_env);
        env.extend(
            params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        support::dir_stream(&fixture("mono"), app, env)
    };
    let image = |docs: &[serde_json::Value]| {
        find(docs, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]["image"]
            .clone()
    };
    let spec = with_params(
        "apps/kustomize-helm",
        &[("IMAGE_NAME", "nginx"), ("IMAGE_TAG", "from-env")],
        &[
            ("PARAM_IMAGE_TAG", "1.27.4"),
            (
                "ARGOCD_APP_PARAMETERS",
                r#"[{"name":"IMAGE_TAG","string":"1.27.4"}]"#,
            ),
        ],
    );
    let docs = support::generate(&server.socket, &spec, None)
        .await
        .expect("generate");
    assert_eq!(image(&docs), "nginx:1.27.4");
    // Only parameters, no plugin env at all; a value file list as an array parameter.
    let spec = with_params(
        "apps/chart",
        &[],
        &[
            ("PARAM_IMAGE_NAME", "ghcr.io/acme/web"),
            ("PARAM_IMAGE_TAG", "3.0.0"),
            (
                "ARGOCD_APP_PARAMETERS",
                r#"[{"name":"IMAGE_NAME","string":"ghcr.io/acme/web"},{"name":"IMAGE_TAG","string":"3.0.0"},{"name":"HELM_VALUE_FILES","array":["values.yaml"]}]"#,
            ),
            ("PARAM_HELM_VALUE_FILES_0", "values.yaml"),
        ],
    );
    let docs = support::generate(&server.socket, &spec, None)
        .await
        .expect("generate");
    assert_eq!(image(&docs), "ghcr.io/acme/web:3.0.0");
    // A parameter is validated like the plugin env, and the error says where it may come from.
    let spec = with_params(
        "apps/chart",
        &[],
        &[
            ("PARAM_IMAGE_NAME", "nginx"),
            ("PARAM_IMAGE_TAG", "1.0 --post-renderer=x"),
        ],
    );
    let err = support::generate(&server.socket, &spec, None)
        .await
        .expect_err("invalid tag");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("PARAM_IMAGE_TAG"), "{err:?}");
}

#[tokio::test]
async fn helm_chart_with_namespace_kube_version_and_image() {
    let server = TestServer::start();
    let spec = mono(
        "apps/chart",
        &[
            ("IMAGE_NAME", "ghcr.io/acme/web"),
            ("IMAGE_TAG", "2.0.1"),
            ("APP_REPO", "https://github.com/acme/apps"),
        ],
    );
    let docs = support::generate(&server.socket, &spec, None)
        .await
        .expect("generate");
    assert_eq!(docs.len(), 2, "{docs:#?}");
    let deploy = find(&docs, "Deployment", "web");
    assert_eq!(deploy["metadata"]["namespace"], "demo");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/acme/web:2.0.1"
    );
    assert_eq!(
        deploy["metadata"]["annotations"]["github.com/url"],
        "https://github.com/acme/apps"
    );
    let info = find(&docs, "ConfigMap", "web-info");
    assert_eq!(info["data"]["kubeVersion"], "v1.31.0");
    assert_eq!(info["data"]["hasBatch"], "true");
    assert_eq!(
        info["immutable"],
        json!(true),
        "helm output is YAML 1.1 text for Go"
    );
}

/// What AVP users passed through `${ARGOCD_ENV_HELM_ARGS}`, as data: value files from the
/// repository, inline values, a release name.
#[tokio::test]
async fn helm_value_files_inline_values_and_release_name() {
    let server = TestServer::start();
    let repo = support::repo_of(&[
        (
            "chart/Chart.yaml",
            "apiVersion: v2\nname: web\nversion: 0.1.0\n",
        ),
        ("chart/values.yaml", "replicas: 1\nenv: dev\ntier: bronze\n"),
        ("chart/values-prod.yaml", "env: prod\n"),
        ("shared/common.yaml", "env: common\ntier: gold\n"),
        (
            "chart/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  replicas: {{ .Values.replicas | quote }}\n  env: {{ .Values.env }}\n  tier: {{ .Values.tier }}\n",
        ),
    ]);
    let render = |plugin_env: &[(&str, &str)]| {
        support::dir_stream(repo.path(), "chart", argo_env("web", "demo", plugin_env))
    };
    let docs = support::generate(
        &server.socket,
        &render(&[
            ("HELM_VALUE_FILES", "../shared/common.yaml,values-prod.yaml"),
            ("HELM_VALUES", "replicas: 3\n"),
            ("HELM_RELEASE_NAME", "web-prod"),
        ]),
        None,
    )
    .await
    .expect("generate");
    assert_eq!(
        find(&docs, "ConfigMap", "web-prod")["data"],
        json!({"replicas": "3", "env": "prod", "tier": "gold"}),
        "chart values < value files in order < HELM_VALUES"
    );
    // A value file outside the repository would put the sidecar's files into the manifests.
    let err = support::generate(
        &server.socket,
        &render(&[("HELM_VALUE_FILES", "../../../../../../../../etc/passwd")]),
        None,
    )
    .await
    .expect_err("outside");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("not a file inside the repository"),
        "{err:?}"
    );
    assert!(!err.message().contains("root:"), "{err:?}");
}

#[tokio::test]
async fn symlinked_app_dir_inside_repo() {
    let server = TestServer::start();
    let docs = support::generate(&server.socket, &mono("apps/link-to-chart", &[]), None)
        .await
        .expect("generate");
    assert_eq!(
        find(&docs, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.25"
    );
}

#[tokio::test]
async fn chunk_sizes_from_one_byte_to_four_mib() {
    let server = TestServer::start();
    for chunk in [1, 7, 1024, 4 << 20] {
        let mut spec = mono("apps/chart", &[]);
        spec.chunk = chunk;
        let docs = support::generate(&server.socket, &spec, None)
            .await
            .unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
        assert_eq!(docs.len(), 2);
    }
}

#[tokio::test]
async fn match_repository_per_plugin() {
    // `--discover all`: every kustomization / chart (the fixture has no placeholders; the
    // default `placeholders` mode is tested in `discovery.rs`).
    let all = || vec!["--discover".to_owned(), "all".to_owned()];
    let kustomize = TestServer::start_with(ServerOptions {
        plugin: Some("avp-kustomize".into()),
        args: all(),
        ..Default::default()
    });
    let helm = TestServer::start_with(ServerOptions {
        plugin: Some("avp-helm".into()),
        args: all(),
        ..Default::default()
    });
    let named = TestServer::start();
    for (server, app, supported, enabled) in [
        (&kustomize, "apps/kustomize-helm", true, true),
        (&kustomize, "apps/chart", false, true),
        (&helm, "apps/chart", true, true),
        (&helm, "apps/plain", false, true),
        (&named, "apps/chart", false, false),
    ] {
        let spec = mono(app, &[]);
        let resp = server
            .client()
            .await
            .match_repository(futures::stream::iter(spec.messages()))
            .await
            .expect("match")
            .into_inner();
        assert_eq!(
            (resp.is_supported, resp.is_discovery_enabled),
            (supported, enabled),
            "{app}"
        );
    }
}

#[tokio::test]
async fn parameters_announcement_lists_plugin_env() {
    let server = TestServer::start_with(ServerOptions {
        plugin: Some("avp-kustomize".into()),
        ..Default::default()
    });
    let spec = mono("apps/kustomize-helm", &[]);
    let resp = server
        .client()
        .await
        .get_parameters_announcement(futures::stream::iter(spec.messages()))
        .await
        .expect("params")
        .into_inner();
    let names: Vec<_> = resp
        .parameter_announcements
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["IMAGE_NAME", "IMAGE_TAG", "APP_REPO", "AVP_SECRET"]);
}

#[tokio::test]
async fn concurrent_requests_are_isolated() {
    let server = TestServer::start();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let socket = server.socket.clone();
        tasks.push(tokio::spawn(async move {
            let tag = format!("1.0.{i}");
            let spec = mono("apps/chart", &[("IMAGE_NAME", "nginx"), ("IMAGE_TAG", &tag)]);
            let docs = support::generate(&socket, &spec, None).await.expect("generate");
            assert_eq!(
                find(&docs, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]["image"],
                format!("nginx:{tag}")
            );
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert!(server.leftover_workdirs().is_empty());
}

/// One archive, one extraction: requests for it share the tree; each request's kustomization
/// edit (`APP_REPO`) lives in its own copy, so no request sees another's; nothing is left
/// behind after shutdown. (Multi-threaded: `terminate` blocks this thread while the client's
/// connection task must run for the graceful shutdown to finish.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_share_one_tree_and_keep_their_edits_private() {
    let mut server = TestServer::start();
    let repo = support::repo_of(&[
        ("app/kustomization.yaml", "resources: [cm.yaml]\n"),
        (
            "app/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n",
        ),
    ]);
    let annotation = |docs: &[serde_json::Value]| {
        find(docs, "ConfigMap", "cm")["metadata"]["annotations"]["github.com/url"].clone()
    };
    let mut tasks = Vec::new();
    for i in 0..6 {
        let socket = server.socket.clone();
        let dir = repo.path().to_path_buf();
        tasks.push(tokio::spawn(async move {
            let url = format!("https://example.com/{i}");
            // Distinct app names: no render-cache hits, every request renders.
            let spec = support::dir_stream(
                &dir,
                "app",
                argo_env(&format!("web{i}"), "demo", &[("APP_REPO", &url)]),
            );
            let docs = support::generate(&socket, &spec, None)
                .await
                .expect("generate");
            (url, docs)
        }));
    }
    for t in tasks {
        let (url, docs) = t.await.expect("task");
        assert_eq!(annotation(&docs), json!(url));
    }
    let plain = support::dir_stream(repo.path(), "app", argo_env("plain", "demo", &[]));
    let docs = support::generate(&server.socket, &plain, None)
        .await
        .expect("generate");
    assert_eq!(annotation(&docs), serde_json::Value::Null);
    let trees_dir = server.work_root.with_file_name("_avp_trees");
    let trees: Vec<_> = std::fs::read_dir(&trees_dir)
        .expect("trees")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(trees.len(), 1, "{trees:?}");
    assert_eq!(
        std::fs::read_to_string(trees[0].join("app/kustomization.yaml")).expect("read"),
        "resources: [cm.yaml]\n"
    );
    assert!(server.leftover_workdirs().is_empty());
    assert!(server.terminate().success());
    assert!(!trees_dir.exists(), "trees left after shutdown");
    assert!(!server.work_root.with_file_name("_avp_trash").exists());
}

/// More archives than the tree cache keeps, concurrently: every request still renders (a
/// tree in use is never removed under it) and the cache ends within its bound.
#[tokio::test]
async fn tree_eviction_under_load() {
    let server = TestServer::start_with(support::ServerOptions {
        args: vec!["--tree-cache-entries".into(), "1".into()],
        ..Default::default()
    });
    let repos: Vec<_> = (0..3)
        .map(|i| {
            support::repo_of(
                &[
                    (
                        "app/kustomization.yaml",
                        "resources: [cm.yaml]\n".to_owned(),
                    ),
                    (
                        "app/cm.yaml",
                        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm{i}\n"),
                    ),
                ]
                .iter()
                .map(|(a, b)| (*a, b.as_str()))
                .collect::<Vec<_>>(),
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for round in 0..3 {
        for (i, repo) in repos.iter().enumerate() {
            let socket = server.socket.clone();
            let spec = support::dir_stream(
                repo.path(),
                "app",
                argo_env(&format!("a{round}-{i}"), "demo", &[]),
            );
            tasks.push(tokio::spawn(async move {
                let docs = support::generate(&socket, &spec, None)
                    .await
                    .expect("generate");
                assert_eq!(docs[0]["metadata"]["name"], format!("cm{i}"));
            }));
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
    let trees = std::fs::read_dir(server.work_root.with_file_name("_avp_trees"))
        .expect("trees")
        .count();
    assert!(trees <= 1, "{trees} trees kept with --tree-cache-entries 1");
    assert!(server.leftover_workdirs().is_empty());
}

#[tokio::test]
async fn sigterm_removes_socket_and_exits_cleanly() {
    let mut server = TestServer::start();
    let status = server.terminate();
    assert!(status.success(), "{status}");
    assert!(!server.socket.exists(), "socket file left behind");
}

#[tokio::test]
async fn stale_socket_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("avp.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind stale"));
    assert!(
        std::os::unix::net::UnixStream::connect(&path).is_err(),
        "stale socket refuses connections"
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_avp-sidecar"))
        .args(["serve", "--socket"])
        .arg(&path)
        .arg("--kustomize")
        .arg(support::kustomize())
        .arg("--helm")
        .arg(support::tool("helm"))
        .arg("--workdir")
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    support::eventually(
        Duration::from_secs(20),
        "the server to replace the stale socket",
        || std::os::unix::net::UnixStream::connect(&path).is_ok(),
    );
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    assert!(child.wait().expect("wait").success());
}

#[tokio::test]
async fn metadata_only_request_for_chunk_layout() {
    // The metadata message alone (zero chunks) is an empty archive: a clear error, not a hang.
    let server = TestServer::start();
    let spec = mono("apps/chart", &[]);
    let msgs: Vec<_> = spec
        .messages()
        .into_iter()
        .filter(|m| matches!(m.request, Some(Request::Metadata(_))))
        .collect();
    let err = server
        .client()
        .await
        .generate_manifest(futures::stream::iter(msgs))
        .await
        .expect_err("no archive");
    assert!(err.message().contains("checksum"), "{err:?}");
}

#[tokio::test]
async fn one_process_serves_every_plugin_on_its_own_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("mkdir");
    std::fs::write(
        config.join("custom.yaml"),
        "apiVersion: argoproj.io/v1alpha1\nkind: ConfigManagementPlugin\nmetadata:\n  name: custom\nspec:\n  version: v1.2\n  avp:\n    render: helm\n    discover: true\n",
    )
    .expect("write");
    let sockets = dir.path().join("plugins");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_avp-sidecar"))
        .arg("serve")
        .arg("--config-dir")
        .arg(&config)
        .arg("--plugin")
        .arg("custom")
        .arg("--plugin")
        .arg("avp-kustomize")
        .arg("--discover")
        .arg("all")
        .arg("--workdir")
        .arg(dir.path())
        .arg("--kustomize")
        .arg(support::kustomize())
        .arg("--helm")
        .arg(support::tool("helm"))
        .env("ARGOCD_PLUGINSOCKFILEPATH", &sockets)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let expected = [
        sockets.join("custom-v1.2.sock"),
        sockets.join("avp-kustomize.sock"),
    ];
    support::eventually(Duration::from_secs(20), "both sockets", || {
        expected
            .iter()
            .all(|s| std::os::unix::net::UnixStream::connect(s).is_ok())
    });
    for (socket, app, supported) in [
        (&expected[0], "apps/chart", true),
        (&expected[1], "apps/chart", false),
    ] {
        let resp = support::connect(socket)
            .await
            .match_repository(futures::stream::iter(mono(app, &[]).messages()))
            .await
            .expect("match")
            .into_inner();
        assert_eq!(resp.is_supported, supported, "{}", socket.display());
    }
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    // Waited for off this thread: the drain waits for our client connections to close, which
    // their tasks on this (current-thread) runtime do only while it is free to run them.
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join");
    assert!(status.expect("wait").success());
    assert!(
        expected.iter().all(|s| !s.exists()),
        "sockets removed on SIGTERM"
    );
}

#[tokio::test]
async fn metrics_and_probe_endpoints() {
    let (server, port) = support::metrics_server();
    support::generate(&server.socket, &mono("apps/chart", &[]), None)
        .await
        .expect("generate");
    let get = |path: &str| support::http_get(port, path);
    let metrics = get("/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let ok = [
        ("rpc", "GenerateManifest"),
        ("code", "OK"),
        ("reason", "ok"),
    ];
    assert_eq!(
        support::counter_with(port, "requests_total", &ok),
        1,
        "{metrics}"
    );
    assert_eq!(support::counter(port, "requests_total"), 1, "{metrics}");
    let helm = [("tool", "helm"), ("result", "ok")];
    assert_eq!(
        support::counter_with(port, "tool_runs_total", &helm),
        1,
        "{metrics}"
    );
    assert_eq!(support::counter(port, "tool_runs_total"), 1, "{metrics}");
    assert_eq!(support::counter(port, "requests_in_flight"), 0, "{metrics}");
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    assert!(get("/readyz").starts_with("HTTP/1.1 200"));
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
}

/// argocd-vault-plugin's documented plugin names are served as aliases: Applications written
/// for AVP's sidecar render unchanged, `HELM_ARGS` read as data.
#[tokio::test]
async fn avp_plugin_names_render() {
    let server_for = |plugin: &str| {
        TestServer::start_with(ServerOptions {
            plugin: Some(plugin.to_owned()),
            ..Default::default()
        })
    };
    let kustomize = server_for("argocd-vault-plugin-kustomize");
    let spec = mono(
        "apps/kustomize-helm",
        &[("IMAGE_NAME", "nginx"), ("IMAGE_TAG", "1.27.3")],
    );
    let docs = support::generate(&kustomize.socket, &spec, None)
        .await
        .expect("kustomize alias");
    assert_eq!(
        find(&docs, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27.3"
    );

    let repo = support::repo_of(&[
        (
            "chart/Chart.yaml",
            "apiVersion: v2\nname: web\nversion: 0.1.0\n",
        ),
        ("chart/values.yaml", "env: dev\ntier: bronze\nreplicas: 1\n"),
        ("chart/values-prod.yaml", "env: prod\n"),
        (
            "chart/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  env: {{ .Values.env }}\n  tier: {{ .Values.tier }}\n  replicas: {{ .Values.replicas | quote }}\n",
        ),
        (
            "plain/a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n",
        ),
        (
            "plain/sub/c.json",
            "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"c\"}}",
        ),
    ]);
    let helm = server_for("argocd-vault-plugin-helm");
    let render = |args: &str| {
        support::dir_stream(
            repo.path(),
            "chart",
            argo_env("web", "demo", &[("HELM_ARGS", args)]),
        )
    };
    let docs = support::generate(
        &helm.socket,
        &render("-f values-prod.yaml --set tier=gold,replicas=3 --include-crds"),
        None,
    )
    .await
    .expect("helm alias");
    assert_eq!(
        find(&docs, "ConfigMap", "web")["data"],
        json!({"env": "prod", "tier": "gold", "replicas": "3"})
    );
    let err = support::generate(&helm.socket, &render("--post-renderer /bin/sh"), None)
        .await
        .expect_err("not a safe flag");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("\"--post-renderer\" is not supported"),
        "{err:?}"
    );

    let plain = server_for("argocd-vault-plugin");
    let spec = support::dir_stream(repo.path(), "plain", argo_env("web", "demo", &[]));
    let docs = support::generate(&plain.socket, &spec, None)
        .await
        .expect("plain alias");
    let names: Vec<&str> = docs
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
}

/// The repo-server's sequence on one connection (CheckPluginConfiguration, MatchRepository when
/// discovery is configured, CheckPluginConfiguration, GenerateManifest) with the archive in Go
/// `files.Tgz`'s layout: a `.` root entry, directories without trailing slashes, `.git` in.
#[tokio::test]
async fn argo_call_sequence_with_go_tgz_layout() {
    use crate::support::repotar::{Entry, tgz_entries};
    use avp_sidecar::protocol::client::{RepoStream, generate_like_argo};

    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  k: v\n";
    let repo = support::kustomize_app(&[("cm.yaml", cm)]);
    std::fs::create_dir_all(repo.path().join(".git/refs")).expect("mkdir");
    std::fs::write(repo.path().join(".git/HEAD"), "ref: refs/heads/main\n").expect("write");
    let from_dir = support::dir_stream(repo.path(), "app", argo_env("c", "demo", &[]));
    // The same layout, written entry by entry (no `./` prefixes, no trailing slashes).
    let kustomization = std::fs::read(repo.path().join("app/kustomization.yaml")).expect("read");
    let by_hand = RepoStream {
        archive: tgz_entries(&[
            Entry::Dir("."),
            Entry::Dir(".git"),
            Entry::File(".git/HEAD", b"ref: refs/heads/main\n"),
            Entry::Dir(".git/refs"),
            Entry::Dir("app"),
            Entry::File("app/cm.yaml", cm.as_bytes()),
            Entry::File("app/kustomization.yaml", &kustomization),
        ]),
        ..from_dir.clone()
    };
    for (plugin, discovery) in [(Some("avp-kustomize"), true), (None, false)] {
        let server = TestServer::start_with(ServerOptions {
            plugin: plugin.map(str::to_owned),
            ..Default::default()
        });
        for spec in [&from_dir, &by_hand] {
            let mut client = server.client().await;
            let call = generate_like_argo(&mut client, spec, Some(Duration::from_secs(60)))
                .await
                .unwrap_or_else(|e| panic!("{plugin:?}: {e}\n{}", server.log()));
            assert_eq!(call.is_discovery_configured, discovery);
            // A plain app (no placeholders) is not claimed by discovery, yet renders by name.
            assert_eq!(call.is_supported, discovery.then_some(false));
            let docs: Vec<serde_json::Value> = call
                .manifests
                .iter()
                .map(|m| serde_json::from_str(m).expect("json"))
                .collect();
            assert_eq!(find(&docs, "ConfigMap", "c")["data"]["k"], "v");
        }
        assert!(server.leftover_workdirs().is_empty());
    }
}
