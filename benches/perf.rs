//! Performance figures beyond the per-request ratio (`benches/generate.rs`), each measured in
//! this one run on real tools and a real OpenBao dev server:
//!
//! 1. Vault requests per render for a chart with 50 placeholders over 5 paths, 10 renders,
//!    counted from OpenBao's audit log.
//! 2. Substitution throughput on ~1 MB of manifests with 1000 placeholders (reads cached).
//! 3. 32 concurrent GenerateManifest requests: errors, p50/p99 latency, peak server RSS.
//! 4. Peak server RSS while receiving a 200 MB repository archive, against a small one.
//!
//! Run: `cargo bench --bench perf` (after `scripts/install-tools.sh`). Prints Markdown.
// Bench helpers are not an API, and their statistics cast freely between counts and floats.
#![allow(
    unreachable_pub,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use avp_sidecar::protocol::client::{RepoStream, connect, sha256_hex};
use avp_sidecar::secrets::{Fetched, KvVersion, SecretData, SecretRequest};

mod common;
use common::{Bao, root, start_server, stop};
use serde_json::{Value, json};

/// Writes one KV v2 secret with the root token.
fn put_secret(bao: &Bao, path: &str, data: &Value) {
    let body = json!({ "data": data }).to_string();
    let response = common::http::request(
        &bao.addr(),
        "POST",
        &format!("/v1/{path}"),
        &[("X-Vault-Token", bao.root_token)],
        Some(body.as_bytes()),
    )
    .expect("vault write");
    assert!(
        (200..300).contains(&response.status),
        "POST {path}: HTTP {}: {}",
        response.status,
        response.text()
    );
}

/// Peak resident set of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn generate(socket: &Path, stream: &RepoStream) -> Result<Vec<String>, tonic::Status> {
    let mut client = connect(socket)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    Ok(client
        .generate_manifest(futures::stream::iter(stream.messages()))
        .await?
        .into_inner()
        .manifests)
}

fn env(app: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut e = vec![
        ("ARGOCD_APP_NAME".to_owned(), app.to_owned()),
        ("ARGOCD_APP_NAMESPACE".to_owned(), "demo".to_owned()),
    ];
    e.extend(
        extra
            .iter()
            .map(|(k, v)| (format!("ARGOCD_ENV_{k}"), v.to_string())),
    );
    e
}

/// A chart with 5 Secrets, each annotated with its own path and holding 10 inline placeholders
/// for it: 50 placeholders over 5 paths. AVP would GET once per annotated object and once per
/// inline placeholder: 55 reads per render, plus a login.
fn fifty_placeholder_chart(bao: &Bao, dir: &Path) {
    let chart = dir.join("fifty");
    std::fs::create_dir_all(chart.join("templates")).expect("mkdir");
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: fifty\nversion: 0.1.0\n",
    )
    .expect("write");
    for s in 0..5 {
        let mut text = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s{s}\n  annotations:\n    avp.kubernetes.io/path: secret/data/bench/p{s}\nstringData:\n"
        );
        for k in 0..10 {
            text.push_str(&format!("  k{k}: <path:secret/data/bench/p{s}#k{k}>\n"));
        }
        std::fs::write(chart.join(format!("templates/s{s}.yaml")), text).expect("write");
        let data: serde_json::Map<String, Value> = (0..10)
            .map(|k| (format!("k{k}"), json!(format!("v{s}-{k}"))))
            .collect();
        put_secret(
            bao,
            &format!("secret/data/bench/p{s}"),
            &Value::Object(data),
        );
    }
}

fn audited(audit: &Path, operation: &str, prefix: &str) -> usize {
    std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["type"] == "request"
                && e["request"]["operation"] == operation
                && e["request"]["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(prefix))
        })
        .count()
}

/// 1000 placeholders over 20 paths in ~1 MB of ConfigMaps and Secrets, and their reads.
fn substitution_input() -> (Vec<Value>, Fetched, usize) {
    let mut docs = Vec::new();
    let filler = "x".repeat(900);
    for i in 0..1000 {
        let path = format!("secret/data/t/p{}", i % 20);
        docs.push(json!({
            "apiVersion": "v1",
            "kind": if i % 2 == 0 { "Secret" } else { "ConfigMap" },
            "metadata": {"name": format!("obj-{i}"), "namespace": "demo", "labels": {"app": "bench"}},
            "data": {"value": format!("prefix-<path:{path}#k{}>-suffix", i % 10), "filler": filler},
        }));
    }
    let bytes: usize = docs.iter().map(|d| d.to_string().len()).sum();
    let mut fetched = Fetched::new();
    for p in 0..20 {
        let data: serde_json::Map<String, Value> = (0..10)
            .map(|k| (format!("k{k}"), json!(format!("secret-{p}-{k}"))))
            .collect();
        fetched.insert(
            SecretRequest {
                path: format!("secret/data/t/p{p}"),
                kv_version: KvVersion::V2,
                version: None,
            },
            Ok(SecretData::new(data)),
        );
    }
    (docs, fetched, bytes)
}

