//! Test support: a real `avp-sidecar serve` process on a temp unix socket, a client that streams
//! a directory exactly like Argo CD's repo-server (Go tar layout, gzip, sha256, 1 KiB chunks),
//! and helpers to find the real tools installed by `scripts/install-tools.sh`.

#![allow(dead_code)]

pub(crate) mod bao;
pub(crate) mod charts;
pub(crate) mod h2raw;
pub(crate) mod http;
pub(crate) mod kubeapi;
pub(crate) mod registry;
pub(crate) mod repotar;
pub(crate) mod wait;

pub(crate) use wait::{eventually, eventually_async};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use avp_sidecar::protocol::client::{self, RepoStream};
use avp_sidecar::protocol::pb::config_management_plugin_service_client::ConfigManagementPluginServiceClient;
use tonic::transport::Channel;

pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A real tool from `.tools/bin`; fails loudly if the installer has not run.
pub(crate) fn tool(name: &str) -> PathBuf {
    let p = repo_root().join(".tools/bin").join(name);
    assert!(
        p.exists(),
        "{} missing: run scripts/install-tools.sh (the README's test command does)",
        p.display()
    );
    p
}

/// What the sidecar is given as `--kustomize`: kubectl, whose embedded kustomize it runs as
/// `kubectl kustomize`. (`.tools/bin/kustomize` is a shell shim for people and raw-tool
/// comparisons; the tool sandbox executes binaries only.)
pub(crate) fn kustomize() -> PathBuf {
    tool("kubectl")
}

/// Whether `path` is a script (`#!`): the shell stand-ins in `tests/fixtures/tools` cannot run
/// under the tool sandbox, so servers using them run with `--tool-sandbox off`.
pub(crate) fn is_script(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"#!"))
}

/// A tiny test binary (`tests/tools/probe.rs`, built by `cargo test` as an example) that
/// stands in for kustomize or helm and reports what the sandbox let it do.
pub(crate) fn probe() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_avp-sidecar"));
    let p = bin
        .parent()
        .expect("target dir")
        .join("examples/tool-probe");
    assert!(
        p.exists(),
        "{} missing: `cargo test` builds it",
        p.display()
    );
    p
}

pub(crate) fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/repos").join(name)
}

/// A running server. Sent SIGTERM on drop (and killed if it does not finish draining).
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub work_root: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

#[derive(Default)]
pub(crate) struct ServerOptions {
    pub plugin: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub kustomize: Option<PathBuf>,
    pub helm: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
    /// `--workdir` (default: a dir inside the server's temp dir).
    pub workdir: Option<PathBuf>,
    /// `--tool-sandbox` (default: `require`, or `off` for shell stand-in tools).
    pub tool_sandbox: Option<&'static str>,
    /// The server binary to run (default: the one cargo built, with `avp-sandbox-exec`
    /// beside it).
    pub binary: Option<PathBuf>,
}

impl TestServer {
    pub(crate) fn start() -> Self {
        Self::start_with(ServerOptions::default())
    }

