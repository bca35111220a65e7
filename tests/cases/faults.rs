//! Faults around the real server: OpenBao killed mid-render and restarted, a slow Vault, a
//! full work-dir file system, and 200 concurrent requests with random faults. Each gets a
//! precise status; afterwards no work dir, file descriptor or process is left over and the
//! server still answers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tonic::Code;

use crate::support::bao::Bao;
use crate::support::repotar::{Entry, tgz_entries};
use crate::support::{self, ServerOptions, StreamSpec, TestServer, argo_env, find, fixture};

const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  user: <path:secret/data/demo/web#username>\n";

/// A kustomize app dir holding `secret.yaml` with `secret`.
fn vault_app(secret: &str) -> tempfile::TempDir {
    support::kustomize_app(&[("secret.yaml", secret)])
}

fn user(docs: &[serde_json::Value]) -> &serde_json::Value {
    &find(docs, "Secret", "s")["stringData"]["user"]
}

#[tokio::test]
async fn openbao_killed_mid_render_then_restarted() {
    // Private: this test stops and restarts its OpenBao.
    let bao = Bao::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    let manifest = scratch.path().join("out.yaml");
    std::fs::write(&manifest, SECRET).expect("write");
    let mut env = bao.token_env();
    env.extend([
        ("VAULT_CLIENT_TIMEOUT".into(), "2s".into()),
        ("AVP_SIDECAR_SECRET_CACHE_TTL_SECONDS".into(), "0".into()),
        ("SLOW_OK_SECONDS".into(), "1".into()),
        ("SLOW_OK_MANIFEST".into(), manifest.display().to_string()),
    ]);
    let server = TestServer::start_with(ServerOptions {
        kustomize: Some(support::repo_root().join("tests/fixtures/tools/slow-ok")),
        env,
        ..Default::default()
    });
    let spec = support::dir_stream(
        &fixture("mono"),
        "apps/kustomize-helm",
        argo_env("web", "demo", &[]),
    );
    let timeout = Some(Duration::from_secs(30));
    let docs = support::generate(&server.socket, &spec, timeout)
        .await
        .expect("vault up");
    assert_eq!(user(&docs), "demo-user");

    let socket = server.socket.clone();
    // Another app name: a render-cache hit would skip the slow tool.
    let spec2 = support::dir_stream(
        &fixture("mono"),
        "apps/kustomize-helm",
        argo_env("web-2", "demo", &[]),
    );
    let during = tokio::spawn(async move { support::generate(&socket, &spec2, timeout).await });
    // Vault goes away while the (slow) tool runs, before the substitution reads.
    let (pid, dir) = (server.pid(), server.dir.path().to_owned());
    support::eventually_async(
        Duration::from_secs(20),
        "the slow tool to run",
        async || !leftover_processes(pid, &dir).is_empty(),
    )
    .await;
    bao.stop();
    let err = during.await.expect("join").expect_err("vault died");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("vault read of secret/data/demo/web failed"),
        "{err:?}"
    );

    bao.restart();
    let docs = support::generate(&server.socket, &spec, timeout)
        .await
        .expect("vault back");
    assert_eq!(user(&docs), "demo-user");
    assert!(server.leftover_workdirs().is_empty());
}

