//! Chart dependencies fetched inside the sandbox (issue 17), against real components on
//! loopback only: a chart repository (`helm package` + `helm repo index`, served by
//! `support::charts::StaticServer`) reached as `charts.test` through the sidecar's fetch
//! proxy (`--chart-fetch-resolve`, tests only; loopback allowed with `--chart-fetch-allow`).
//! Renders are compared with `helm dependency build && helm template` run by hand.

use std::path::Path;
use std::time::Duration;

use tonic::Code;

use crate::support::charts::{
    StaticServer, by_hand_proxy, dependency, helm, helm_blocking, package_repo, write_chart,
};
use crate::support::registry::Registry;
use crate::support::{self, ServerOptions, TestServer, argo_env};

/// A chart repository with `redis` 1.2.3 and 1.3.0 and `common` 2.0.0.
fn chart_repo() -> (tempfile::TempDir, StaticServer) {
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src");
    let mut charts = Vec::new();
    for (name, version) in [("redis", "1.2.3"), ("redis", "1.3.0"), ("common", "2.0.0")] {
        let c = src.join(format!("{name}-{version}/{name}"));
        write_chart(&c, name, version, "");
        charts.push(c);
    }
    let out = dir.path().join("repo");
    package_repo(&charts, &out);
    let server = StaticServer::start(&out, None);
    (dir, server)
}

/// A sidecar that may fetch from loopback ports `ports` under the name `charts.test`.
fn fetching_server(ports: &[u16], extra: &[&str]) -> TestServer {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mut args = vec![
        "--chart-fetch-allow".to_owned(),
        "127.0.0.0/8".to_owned(),
        "--chart-fetch-resolve".to_owned(),
        "charts.test=127.0.0.1".to_owned(),
        "--chart-fetch-ports".to_owned(),
        ports.join(","),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    TestServer::start_with(ServerOptions {
        args,
        ..Default::default()
    })
}

/// A repository whose `app/` is chart `web` 1.0.0 depending on `redis` `version` from `url`.
fn web_with_redis(version: &str, url: &str) -> tempfile::TempDir {
    let repo = support::repo_of(&[]);
    write_chart(
        &repo.path().join("app"),
        "web",
        "1.0.0",
        &deps_yaml(&[("redis", version, url, None)]),
    );
    repo
}

fn deps_yaml(items: &[(&str, &str, &str, Option<&str>)]) -> String {
    let mut out = "dependencies:\n".to_owned();
    for (name, version, repo, condition) in items {
        out.push_str(&format!(
            "- name: {name}\n  version: \"{version}\"\n  repository: {repo}\n"
        ));
        if let Some(c) = condition {
            out.push_str(&format!("  condition: {c}\n"));
        }
    }
    out
}

/// `helm dependency build && helm template` by hand on a copy of `repo`'s `app/` (through a
/// proxy that only resolves `charts.test`).
async fn by_hand(repo: &Path, port: u16) -> Vec<serde_json::Value> {
    by_hand_with(repo, port, Vec::new()).await
}

/// [`by_hand`] with `env` added to `helm dependency build` (CA, registry config).
async fn by_hand_with(
    repo: &Path,
    port: u16,
    mut env: Vec<(String, String)>,
) -> Vec<serde_json::Value> {
    let copy = tempfile::tempdir().expect("tmp");
    copy_dir(repo, copy.path());
    let chart = copy.path().join("app");
    let (_proxy, session) = by_hand_proxy(port).await;
    env.push(("HTTPS_PROXY".to_owned(), session.url()));
    env.push(("HTTP_PROXY".to_owned(), session.url()));
    helm_blocking(
        vec![
            "dependency".into(),
            "build".into(),
            chart.clone().into_os_string(),
        ],
        env,
    )
    .await;
    let out = helm(&[
        "template".as_ref(),
        "web".as_ref(),
        chart.as_os_str(),
        "--namespace".as_ref(),
        "demo".as_ref(),
        "--api-versions".as_ref(),
        "v1".as_ref(),
        "--api-versions".as_ref(),
        "apps/v1".as_ref(),
        "--api-versions".as_ref(),
        "batch/v1".as_ref(),
        "--kube-version".as_ref(),
        "1.31.0".as_ref(),
        "--include-crds".as_ref(),
    ]);
    let budget = avp_sidecar::yaml::AliasBudget::for_output(out.len());
    avp_sidecar::pipeline::manifest::split_tool_output(&out, &budget).expect("helm output")
}

/// Adds the `Chart.lock` helm writes for `app/` (`helm dependency update` by hand on a copy).
async fn write_lock(repo: &Path, port: u16) {
    let copy = tempfile::tempdir().expect("tmp");
    copy_dir(repo, copy.path());
    let chart = copy.path().join("app");
    let (_proxy, session) = by_hand_proxy(port).await;
    dependency("update", chart.clone(), session.url()).await;
    std::fs::copy(chart.join("Chart.lock"), repo.join("app/Chart.lock")).expect("lock");
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).expect("copy");
        }
    }
}