/// A repository with a small chart and a `size`-byte incompressible file, gzip level 0.
fn big_archive(size: usize) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, data).expect("append");
    };
    add(
        "app/Chart.yaml",
        b"apiVersion: v2\nname: big\nversion: 0.1.0\n",
    );
    add(
        "app/templates/cm.yaml",
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\n",
    );
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..size / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    add("blob.bin", &noise);
    let raw = tar.into_inner().expect("tar");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    enc.write_all(&raw).expect("gzip");
    enc.finish().expect("gzip")
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.log");
    let bao = Bao::start(&dir.path().join("vault"), "18294", Some(&audit));
    let vault = bao.approle_env();

    // 1. Vault requests per render.
    let repo = dir.path().join("repo");
    fifty_placeholder_chart(&bao, &repo);
    let (server, socket) = start_server(dir.path(), "reads", &vault, &[]);
    let (reads0, logins0) = (
        audited(&audit, "read", "secret/data/bench/"),
        audited(&audit, "update", "auth/approle/login"),
    );
    let renders = 10;
    for i in 0..renders {
        let s = RepoStream::for_dir(&repo, "fifty", env(&format!("app{i}"), &[])).expect("archive");
        let m = generate(&socket, &s).await.expect("render");
        assert!(m.iter().all(|m| !m.contains("<path:")));
    }
    let reads = audited(&audit, "read", "secret/data/bench/") - reads0;
    let logins = audited(&audit, "update", "auth/approle/login") - logins0;
    stop(server);
    println!(
        "### Vault requests per render (50 placeholders over 5 paths, {renders} renders, OpenBao audit log)\n"
    );
    println!(
        "| | reads | logins | per render (reads) | per render (reads + logins) | AVP's model per render |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| avp-sidecar (cache TTL 30 s) | {reads} | {logins} | {:.2} | {:.2} | 55 reads + 1 login |",
        reads as f64 / renders as f64,
        (reads + logins) as f64 / renders as f64
    );

    // 2. Substitution throughput.
    let (docs, fetched, bytes) = substitution_input();
    let opts = avp_sidecar::substitute::Options::default();
    let rounds = 20;
    let mut spent = Duration::ZERO;
    for _ in 0..rounds {
        let d = docs.clone(); // the stage owns its input; cloning is not part of substitution
        let started = Instant::now();
        let needed = avp_sidecar::substitute::collect(&d, &opts).expect("collect");
        assert_eq!(needed.len(), 20);
        let budget = avp_sidecar::yaml::AliasBudget::for_output(bytes);
        let out = avp_sidecar::substitute::apply(d, &opts, &fetched, &budget).expect("apply");
        spent += started.elapsed();
        assert_eq!(out.len(), 1000);
    }
    let secs = spent.as_secs_f64() / rounds as f64;
    println!("\n### Substitution throughput (1000 placeholders, 20 paths, reads cached)\n");
    println!("| input | time per pass (ms) | throughput (MB/s) |");
    println!("| --- | ---: | ---: |");
    println!(
        "| {:.2} MB, 1000 objects | {:.1} | {:.0} |",
        bytes as f64 / 1e6,
        secs * 1e3,
        bytes as f64 / 1e6 / secs
    );

    // 3. 32 concurrent requests: each a different image tag, so every one renders.
    let (server, socket) = start_server(
        dir.path(),
        "concurrent",
        &vault,
        &["--render-cache-mb", "0"],
    );
    let examples = root().join("examples");
    let mut tasks = Vec::new();
    let wall = Instant::now();
    for i in 0..32 {
        let socket = socket.clone();
        let examples = examples.clone();
        tasks.push(tokio::spawn(async move {
            let tag = format!("1.0.{i}");
            let s = RepoStream::for_dir(
                &examples,
                "kustomize-app",
                env("web", &[("IMAGE_NAME", "nginx"), ("IMAGE_TAG", &tag)]),
            )
            .expect("archive");
            let started = Instant::now();
            let r = generate(&socket, &s).await;
            (r.is_ok(), started.elapsed().as_secs_f64() * 1e3)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (ok, ms) = t.await.expect("join");
        errors += usize::from(!ok);
        lat.push(ms);
    }
    let wall = wall.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let rss = peak_rss_mib(server.id());
    stop(server);
    println!(
        "\n### 32 concurrent GenerateManifest (examples/kustomize-app + OpenBao, 2 cores, render cache off)\n"
    );
    println!("| errors | p50 (ms) | p99 (ms) | wall (s) | peak server RSS (MiB, tools excluded) |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {errors} | {:.0} | {:.0} | {:.1} | {:.1} |",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        wall,
        rss
    );

    // 4. Peak RSS receiving a small vs a 200 MB archive (fresh server each).
    println!("\n### Peak server RSS by archive size (spooled to disk, extracted streaming)\n");
    println!("| archive | compressed (MB) | request (ms) | peak server RSS (MiB) |");
    println!("| --- | ---: | ---: | ---: |");
    for size in [1 << 20, 200 << 20] {
        let archive = big_archive(size);
        let (server, socket) = start_server(
            dir.path(),
            &format!("big{size}"),
            &[],
            &["--render-cache-mb", "0"],
        );
        let stream = RepoStream {
            checksum: Some(sha256_hex(&archive)),
            archive,
            app_rel_path: "app".into(),
            env: env("big", &[]),
            chunk: 1024,
        };
        let started = Instant::now();
        let m = generate(&socket, &stream).await.expect("render");
        assert_eq!(m.len(), 1);
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let rss = peak_rss_mib(server.id());
        stop(server);
        println!(
            "| {} MB file | {:.0} | {ms:.0} | {rss:.1} |",
            size >> 20,
            stream.archive.len() as f64 / 1e6
        );
    }
}
