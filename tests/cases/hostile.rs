//! Hostile and broken input: every case gets a precise gRPC error, leaves no files behind, and
//! the server keeps serving.

use std::path::Path;
use std::time::Duration;

use avp_sidecar::protocol::pb::{AppStreamRequest, File, app_stream_request::Request};
use tonic::Code;

use crate::support::repotar::{Entry, tgz_entries};
use crate::support::{self, ServerOptions, StreamSpec, TestServer, argo_env, fixture};

const CHART: &[u8] = b"apiVersion: v2\nname: tiny\nversion: 0.1.0\n";
const TEMPLATE: &[u8] =
    b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tiny\ndata:\n  a: b\n";

fn spec(archive: Vec<u8>, app: &str) -> StreamSpec {
    StreamSpec {
        archive,
        app_rel_path: app.to_owned(),
        env: argo_env("tiny", "demo", &[]),
        chunk: 1024,
        checksum: None,
    }
}

/// A tiny valid chart app at `app/`, preceded by `extra` entries.
fn with_app(extra: Vec<Entry<'static>>) -> Vec<u8> {
    let mut entries = vec![Entry::Dir(".")];
    entries.extend(extra);
    entries.extend([
        Entry::Dir("app"),
        Entry::File("app/Chart.yaml", CHART),
        Entry::Dir("app/templates"),
        Entry::File("app/templates/cm.yaml", TEMPLATE),
    ]);
    tgz_entries(&entries)
}

async fn expect_error(
    server: &TestServer,
    spec: &StreamSpec,
    code: Code,
    needle: &str,
) -> tonic::Status {
    let err = support::generate(&server.socket, spec, Some(Duration::from_secs(60)))
        .await
        .expect_err("request must fail");
    assert_eq!(err.code(), code, "{err:?}");
    assert!(
        err.message().contains(needle),
        "{needle:?} not in {:?}",
        err.message()
    );
    assert_still_serving(server).await;
    err
}

/// A normal request still works, and no request left its work dir behind.
async fn assert_still_serving(server: &TestServer) {
    let docs = support::generate(&server.socket, &spec(with_app(vec![]), "app"), None)
        .await
        .expect("server still serves");
    assert_eq!(docs.len(), 1);
    assert_eq!(server.leftover_workdirs(), Vec::<std::path::PathBuf>::new());
}