fn sorted(mut docs: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    docs.sort_by_key(|d| d["metadata"]["name"].to_string());
    docs
}

#[tokio::test]
async fn remote_file_and_disabled_dependencies_render_like_helm_by_hand() {
    let (_charts, repo_server) = chart_repo();
    let port = repo_server.port;
    let url = format!("http://charts.test:{port}");
    let repo = support::repo_of(&[]);
    write_chart(&repo.path().join("lib"), "lib", "0.1.0", "");
    write_chart(
        &repo.path().join("app"),
        "web",
        "1.0.0",
        &deps_yaml(&[
            ("redis", "~1.2.0", &url, None),
            ("common", "2.0.0", &url, Some("common.enabled")),
            ("lib", "0.1.0", "file://../lib", None),
        ]),
    );
    std::fs::write(
        repo.path().join("app/values.yaml"),
        "greeting: hello\ncommon:\n  enabled: false\n",
    )
    .expect("write");
    let server = fetching_server(&[port], &[]);
    let docs = support::render_app(&server, &repo, argo_env("web", "demo", &[]))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", server.log()));
    let names: Vec<&str> = docs
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert!(
        names.contains(&"web-redis") && names.contains(&"web-lib"),
        "{names:?}"
    );
    // The disabled dependency was still resolved (helm requires it) but renders nothing.
    assert!(!names.contains(&"web-common"), "{names:?}");
    assert_eq!(repo_server.hits("/common-2.0.0.tgz"), 1);
    assert_eq!(sorted(docs), sorted(by_hand(repo.path(), port).await));
    // `~1.2.0` took the newest 1.2.x; nothing of 1.3.0 was fetched.
    assert_eq!(repo_server.hits("/redis-1.3.0.tgz"), 0);
    assert!(server.leftover_workdirs().is_empty());
}

