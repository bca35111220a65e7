//! Rotation-aware refresh end to end: a real server renders apps against a real OpenBao dev
//! server, a new KV v2 version is written, and the local Kubernetes API stand-in must receive a
//! hard-refresh patch for exactly the Applications that read the old version.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::json;

use crate::support::bao::Bao;
use crate::support::kubeapi::KubeApi;
use crate::support::{self, ServerOptions, TestServer, argo_env};

/// A one-file kustomize repo whose Secret holds `value`.
fn secret_repo(value: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).expect("mkdir");
    std::fs::write(app.join("kustomization.yaml"), "resources: [secret.yaml]\n").expect("write");
    std::fs::write(
        app.join("secret.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  v: \"{value}\"\n"
        ),
    )
    .expect("write");
    dir
}

/// Renders `placeholder` as Application `app` and returns the substituted value.
async fn render(server: &TestServer, app: &str, placeholder: &str) -> serde_json::Value {
    let repo = secret_repo(placeholder);
    let spec = support::dir_stream(repo.path(), "app", argo_env(app, "demo", &[]));
    let docs = support::generate(&server.socket, &spec, Some(Duration::from_secs(30)))
        .await
        .unwrap_or_else(|e| panic!("{app}: {e:?}\n{}", server.log()));
    docs[0]["stringData"]["v"].clone()
}

fn patched_paths(kube: &KubeApi) -> BTreeSet<String> {
    kube.patches().into_iter().map(|p| p.path).collect()
}

