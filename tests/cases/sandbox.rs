//! Confined tools (docs/security.md, "Security model"): nothing in a repository can make the
//! sidecar run anything but kustomize and helm with argv it approved, and those tools cannot read
//! credentials, other requests' files, connect out, signal the server, or outlive their
//! request. Real kubectl-kustomize and helm for the helm gate; `tests/tools/probe.rs` as the
//! tool for what the Landlock sandbox denies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::Code;

use crate::support::{self, ServerOptions, TestServer, argo_env};

/// A chart whose one template is valid YAML and also a shell script that creates `marker`:
/// piped into `sh` (helm's `--post-renderer=sh`), it runs.
fn script_chart(dir: &Path, marker: &Path) {
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
    std::fs::write(
        dir.join("Chart.yaml"),
        "apiVersion: v2\nname: c\nversion: 0.1.0\n",
    )
    .expect("write");
    std::fs::write(dir.join("values.yaml"), "{}\n").expect("write");
    std::fs::write(
        dir.join("templates/cm.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: |\n    true; touch {}\n",
            marker.display()
        ),
    )
    .expect("write");
}

type Files<'a> = Vec<(&'a str, &'a str)>;

const HOSTILE_RELEASE: &str = "helmCharts:\n- name: c\n  releaseName: --post-renderer=sh\n";

/// A repository with `files`, and the script chart at each of `charts` (dirs in the repo).
fn hostile_repo(files: &[(&str, &str)], charts: &[&str], marker: &Path) -> tempfile::TempDir {
    let repo = support::repo_of(files);
    for c in charts {
        script_chart(&repo.path().join(c), marker);
    }
    repo
}

#[tokio::test]
async fn kustomize_helm_fields_cannot_become_helm_flags() {
    let server = TestServer::start();
    let outside = tempfile::tempdir().expect("tempdir");
    let marker = outside.path().join("ran");
    let generator = "apiVersion: builtin\nkind: HelmChartInflationGenerator\nmetadata:\n  name: g\nname: c\nreleaseName: --post-renderer=sh\n";
    let component =
        format!("apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n{HOSTILE_RELEASE}");
    // (repository files, where the script chart goes, what the error must say)
    let cases: Vec<(Files, &str, &str)> = vec![
        (
            vec![("app/kustomization.yaml", HOSTILE_RELEASE)],
            "app/charts/c",
            "app/kustomization.yaml: helmCharts entry (or HelmChartInflationGenerator) with name \"c\": releaseName \"--post-renderer=sh\" must not start with '-'",
        ),
        (
            vec![(
                "app/kustomization.yaml",
                "helmCharts:\n- name: c\n  releaseName: r\n  namespace: --post-renderer=sh\n",
            )],
            "app/charts/c",
            "namespace \"--post-renderer=sh\" must not start with '-'",
        ),
        (
            vec![(
                "app/kustomization.yaml",
                "helmCharts:\n- name: -c\n  releaseName: r\n",
            )],
            "app/charts/-c",
            "name \"-c\" must not start with '-'",
        ),
        (
            vec![
                ("app/kustomization.yaml", "generators: [gen.yaml]\n"),
                ("app/gen.yaml", generator),
            ],
            "app/charts/c",
            "app/kustomization.yaml: helmCharts entry (or HelmChartInflationGenerator)",
        ),
        (
            vec![
                ("app/kustomization.yaml", "resources: [../base]\n"),
                ("base/kustomization.yaml", HOSTILE_RELEASE),
            ],
            "base/charts/c",
            "base/kustomization.yaml: helmCharts entry",
        ),
        (
            vec![
                ("app/kustomization.yaml", "components: [../comp]\n"),
                ("comp/kustomization.yaml", &component),
            ],
            "comp/charts/c",
            "comp/kustomization.yaml: helmCharts entry",
        ),
    ];
    for (files, chart, needle) in cases {
        let repo = hostile_repo(&files, &[chart], &marker);
        let spec = support::dir_stream(repo.path(), "app", argo_env("t", "demo", &[]));
        let err = support::generate(&server.socket, &spec, Some(Duration::from_secs(60)))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{chart}: {err:?}");
        assert!(
            err.message().contains("helm call refused: ") && err.message().contains(needle),
            "{needle:?} not in {:?}",
            err.message()
        );
        assert!(!marker.exists(), "{chart}: the chart's script ran");
        assert!(server.leftover_workdirs().is_empty());
    }

    // The same chart with a proper release name renders its "script" as data, nothing runs.
    let repo = hostile_repo(
        &[(
            "app/kustomization.yaml",
            "helmCharts:\n- name: c\n  releaseName: r\n",
        )],
        &["app/charts/c"],
        &marker,
    );
    let spec = support::dir_stream(repo.path(), "app", argo_env("t", "demo", &[]));
    let docs = support::generate(&server.socket, &spec, None)
        .await
        .expect("renders");
    assert!(
        docs[0]["data"]["a"]
            .as_str()
            .is_some_and(|a| a.contains("touch"))
    );
    assert!(!marker.exists(), "the chart's script ran");
}