#[tokio::test]
async fn file_dependency_outside_the_repository_is_refused() {
    let outside = tempfile::tempdir().expect("tmp");
    write_chart(&outside.path().join("lib"), "lib", "0.1.0", "");
    let repo = support::repo_of(&[]);
    let rel = format!("file://{}", outside.path().join("lib").display());
    write_chart(
        &repo.path().join("app"),
        "web",
        "1.0.0",
        &deps_yaml(&[
            ("lib", "0.1.0", &rel, None),
            ("up", "0.1.0", "file://../../..", None),
        ]),
    );
    let server = fetching_server(&[443], &[]);
    let err = support::render_app(&server, &repo, argo_env("web", "demo", &[]))
        .await
        .expect_err("outside");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("chart web (app): dependency lib 0.1.0")
            && err
                .message()
                .contains("the file:// path leaves the repository"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn refused_destinations_and_missing_charts_name_the_dependency() {
    let (_charts, repo_server) = chart_repo();
    let port = repo_server.port;
    // Loopback without the operator's allowance: refused by the proxy.
    let strict = TestServer::start_with(ServerOptions {
        args: vec![
            "--chart-fetch-resolve".to_owned(),
            "charts.test=127.0.0.1".to_owned(),
            "--chart-fetch-ports".to_owned(),
            port.to_string(),
        ],
        ..Default::default()
    });
    let url = format!("http://charts.test:{port}");
    let repo = web_with_redis("1.2.3", &url);
    let err = support::render_app(&strict, &repo, argo_env("web", "demo", &[]))
        .await
        .expect_err("loopback refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains(&format!(
            "chart web (app): dependency redis 1.2.3 (repository {url}): denied: charts.test (127.0.0.1) is a loopback address"
        )),
        "{}",
        err.message()
    );
    assert_eq!(repo_server.hits("/index.yaml"), 0);
    // A port the operator did not allow.
    let other_port = fetching_server(&[443], &[]);
    let err = support::render_app(&other_port, &repo, argo_env("web", "demo", &[]))
        .await
        .expect_err("port refused");
    assert!(
        err.message().contains(&format!(
            "denied: port {port} of charts.test is not allowed"
        )),
        "{}",
        err.message()
    );
    // Fetching off: the dependency must be vendored, and the error says so.
    let off = TestServer::start_with(ServerOptions {
        args: vec!["--chart-fetch".to_owned(), "false".to_owned()],
        ..Default::default()
    });
    let err = support::render_app(&off, &repo, argo_env("web", "demo", &[]))
        .await
        .expect_err("fetching off");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("dependency redis 1.2.3 (repository http://charts.test:")
            && err
                .message()
                .contains("chart fetching is off (--chart-fetch false); vendor"),
        "{}",
        err.message()
    );
    // Fetching off still packages `file://` dependencies (no network needed).
    let local = support::repo_of(&[]);
    write_chart(&local.path().join("lib"), "lib", "0.1.0", "");
    write_chart(
        &local.path().join("app"),
        "web",
        "1.0.0",
        &deps_yaml(&[("lib", "0.1.0", "file://../lib", None)]),
    );
    let docs = support::render_app(&off, &local, argo_env("web", "demo", &[]))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", off.log()));
    support::find(&docs, "ConfigMap", "web-lib");
    // A Chart.lock that does not match Chart.yaml.
    std::fs::write(
        repo.path().join("app/Chart.lock"),
        format!(
            "dependencies:\n- name: redis\n  repository: {url}\n  version: 1.2.3\ndigest: sha256:0000\ngenerated: \"2026-01-01T00:00:00Z\"\n"
        ),
    )
    .expect("lock");
    let server = fetching_server(&[port], &[]);
    let err = support::render_app(&server, &repo, argo_env("web", "demo", &[]))
        .await
        .expect_err("out of sync");
    assert!(
        err.message()
            .contains("Chart.lock is out of sync with Chart.yaml"),
        "{}",
        err.message()
    );
    // A version the repository does not have.
    let server = fetching_server(&[port], &[]);
    let repo = web_with_redis("9.9.9", &url);
    let err = support::render_app(&server, &repo, argo_env("web", "demo", &[]))
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound, "{err:?}\n{}", server.log());
    assert!(
        err.message()
            .contains("dependency redis 9.9.9 (repository http://charts.test:")
            && err.message().contains("not found in the repository"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_repository_nobody_listens_at_is_unavailable_naming_the_dependency() {
    // Port 1 (tcpmux): nothing listens there, unlike a port freed a moment ago, which another
    // test's server may have taken meanwhile.
    let port = 1;
    let url = format!("http://charts.test:{port}");
    let repo = web_with_redis("1.2.3", &url);
    let server = fetching_server(&[port], &[]);
    let err = support::render_app(&server, &repo, argo_env("web", "demo", &[]))
        .await
        .expect_err("nobody listens");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}\n{}", server.log());
    assert!(
        err.message().contains(&format!(
            "chart web (app): dependency redis 1.2.3 (repository {url}): the repository's index could not be downloaded"
        )),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn wrong_credentials_give_a_clear_error_and_the_operators_work() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = dir.path().join("src/redis");
    write_chart(&c, "redis", "1.2.3", "");
    let out = dir.path().join("repo");
    package_repo(&[c], &out);
    let repo_server = StaticServer::start(&out, Some(("reader", "s3cret")));
    let port = repo_server.port;
    let url = format!("http://charts.test:{port}");
    let repositories = |password: &str| {
        let file = dir.path().join(format!("repositories-{password}.yaml"));
        std::fs::write(
            &file,
            format!(
                "apiVersion: \"\"\ngenerated: \"0001-01-01T00:00:00Z\"\nrepositories:\n- name: private\n  url: {url}\n  username: reader\n  password: {password}\n"
            ),
        )
        .expect("write");
        file.display().to_string()
    };
    let repo = web_with_redis("1.2.3", &url);
    let wrong = repositories("wrong");
    // Mounted like a Kubernetes Secret: a symlink that is swapped when the Secret changes.
    let link = dir.path().join("repositories.yaml");
    std::os::unix::fs::symlink(&wrong, &link).expect("symlink");
    let link_arg = link.display().to_string();
    let server = fetching_server(&[port], &["--helm-repositories", &link_arg]);
    let err = support::render_app(&server, &repo, argo_env("web", "demo", &[]))
        .await
        .expect_err("wrong password");
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "{err:?}\n{}",
        server.log()
    );
    assert!(
        err.message().contains("dependency redis 1.2.3")
            && err.message().contains("authentication failed"),
        "{}",
        err.message()
    );
    assert!(
        !err.message().contains("secret-body-text"),
        "{}",
        err.message()
    );
    // The Secret is fixed: the next render uses it, without a restart.
    let right = repositories("s3cret");
    let swap = dir.path().join("repositories.yaml.new");
    std::os::unix::fs::symlink(&right, &swap).expect("symlink");
    std::fs::rename(&swap, &link).expect("swap");
    // Nothing in the request configures fetching: neither raw names nor plugin env or
    // parameters (the wrong file, another proxy) take effect.
    let mut env = argo_env(
        "web",
        "demo",
        &[
            ("HELM_REPOSITORY_CONFIG", wrong.as_str()),
            ("HTTPS_PROXY", "http://127.0.0.1:1"),
        ],
    );
    for (k, v) in [
        ("HELM_REPOSITORY_CONFIG", wrong.as_str()),
        ("HTTP_PROXY", "http://127.0.0.1:1"),
        ("AVP_SIDECAR_HELM_REPOSITORIES", wrong.as_str()),
        ("PARAM_HELM_REPOSITORY_CONFIG", wrong.as_str()),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    let docs = support::render_app(&server, &repo, env)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", server.log()));
    support::find(&docs, "ConfigMap", "web-redis");
}

#[tokio::test]
async fn concurrent_renders_share_one_download_and_pinned_renders_are_cached() {
    let (_charts, repo_server) = chart_repo();
    let port = repo_server.port;
    let url = format!("http://charts.test:{port}");
    let metrics = support::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics}");
    let server = fetching_server(&[port], &["--metrics-addr", &metrics_addr]);
    // Pinned: exact version and a Chart.lock (made by helm by hand).
    let repo = web_with_redis("1.2.3", &url);
    write_lock(repo.path(), port).await;
    let before = repo_server.hits("/redis-1.2.3.tgz");
    // Ten renders of ten apps (different archives, so no render-cache hits) at once.
    let mut tasks = Vec::new();
    for i in 0..10 {
        std::fs::write(
            repo.path().join("app/templates/extra.yaml"),
            format!("# {i}\n"),
        )
        .expect("write");
        let spec = support::dir_stream(repo.path(), "app", argo_env("web", "demo", &[]));
        let socket = server.socket.clone();
        tasks.push(tokio::spawn(async move {
            support::generate(&socket, &spec, Some(Duration::from_secs(60))).await
        }));
    }
    for t in tasks {
        let docs = t
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("{e:?}\n{}", server.log()));
        support::find(&docs, "ConfigMap", "web-redis");
    }
    assert_eq!(
        repo_server.hits("/redis-1.2.3.tgz") - before,
        1,
        "{}",
        server.log()
    );
    // One helm run fetched it; the nine others were served by the dependency cache.
    assert_eq!(
        support::counter(metrics, "chart_dependency_builds_total"),
        1
    );
    assert_eq!(support::counter(metrics, "chart_fetches_total"), 1);
    assert_eq!(support::counter(metrics, "chart_cache_hits_total"), 9);
    // The same request again is a render-cache hit: pinned renders are cached.
    let spec = support::dir_stream(repo.path(), "app", argo_env("web", "demo", &[]));
    let log_before = server.log().matches("render_cache_hit=true").count();
    support::generate(&server.socket, &spec, Some(Duration::from_secs(60)))
        .await
        .expect("again");
    assert_eq!(
        server.log().matches("render_cache_hit=true").count(),
        log_before + 1,
        "pinned render served from the render cache"
    );

    // Floating (a range): never served from the render cache, so a Hard Refresh sees a new
    // upstream version.
    let floating = web_with_redis(">=1.0.0", &url);
    let spec = support::dir_stream(floating.path(), "app", argo_env("web", "demo", &[]));
    for _ in 0..2 {
        let docs = support::generate(&server.socket, &spec, Some(Duration::from_secs(60)))
            .await
            .expect("floating");
        assert_eq!(
            support::find(&docs, "ConfigMap", "web-redis")["data"]["chart"],
            "redis-1.3.0"
        );
    }
    assert_eq!(
        repo_server.hits("/redis-1.3.0.tgz"),
        2,
        "fetched on every render"
    );
}

