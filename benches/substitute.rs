//! The substitution path of `avp-sidecar generate -`, stage by stage, on ~1 MB of YAML with
//! 1000 placeholders: YAML parse, `collect` + `apply` (reads cached, no Vault), YAML emit.
//! In-process, so a before/after comparison of the engine is not drowned by process start-up
//! and Vault round trips; `benches/perf.rs` covers the end-to-end server figures.
//!
//! The input mimics rendered manifests: most strings hold no `<` (labels, images, env, probes),
//! one placeholder per object, a quarter of the objects are Secrets with base64 `data` (one
//! value a base64-encoded placeholder, as kustomize's `secretGenerator` writes them).
//!
//! The stages are those of `generate`: `split_tool_output` (as the CLI reads its input), then
//! `push_yaml` into one buffer, with the binary's allocator (mimalloc), so that the total is what
//! the command spends between reading stdin and writing stdout. For reference, the last row is
//! saphyr-parser's event stream alone on the same text: the floor of a parse that goes through
//! it for every document (`yaml.rs` reads the usual block YAML of manifests without it).
//!
//! Run: `cargo bench --bench substitute`. `BENCH_ROUNDS` (default 20) sets the passes;
//! `BENCH_WRITE_INPUT=<file>` also writes the input to that file.
// Bench helpers are not an API, and their statistics cast freely between counts and floats.
#![allow(
    unreachable_pub,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use avp_sidecar::pipeline::manifest::split_tool_output;
use avp_sidecar::secrets::{Fetched, KvVersion, SecretData, SecretRequest};
use avp_sidecar::substitute::{Options, apply, collect};
use avp_sidecar::yaml::{AliasBudget, parse_documents_within, push_yaml};
use base64::Engine as _;
use serde_json::{Value, json};

/// The binary's allocator (`src/main.rs`): allocation is a large part of every stage.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const OBJECTS: usize = 1000;
const PATHS: usize = 20;
const KEYS: usize = 10;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// ~1 MB of YAML: `OBJECTS` objects, one placeholder each.
fn input() -> String {
    let mut y = String::new();
    for i in 0..OBJECTS {
        let ph = format!("<path:secret/data/t/p{}#k{}>", i % PATHS, i % KEYS);
        let _ = writeln!(y, "---");
        match i % 4 {
            0 => {
                let _ = write!(
                    y,
                    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s{i}\n  namespace: demo\n  labels:\n    app.kubernetes.io/name: bench\n    app.kubernetes.io/instance: bench-{i}\ntype: Opaque\ndata:\n  password: {}\n",
                    b64(&ph)
                );
                for k in 0..16 {
                    let _ = writeln!(y, "  plain{k}: {}", b64(&format!("value-{i}-{k}-padding")));
                }
            }
            1 => {
                let _ = write!(
                    y,
                    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: t{i}\n  namespace: demo\n  labels:\n    app.kubernetes.io/name: bench\ntype: Opaque\nstringData:\n  url: postgres://app:{ph}@db:5432/app\n"
                );
                for k in 0..19 {
                    let _ = writeln!(y, "  setting{k}: some-plain-setting-value-{k}");
                }
            }
            2 => {
                let _ = write!(
                    y,
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{i}\n  namespace: demo\ndata:\n  token: \"{ph}\"\n"
                );
                for k in 0..20 {
                    let _ = writeln!(y, "  key{k}: \"configuration value number {k} for {i}\"");
                }
            }
            _ => {
                let _ = write!(
                    y,
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d{i}\n  namespace: demo\n  labels:\n    app.kubernetes.io/name: bench\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: d{i}\n  template:\n    metadata:\n      labels:\n        app: d{i}\n    spec:\n      containers:\n      - name: app\n        image: registry.example.com/team/app:1.2.{i}\n        args: [\"--port=8080\", \"--log-level=info\"]\n        ports:\n        - containerPort: 8080\n          name: http\n        env:\n        - name: API_KEY\n          value: {ph}\n"
                );
                for k in 0..9 {
                    let _ = writeln!(
                        y,
                        "        - name: SETTING_{k}\n          value: \"plain-{k}\""
                    );
                }
                y.push_str("        readinessProbe:\n          httpGet:\n            path: /healthz\n            port: http\n");
            }
        }
    }
    y
}

fn fetched() -> Fetched {
    let mut fetched = Fetched::new();
    for p in 0..PATHS {
        let data: serde_json::Map<String, Value> = (0..KEYS)
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
    fetched
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let text = input();
    let bytes = text.len();
    // The same input for timing the binary (`avp-sidecar generate - < file`, with the secrets of
    // `fetched()` in a Vault): written out, then the bench runs as usual.
    if let Ok(path) = std::env::var("BENCH_WRITE_INPUT") {
        std::fs::write(&path, &text).expect("write the input");
    }
    let fetched = fetched();
    let opts = Options::default();
    let mut t: [Vec<f64>; 7] = Default::default();
    let mut out_len = 0;
    for _ in 0..rounds {
        let budget = AliasBudget::for_output(bytes);
        let started = Instant::now();
        let docs = split_tool_output(&text, &budget).expect("parse");
        let parsed = started.elapsed();
        let needed = collect(&docs, &opts).expect("collect");
        assert_eq!(needed.len(), PATHS);
        let out = apply(docs, &opts, &fetched, &budget).expect("apply");
        let substituted = started.elapsed();
        let mut emitted = String::new();
        for d in &out {
            push_yaml(&mut emitted, d);
            emitted.push_str("---\n");
        }
        let total = started.elapsed();
        assert!(!emitted.contains("<path:"), "placeholders left");
        out_len = emitted.len();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        for (v, x) in t.iter_mut().zip([
            ms(parsed),
            ms(substituted - parsed),
            ms(total - substituted),
            ms(total),
        ]) {
            v.push(x);
        }
    }
    // Not part of `generate`: what the server adds on a render-cache hit (a deep copy of the
    // cached documents) and per answer (one JSON string per document). In their own loop, so
    // the freed copies do not change the heap the stages above run on.
    let docs = parse_documents_within(&text, &AliasBudget::for_output(bytes)).expect("parse");
    for _ in 0..rounds {
        let started = Instant::now();
        let copy = docs.clone();
        let cloned = started.elapsed();
        let json: usize = copy.iter().map(|d| d.to_string().len()).sum();
        let encoded = started.elapsed();
        assert!(json > 0);
        drop(copy);
        t[4].push(cloned.as_secs_f64() * 1e3);
        t[5].push((encoded - cloned).as_secs_f64() * 1e3);
    }
    for _ in 0..rounds {
        let started = Instant::now();
        let mut events = 0_usize;
        for event in saphyr_parser::Parser::new_from_str(&text) {
            std::hint::black_box(event.expect("event"));
            events += 1;
        }
        assert!(events > OBJECTS);
        t[6].push(started.elapsed().as_secs_f64() * 1e3);
    }
    let mb = bytes as f64 / 1e6;
    println!(
        "### Substitution path: {mb:.2} MB YAML in, {:.2} MB out, {OBJECTS} placeholders, {rounds} rounds (medians)\n",
        out_len as f64 / 1e6
    );
    println!("| stage | ms | MB/s |");
    println!("| --- | ---: | ---: |");
    let stages = [
        "parse",
        "collect + apply",
        "emit",
        "total (generate)",
        "server: clone on cache hit",
        "server: JSON encode",
        "reference: saphyr events alone",
    ];
    for (name, v) in stages.iter().zip(t.iter_mut()) {
        let m = median(v);
        println!("| {name} | {m:.2} | {:.0} |", mb / (m / 1e3));
    }
}
