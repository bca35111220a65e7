//! MatchRepository of the built-in plugins (`--discover`): auto-detection claims only apps with
//! AVP placeholders, every other app still renders by name, and the answer never fails on
//! admission or size.

use std::path::Path;
use std::time::{Duration, Instant};

use tonic::Code;

use crate::support::{self, ServerOptions, TestServer, argo_env, repo_of};

const PLAIN_CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\ndata:\n  a: b\n";
const INLINE_SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  password: <path:kv/data/app#password>\n";
const CHART: &str = "apiVersion: v2\nname: c\nversion: 0.1.0\n";
const CHART_CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  v: {{ .Values.v | quote }}\n";

fn server(plugin: &str, args: &[&str]) -> TestServer {
    TestServer::start_with(ServerOptions {
        plugin: Some(plugin.into()),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    })
}

/// MatchRepository for `app` of `repo`: (isSupported, isDiscoveryEnabled).
async fn matched(server: &TestServer, repo: &Path, app: &str) -> (bool, bool) {
    let spec = support::dir_stream(repo, app, argo_env("web", "demo", &[]));
    support::match_repository(&server.socket, &spec)
        .await
        .unwrap_or_else(|e| panic!("match {app}: {e:?}\n{}", server.log()))
}

/// A repository with plain and placeholder apps of both kinds.
fn repo() -> tempfile::TempDir {
    repo_of(&[
        ("plain/kustomization.yaml", "resources: [cm.yaml]\n"),
        ("plain/cm.yaml", PLAIN_CM),
        ("inline/kustomization.yaml", "resources: [s.yaml]\n"),
        ("inline/s.yaml", INLINE_SECRET),
        ("base/kustomization.yaml", "resources: [s.yaml]\n"),
        ("base/s.yaml", INLINE_SECRET),
        (
            "overlays/prod/kustomization.yaml",
            "resources:\n  - ../../base\n",
        ),
        ("plain-chart/Chart.yaml", CHART),
        ("plain-chart/values.yaml", "v: x\n"),
        ("plain-chart/templates/cm.yaml", CHART_CM),
        ("secret-chart/Chart.yaml", CHART),
        ("secret-chart/values.yaml", "v: <path:kv/data/app#v>\n"),
        ("secret-chart/templates/cm.yaml", CHART_CM),
        ("unrelated/s.yaml", INLINE_SECRET),
    ])
}

#[tokio::test]
async fn plain_apps_are_not_claimed_but_render_by_name() {
    let repo = repo();
    let kustomize = server("avp-kustomize", &[]);
    let helm = server("avp-helm", &[]);
    assert_eq!(
        matched(&kustomize, repo.path(), "plain").await,
        (false, false)
    );
    assert_eq!(
        matched(&helm, repo.path(), "plain-chart").await,
        (false, false)
    );
    // Named use: Argo sends GenerateManifest because isDiscoveryEnabled is false.
    let env = argo_env("web", "demo", &[]);
    let docs = support::generate(
        &kustomize.socket,
        &support::dir_stream(repo.path(), "plain", env.clone()),
        Some(Duration::from_secs(60)),
    )
    .await
    .expect("plain kustomize app renders by name");
    support::find(&docs, "ConfigMap", "plain");
    let docs = support::generate(
        &helm.socket,
        &support::dir_stream(repo.path(), "plain-chart", env),
        Some(Duration::from_secs(60)),
    )
    .await
    .expect("plain chart renders by name");
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0]["data"]["v"], "x");
}

#[tokio::test]
async fn apps_with_placeholders_are_claimed() {
    let repo = repo();
    let kustomize = server("avp-kustomize", &[]);
    let helm = server("avp-helm", &[]);
    assert_eq!(
        matched(&kustomize, repo.path(), "inline").await,
        (true, true)
    );
    assert_eq!(
        matched(&kustomize, repo.path(), "overlays/prod").await,
        (true, true),
        "placeholders in ../../base"
    );
    assert_eq!(
        matched(&helm, repo.path(), "secret-chart").await,
        (true, true),
        "placeholder in values.yaml"
    );
    assert_eq!(
        matched(&helm, repo.path(), "inline").await,
        (false, false),
        "avp-helm does not render kustomizations"
    );
    assert_eq!(
        matched(&kustomize, repo.path(), "unrelated").await,
        (false, false),
        "placeholders without a kustomization"
    );
}