#[tokio::test]
async fn oci_dependencies_with_basic_auth_and_a_private_ca() {
    let registry = Registry::start(Some(("puller", "p4ss")));
    let port = registry.port;
    let config = registry.config("puller", "p4ss");
    let ca = registry.ca.display().to_string();
    // Push redis 1.2.3 by hand (through a proxy that only resolves charts.test).
    let src = tempfile::tempdir().expect("tmp");
    write_chart(&src.path().join("redis"), "redis", "1.2.3", "");
    helm(&[
        "package".as_ref(),
        src.path().join("redis").as_os_str(),
        "-d".as_ref(),
        src.path().as_os_str(),
    ]);
    let creds = vec![
        ("SSL_CERT_FILE".to_owned(), ca.clone()),
        (
            "HELM_REGISTRY_CONFIG".to_owned(),
            config.display().to_string(),
        ),
    ];
    {
        let (_proxy, session) = by_hand_proxy(port).await;
        let mut env = creds.clone();
        env.push(("HTTPS_PROXY".to_owned(), session.url()));
        helm_blocking(
            vec![
                "push".into(),
                src.path().join("redis-1.2.3.tgz").into_os_string(),
                format!("oci://charts.test:{port}/charts").into(),
            ],
            env,
        )
        .await;
    }
    let repo = support::repo_of(&[]);
    write_chart(
        &repo.path().join("app"),
        "web",
        "1.0.0",
        &deps_yaml(&[(
            "redis",
            "1.2.3",
            &format!("oci://charts.test:{port}/charts"),
            None,
        )]),
    );
    let config_arg = config.display().to_string();
    let server = fetching_server(
        &[port],
        &[
            "--helm-registry-config",
            &config_arg,
            "--chart-ca-bundle",
            &ca,
        ],
    );
    let docs = support::render_app(&server, &repo, argo_env("web", "demo", &[]))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", server.log()));
    assert_eq!(
        sorted(docs),
        sorted(by_hand_with(repo.path(), port, creds).await)
    );

    // kustomize `helmCharts` from the same registry, through the gate and the proxy.
    let kustomized = support::repo_of(&[(
        "app/kustomization.yaml",
        &format!(
            "helmCharts:\n- name: redis\n  repo: oci://charts.test:{port}/charts\n  version: 1.2.3\n  releaseName: web\n  namespace: demo\n"
        ),
    )]);
    let docs = support::render_app(&server, &kustomized, argo_env("web", "demo", &[]))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", server.log()));
    support::find(&docs, "ConfigMap", "web-redis");

    // Wrong credentials, then no CA: clear errors naming the dependency.
    let wrong = registry.config("puller", "wrong").display().to_string();
    for (args, cause) in [
        (
            vec!["--helm-registry-config", &wrong, "--chart-ca-bundle", &ca],
            "authentication failed",
        ),
        (
            vec!["--helm-registry-config", &config_arg],
            "TLS verification failed",
        ),
    ] {
        let server = fetching_server(&[port], &args);
        let err = support::render_app(&server, &repo, argo_env("web", "demo", &[]))
            .await
            .expect_err(cause);
        assert!(
            err.message().contains(&format!(
                "chart web (app): dependency redis 1.2.3 (repository oci://charts.test:{port}/charts): {cause}"
            )),
            "{}\n{}",
            err.message(),
            server.log()
        );
    }
}

