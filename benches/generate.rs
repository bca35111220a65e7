//! GenerateManifest wall time versus the raw tool, measured side by side in one run.
//!
//! For each app: the raw command (`kustomize build --enable-helm`, `helm template`) and a full
//! GenerateManifest through a real `avp-sidecar serve` on a unix socket (archive, stream,
//! checksum, unpack, render, parse, substitute, JSON) alternate, round by round, so machine
//! drift hits all. "Cold" is a server with the render cache off (every request unpacks and runs
//! the tool); "warm" is one whose render cache holds the app (substitution still runs). The last case renders `examples/kustomize-app` with its placeholders filled from a
//! real OpenBao dev server (started with `vault-dev/`), against the same raw `kustomize build`.
//! Prints a Markdown table: medians and the median of the per-pair ratios.
//!
//! Run: `cargo bench --bench generate` (after `scripts/install-tools.sh`). `BENCH_ROUNDS`
//! (default 15) sets the number of pairs.
// Bench helpers are not an API, and their statistics cast freely between counts and floats.
#![allow(
    unreachable_pub,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use avp_sidecar::protocol::client::{RepoStream, connect};

mod common;
use common::{Bao, root, start_server, tool};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Case {
    name: &'static str,
    repo: PathBuf,
    app: &'static str,
    raw: Vec<String>,
    vault: bool,
}

fn time_raw(case: &Case) -> Duration {
    let started = Instant::now();
    let status = Command::new(&case.raw[0])
        .args(&case.raw[1..])
        .current_dir(case.repo.join(case.app))
        .stdout(Stdio::null())
        .status()
        .expect("raw tool");
    assert!(status.success(), "{} failed", case.raw.join(" "));
    started.elapsed()
}

/// One GenerateManifest: a fresh connection, metadata, 1 KiB chunks, the answer. The archive is
/// built before the clock starts, as the repo-server builds it before it dials the plugin.
async fn time_generate(socket: &Path, case: &Case) -> Duration {
    let env = vec![
        ("ARGOCD_APP_NAME".to_owned(), "bench".to_owned()),
        ("ARGOCD_APP_NAMESPACE".to_owned(), "demo".to_owned()),
    ];
    let stream = RepoStream::for_dir(&case.repo, case.app, env).expect("archive");
    let started = Instant::now();
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
    let mono = root().join("tests/fixtures/repos/mono");
    let examples = root().join("examples");
    let dir = tempfile::tempdir().expect("tempdir");
    let bao = Bao::start(&dir.path().join("vault"), "18290", None);
    let vault_env = bao.approle_env();
    let off = ["--render-cache-mb", "0"];
    let servers = [
        start_server(dir.path(), "cold", &[], &off),
        start_server(dir.path(), "warm", &[], &[]),
        start_server(dir.path(), "cold-vault", &vault_env, &off),
        start_server(dir.path(), "warm-vault", &vault_env, &[]),
    ];
    let kustomize = || {
        [
            "build",
            "--enable-helm",
            "--helm-command",
            &tool("helm"),
            ".",
        ]
        .iter()
        .fold(vec![tool("kustomize")], |mut v, a| {
            v.push(a.to_string());
            v
        })
    };
    let cases = [
        Case {
            name: "kustomize + local helm chart",
            repo: mono.clone(),
            app: "apps/kustomize-helm",
            raw: kustomize(),
            vault: false,
        },
        Case {
            name: "helm chart",
            repo: mono.clone(),
            app: "apps/chart",
            raw: [
                "template",
                "bench",
                ".",
                "--namespace=demo",
                "--include-crds",
            ]
            .iter()
            .fold(vec![tool("helm")], |mut v, a| {
                v.push(a.to_string());
                v
            }),
            vault: false,
        },
        Case {
            name: "examples/kustomize-app + 6 placeholders from OpenBao",
            repo: examples,
            app: "kustomize-app",
            raw: kustomize(),
            vault: true,
        },
    ];
    println!("| app | raw tool (ms) | cold (ms) | warm (ms) | cold / raw | warm / raw | rounds |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for case in &cases {
        let (cold, warm) = if case.vault {
            (&servers[2].1, &servers[3].1)
        } else {
            (&servers[0].1, &servers[1].1)
        };
        // Warm-up: page cache, tool start-up, Vault login, and the warm server's render cache.
        time_raw(case);
        time_generate(cold, case).await;
        time_generate(warm, case).await;
        let mut t: [Vec<f64>; 5] = Default::default();
        for _ in 0..rounds {
            let r = time_raw(case).as_secs_f64() * 1e3;
            let c = time_generate(cold, case).await.as_secs_f64() * 1e3;
            let w = time_generate(warm, case).await.as_secs_f64() * 1e3;
            for (v, x) in t.iter_mut().zip([r, c, w, c / r, w / r]) {
                v.push(x);
            }
        }
        let [raw, cold_ms, warm_ms, cold_ratio, warm_ratio] = &mut t;
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.3} | {} |",
            case.name,
            median(raw),
            median(cold_ms),
            median(warm_ms),
            median(cold_ratio),
            median(warm_ratio),
            rounds
        );
    }
    for (mut server, _) in servers {
        let _ = server.kill();
        let _ = server.wait();
    }
}