#[tokio::test]
async fn rotation_refreshes_only_the_apps_that_read_the_old_version() {
    // Private: this test stops its OpenBao (and deletes the seeded kv/data/test).
    let bao = Bao::start();
    let kube = KubeApi::start(HashMap::new());
    let metrics = support::free_port();
    let server = TestServer::start_with(ServerOptions {
        env: bao.approle_env(),
        args: vec![
            "--rotation-poll-seconds".into(),
            "1".into(),
            "--kube-api".into(),
            kube.url.clone(),
            "--kube-token-path".into(),
            kube.token_file.path().display().to_string(),
            // Long enough that only the invalidation can explain a fresh value below.
            "--secret-cache-ttl-seconds".into(),
            "3600".into(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{metrics}"),
        ],
        ..Default::default()
    });

    let latest = "<path:secret/data/demo/web#password>";
    assert_eq!(render(&server, "web-a", latest).await, json!("s3cr3t-v2"));
    assert_eq!(
        render(&server, "web-b", "<path:kv/data/test#hello>").await,
        json!("world")
    );
    assert_eq!(
        render(&server, "web-c", "<path:secret/data/demo/web#password#2>").await,
        json!("s3cr3t-v2"),
        "pinned to version 2: never refreshed"
    );
    // An Application outside Argo CD's namespace arrives as `<namespace>_<name>`.
    assert_eq!(
        render(
            &server,
            "team-x_web-d",
            "<path:secret/data/demo/web#username>"
        )
        .await,
        json!("demo-user")
    );

    // Polls run, nothing has changed: no patch.
    polls_pass(metrics, 2).await;
    assert!(kube.patches().is_empty(), "{:?}", kube.patches());

    bao.api(
        "POST",
        "secret/data/demo/web",
        Some(json!({"data": {"username": "demo-user", "password": "s3cr3t-v3"}})),
    );
    patches_reach(&kube, 2).await;
    let want: BTreeSet<String> = [
        "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/web-a",
        "/apis/argoproj.io/v1alpha1/namespaces/team-x/applications/web-d",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(patched_paths(&kube), want, "{}", server.log());
    for patch in kube.patches() {
        assert_eq!(patch.content_type, "application/merge-patch+json");
        assert_eq!(
            patch.body,
            json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard"}}})
        );
    }

    // The refresh's render reads the new version at once, despite the hour-long cache TTL.
    assert_eq!(render(&server, "web-a", latest).await, json!("s3cr3t-v3"));

    // One rotation, one patch per app: two more polls patch nothing more.
    polls_pass(metrics, 2).await;
    assert_eq!(kube.patches().len(), 2, "{:?}", kube.patches());
    assert_eq!(support::counter(metrics, "rotation_changes_total"), 1);
    assert_eq!(support::counter(metrics, "rotation_refreshes_total"), 2);
    assert_eq!(support::counter(metrics, "rotation_errors_total"), 0);

    // A secret deleted with its metadata: web-b is told once (its next render fails in Argo
    // CD rather than old manifests staying), and a deletion is not an error of the poller.
    bao.api("DELETE", "kv/metadata/test", None);
    patches_reach(&kube, 3).await;
    polls_pass(metrics, 2).await;
    let last = kube.patches().pop().map(|p| p.path);
    assert_eq!(kube.patches().len(), 3, "{:?}", kube.patches());
    assert_eq!(
        last.as_deref(),
        Some("/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/web-b")
    );
    assert_eq!(support::counter(metrics, "rotation_errors_total"), 0);

    // OpenBao down: errors are counted, nothing is patched, renders are still served (here
    // from the secret cache).
    bao.stop();
    support::eventually_async(Duration::from_secs(15), "a rotation error", async || {
        support::counter(metrics, "rotation_errors_total") > 0
    })
    .await;
    assert_eq!(kube.patches().len(), 3);
    assert_eq!(render(&server, "web-a", latest).await, json!("s3cr3t-v3"));

    let log = server.log();
    assert!(log.contains("rotation tracking on"), "{log}");
    assert!(log.contains("rotation: hard refresh requested"), "{log}");
    for value in ["s3cr3t-v2", "s3cr3t-v3", "demo-user"] {
        assert!(
            !log.contains(value),
            "{value:?} leaked into the log:\n{log}"
        );
    }
}

#[tokio::test]
async fn rotation_is_off_by_default() {
    let kube = KubeApi::start(HashMap::new());
    let server = TestServer::start_with(ServerOptions {
        args: vec!["--kube-api".into(), kube.url.clone()],
        ..Default::default()
    });
    assert_eq!(render(&server, "web-a", "plain").await, json!("plain"));
    // When on, the tracker says so at startup (asserted in the first test of this file).
    assert!(!server.log().contains("rotation tracking on"));
}

// Multi-threaded: `terminate` blocks this thread while the client's connection task must run
// for the server's graceful shutdown to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_state_survives_a_restart() {
    // This test's copy of demo/web: it writes a new version.
    let bao = Bao::shared();
    let web = bao.own_demo_web("rotation-state");
    let kube = KubeApi::start(HashMap::new());
    let state_dir = tempfile::tempdir().expect("tempdir");
    let state = state_dir.path().join("rotation.json");
    let start = |poll: &str| {
        TestServer::start_with(ServerOptions {
            env: bao.approle_env(),
            args: vec![
                "--rotation-poll-seconds".into(),
                poll.into(),
                "--rotation-state".into(),
                state.display().to_string(),
                "--kube-api".into(),
                kube.url.clone(),
                "--kube-token-path".into(),
                kube.token_file.path().display().to_string(),
            ],
            ..Default::default()
        })
    };
    // Polls hourly: only the save at shutdown can write the state file.
    let mut first = start("3600");
    assert_eq!(
        render(&first, "web-a", &format!("<path:{web}#password>")).await,
        json!("s3cr3t-v2")
    );
    assert!(first.terminate().success(), "{}", first.log());
    let saved = std::fs::read_to_string(&state).expect("state written at shutdown");
    assert!(
        saved.contains("web-a") && !saved.contains("s3cr3t"),
        "{saved}"
    );

    let second = start("1");
    assert!(second.log().contains("loaded_apps=1"), "{}", second.log());
    bao.api(
        "POST",
        &web,
        Some(json!({"data": {"username": "demo-user", "password": "s3cr3t-v3"}})),
    );
    patches_reach(&kube, 1).await;
    assert_eq!(
        patched_paths(&kube),
        BTreeSet::from([
            "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/web-a".to_owned()
        ]),
        "{}",
        second.log()
    );
}

/// Waits until `kube` has at least `n` patches (the assertions after it say which).
async fn patches_reach(kube: &KubeApi, n: usize) {
    support::eventually_async(
        Duration::from_secs(15),
        &format!("{n} patches"),
        async || {
            let patches = kube.patches();
            if patches.len() >= n {
                Ok(())
            } else {
                Err(format!("{patches:?}"))
            }
        },
    )
    .await;
}

/// Waits until `n` more rotation polls have run (to see that they changed nothing).
async fn polls_pass(metrics: u16, n: u64) {
    let polls = || support::counter(metrics, "rotation_polls_total");
    let want = polls() + n;
    support::eventually_async(
        Duration::from_secs(15),
        &format!("{n} more rotation polls"),
        async || polls() >= want,
    )
    .await;
}