    pub(crate) fn start_with(opts: ServerOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("plugin.sock");
        let work = opts.workdir.unwrap_or_else(|| dir.path().join("work"));
        let log = dir.path().join("server.log");
        let kustomize = opts.kustomize.unwrap_or_else(kustomize);
        // Every test server confines its tools (and fails to start if it cannot), except
        // those whose stand-in tool is a shell script.
        let sandbox = opts.tool_sandbox.unwrap_or(if is_script(&kustomize) {
            "off"
        } else {
            "require"
        });
        let mut cmd = Command::new(
            opts.binary
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_avp-sidecar"))),
        );
        cmd.arg("serve")
            .arg("--tool-sandbox")
            .arg(sandbox)
            .arg("--socket")
            .arg(&socket)
            .arg("--workdir")
            .arg(&work)
            .arg("--config-dir")
            .arg(
                opts.config_dir
                    .unwrap_or_else(|| dir.path().join("no-config")),
            )
            .arg("--kustomize")
            .arg(&kustomize)
            .arg("--helm")
            .arg(opts.helm.unwrap_or_else(|| tool("helm")))
            .args(
                opts.plugin
                    .iter()
                    .flat_map(|p| ["--plugin".to_owned(), p.clone()]),
            )
            .args(&opts.args)
            .env("ARGOCD_CMP_SERVER_LOGLEVEL", "debug")
            .env("ARGOCD_CMP_SERVER_LOGFORMAT", "text")
            .envs(opts.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let child = cmd.spawn().expect("spawn avp-sidecar");
        let mut server = Self {
            socket,
            work_root: work.join("_cmp_server"),
            dir,
            child: Some(child),
            log,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let up = wait::poll(Duration::from_secs(20), || {
            if let Ok(Some(status)) = self.child().try_wait() {
                panic!("server exited early ({status}):\n{}", self.log());
            }
            std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
        });
        if up.is_err() {
            panic!("server did not come up:\n{}", self.log());
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) async fn client(&self) -> ConfigManagementPluginServiceClient<Channel> {
        connect(&self.socket).await
    }

    /// Work dirs of requests still on disk (must be none between requests).
    pub(crate) fn leftover_workdirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.work_root)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }

    /// Entries waiting in `_avp_trash` (beside the work root) for the background removal.
    pub(crate) fn trash_entries(&self) -> usize {
        std::fs::read_dir(self.work_root.with_file_name("_avp_trash")).map_or(0, Iterator::count)
    }

    /// Extracted trees on disk (`_avp_trees/t*`, beside the work root).
    pub(crate) fn trees_on_disk(&self) -> usize {
        self.work_root
            .parent()
            .and_then(|w| std::fs::read_dir(w.join("_avp_trees")).ok())
            .map_or(0, Iterator::count)
    }

    /// The server process (taken only by `drop`).
    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("server process")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server process").id()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let stopped = wait::poll(Duration::from_secs(20), || {
            self.child().try_wait().ok().flatten()
        });
        stopped.unwrap_or_else(|_| panic!("server did not stop:\n{}", self.log()))
    }
}

/// How long a dropped server gets to finish its SIGTERM drain before it is killed. The drain
/// waits for the test's client connections, which close only when the test's runtime runs
/// again: a drop must not wait for them on the test's thread (a current-thread runtime cannot
/// run while it blocks), so a watcher thread does (the server's own drain timeout is 30 s).
const DRAIN_AFTER_DROP: Duration = Duration::from_secs(40);

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child().try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.pid().to_string())
                .status();
            // Without client connections left open it is gone at once.
            let child = self.child();
            if wait::poll(Duration::from_millis(200), || {
                child.try_wait().ok().flatten()
            })
            .is_ok()
            {
                return;
            }
            // Else it drains once the test's runtime closes its connections (at the latest when
            // the test ends and its runtime drops them; or the binary exits), like a real
            // repo-server going away. A watcher reaps it, or kills it if it never finishes.
            if let Some(mut child) = self.child.take() {
                std::thread::spawn(move || {
                    if wait::poll(DRAIN_AFTER_DROP, || child.try_wait().ok().flatten()).is_err() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                });
            }
        }
    }
}

/// A fresh connection, like the repo-server opens per operation.
/// A default server with its metrics endpoint on a free loopback port (returned).
pub(crate) fn metrics_server() -> (TestServer, u16) {
    let port = free_port();
    let server = TestServer::start_with(ServerOptions {
        args: vec!["--metrics-addr".into(), format!("127.0.0.1:{port}")],
        ..Default::default()
    });
    (server, port)
}

pub(crate) async fn connect(socket: &Path) -> ConfigManagementPluginServiceClient<Channel> {
    client::connect(socket).await.expect("connect")
}

/// The env list the repo-server sends for GenerateManifest (order of cmp-protocol §4.3).
pub(crate) fn argo_env(
    app: &str,
    namespace: &str,
    plugin_env: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("ARGOCD_APP_NAME", app),
        ("ARGOCD_APP_NAMESPACE", namespace),
        ("ARGOCD_APP_PROJECT_NAME", "default"),
        (
            "ARGOCD_APP_REVISION",
            "0123456789abcdef0123456789abcdef01234567",
        ),
        ("ARGOCD_APP_REVISION_SHORT", "0123456"),
        ("ARGOCD_APP_REVISION_SHORT_8", "01234567"),
        (
            "ARGOCD_APP_SOURCE_REPO_URL",
            "https://github.com/acme/apps.git",
        ),
        ("ARGOCD_APP_SOURCE_PATH", "apps/web"),
        ("ARGOCD_APP_SOURCE_TARGET_REVISION", "HEAD"),
        ("KUBE_VERSION", "1.31.0"),
        ("KUBE_API_VERSIONS", "v1,apps/v1,batch/v1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in plugin_env {
        env.push((format!("ARGOCD_ENV_{k}"), v.to_string()));
    }
    env.push(("ARGOCD_APP_PARAMETERS".to_owned(), "null".to_owned()));
    env
}

