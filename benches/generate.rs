//! GenerateManifest wall time versus the raw tool, measured side by side in one run.
//!
//! For each app: the raw command (`kustomize build --enable-helm`, `helm template`) and a full
//! GenerateManifest through a real `avp-sidecar serve` on a unix socket (archive, stream,
//! checksum, unpack, render, parse, JSON) alternate, pair by pair, so machine drift hits both.
//! Prints a Markdown table: medians and the median of the per-pair ratios.
//!
//! Run: `cargo bench --bench generate` (after `scripts/install-tools.sh`). `BENCH_ROUNDS`
//! (default 15) sets the number of pairs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use avp_sidecar::protocol::client::{RepoStream, connect};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(name: &str) -> PathBuf {
    let p = root().join(".tools/bin").join(name);
    assert!(
        p.exists(),
        "{} missing: run scripts/install-tools.sh",
        p.display()
    );
    p
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Case {
    name: &'static str,
    app: &'static str,
    raw: Vec<String>,
    cwd: PathBuf,
}

fn time_raw(case: &Case) -> Duration {
    let started = Instant::now();
    let status = Command::new(&case.raw[0])
        .args(&case.raw[1..])
        .current_dir(&case.cwd)
        .stdout(Stdio::null())
        .status()
        .expect("raw tool");
    assert!(status.success(), "{} failed", case.raw.join(" "));
    started.elapsed()
}

async fn time_generate(socket: &Path, repo: &Path, app: &str) -> Duration {
    let started = Instant::now();
    let env = vec![
        ("ARGOCD_APP_NAME".to_owned(), "bench".to_owned()),
        ("ARGOCD_APP_NAMESPACE".to_owned(), "demo".to_owned()),
    ];
    let stream = RepoStream::for_dir(repo, app, env).expect("archive");
    let mut client = connect(socket).await.expect("connect");
    let resp = client
        .generate_manifest(futures::stream::iter(stream.messages()))
        .await
        .expect("generate")
        .into_inner();
    assert!(!resp.manifests.is_empty());
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let repo = root().join("tests/fixtures/repos/mono");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("bench.sock");
    let mut server = Command::new(env!("CARGO_BIN_EXE_avp-sidecar"))
        .args(["serve", "--socket"])
        .arg(&socket)
        .arg("--workdir")
        .arg(dir.path())
        .arg("--kustomize")
        .arg(tool("kustomize"))
        .arg("--helm")
        .arg(tool("helm"))
        .env("ARGOCD_CMP_SERVER_LOGLEVEL", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("server");
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let helm = tool("helm").display().to_string();
    let cases = [
        Case {
            name: "kustomize + local helm chart",
            app: "apps/kustomize-helm",
            raw: vec![
                tool("kustomize").display().to_string(),
                "build".into(),
                "--enable-helm".into(),
                "--helm-command".into(),
                helm.clone(),
                ".".into(),
            ],
            cwd: repo.join("apps/kustomize-helm"),
        },
        Case {
            name: "helm chart",
            app: "apps/chart",
            raw: vec![
                helm.clone(),
                "template".into(),
                "bench".into(),
                ".".into(),
                "--namespace=demo".into(),
                "--include-crds".into(),
            ],
            cwd: repo.join("apps/chart"),
        },
    ];
    println!(
        "| app | raw tool median (ms) | GenerateManifest median (ms) | ratio (median of pairs) | pairs |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for case in &cases {
        // Warm-up: page cache, tool start-up.
        time_raw(case);
        time_generate(&socket, &repo, case.app).await;
        let (mut raw, mut served, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let r = time_raw(case).as_secs_f64() * 1e3;
            let g = time_generate(&socket, &repo, case.app).await.as_secs_f64() * 1e3;
            raw.push(r);
            served.push(g);
            ratio.push(g / r);
        }
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {} |",
            case.name,
            median(&mut raw),
            median(&mut served),
            median(&mut ratio),
            rounds
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}