/// Without the gate the attack works: raw `kubectl kustomize --enable-helm` with real helm
/// runs the chart through `sh`. (So the test above can fail.)
#[test]
fn the_attack_runs_code_without_the_gate() {
    let outside = tempfile::tempdir().expect("tempdir");
    let marker = outside.path().join("ran");
    let repo = hostile_repo(
        &[("app/kustomization.yaml", HOSTILE_RELEASE)],
        &["app/charts/c"],
        &marker,
    );
    let _ = std::process::Command::new(support::tool("kubectl"))
        .arg("kustomize")
        .arg(repo.path().join("app"))
        .arg("--enable-helm")
        .arg("--helm-command")
        .arg(support::tool("helm"))
        .env("HOME", outside.path())
        .output()
        .expect("kubectl");
    assert!(
        marker.exists(),
        "raw kustomize + helm did not run the script"
    );
}

fn probe_server(sandbox: &'static str, env: Vec<(String, String)>) -> TestServer {
    TestServer::start_with(ServerOptions {
        kustomize: Some(support::probe()),
        tool_sandbox: Some(sandbox),
        env,
        ..Default::default()
    })
}

/// Runs the probe with `plan` as the app's `probe-plan`; the probe's report (`data`).
async fn run_probe(server: &TestServer, plan: &str) -> serde_json::Map<String, serde_json::Value> {
    run_probe_with(server, plan, &[]).await
}

/// [`run_probe`] with plugin env values.
async fn run_probe_with(
    server: &TestServer,
    plan: &str,
    plugin_env: &[(&str, &str)],
) -> serde_json::Map<String, serde_json::Value> {
    let repo = support::repo_of(&[
        ("app/kustomization.yaml", "resources: []\n"),
        ("app/probe-plan", plan),
    ]);
    let spec = support::dir_stream(repo.path(), "app", argo_env("probe", "demo", plugin_env));
    let docs = support::generate(&server.socket, &spec, Some(Duration::from_secs(60)))
        .await
        .unwrap_or_else(|e| panic!("probe run failed: {e:?}\n{}", server.log()));
    docs[0]["data"].as_object().cloned().expect("probe data")
}