/// One request's stream; the library's repo-server-compatible client builds it.
pub(crate) type StreamSpec = RepoStream;

/// The stream for an app in a directory tree, archived like the repo-server does.
pub(crate) fn dir_stream(dir: &Path, app_rel_path: &str, env: Vec<(String, String)>) -> StreamSpec {
    RepoStream::for_dir(dir, app_rel_path, env).expect("archive fixture")
}

/// Calls GenerateManifest and returns the manifests parsed as JSON.
pub(crate) async fn generate(
    socket: &Path,
    spec: &StreamSpec,
    timeout: Option<Duration>,
) -> Result<Vec<serde_json::Value>, tonic::Status> {
    let mut client = connect(socket).await;
    let mut req = tonic::Request::new(futures::stream::iter(spec.messages()));
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    let resp = client.generate_manifest(req).await?.into_inner();
    Ok(resp
        .manifests
        .iter()
        .map(|m| serde_json::from_str(m).expect("each manifest is JSON"))
        .collect())
}

/// Calls MatchRepository: `(isSupported, isDiscoveryEnabled)`.
pub(crate) async fn match_repository(
    socket: &Path,
    spec: &StreamSpec,
) -> Result<(bool, bool), tonic::Status> {
    let resp = connect(socket)
        .await
        .match_repository(futures::stream::iter(spec.messages()))
        .await?
        .into_inner();
    Ok((resp.is_supported, resp.is_discovery_enabled))
}

/// GenerateManifest of `spec` whose stream sends the metadata at once and its file chunks,
/// with the last byte flipped (so they do not match the checksum), only once `ready` (polled
/// up to 20 s) holds; the call's result.
pub(crate) async fn generate_held_corrupt(
    socket: &Path,
    spec: &StreamSpec,
    ready: impl Fn() -> bool,
    what: &str,
) -> Result<Vec<serde_json::Value>, tonic::Status> {
    let (rx, release) = held_corrupt(spec);
    let mut client = connect(socket).await;
    let call = tokio::spawn(async move { client.generate_manifest(rx).await });
    release(ready, what).await;
    let response = call.await.expect("join")?.into_inner();
    Ok(response
        .manifests
        .iter()
        .map(|m| serde_json::from_str(m).expect("json"))
        .collect())
}

/// [`generate_held_corrupt`] for MatchRepository: `(isSupported, isDiscoveryEnabled)`.
pub(crate) async fn match_held_corrupt(
    socket: &Path,
    spec: &StreamSpec,
    ready: impl Fn() -> bool,
    what: &str,
) -> Result<(bool, bool), tonic::Status> {
    let (rx, release) = held_corrupt(spec);
    let mut client = connect(socket).await;
    let call = tokio::spawn(async move { client.match_repository(rx).await });
    release(ready, what).await;
    let response = call.await.expect("join")?.into_inner();
    Ok((response.is_supported, response.is_discovery_enabled))
}

/// `spec`'s messages with the archive's last byte flipped, as a stream that yields the
/// metadata at once, and a release that sends the rest once `ready` (polled up to 20 s) holds.
fn held_corrupt<F: Fn() -> bool>(
    spec: &StreamSpec,
) -> (
    futures::channel::mpsc::UnboundedReceiver<avp_sidecar::protocol::pb::AppStreamRequest>,
    impl AsyncFnOnce(F, &str),
) {
    use avp_sidecar::protocol::pb::app_stream_request::Request;
    let mut messages = spec.messages();
    if let Some(Request::File(f)) = messages.last_mut().and_then(|m| m.request.as_mut())
        && let Some(b) = f.chunk.last_mut()
    {
        *b ^= 0xff;
    }
    let mut messages = messages.into_iter();
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tx.unbounded_send(messages.next().expect("metadata"))
        .expect("send");
    let release = async move |ready: F, what: &str| {
        eventually_async(Duration::from_secs(20), what, async || ready()).await;
        for m in messages {
            tx.unbounded_send(m).expect("send");
        }
    };
    (rx, release)
}

/// Finds the object of `kind` named `name`.
pub(crate) fn find<'a>(
    docs: &'a [serde_json::Value],
    kind: &str,
    name: &str,
) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in {docs:#?}"))
}

/// The checksum the repo-server would send for an archive.
pub(crate) fn client_checksum(archive: &[u8]) -> String {
    client::sha256_hex(archive)
}