#[tokio::test]
async fn discover_all_claims_every_app_and_off_none() {
    let repo = repo();
    let all = server("avp-kustomize", &["--discover", "all"]);
    assert_eq!(matched(&all, repo.path(), "plain").await, (true, true));
    assert_eq!(
        matched(&all, repo.path(), "plain-chart").await,
        (false, true)
    );
    let off = TestServer::start_with(ServerOptions {
        plugin: Some("avp-kustomize".into()),
        env: vec![("AVP_SIDECAR_DISCOVER".into(), "off".into())],
        ..Default::default()
    });
    assert_eq!(matched(&off, repo.path(), "inline").await, (false, false));
    assert_eq!(matched(&off, repo.path(), "plain").await, (false, false));
    let config = off
        .client()
        .await
        .check_plugin_configuration(())
        .await
        .expect("check")
        .into_inner();
    assert!(!config.is_discovery_configured);
}

#[tokio::test]
async fn match_answers_while_the_request_slots_are_full() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let pidfile = scratch.path().join("pid");
    let server = TestServer::start_with(ServerOptions {
        plugin: Some("avp-kustomize".into()),
        kustomize: Some(support::repo_root().join("tests/fixtures/tools/sleep-trap")),
        args: vec![
            "--max-concurrent-requests".into(),
            "1".into(),
            "--kill-grace-seconds".into(),
            "1".into(),
        ],
        env: vec![("SLEEP_TRAP_PIDFILE".into(), pidfile.display().to_string())],
        ..Default::default()
    });
    let repo = repo();
    let socket = server.socket.clone();
    let stuck_spec = support::dir_stream(repo.path(), "plain", argo_env("b", "demo", &[]));
    let stuck = tokio::spawn(async move { support::generate(&socket, &stuck_spec, None).await });
    support::eventually_async(Duration::from_secs(20), "the tool to start", async || {
        pidfile.exists()
    })
    .await;
    // The one request slot is taken: another GenerateManifest is refused...
    let err = support::generate(
        &server.socket,
        &support::dir_stream(repo.path(), "plain", argo_env("c", "demo", &[])),
        None,
    )
    .await
    .expect_err("over the cap");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // ...but MatchRepository answers, both ways.
    assert_eq!(matched(&server, repo.path(), "inline").await, (true, true));
    assert_eq!(matched(&server, repo.path(), "plain").await, (false, false));
    // The client goes away: the stuck tool's group is killed (it ignores the first TERM; the
    // kill grace is 1 s), rather than outliving the test.
    stuck.abort();
    let _ = stuck.await;
    let pgid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    support::assert_group_gone(pgid, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn large_repository_answers_quickly_without_the_work_dir() {
    let mut files: Vec<(String, String)> = (0..3000)
        .map(|i| {
            (
                format!("other/team-{}/app-{i}/cm.yaml", i % 50),
                PLAIN_CM.to_owned(),
            )
        })
        .collect();
    files.push(("zz/s.yaml".into(), INLINE_SECRET.into()));
    files.push((
        "app/kustomization.yaml".into(),
        "resources: [cm.yaml]\n".into(),
    ));
    files.push(("app/cm.yaml".into(), PLAIN_CM.into()));
    files.push((
        "late/kustomization.yaml".into(),
        "resources: [../zz/s.yaml]\n".into(),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let repo = repo_of(&refs);
    let server = server("avp-kustomize", &[]);
    // Nothing may be written: the work root becomes a plain file, so creating a request's
    // work dir fails.
    std::fs::remove_dir_all(&server.work_root).expect("remove work root");
    std::fs::write(&server.work_root, "not a directory").expect("block work root");
    let started = Instant::now();
    assert_eq!(matched(&server, repo.path(), "app").await, (false, false));
    assert_eq!(
        matched(&server, repo.path(), "late").await,
        (true, true),
        "a reference to a file seen earlier in the archive"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let err = support::generate(
        &server.socket,
        &support::dir_stream(repo.path(), "app", argo_env("web", "demo", &[])),
        None,
    )
    .await
    .expect_err("GenerateManifest needs the work dir");
    assert!(err.message().contains("work dir"), "{err:?}");
}

/// AVP's plain `argocd-vault-plugin` claims directories of manifests with placeholders, and
/// leaves kustomize apps and charts (with or without placeholders) to their plugins.
#[tokio::test]
async fn the_plain_avp_plugin_claims_plain_directories_only() {
    let r = repo_of(&[
        ("manifests/s.yaml", INLINE_SECRET),
        ("manifests/cm.yaml", PLAIN_CM),
        ("nothing/cm.yaml", PLAIN_CM),
        ("inline/kustomization.yaml", "resources: [s.yaml]\n"),
        ("inline/s.yaml", INLINE_SECRET),
    ]);
    let s = server("argocd-vault-plugin", &[]);
    assert_eq!(matched(&s, r.path(), "manifests").await, (true, true));
    assert_eq!(matched(&s, r.path(), "nothing").await, (false, false));
    assert_eq!(matched(&s, r.path(), "inline").await, (false, false));
}

/// The apps of one commit cost one pass over its archive: the first MatchRepository reads it,
/// the others are answered from that pass's index (their own streams still verified), and the
/// GenerateManifest that follows a match finds the tree the match extracted meanwhile.
#[tokio::test]
async fn one_pass_per_commit_and_the_tree_is_prefetched() {
    let repo = repo();
    let port = support::free_port();
    let kustomize = server(
        "avp-kustomize",
        &["--metrics-addr", &format!("127.0.0.1:{port}")],
    );
    support::readyz(port);
    let scans = |result: &str| {
        support::counter_with(
            port,
            "archive_cache_total",
            &[("cache", "scan_index"), ("result", result)],
        )
    };
    for (app, want) in [
        ("plain", (false, false)),
        ("inline", (true, true)),
        ("overlays/prod", (true, true)),
        ("unrelated", (false, false)),
        ("plain-chart", (false, false)),
    ] {
        assert_eq!(matched(&kustomize, repo.path(), app).await, want, "{app}");
    }
    assert_eq!(
        (scans("miss"), scans("hit")),
        (1, 4),
        "one pass, four reuses"
    );

    // The index never stands in for a stream that does not verify.
    let mut bad = support::dir_stream(repo.path(), "inline", argo_env("web", "demo", &[]));
    bad.checksum = Some(support::client_checksum(&bad.archive));
    if let Some(last) = bad.archive.last_mut() {
        *last ^= 0xff;
    }
    let err = kustomize
        .client()
        .await
        .match_repository(futures::stream::iter(bad.messages()))
        .await
        .expect_err("bytes that do not match the checksum");
    assert!(err.message().contains("checksum"), "{err:?}");

    // The first match claimed a plain app (renderable by name): its tree was extracted after
    // the answer, and the GenerateManifest uses it instead of extracting again (another env
    // than the match's: with the same, it would take the match's render ahead instead).
    support::eventually(Duration::from_secs(20), "the prefetch to end", || {
        (support::counter(port, "tree_prefetches_total") == 1).then_some(())
    });
    let docs = support::generate(
        &kustomize.socket,
        &support::dir_stream(repo.path(), "plain", argo_env("other", "demo", &[])),
        Some(Duration::from_secs(60)),
    )
    .await
    .expect("plain renders by name");
    support::find(&docs, "ConfigMap", "plain");
    let trees = |result: &str| {
        support::counter_with(
            port,
            "archive_cache_total",
            &[("cache", "tree"), ("result", result)],
        )
    };
    assert_eq!((trees("miss"), trees("hit")), (0, 1), "{}", kustomize.log());
}

/// A claiming MatchRepository renders its app for the GenerateManifest that follows (same
/// env): for the first app of a commit once the tree it extracts while the archive arrives is
/// there, for later apps (tree and index kept) while its own stream still arrives. The
/// GenerateManifest runs no tool of its own and answers the same manifests.
#[tokio::test]
async fn a_claiming_match_renders_ahead_for_its_generate() {
    let repo = repo();
    let s = server("avp-kustomize", &["--discover", "all"]);
    let spec = |name: &str| support::dir_stream(repo.path(), "plain", argo_env(name, "demo", &[]));
    let renders = || s.log().matches("service: rendered kind=").count();
    let ahead = || s.log().matches("rendered ahead").count();
    let mut manifests = Vec::new();
    for (n, name) in [(1, "first"), (2, "later")] {
        let m = support::match_repository(&s.socket, &spec(name)).await;
        assert_eq!(m.expect("match"), (true, true));
        manifests.push(
            support::generate(&s.socket, &spec(name), None)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e:?}\n{}", s.log())),
        );
        assert_eq!((renders(), ahead()), (0, n), "{name}\n{}", s.log());
    }
    assert_eq!(manifests[0], manifests[1]);
    support::find(&manifests[0], "ConfigMap", "plain");
    support::eventually(Duration::from_secs(10), "work dirs removed", || {
        s.leftover_workdirs().is_empty().then_some(())
    });
}

/// A render ahead never outlives a match whose stream does not verify: it is stopped, nothing
/// of it is cached (the GenerateManifest renders for itself) and nothing is left on disk.
#[tokio::test]
async fn a_render_ahead_for_a_stream_that_does_not_verify_is_dropped() {
    let repo = repo();
    let port = support::free_port();
    let s = server(
        "avp-kustomize",
        &[
            "--discover",
            "all",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ],
    );
    support::readyz(port);
    let spec = |name: &str| support::dir_stream(repo.path(), "plain", argo_env(name, "demo", &[]));
    assert_eq!(matched(&s, repo.path(), "plain").await, (true, true));
    support::generate(&s.socket, &spec("first"), None)
        .await
        .expect("the tree is kept");

    let err = support::match_held_corrupt(
        &s.socket,
        &spec("later"),
        || {
            s.log()
                .contains("rendered; waiting for the request's stream to verify")
        },
        "the render ahead to wait for the match's stream",
    )
    .await
    .expect_err("bytes that do not match the checksum");
    assert!(err.message().contains("checksum"), "{err:?}");
    // The first app's only.
    assert_eq!(s.log().matches("rendered ahead").count(), 1, "{}", s.log());

    let misses = support::counter(port, "render_cache_misses_total");
    support::generate(&s.socket, &spec("later"), None)
        .await
        .expect("the same app, verified");
    assert_eq!(
        support::counter(port, "render_cache_misses_total"),
        misses + 1,
        "the unverified render ahead was not cached\n{}",
        s.log()
    );
    // "first" (its match had another env) and "later".
    assert_eq!(s.log().matches("service: rendered kind=").count(), 2);
    support::eventually(Duration::from_secs(10), "work dirs removed", || {
        s.leftover_workdirs().is_empty().then_some(())
    });
}

/// A GenerateManifest never waits for a render ahead whose match's stream has not verified
/// (a slow or hostile stream with the same checksum and env would stall it): it renders for
/// itself while that match is still held open.
#[tokio::test]
async fn a_generate_does_not_wait_for_an_unverified_matchs_render() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let repo = repo();
    let s = server("avp-kustomize", &["--discover", "all"]);
    let spec = |name: &str| support::dir_stream(repo.path(), "plain", argo_env(name, "demo", &[]));
    assert_eq!(matched(&s, repo.path(), "plain").await, (true, true));
    support::generate(&s.socket, &spec("first"), None)
        .await
        .expect("the tree is kept");

    let generated = AtomicBool::new(false);
    let x = spec("x");
    let held = support::match_held_corrupt(
        &s.socket,
        &x,
        || generated.load(Ordering::SeqCst),
        "the GenerateManifest to answer while the match is held",
    );
    let generate = async {
        support::eventually_async(
            Duration::from_secs(20),
            "the render ahead to wait",
            async || {
                s.log()
                    .contains("rendered; waiting for the request's stream to verify")
            },
        )
        .await;
        let docs = support::generate(&s.socket, &x, Some(Duration::from_secs(30)))
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{}", s.log()));
        generated.store(true, Ordering::SeqCst);
        docs
    };
    let (held, docs) = tokio::join!(held, generate);
    support::find(&docs, "ConfigMap", "plain");
    let err = held.expect_err("bytes that do not match the checksum");
    assert!(err.message().contains("checksum"), "{err:?}");
    assert!(!s.log().contains("took the render ahead"), "{}", s.log());
}

/// A plain app the match does not claim gets a GenerateManifest only if its Application names
/// the plugin: no render ahead for it until a GenerateManifest of the plugin came for the
/// commit (apps Argo renders itself cost the sidecar no render).
#[tokio::test]
async fn unclaimed_apps_are_rendered_ahead_only_once_the_commit_had_a_generate() {
    let repo = repo();
    let s = server("avp-kustomize", &[]);
    let spec = |name: &str| support::dir_stream(repo.path(), "plain", argo_env(name, "demo", &[]));
    for name in ["a", "b", "c"] {
        let m = support::match_repository(&s.socket, &spec(name)).await;
        assert_eq!(m.expect("match"), (false, false));
    }
    assert!(!s.log().contains("rendered ahead"), "{}", s.log());
    support::generate(&s.socket, &spec("c"), None)
        .await
        .expect("rendered by name");
    let m = support::match_repository(&s.socket, &spec("d")).await;
    assert_eq!(m.expect("match"), (false, false));
    support::generate(&s.socket, &spec("d"), None)
        .await
        .expect("rendered by name");
    // "d" was rendered during its match and taken (handed over, or from the render cache).
    assert_eq!(s.log().matches("rendered ahead").count(), 1, "{}", s.log());
    let own = s.log().matches("service: rendered kind=").count();
    assert_eq!(own, 1, "{}", s.log());
}