fn unique(name: &str) -> String {
    format!(
        "/tmp/avp-sidecar-test-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    )
    .replace(['(', ')'], "")
}

#[tokio::test]
async fn bad_checksum() {
    let server = TestServer::start();
    let mut s = spec(with_app(vec![]), "app");
    s.checksum = Some("0".repeat(64));
    expect_error(
        &server,
        &s,
        Code::InvalidArgument,
        "file checksum validation error",
    )
    .await;
    // What was extracted while the bytes arrived is gone; only the verified request's tree
    // (the same bytes, their real checksum) is kept.
    support::eventually_async(Duration::from_secs(10), "one tree on disk", async || {
        server.trees_on_disk() == 1
    })
    .await;
}

#[tokio::test]
async fn missing_metadata_and_empty_stream() {
    let server = TestServer::start();
    let chunk_first = vec![AppStreamRequest {
        request: Some(Request::File(File {
            chunk: vec![1, 2, 3],
        })),
    }];
    for (msgs, needle) in [
        (chunk_first, "metadata is nil"),
        (vec![], "stream is empty"),
    ] {
        let err = server
            .client()
            .await
            .generate_manifest(futures::stream::iter(msgs))
            .await
            .expect_err("must fail");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(needle), "{err:?}");
    }
    // A second metadata message where a chunk belongs.
    let mut msgs = spec(with_app(vec![]), "app").messages();
    msgs.insert(1, msgs[0].clone());
    let err = server
        .client()
        .await
        .generate_manifest(futures::stream::iter(msgs))
        .await
        .expect_err("must fail");
    assert!(
        err.message().contains("stream request file is nil"),
        "{err:?}"
    );
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn not_gzip() {
    let server = TestServer::start();
    expect_error(
        &server,
        &spec(b"plain text, not gzip".to_vec(), "app"),
        Code::InvalidArgument,
        "error extracting",
    )
    .await;
}

#[tokio::test]
async fn parent_dir_entry_rejected() {
    let server = TestServer::start();
    let outside = server.dir.path().join("work/evil");
    let archive = with_app(vec![Entry::RawFile(b"../../evil", b"pwned")]);
    expect_error(
        &server,
        &spec(archive, "app"),
        Code::InvalidArgument,
        "illegal filepath in archive",
    )
    .await;
    assert!(!outside.exists());
}

#[tokio::test]
async fn absolute_entry_stays_inside() {
    let server = TestServer::start();
    let target = unique("abs");
    let name: &'static [u8] = Box::leak(target.clone().into_bytes().into_boxed_slice());
    let archive = with_app(vec![Entry::RawFile(name, b"x")]);
    let docs = support::generate(&server.socket, &spec(archive, "app"), None)
        .await
        .expect("absolute names are relative, as in Argo");
    assert_eq!(docs.len(), 1);
    assert!(!Path::new(&target).exists(), "wrote outside the work dir");
}

#[tokio::test]
async fn symlink_escapes_rejected() {
    let server = TestServer::start();
    for (link, target) in [
        ("evil", "../../../../etc"),
        ("a/b/evil", "../../.."),
        ("up", ".."),
    ] {
        let archive = with_app(vec![
            Entry::Dir("a"),
            Entry::Dir("a/b"),
            Entry::Symlink(link, target),
        ]);
        expect_error(
            &server,
            &spec(archive, "app"),
            Code::InvalidArgument,
            "illegal filepath in symlink",
        )
        .await;
    }
}

#[tokio::test]
async fn inside_symlinks_allowed_and_writes_never_follow_links_out() {
    let server = TestServer::start();
    // An absolute target is taken relative to the link's dir (Argo), so `/etc` means `<link dir>/etc`.
    let archive = with_app(vec![
        Entry::Dir("d"),
        Entry::Symlink("d/root", ".."),
        Entry::Symlink("abs", "/etc"),
        Entry::File("d/root/d/x.txt", b"through an inside link"),
        Entry::Fifo("fifo"),
    ]);
    let docs = support::generate(&server.socket, &spec(archive, "app"), None)
        .await
        .expect("inside links are fine");
    assert_eq!(docs.len(), 1);
    // A file entry whose name goes through a symlink that points at a file is refused.
    let archive = with_app(vec![
        Entry::File("f", b"x"),
        Entry::Symlink("l", "f"),
        Entry::File("l", b"overwrite"),
    ]);
    expect_error(
        &server,
        &spec(archive, "app"),
        Code::InvalidArgument,
        "illegal filepath in archive",
    )
    .await;
}

#[tokio::test]
async fn pax_long_names() {
    let server = TestServer::start();
    let long_dir = format!("app/{}", "d".repeat(150));
    let long_file: &'static str =
        Box::leak(format!("{long_dir}/templates/cm.yaml").into_boxed_str());
    let chart: &'static str = Box::leak(format!("{long_dir}/Chart.yaml").into_boxed_str());
    let archive = tgz_entries(&[
        Entry::Dir("."),
        Entry::PaxFile(chart, CHART),
        Entry::PaxFile(long_file, TEMPLATE),
    ]);
    let docs = support::generate(&server.socket, &spec(archive, &long_dir), None)
        .await
        .expect("pax names");
    assert_eq!(docs.len(), 1);
}

#[tokio::test]
async fn extracted_size_bomb() {
    let server = TestServer::start_with(ServerOptions {
        args: vec!["--max-extracted-mb".into(), "8".into()],
        ..Default::default()
    });
    let zeros: &'static [u8] = Box::leak(vec![0u8; 64 << 20].into_boxed_slice());
    let archive = with_app(vec![Entry::File("zeros.bin", zeros)]);
    assert!(
        archive.len() < 1 << 20,
        "a bomb: {} compressed bytes",
        archive.len()
    );
    expect_error(
        &server,
        &spec(archive, "app"),
        Code::ResourceExhausted,
        "extracted repository exceeds",
    )
    .await;
}

#[tokio::test]
async fn entry_count_bomb() {
    let server = TestServer::start_with(ServerOptions {
        args: vec!["--max-entries".into(), "100".into()],
        ..Default::default()
    });
    let names: Vec<&'static str> = (0..500)
        .map(|i| &*Box::leak(format!("f{i}").into_boxed_str()))
        .collect();
    let archive = with_app(names.iter().map(|n| Entry::File(n, b"")).collect());
    let err = support::generate(&server.socket, &spec(archive, "app"), None)
        .await
        .expect_err("too many");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("more than 100 entries"), "{err:?}");
}