/// Asserts that every process of the group is gone within `within`.
pub(crate) async fn assert_group_gone(pgid: i32, within: Duration) {
    eventually_async(
        within,
        &format!("process group {pgid} to be gone"),
        async || {
            !Command::new("kill")
                .args(["-0", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status()
                .expect("kill")
                .success()
        },
    )
    .await;
}

/// A TCP port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A counter from `/metrics` (`avp_sidecar_<name>`), summed over all its series; panics when
/// it is not there.
pub fn counter(port: u16, name: &str) -> u64 {
    counter_with(port, name, &[])
}

/// A counter from `/metrics` (`avp_sidecar_<name>`), summed over the series whose labels
/// include `labels`; panics when the family is not there.
pub fn counter_with(port: u16, name: &str, labels: &[(&str, &str)]) -> u64 {
    let text = http_get(port, "/metrics");
    sum_series(&text, &format!("avp_sidecar_{name}"), labels)
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

/// The sum of the samples of `name` whose labels include `labels`; `None` when `name` has no
/// sample at all. Label values are compared as written (ours need no escapes).
pub fn sum_series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    let mut seen = false;
    let mut sum = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (series_labels, value) = if let Some(rest) = rest.strip_prefix('{') {
            let Some((inner, value)) = rest.split_once("} ") else {
                continue;
            };
            (inner, value)
        } else if let Some(value) = rest.strip_prefix(' ') {
            ("", value)
        } else {
            continue;
        };
        seen = true;
        let has = |(k, v): &(&str, &str)| {
            series_labels
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        };
        if labels.iter().all(has) {
            sum += value.trim().parse::<f64>().map_or(0, |v| v as u64);
        }
    }
    seen.then_some(sum)
}

/// `/readyz` once the server has finished starting: until its sockets are bound and serving it
/// answers 503 "starting or stopping", which a test that just started it may see.
pub(crate) fn readyz(port: u16) -> String {
    eventually(
        Duration::from_secs(20),
        "the server to finish starting (/readyz)",
        || {
            let answer = http_get(port, "/readyz");
            (!answer.contains("starting or stopping")).then_some(answer)
        },
    )
}

/// A plain HTTP/1.1 GET on 127.0.0.1 (the metrics endpoint); the whole response as text.
pub(crate) fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

/// A repository of `files` (paths relative to its root, parent dirs created).
pub(crate) fn repo_of(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (rel, text) in files {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

/// A copy of directory `src` as `<tmp>/<name of src>/`, with `from` replaced by `to` in every
/// file (for a test that points an example at data of its own).
pub fn copy_tree_replacing(src: &Path, from: &str, to: &str) -> tempfile::TempDir {
    fn copy(src: &Path, dest: &Path, from: &str, to: &str) {
        std::fs::create_dir_all(dest).expect("mkdir");
        for entry in std::fs::read_dir(src).expect("read dir") {
            let entry = entry.expect("dir entry");
            let target = dest.join(entry.file_name());
            if entry.file_type().expect("file type").is_dir() {
                copy(&entry.path(), &target, from, to);
            } else {
                let text = std::fs::read_to_string(entry.path()).expect("text file");
                std::fs::write(target, text.replace(from, to)).expect("write");
            }
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    copy(
        src,
        &dir.path().join(src.file_name().expect("dir name")),
        from,
        to,
    );
    dir
}

/// A repository whose `app/` is a kustomize app made of `files` (name, content), all listed as
/// resources.
pub(crate) fn kustomize_app(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).expect("mkdir");
    let names: Vec<&str> = files.iter().map(|(name, _)| *name).collect();
    std::fs::write(
        app.join("kustomization.yaml"),
        format!("resources: [{}]\n", names.join(", ")),
    )
    .expect("write");
    for (name, content) in files {
        std::fs::write(app.join(name), content).expect("write");
    }
    dir
}

/// GenerateManifest for `app/` of `repo` with `env`, under a 60 s deadline.
pub(crate) async fn render_app(
    server: &TestServer,
    repo: &tempfile::TempDir,
    env: Vec<(String, String)>,
) -> Result<Vec<serde_json::Value>, tonic::Status> {
    let spec = dir_stream(repo.path(), "app", env);
    generate(&server.socket, &spec, Some(Duration::from_secs(60))).await
}

#[test]
fn http_client_reads_content_length_and_chunked_bodies() {
    let parse = |raw: &[u8]| http::parse(raw, false).expect("parse");
    let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
    let r = parse(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
    assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
    let r = parse(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!((r.status, r.body.len()), (204, 0));
}