/// A TCP proxy that waits `delay` before it connects each accepted connection to `target`.
struct DelayProxy {
    addr: String,
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    async fn start(target: &str, delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let delay_ms = Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let target = target.trim_start_matches("http://").to_owned();
        let shared = delay_ms.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let wait = Duration::from_millis(shared.load(Ordering::Relaxed));
                let target = target.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Self {
            addr,
            delay_ms,
            task,
        }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_vault_hits_the_deadline_cleanly() {
    let bao = Bao::shared();
    let proxy = DelayProxy::start(&bao.addr, Duration::from_secs(30)).await;
    let mut env = bao.token_env();
    env.retain(|(k, _)| k != "VAULT_ADDR");
    env.push(("VAULT_ADDR".into(), proxy.addr.clone()));
    env.push(("AVP_SIDECAR_SECRET_CACHE_TTL_SECONDS".into(), "0".into()));
    let server = TestServer::start_with(ServerOptions {
        env,
        ..Default::default()
    });
    let app = vault_app(SECRET);
    let spec = support::dir_stream(app.path(), "app", argo_env("web", "demo", &[]));
    let started = Instant::now();
    // 10 s: the server answers at 95% of it, a margin a loaded CI machine keeps.
    let err = support::generate(&server.socket, &spec, Some(Duration::from_secs(10)))
        .await
        .expect_err("vault too slow");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message()
            .contains("deadline exceeded while reading 1 secret(s) from vault"),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "answered late");
    assert!(server.leftover_workdirs().is_empty());

    proxy.delay_ms.store(0, Ordering::Relaxed);
    let docs = support::generate(&server.socket, &spec, Some(Duration::from_secs(30)))
        .await
        .expect("vault fast again");
    assert_eq!(user(&docs), "demo-user");
}

/// A tmpfs of `size` at `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` when mounting is not allowed here (it needs root with `CAP_SYS_ADMIN`; CI has it).
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            .then(|| Self(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(b"noise").to_vec();
    while out.len() < len {
        block = Sha256::digest(&block).to_vec();
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    out
}

#[tokio::test]
async fn full_work_dir_file_system() {
    let base = tempfile::tempdir().expect("tempdir");
    let Some(_fs) = Tmpfs::mount(base.path(), "3m") else {
        eprintln!(
            "full_work_dir_file_system skipped: cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)"
        );
        return;
    };
    let server = TestServer::start_with(ServerOptions {
        workdir: Some(base.path().to_owned()),
        ..Default::default()
    });
    let chart = |extra: Entry<'static>| StreamSpec {
        archive: tgz_entries(&[
            Entry::Dir("app"),
            Entry::File(
                "app/Chart.yaml",
                b"apiVersion: v2\nname: t\nversion: 0.1.0\n",
            ),
            extra,
        ]),
        app_rel_path: "app".into(),
        env: argo_env("t", "demo", &[]),
        chunk: 64 * 1024,
        checksum: None,
    };
    let big_compressed: &'static [u8] = Box::leak(noise(4 << 20).into_boxed_slice());
    let big_extracted: &'static [u8] = Box::leak(vec![0u8; 8 << 20].into_boxed_slice());
    for (what, spec) in [
        ("spooling", chart(Entry::File("app/blob", big_compressed))),
        ("extracting", chart(Entry::File("app/zeros", big_extracted))),
    ] {
        let err = support::generate(&server.socket, &spec, Some(Duration::from_secs(30)))
            .await
            .expect_err(what);
        assert_eq!(err.code(), Code::ResourceExhausted, "{what}: {err:?}");
        assert!(
            err.message().contains("No space left on device"),
            "{what}: {err:?}"
        );
        assert!(server.leftover_workdirs().is_empty(), "{what}");
    }
    // Work dirs and half-made trees are deleted in the background after the response: the
    // space comes back once that has run.
    support::eventually(
        Duration::from_secs(20),
        "the failed requests' files removed",
        || (server.trash_entries() == 0 && server.trees_on_disk() == 0).then_some(()),
    );
    let spec = chart(Entry::File("app/README", b"small"));
    let docs = support::generate(&server.socket, &spec, Some(Duration::from_secs(30)))
        .await
        .expect("space again after cleanup");
    assert!(docs.is_empty());
}

/// Open descriptors of `pid`: (sockets, everything else, those pointing under `dir`).
fn descriptors(pid: u32, dir: &Path) -> (usize, usize, Vec<PathBuf>) {
    let mut sockets = 0;
    let mut other = 0;
    let mut inside = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("proc fd")
        .flatten()
    {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.to_string_lossy().starts_with("socket:") {
            sockets += 1;
        } else {
            other += 1;
        }
        if target.starts_with(dir) && !target.ends_with("server.log") {
            inside.push(target);
        }
    }
    (sockets, other, inside)
}

/// Processes that are children of `pid` or run with a cwd under `dir` (orphaned grandchildren).
fn leftover_processes(pid: u32, dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid ...`; comm may contain spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        if ppid == Some(pid) || cwd.starts_with(dir) {
            found.push(stat);
        }
    }
    found
}

/// Waits until `problem` finds none; after `within` panics with the last one it found.
async fn eventually<T: std::fmt::Debug>(within: Duration, mut problem: impl FnMut() -> Option<T>) {
    support::eventually_async(within, "no problem left", async || match problem() {
        None => Ok(()),
        Some(p) => Err(format!("{p:?}")),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_with_random_faults() {
    let bao = Bao::shared();
    let mut env = bao.token_env();
    env.push(("AVP_SIDECAR_SECRET_CACHE_TTL_SECONDS".into(), "1".into()));
    let server = TestServer::start_with(ServerOptions {
        env,
        args: ["--max-concurrent-requests", "256"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    let good = vault_app(SECRET);
    let missing = vault_app(&SECRET.replace("demo/web#username", "demo/nope#username"));
    let escape = tgz_entries(&[
        Entry::Dir("app"),
        Entry::File("app/kustomization.yaml", b"resources: []\n"),
        Entry::RawFile(b"../escape.yaml", b"x"),
    ]);
    // Warm up, then take the baseline the storm must return to.
    let warm = support::dir_stream(good.path(), "app", argo_env("warm", "demo", &[]));
    support::generate(&server.socket, &warm, None)
        .await
        .expect("warm-up");
    let pid = server.pid();
    let (base_sockets, base_other, _) = descriptors(pid, server.dir.path());

    let mut tasks = Vec::new();
    // A fixed pseudo-random sequence: reproducible, yet mixed.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..200u64 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let fault = seed % 8;
        let app = format!("storm-{i}");
        let env = argo_env(&app, "demo", &[]);
        let socket = server.socket.clone();
        let spec = match fault {
            0 | 5 | 6 => support::dir_stream(good.path(), "app", env),
            1 => support::dir_stream(&fixture("mono"), "apps/chart", env),
            2 => StreamSpec {
                checksum: Some("0".repeat(64)),
                ..support::dir_stream(good.path(), "app", env)
            },
            3 => StreamSpec {
                archive: escape.clone(),
                app_rel_path: "app".into(),
                env,
                chunk: 1024,
                checksum: None,
            },
            4 => support::dir_stream(&fixture("mono"), "apps/broken-kustomize", env),
            _ => support::dir_stream(missing.path(), "app", env),
        };
        let wait = Duration::from_millis(150 + seed % 1200);
        tasks.push(tokio::spawn(async move {
            let outcome = match fault {
                // A tight deadline: done in time or a deadline error, never anything else.
                5 => support::generate(&socket, &spec, Some(wait))
                    .await
                    .map(drop),
                // The client goes away mid-stream.
                6 => {
                    let mut client = support::connect(&socket).await;
                    let head: Vec<_> = spec.messages().into_iter().take(1).collect();
                    let stream = futures::StreamExt::chain(
                        futures::stream::iter(head),
                        futures::stream::pending(),
                    );
                    let call = client.generate_manifest(tonic::Request::new(stream));
                    let _ = tokio::time::timeout(wait, call).await;
                    return (fault, None);
                }
                _ => support::generate(&socket, &spec, Some(Duration::from_secs(120)))
                    .await
                    .map(drop),
            };
            (
                fault,
                Some(outcome.map_err(|s| (s.code(), s.message().to_owned()))),
            )
        }));
    }
    let mut counts = [0usize; 8];
    for task in tasks {
        let (fault, outcome) = task.await.expect("join");
        counts[fault as usize] += 1;
        let Some(outcome) = outcome else { continue };
        let ok = match (fault, &outcome) {
            (0 | 1, Ok(())) => true,
            (2 | 3, Err((Code::InvalidArgument, _))) => true,
            (4, Err((Code::Unknown, m))) => m.contains("does-not-exist.yaml"),
            (5, Ok(())) | (5, Err((Code::DeadlineExceeded | Code::Cancelled, _))) => true,
            (7, Err((Code::FailedPrecondition, m))) => m.contains("secret/data/demo/nope"),
            _ => false,
        };
        assert!(ok, "fault {fault}: unexpected {outcome:?}");
    }
    assert!(counts.iter().all(|c| *c > 0), "every fault ran: {counts:?}");

    let dir = server.dir.path().to_owned();
    eventually(Duration::from_secs(15), || {
        Some(server.leftover_workdirs()).filter(|w| !w.is_empty())
    })
    .await;
    eventually(Duration::from_secs(15), || {
        Some(leftover_processes(pid, &dir)).filter(|p| !p.is_empty())
    })
    .await;
    eventually(Duration::from_secs(15), || {
        let (sockets, other, inside) = descriptors(pid, &dir);
        // Idle pooled Vault connections may stay open a while; a few sockets of slack.
        (other > base_other || sockets > base_sockets + 8 || !inside.is_empty()).then_some((
            sockets,
            other,
            inside,
            base_sockets,
            base_other,
        ))
    })
    .await;
    let docs = support::generate(&server.socket, &warm, None)
        .await
        .expect("still serving");
    assert_eq!(user(&docs), "demo-user");
}