#[tokio::test]
async fn path_length_and_depth_limits() {
    let server = TestServer::start_with(ServerOptions {
        args: ["--max-path-depth", "4", "--max-path-bytes", "64"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    let long: &'static str = Box::leak(format!("x/{}", "n".repeat(80)).into_boxed_str());
    for name in ["a/b/c/d/e/f.yaml", long] {
        let archive = with_app(vec![Entry::File(name, b"x")]);
        expect_error(
            &server,
            &spec(archive, "app"),
            Code::InvalidArgument,
            "archive entry path too long or too deep",
        )
        .await;
    }
}

#[tokio::test]
async fn compressed_size_limit() {
    let server = TestServer::start_with(ServerOptions {
        args: vec!["--max-compressed-mb".into(), "1".into()],
        ..Default::default()
    });
    // Incompressible data: xorshift bytes.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..(3 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let noise: &'static [u8] = Box::leak(noise.into_boxed_slice());
    let archive = with_app(vec![Entry::File("noise.bin", noise)]);
    expect_error(
        &server,
        &spec(archive, "app"),
        Code::ResourceExhausted,
        "compressed repository exceeds",
    )
    .await;
}

#[tokio::test]
async fn bad_app_paths() {
    let server = TestServer::start();
    for app in ["../..", "app/../..", "missing/dir", "app/Chart.yaml"] {
        expect_error(
            &server,
            &spec(with_app(vec![]), app),
            Code::InvalidArgument,
            "illegal appPath",
        )
        .await;
    }
}

#[tokio::test]
async fn unsupported_app_dir() {
    let server = TestServer::start();
    let s = support::dir_stream(
        &fixture("mono"),
        "apps/plain",
        argo_env("plain", "demo", &[]),
    );
    expect_error(
        &server,
        &s,
        Code::FailedPrecondition,
        "no kustomization or Chart.yaml",
    )
    .await;
}

#[tokio::test]
async fn tool_failure_carries_stderr() {
    let server = TestServer::start();
    let s = support::dir_stream(
        &fixture("mono"),
        "apps/broken-kustomize",
        argo_env("b", "demo", &[]),
    );
    let err = expect_error(&server, &s, Code::Unknown, "does-not-exist.yaml").await;
    assert!(
        err.message().starts_with("error generating manifests: `"),
        "{err:?}"
    );
    let s = support::dir_stream(
        &fixture("mono"),
        "apps/bad-yaml-chart",
        argo_env("b", "demo", &[]),
    );
    expect_error(&server, &s, Code::Unknown, "failed").await;
}

#[tokio::test]
async fn invalid_tool_output() {
    let server = TestServer::start_with(ServerOptions {
        kustomize: Some(support::repo_root().join("tests/fixtures/tools/invalid-yaml")),
        ..Default::default()
    });
    let s = support::dir_stream(
        &fixture("mono"),
        "apps/kustomize-helm",
        argo_env("b", "demo", &[]),
    );
    let err = support::generate(&server.socket, &s, None)
        .await
        .expect_err("invalid yaml");
    assert_eq!(err.code(), Code::Unknown, "{err:?}");
    assert!(err.message().contains("kustomize output"), "{err:?}");
}

#[tokio::test]
async fn env_values_are_data_not_code() {
    let server = TestServer::start();
    let marker = unique("pwned");
    let inject = format!("1.0; touch {marker}");
    let s = support::dir_stream(
        &fixture("mono"),
        "apps/kustomize-helm",
        argo_env(
            "b",
            "demo",
            &[("IMAGE_NAME", "nginx"), ("IMAGE_TAG", &inject)],
        ),
    );
    expect_error(&server, &s, Code::InvalidArgument, "ARGOCD_ENV_IMAGE_TAG").await;
    let repo = format!("$(touch {marker})`touch {marker}`");
    let s = support::dir_stream(
        &fixture("mono"),
        "apps/chart",
        argo_env("b", "demo", &[("APP_REPO", &repo)]),
    );
    let docs = support::generate(&server.socket, &s, None)
        .await
        .expect("repo URL is just text");
    assert_eq!(
        docs[0]["metadata"]["annotations"]["github.com/url"],
        repo.as_str()
    );
    assert!(!Path::new(&marker).exists(), "an env value was executed");
}

/// A tenant's repo cannot make kustomize run its code or read files outside the app: we never
/// pass `--enable-alpha-plugins`, `--enable-exec` or `--load-restrictor`, and this pins that.
#[tokio::test]
async fn repo_content_cannot_run_code_or_read_outside_the_app() {
    let server = TestServer::start();
    let outside = tempfile::tempdir().expect("tempdir");
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET-outside").expect("write");
    let chart = outside.path().join("chart");
    std::fs::create_dir_all(chart.join("templates")).expect("mkdir");
    std::fs::write(chart.join("Chart.yaml"), CHART).expect("write");
    std::fs::write(chart.join("values.yaml"), "x: 1\n").expect("write");
    std::fs::write(chart.join("templates/cm.yaml"), TEMPLATE).expect("write");
    let marker = unique("exec-function");
    let cases = [
        (
            "generators: [gen.yaml]\n".to_owned(),
            "external plugins disabled",
        ),
        (
            format!(
                "configMapGenerator:\n- name: leak\n  files: [{}]\n",
                secret.display()
            ),
            "is not in or below",
        ),
        (
            format!("resources: [{}]\n", secret.display()),
            "is not in or below",
        ),
        (
            format!(
                "helmGlobals:\n  chartHome: {}\nhelmCharts:\n- name: chart\n  releaseName: r\n",
                outside.path().display()
            ),
            "is not in or below",
        ),
    ];
    for (kustomization, needle) in cases {
        let repo = tempfile::tempdir().expect("tempdir");
        let app = repo.path().join("app");
        std::fs::create_dir_all(&app).expect("mkdir");
        std::fs::write(app.join("kustomization.yaml"), &kustomization).expect("write");
        std::fs::write(
            app.join("gen.yaml"),
            "apiVersion: example.com/v1\nkind: Gen\nmetadata:\n  name: x\n  annotations:\n    config.kubernetes.io/function: |\n      exec:\n        path: ./gen.sh\n",
        )
        .expect("write");
        std::fs::write(app.join("gen.sh"), format!("#!/bin/sh\ntouch {marker}\n")).expect("write");
        std::fs::set_permissions(
            app.join("gen.sh"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let spec = support::dir_stream(repo.path(), "app", argo_env("b", "demo", &[]));
        let err = expect_error(&server, &spec, Code::Unknown, needle).await;
        assert!(
            !err.message().contains("TOP-SECRET"),
            "{kustomization}: {err:?}"
        );
    }
    assert!(!Path::new(&marker).exists(), "the repo's exec function ran");
}

/// A server whose "kustomize" records its process group in a pid file, traps SIGTERM and never
/// finishes.
fn sleep_trap_server(scratch: &Path, extra_args: &[&str]) -> TestServer {
    let mut args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
    if !extra_args.contains(&"--kill-grace-seconds") {
        args.extend(["--kill-grace-seconds".to_owned(), "2".to_owned()]);
    }
    TestServer::start_with(ServerOptions {
        kustomize: Some(support::repo_root().join("tests/fixtures/tools/sleep-trap")),
        args,
        env: vec![(
            "SLEEP_TRAP_PIDFILE".into(),
            scratch.join("pid").display().to_string(),
        )],
        ..Default::default()
    })
}

/// Waits until the tool has started; returns its process group.
async fn tool_pgid(scratch: &Path) -> i32 {
    let pidfile = scratch.join("pid");
    support::eventually_async(Duration::from_secs(20), "the tool to start", async || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
    .await
}

/// Asserts that the server removes every work dir within a few seconds.
async fn assert_workdirs_removed(server: &TestServer) {
    support::eventually_async(
        Duration::from_secs(5),
        "no work dir left behind",
        async || {
            let left = server.leftover_workdirs();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
}

fn stuck_request() -> StreamSpec {
    support::dir_stream(
        &fixture("mono"),
        "apps/kustomize-helm",
        argo_env("b", "demo", &[]),
    )
}

#[tokio::test]
async fn deadline_kills_the_tool_process_group() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let server = sleep_trap_server(scratch.path(), &[]);
    let started = std::time::Instant::now();
    let err = support::generate(
        &server.socket,
        &stuck_request(),
        Some(Duration::from_secs(6)),
    )
    .await
    .expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("deadline"), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "answered late: {:?}",
        started.elapsed()
    );
    support::assert_group_gone(tool_pgid(scratch.path()).await, Duration::from_secs(5)).await;
    assert!(
        scratch.path().join("pid.term").exists(),
        "the tool got SIGTERM before SIGKILL"
    );
    assert_workdirs_removed(&server).await;
}

#[tokio::test]
async fn client_cancel_kills_the_tool() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let server = sleep_trap_server(scratch.path(), &[]);
    let socket = server.socket.clone();
    let call =
        tokio::spawn(async move { support::generate(&socket, &stuck_request(), None).await });
    let pgid = tool_pgid(scratch.path()).await;
    call.abort(); // drops the client connection mid-request
    support::assert_group_gone(pgid, Duration::from_secs(6)).await;
    assert_workdirs_removed(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_tools_still_in_their_kill_grace() {
    // A cancelled request's tool gets TERM, then KILL after the grace; a server that exits in
    // between (SIGTERM, drain done) must not leave the TERM-ignoring tool running.
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut server = sleep_trap_server(
        scratch.path(),
        &["--kill-grace-seconds", "60", "--drain-seconds", "2"],
    );
    let socket = server.socket.clone();
    let call =
        tokio::spawn(async move { support::generate(&socket, &stuck_request(), None).await });
    let pgid = tool_pgid(scratch.path()).await;
    call.abort();
    let _ = call.await;
    support::eventually_async(
        Duration::from_secs(10),
        "the tool to get SIGTERM",
        async || scratch.path().join("pid.term").exists(),
    )
    .await;
    let status = tokio::task::block_in_place(|| server.terminate());
    assert!(status.success(), "{status:?}\n{}", server.log());
    support::assert_group_gone(pgid, Duration::from_secs(5)).await;
    assert!(
        server
            .log()
            .contains("killed tools still running at shutdown"),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn requests_over_the_concurrency_cap_are_refused_until_a_slot_frees() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let server = sleep_trap_server(scratch.path(), &["--max-concurrent-requests", "1"]);
    let socket = server.socket.clone();
    let stuck =
        tokio::spawn(async move { support::generate(&socket, &stuck_request(), None).await });
    let pgid = tool_pgid(scratch.path()).await;
    let err = support::generate(&server.socket, &spec(with_app(vec![]), "app"), None)
        .await
        .expect_err("over the cap");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .contains("too many concurrent requests (limit 1"),
        "{err:?}"
    );
    stuck.abort();
    support::assert_group_gone(pgid, Duration::from_secs(6)).await;
    assert_workdirs_removed(&server).await;
    assert_still_serving(&server).await;
}

/// A request whose tree is kept renders while its stream still arrives, but answers only once
/// the stream has verified: bytes that do not match the checksum get the checksum error,
/// never what the render of the kept tree said, and nothing of it is cached.
#[tokio::test]
async fn a_kept_tree_renders_early_but_answers_only_a_verified_stream() {
    let (server, port) = support::metrics_server();
    support::readyz(port);
    let repo = support::repo_of(&[
        ("ok/kustomization.yaml", "resources: [cm.yaml]\n"),
        (
            "ok/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n",
        ),
        (
            "broken/kustomization.yaml",
            "resources: [private-file-name.yaml]\n",
        ),
    ]);
    let ok = |name: &str| support::dir_stream(repo.path(), "ok", argo_env(name, "demo", &[]));
    support::generate(&server.socket, &ok("first"), None)
        .await
        .expect("the tree is kept");
    let log_has = |line: &str| server.log().matches(line).count();
    let early = "work done before the stream verified";

    // A render that fails at once, for bytes that then do not match.
    let broken = support::dir_stream(repo.path(), "broken", argo_env("broken", "demo", &[]));
    let err = support::generate_held_corrupt(
        &server.socket,
        &broken,
        || log_has(early) == 1,
        "the render to fail before the stream ends",
    )
    .await
    .expect_err("bytes that do not match the checksum");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("checksum"), "{err:?}");
    assert!(!err.message().contains("private-file-name"), "{err:?}");

    // Nor what the kept tree says about the app path.
    let missing = support::dir_stream(repo.path(), "private-dir", argo_env("m", "demo", &[]));
    let err = support::generate_held_corrupt(&server.socket, &missing, || true, "nothing")
        .await
        .expect_err("bytes that do not match the checksum");
    assert!(err.message().contains("checksum"), "{err:?}");
    assert!(!err.message().contains("private-dir"), "{err:?}");

    // A render that succeeds, for bytes that then do not match: not cached either.
    let misses = || support::counter(port, "render_cache_misses_total");
    let before = misses();
    let err = support::generate_held_corrupt(
        &server.socket,
        &ok("second"),
        || log_has("rendered; waiting for the request's stream to verify") == 1,
        "the render to end before the stream",
    )
    .await
    .expect_err("bytes that do not match the checksum");
    assert!(err.message().contains("checksum"), "{err:?}");
    support::generate(&server.socket, &ok("second"), None)
        .await
        .expect("the same request, verified");
    assert_eq!(misses(), before + 2, "the unverified render was not cached");
    assert!(server.leftover_workdirs().is_empty());
}