#[tokio::test]
async fn kustomize_remote_helm_charts_are_pulled_through_the_gate_and_the_proxy() {
    let (_charts, repo_server) = chart_repo();
    let port = repo_server.port;
    let kustomization = format!(
        "helmCharts:\n- name: redis\n  repo: http://charts.test:{port}\n  version: 1.2.3\n  releaseName: web\n  namespace: demo\n"
    );
    let repo = support::repo_of(&[("app/kustomization.yaml", &kustomization)]);
    let server = fetching_server(&[port], &[]);
    for round in 1..=2 {
        let docs = support::render_app(&server, &repo, argo_env("web", "demo", &[]))
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{}", server.log()));
        assert_eq!(
            support::find(&docs, "ConfigMap", "web-redis")["data"]["chart"],
            "redis-1.2.3"
        );
        // A render that pulled a chart is not served from the render cache.
        assert_eq!(repo_server.hits("/redis-1.2.3.tgz"), round);
    }
    // Without fetching, the same app fails at the pull, and nothing reaches the repository.
    let off = TestServer::start_with(ServerOptions {
        args: vec!["--chart-fetch".to_owned(), "false".to_owned()],
        ..Default::default()
    });
    let hits = repo_server.hits("/index.yaml");
    support::render_app(&off, &repo, argo_env("web", "demo", &[]))
        .await
        .expect_err("fetching off");
    assert_eq!(repo_server.hits("/index.yaml"), hits);
}

