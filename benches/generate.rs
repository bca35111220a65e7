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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use avp_sidecar::protocol::client::{RepoStream, connect};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(name: &str) -> String {
    let p = root().join(".tools/bin").join(name);
    assert!(
        p.exists(),
        "{} missing: run scripts/install-tools.sh",
        p.display()
    );
    p.display().to_string()
}

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

fn start_server(
    dir: &Path,
    name: &str,
    env: &[(String, String)],
    args: &[&str],
) -> (Child, PathBuf) {
    let socket = dir.join(format!("{name}.sock"));
    let server = Command::new(env!("CARGO_BIN_EXE_avp-sidecar"))
        .args(["serve", "--socket"])
        .arg(&socket)
        .arg("--workdir")
        .arg(dir.join(name))
        .args(["--kustomize", &tool("kustomize"), "--helm", &tool("helm")])
        .args(args)
        .env("ARGOCD_CMP_SERVER_LOGLEVEL", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(Stdio::null())
        .spawn()
        .expect("server");
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, socket)
}

/// Starts and seeds an OpenBao dev server; returns the sidecar's env for approle login.
fn start_bao(state: &Path) -> Vec<(String, String)> {
    let port = "18290";
    let run = |script: &str, extra: &[(&str, &str)]| {
        let ok = Command::new(root().join("vault-dev").join(script))
            .env("VAULT_DEV_STATE", state)
            .env("BAO_PORT", port)
            .env("BAO_ROOT_TOKEN", "bench-root")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .status()
            .expect("vault-dev");
        assert!(ok.success(), "vault-dev/{script} failed");
    };
    let addr = format!("http://127.0.0.1:{port}");
    run("start.sh", &[]);
    run(
        "seed.sh",
        &[("VAULT_ADDR", &addr), ("VAULT_TOKEN", "bench-root")],
    );
    let read = |f: &str| std::fs::read_to_string(state.join(f)).expect("credential");
    vec![
        ("AVP_TYPE".into(), "vault".into()),
        ("VAULT_ADDR".into(), addr),
        ("AVP_AUTH_TYPE".into(), "approle".into()),
        ("AVP_ROLE_ID".into(), read("approle_role_id")),
        ("AVP_SECRET_ID".into(), read("approle_secret_id")),
    ]
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
    let vault_state = dir.path().join("vault");
    let vault_env = start_bao(&vault_state);
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
    let _ = Command::new(root().join("vault-dev/stop.sh"))
        .env("VAULT_DEV_STATE", &vault_state)
        .status();
}