/// The probe's verdicts in plan order.
fn verdicts(data: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let mut keys: Vec<(usize, &String)> = data
        .keys()
        .filter_map(|k| Some((k.strip_prefix('r')?.split('-').next()?.parse().ok()?, k)))
        .collect();
    keys.sort();
    keys.iter()
        .map(|(_, k)| data[*k].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn sandboxed_tools_cannot_reach_credentials_network_or_the_server() {
    let outside = tempfile::tempdir().expect("tempdir");
    let token = outside.path().join("token");
    std::fs::write(&token, "s.vault-token").expect("write");
    // Stands in for Vault: a listener on loopback.
    let vault = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let vault_port = vault.local_addr().expect("addr").port();
    let plan = |server: &TestServer| {
        format!(
            "read /proc/{pid}/environ\nread {token}\nlist {work}\nconnect 127.0.0.1:{vault_port}\nexec /bin/sh\nsignal {pid}\nread probe-plan\nwrite out.txt\nlist /etc/ssl\n",
            pid = server.pid(),
            token = token.display(),
            work = server.work_root.display(),
        )
    };
    let server = probe_server("require", vec![]);
    let got = verdicts(&run_probe(&server, &plan(&server)).await);
    // `write out.txt`: the app dir is in the archive's shared tree, read-only to every tool.
    assert_eq!(
        got,
        [
            "denied", "denied", "denied", "denied", "denied", "denied", "allowed", "denied",
            "allowed"
        ],
        "{}",
        server.log()
    );
    assert!(server.leftover_workdirs().is_empty());

    // The same plan unconfined: the probe reads the token, connects and runs a shell.
    let open = probe_server("off", vec![]);
    let got = verdicts(&run_probe(&open, &plan(&open)).await);
    assert_eq!(&got[1..5], ["allowed", "allowed", "allowed", "allowed"]);
}

/// Without `avp-sandbox-exec` beside it, the server confines its tools with its own binary in
/// helper mode (`avp-sidecar sandbox-exec`), exactly as strictly, and says so.
#[tokio::test]
async fn without_the_dedicated_helper_the_server_binary_confines_the_same() {
    let alone = tempfile::tempdir().expect("tempdir");
    let binary = alone.path().join("avp-sidecar");
    std::fs::copy(env!("CARGO_BIN_EXE_avp-sidecar"), &binary).expect("copy");
    let server = TestServer::start_with(ServerOptions {
        kustomize: Some(support::probe()),
        binary: Some(binary),
        ..Default::default()
    });
    let outside = tempfile::tempdir().expect("tempdir");
    let secret = outside.path().join("token");
    std::fs::write(&secret, "s.vault-token").expect("write");
    let plan = format!("read {}\nexec /bin/sh\nread probe-plan\n", secret.display());
    let got = verdicts(&run_probe(&server, &plan).await);
    assert_eq!(got, ["denied", "denied", "allowed"], "{}", server.log());
    assert!(
        server
            .log()
            .contains("helper: avp-sidecar sandbox-exec (slower"),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn a_tool_cannot_read_another_requests_work_dir() {
    let server = probe_server("require", vec![]);
    let slow = tokio::spawn({
        let socket = server.socket.clone();
        async move {
            let repo = support::repo_of(&[
                ("app/kustomization.yaml", "resources: []\n"),
                ("app/probe-plan", "sleep 4000\n"),
            ]);
            let spec = support::dir_stream(repo.path(), "app", argo_env("a", "demo", &[]));
            support::generate(&socket, &spec, Some(Duration::from_secs(60))).await
        }
    });
    let trees = server.work_root.with_file_name("_avp_trees");
    let other_tree: PathBuf = support::eventually_async(
        Duration::from_secs(20),
        "the first request's tree",
        async || {
            std::fs::read_dir(&trees)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|d| {
                    std::fs::read_to_string(d.join("app/probe-plan"))
                        .is_ok_and(|p| p.starts_with("sleep"))
                })
        },
    )
    .await;
    let other: PathBuf = support::eventually_async(
        Duration::from_secs(20),
        "the first request's work dir",
        async || server.leftover_workdirs().into_iter().next(),
    )
    .await;
    let plan = format!(
        "list {t}\nread {t}/app/probe-plan\nwrite {t}/app/planted\nlist {d}/tmp\nwrite {d}/tmp/planted\nwrite {d}/repo/planted\n",
        t = other_tree.display(),
        d = other.display()
    );
    assert_eq!(
        verdicts(&run_probe(&server, &plan).await),
        ["denied", "denied", "denied", "denied", "denied", "denied"]
    );
    slow.await
        .expect("join")
        .expect("first request still succeeds");
}

/// A request that edits its kustomization (`APP_REPO`) works in a private copy it may write;
/// the next request of the same archive still sees the shared tree as extracted, read-only.
#[tokio::test]
async fn writes_stay_in_the_requests_private_copy() {
    let server = probe_server("require", vec![]);
    let plan = "write planted\nread kustomization.yaml\n";
    let edited = verdicts(&run_probe_with(&server, plan, &[("APP_REPO", "https://x")]).await);
    assert_eq!(edited, ["allowed", "allowed"], "{}", server.log());
    let trees = server.work_root.with_file_name("_avp_trees");
    let shared: Vec<PathBuf> = std::fs::read_dir(&trees)
        .expect("trees")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(shared.len(), 1, "one tree for one archive: {shared:?}");
    assert!(!shared[0].join("app/planted").exists());
    assert_eq!(
        std::fs::read_to_string(shared[0].join("app/kustomization.yaml")).expect("read"),
        "resources: []\n",
        "the shared kustomization is not edited"
    );
    let plain = verdicts(&run_probe(&server, plan).await);
    assert_eq!(plain, ["denied", "allowed"]);
    assert!(server.leftover_workdirs().is_empty());
}

#[tokio::test]
async fn a_detached_descendant_does_not_outlive_its_request() {
    let server = probe_server("require", vec![]);
    let data = run_probe(&server, "linger\n").await;
    let pid = data["linger-pid"].as_str().expect("pid").to_owned();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    support::eventually_async(
        Duration::from_secs(10),
        &format!("process {pid} (setsid) to end with its request"),
        async || !proc_dir.exists(),
    )
    .await;
    assert!(server.log().contains("killed tool descendants"));
}

#[tokio::test]
async fn sandbox_state_is_reported() {
    let (server, port) = support::metrics_server();
    let ready = support::readyz(port);
    assert!(
        ready.contains("tool sandbox on (landlock: files"),
        "{ready}"
    );
    // Cargo builds every binary of the package for integration tests, so the dedicated
    // helper sits beside the server binary and is the one used.
    assert!(ready.contains("helper: avp-sandbox-exec)"), "{ready}");
    assert!(support::http_get(port, "/metrics").contains("avp_sidecar_tool_sandbox_enabled 1"),);
    drop(server);
}

/// On a kernel without Landlock (simulated), `auto` serves with a warning and says so;
/// `require` refuses to start. A script as a tool refuses to start under the sandbox.
#[tokio::test]
async fn without_landlock_auto_warns_and_require_refuses() {
    let port = support::free_port();
    let server = TestServer::start_with(ServerOptions {
        kustomize: Some(support::probe()),
        tool_sandbox: Some("auto"),
        args: vec!["--metrics-addr".into(), format!("127.0.0.1:{port}")],
        env: vec![("AVP_SIDECAR_ASSUME_NO_LANDLOCK".into(), "1".into())],
        ..Default::default()
    });
    assert!(support::readyz(port).contains("tool sandbox OFF"));
    assert!(support::http_get(port, "/metrics").contains("avp_sidecar_tool_sandbox_enabled 0"));
    assert!(
        server.log().contains("tool sandbox OFF"),
        "{}",
        server.log()
    );
    // Unconfined, the probe can read outside its request.
    let got = verdicts(&run_probe(&server, "read /etc/hostname\n").await);
    assert_eq!(got, ["allowed"]);

    let refuse = |env: &[(&str, &str)], kustomize: PathBuf| {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_avp-sidecar"))
            .args(["serve", "--tool-sandbox", "require", "--socket"])
            .arg(dir.path().join("s.sock"))
            .arg("--workdir")
            .arg(dir.path())
            .arg("--kustomize")
            .arg(kustomize)
            .arg("--helm")
            .arg(support::tool("helm"))
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refuse(
        &[("AVP_SIDECAR_ASSUME_NO_LANDLOCK", "1")],
        support::kustomize(),
    );
    assert!(
        err.contains("--tool-sandbox require: this kernel has no usable Landlock"),
        "{err}"
    );
    let err = refuse(&[], support::tool("kustomize"));
    assert!(
        err.contains("is a script; the tool sandbox executes binaries only"),
        "{err}"
    );
}

/// An operator command plugin runs unconfined, as in Argo CD, unless it opts in with
/// `spec.sandbox: true`; then its own program may run, confined like the built-in tools.
#[tokio::test]
async fn command_plugins_opt_in_to_the_sandbox() {
    let outside = tempfile::tempdir().expect("tempdir");
    let token = outside.path().join("token");
    std::fs::write(&token, "s.vault-token").expect("write");
    let plan = format!("read {}\nread probe-plan\n", token.display());
    for (sandbox, expected) in [("true", "denied"), ("false", "allowed")] {
        let config = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            config.path().join("probe.yaml"),
            format!(
                "apiVersion: argoproj.io/v1alpha1\nkind: ConfigManagementPlugin\nmetadata:\n  name: probe\nspec:\n  sandbox: {sandbox}\n  generate:\n    command: [{}]\n",
                support::probe().display()
            ),
        )
        .expect("write");
        let server = TestServer::start_with(ServerOptions {
            plugin: Some("probe".into()),
            config_dir: Some(config.path().to_path_buf()),
            ..Default::default()
        });
        let got = verdicts(&run_probe(&server, &plan).await);
        assert_eq!(got, [expected, "allowed"], "sandbox: {sandbox}");
    }
}