#[tokio::test]
async fn kustomize_local_helm_charts_get_their_dependencies() {
    let (_charts, repo_server) = chart_repo();
    let port = repo_server.port;
    let url = format!("http://charts.test:{port}");
    let repo = support::repo_of(&[(
        "app/kustomization.yaml",
        "helmCharts:\n- name: web\n  releaseName: web\n  namespace: demo\n",
    )]);
    write_chart(
        &repo.path().join("app/charts/web"),
        "web",
        "1.0.0",
        &deps_yaml(&[("redis", "1.2.3", &url, None)]),
    );
    let server = fetching_server(&[port], &[]);
    let docs = support::render_app(&server, &repo, argo_env("web", "demo", &[]))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", server.log()));
    support::find(&docs, "ConfigMap", "web-web");
    assert_eq!(
        support::find(&docs, "ConfigMap", "web-redis")["data"]["chart"],
        "redis-1.2.3"
    );
    assert_eq!(repo_server.hits("/redis-1.2.3.tgz"), 1);
}

/// Done-when of issue 17: a chart whose dependency is fetched renders with its placeholders
/// filled from Vault (OpenBao), unchanged.
#[tokio::test]
async fn a_chart_with_fetched_dependencies_gets_its_placeholders_filled() {
    let bao = crate::support::bao::Bao::start();
    let (_charts, repo_server) = chart_repo();
    let port = repo_server.port;
    let repo = support::repo_of(&[(
        "app/templates/secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-db\nstringData:\n  DB_USER: <path:secret/data/demo/web#username>\n",
    )]);
    write_chart(
        &repo.path().join("app"),
        "web",
        "1.0.0",
        &deps_yaml(&[(
            "redis",
            "1.2.3",
            &format!("http://charts.test:{port}"),
            None,
        )]),
    );
    let server = TestServer::start_with(ServerOptions {
        args: [
            "--chart-fetch-allow",
            "127.0.0.0/8",
            "--chart-fetch-resolve",
            "charts.test=127.0.0.1",
            "--chart-fetch-ports",
            &port.to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        env: bao.token_env(),
        ..Default::default()
    });
    let docs = support::render_app(&server, &repo, argo_env("web", "demo", &[]))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", server.log()));
    assert_eq!(
        support::find(&docs, "Secret", "web-db")["stringData"]["DB_USER"],
        "demo-user"
    );
    support::find(&docs, "ConfigMap", "web-redis");
}

#[tokio::test]
async fn a_repository_that_never_answers_ends_at_the_deadline_naming_the_dependency() {
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().flatten() {
            held.push(conn);
        }
    });
    let url = format!("http://charts.test:{port}");
    let repo = web_with_redis("1.2.3", &url);
    let server = fetching_server(&[port], &[]);
    let spec = support::dir_stream(repo.path(), "app", argo_env("web", "demo", &[]));
    let err = support::generate(&server.socket, &spec, Some(Duration::from_secs(5)))
        .await
        .expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message().contains(&format!(
            "chart web (app): dependency redis 1.2.3 (repository {url}): the deadline passed while fetching"
        )),
        "{}",
        err.message()
    );
}

