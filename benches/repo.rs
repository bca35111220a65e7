//! What a repository costs the sidecar, against the raw tool and the `tar xzf` floor, measured
//! side by side in one run on repository shapes made here:
//!
//! - *monorepo*: 10 small kustomize apps (`apps/app0..9`) among ~5,000 files / ~10 MB;
//! - *podinfo-sized*: one kustomize app among ~500 entries / ~0.3 MB.
//!
//! Each round gets a new commit (one file changes, so a new archive and checksum: no tree or
//! render cache helps across rounds), and every figure is taken with the server's work dir on
//! tmpfs (`/dev/shm`) and on disk (`$TMPDIR`):
//!
//! - *first app*: MatchRepository + GenerateManifest of the first app of a commit, in Argo's
//!   call sequence (`generate_like_argo`: Check, Match, Check, Generate), against the raw
//!   `kubectl kustomize` of that app plus `tar xzf` of the archive on the same medium;
//! - *all 10 apps*: the 10 apps of one commit in Argo's sequence, one after the other, against
//!   the raw tool's total;
//! - *warm CPU*: server CPU time (utime + stime from `/proc`) per MB of archive received for
//!   requests whose render is cached (receive, verify, substitute, answer).
//!
//! Like the repo-server, which writes the archive and its checksum before its first message
//! of every call (its own cost, the same whatever the plugin), the bench computes the
//! checksum before the timed calls; the 1 KiB messages are made while timed.
//!
//! Run: `cargo bench --bench repo` (after `scripts/install-tools.sh`). `BENCH_ROUNDS` (default 5);
//! `BENCH_SHAPES` (`monorepo,podinfo-sized`) and `BENCH_MEDIA` (`tmpfs,disk`) pick rows, e.g.
//! to profile one of them.
#![allow(
    unreachable_pub,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use avp_sidecar::protocol::client::{RepoStream, connect, generate_like_argo, sha256_hex, tgz_dir};

mod common;
use common::{start_server, stop, tool};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A small deterministic generator, so every run builds the same repositories.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// `n` bytes of text that compresses about as well as source code (~1.3:1 to 3:1).
    fn text(&mut self, n: usize) -> String {
        const WORDS: &[&str] = &[
            "func", "return", "if", "err", "nil", "value", "config", "spec", "name", "metadata",
        ];
        let mut s = String::with_capacity(n + 16);
        while s.len() < n {
            if self.next().is_multiple_of(3) {
                s.push_str(WORDS[(self.next() % WORDS.len() as u64) as usize]);
            } else {
                s.push_str(&format!("{:x}", self.next()));
            }
            s.push(if self.next().is_multiple_of(12) {
                '\n'
            } else {
                ' '
            });
        }
        s
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn kustomize_app(dir: &Path, name: &str) {
    write(
        &dir.join("kustomization.yaml"),
        "resources:\n- deployment.yaml\n- configmap.yaml\n",
    );
    write(
        &dir.join("deployment.yaml"),
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n"
        ),
    );
    write(
        &dir.join("configmap.yaml"),
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}-config\ndata:\n  greeting: hello\n"
        ),
    );
}

/// `files` filler files of about `size` bytes in directories of 50, plus `apps` kustomize apps.
fn make_repo(dir: &Path, apps: usize, files: usize, size: usize) {
    let mut rng = Lcg(42);
    for i in 0..apps {
        kustomize_app(&dir.join(format!("apps/app{i}")), &format!("app{i}"));
    }
    for i in 0..files {
        write(
            &dir.join(format!("src/pkg{}/file{i}.go", i / 50)),
            &rng.text(size),
        );
    }
}

fn set_commit(dir: &Path, round: usize) {
    write(&dir.join("COMMIT"), &format!("{round}\n"));
}

fn raw_kustomize(app_dir: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new(tool("kubectl"))
        .args(["kustomize", "."])
        .current_dir(app_dir)
        .stdout(Stdio::null())
        .status()
        .expect("kubectl");
    assert!(status.success());
    started.elapsed()
}