/// A kustomize app `app/` whose one resource, ConfigMap `remote`, is a URL on a static
/// server (returned with the directory it serves), and a sidecar (`extra` arguments) that
/// fetches it through its proxy.
fn remote_resource_app(
    extra: &[&str],
) -> (
    tempfile::TempDir,
    StaticServer,
    TestServer,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: remote\n",
    )
    .expect("write");
    let files = StaticServer::start(dir.path(), None);
    let server = fetching_server(&[files.port], extra);
    let repo = support::repo_of(&[(
        "app/kustomization.yaml",
        &format!("resources:\n- http://charts.test:{}/cm.yaml\n", files.port),
    )]);
    (dir, files, server, repo)
}

/// A tool's network waits for the request's stream: a kustomization fetching a URL through
/// the proxy, rendered from a kept tree before the stream has arrived, connects nowhere for
/// bytes that then do not match the checksum.
#[tokio::test]
async fn an_unverified_request_fetches_nothing() {
    let (_dir, files, server, repo) = remote_resource_app(&[]);
    let spec = |name: &str| support::dir_stream(repo.path(), "app", argo_env(name, "demo", &[]));
    let docs = support::generate(
        &server.socket,
        &spec("first"),
        Some(Duration::from_secs(60)),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}\n{}", server.log()));
    support::find(&docs, "ConfigMap", "remote");
    assert_eq!(files.hits("/cm.yaml"), 1);
    let err = support::generate_held_corrupt(
        &server.socket,
        &spec("second"),
        || {
            server
                .log()
                .contains("fetch proxy: waiting for the request's archive to verify")
        },
        "kustomize's fetch to wait in the proxy",
    )
    .await
    .expect_err("bytes that do not match the checksum");
    assert!(err.message().contains("checksum"), "{err:?}");
    assert_eq!(files.hits("/cm.yaml"), 1, "no fetch for it");
}

/// A render a discovery MatchRepository started ahead (`server::ahead`) that the render cache
/// does not keep, because its kustomization fetched a URL, is handed to the GenerateManifest
/// that follows: one fetch per app and commit, not two.
#[tokio::test]
async fn a_render_ahead_that_fetched_is_handed_over_not_repeated() {
    let (_dir, files, server, repo) = remote_resource_app(&["--plugin", "avp-kustomize"]);
    let spec = |name: &str| support::dir_stream(repo.path(), "app", argo_env(name, "demo", &[]));
    for (fetches, name) in [(1, "first"), (2, "second")] {
        let m = support::match_repository(&server.socket, &spec(name))
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{}", server.log()));
        // Plain (no placeholders): not claimed, but rendered by name.
        assert_eq!(m, (false, false));
        let docs = support::generate(&server.socket, &spec(name), Some(Duration::from_secs(60)))
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{}", server.log()));
        support::find(&docs, "ConfigMap", "remote");
        assert_eq!(files.hits("/cm.yaml"), fetches, "{}", server.log());
    }
    // The first app rendered for itself (its match could not know that a GenerateManifest of
    // this unclaimed app would follow); the second, once one had come for the commit, during
    // its match, not kept by the render cache, and handed to its GenerateManifest.
    let log = server.log();
    assert_eq!(log.matches("service: rendered kind=").count(), 1, "{log}");
    assert_eq!(log.matches("rendered ahead").count(), 1, "{log}");
    assert_eq!(log.matches("cached=false").count(), 1, "{log}");
    assert_eq!(log.matches("took the render ahead").count(), 1, "{log}");
}