fn tar_floor(archive: &[u8], medium: &Path) -> Duration {
    let file = medium.join("floor.tgz");
    std::fs::write(&file, archive).expect("write archive");
    let out = medium.join("floor");
    std::fs::create_dir_all(&out).expect("mkdir");
    let started = Instant::now();
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&file)
        .arg("-C")
        .arg(&out)
        .status()
        .expect("tar");
    let took = started.elapsed();
    assert!(status.success());
    std::fs::remove_dir_all(&out).expect("rm");
    std::fs::remove_file(&file).expect("rm");
    took
}

fn env(app: &str) -> Vec<(String, String)> {
    vec![
        ("ARGOCD_APP_NAME".to_owned(), app.replace('/', "-")),
        ("ARGOCD_APP_NAMESPACE".to_owned(), "demo".to_owned()),
    ]
}

async fn argo(socket: &Path, stream: &RepoStream) -> Duration {
    let started = Instant::now();
    let mut client = connect(socket).await.expect("connect");
    let call = generate_like_argo(&mut client, stream, Some(Duration::from_secs(120)))
        .await
        .expect("generate");
    assert!(!call.manifests.is_empty());
    started.elapsed()
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit_once(')').expect("comm").1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Shape {
    name: &'static str,
    repo: PathBuf,
    apps: usize,
}

/// Medians over `rounds` commits of one shape, medium and plugin.
struct Row {
    archive_mb: f64,
    first: f64,
    raw1: f64,
    tar: f64,
    ratio1: f64,
    all: f64,
    raw_all: f64,
    ratio_all: f64,
    /// Argo's calls for an app whose render is cached: receiving and verifying the archive
    /// (twice with discovery), what every app of a commit costs beyond its render.
    warm_wall: f64,
    warm_cpu: f64,
    warm_cpu_per_mb: f64,
}

async fn measure(shape: &Shape, medium: &str, base: &Path, plugin: &str, rounds: usize) -> Row {
    let (server, socket) = start_server(
        base,
        &format!("{}-{plugin}", shape.name),
        &[],
        &["--plugin", plugin],
    );
    let (mut first, mut raw1, mut tar, mut all, mut raw_all, mut ratio1, mut ratio_all) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut archive_mb = 0.0;
    // A commit of its own per medium and plugin, so no server sees an archive twice.
    let salt = 1000 * usize::from(medium == "disk") + 100 * usize::from(plugin != "avp");
    for round in 0..rounds {
        set_commit(&shape.repo, round + salt);
        let archive = tgz_dir(&shape.repo).expect("tgz");
        archive_mb = archive.len() as f64 / 1e6;
        let checksum = sha256_hex(&archive);
        let streams: Vec<RepoStream> = (0..shape.apps)
            .map(|i| {
                let app = format!("apps/app{i}");
                RepoStream {
                    archive: archive.clone(),
                    checksum: Some(checksum.clone()),
                    ..RepoStream::for_dir(&shape.repo, &app, env(&app)).expect("stream")
                }
            })
            .collect();
        let r = raw_kustomize(&shape.repo.join("apps/app0"));
        let t = tar_floor(&archive, base);
        let mut total = Duration::ZERO;
        let mut first_call = Duration::ZERO;
        for (i, s) in streams.iter().enumerate() {
            let d = argo(&socket, s).await;
            if i == 0 {
                first_call = d;
            }
            total += d;
        }
        let mut raw_total = r;
        for i in 1..shape.apps {
            raw_total += raw_kustomize(&shape.repo.join(format!("apps/app{i}")));
        }
        ratio1.push(first_call.as_secs_f64() / (r + t).as_secs_f64());
        ratio_all.push(total.as_secs_f64() / raw_total.as_secs_f64());
        first.push(ms(first_call));
        raw1.push(ms(r));
        tar.push(ms(t));
        all.push(ms(total));
        raw_all.push(ms(raw_total));
    }
    // Warm: the last commit's renders are cached; server CPU per MB received.
    set_commit(&shape.repo, usize::MAX - 1 - salt);
    let mut stream =
        RepoStream::for_dir(&shape.repo, "apps/app0", env("apps/app0")).expect("stream");
    stream.checksum = Some(sha256_hex(&stream.archive));
    argo(&socket, &stream).await;
    let n = 20;
    let cpu_before = cpu_seconds(server.id());
    let started = Instant::now();
    for _ in 0..n {
        argo(&socket, &stream).await;
    }
    let wall = started.elapsed() / n;
    let cpu = cpu_seconds(server.id()) - cpu_before;
    let mb = stream.archive.len() as f64 / 1e6 * f64::from(n);
    stop(server);
    Row {
        archive_mb,
        first: median(&mut first),
        raw1: median(&mut raw1),
        tar: median(&mut tar),
        ratio1: median(&mut ratio1),
        all: median(&mut all),
        raw_all: median(&mut raw_all),
        ratio_all: median(&mut ratio_all),
        warm_wall: ms(wall),
        warm_cpu: cpu * 1000.0 / f64::from(n),
        warm_cpu_per_mb: cpu * 1000.0 / mb,
    }
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let src = tempfile::tempdir().expect("tempdir");
    let mono = src.path().join("mono");
    make_repo(&mono, 10, 4_990, 2_000);
    let podinfo = src.path().join("podinfo");
    make_repo(&podinfo, 1, 420, 700);
    let shapes = [
        Shape {
            name: "monorepo",
            repo: mono,
            apps: 10,
        },
        Shape {
            name: "podinfo-sized",
            repo: podinfo,
            apps: 1,
        },
    ];
    let shm = tempfile::tempdir_in("/dev/shm").expect("tmpfs dir");
    let disk = tempfile::tempdir().expect("disk dir");
    let media = [("tmpfs", shm.path()), ("disk", disk.path())];
    // `avp` has no discovery: Argo calls it by name (Check, Check, Generate). `avp-kustomize`
    // has discovery: Argo adds a MatchRepository first (answered from one pass per archive;
    // an app it renders has its tree extracted right after the answer).
    let plugins = [("avp", "named"), ("avp-kustomize", "discovery")];
    println!(
        "| repository | work dir | plugin (Argo's calls) | archive (MB) | first app: sidecar (ms) | raw tool (ms) | tar xzf (ms) | first / (raw + tar) | all apps: sidecar (ms) | raw total (ms) | all / raw | receive floor per app (ms) |"
    );
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut cpu_rows = Vec::new();
    let picked = |var: &str, name: &str| {
        std::env::var(var).map_or(true, |v| v.split(',').any(|p| p.trim() == name))
    };
    for shape in shapes.iter().filter(|s| picked("BENCH_SHAPES", s.name)) {
        for (medium, base) in media.into_iter().filter(|(m, _)| picked("BENCH_MEDIA", m)) {
            for (plugin, flow) in plugins
                .into_iter()
                .filter(|(p, _)| picked("BENCH_PLUGINS", p))
            {
                let row = measure(shape, medium, base, plugin, rounds).await;
                println!(
                    "| {} | {medium} | {plugin} ({flow}) | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} | {:.1} |",
                    shape.name,
                    row.archive_mb,
                    row.first,
                    row.raw1,
                    row.tar,
                    row.ratio1,
                    row.all,
                    row.raw_all,
                    row.ratio_all,
                    row.warm_wall,
                );
                if plugin == "avp" {
                    cpu_rows.push(format!(
                        "| {} | {medium} | {:.1} | {:.1} | {:.1} |",
                        shape.name, row.warm_wall, row.warm_cpu, row.warm_cpu_per_mb
                    ));
                }
            }
        }
    }
    println!();
    println!(
        "| warm (render cached), named plugin | work dir | wall per call (ms) | server CPU per call (ms) | server CPU per MB (ms) |"
    );
    println!("| --- | --- | ---: | ---: | ---: |");
    for row in cpu_rows {
        println!("{row}");
    }
}
