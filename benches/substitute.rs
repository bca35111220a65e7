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
//! Then what the server adds on a render-cache hit: getting the cached documents, JSON encode,
//! and a whole hit (cached documents → substitute stage with reads from memory and rollout
//! hashes → JSON), once with a placeholder in every object and once in one object of ten.
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
use std::sync::Arc;
use std::time::{Duration, Instant};

use avp_sidecar::pipeline::manifest::{split_tool_output, to_json_string};
use avp_sidecar::pipeline::substitute::{Backend, Guard, read_and_apply_shared, share};
use avp_sidecar::secrets::policy::Policy;
use avp_sidecar::secrets::{
    Fetched, KvVersion, ReadError, SecretData, SecretRequest, SecretSource,
};
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

/// ~1 MB of YAML: `OBJECTS` objects; every `every`-th has one placeholder, the others a plain
/// value in its place.
fn input(every: usize) -> String {
    let mut y = String::new();
    for i in 0..OBJECTS {
        let ph = if i % every == 0 {
            format!("<path:secret/data/t/p{}#k{}>", i % PATHS, i % KEYS)
        } else {
            format!("plain-{i}")
        };
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
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d{i}\n  namespace: demo\n  labels:\n    app.kubernetes.io/name: bench\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: d{i}\n  template:\n    metadata:\n      labels:\n        app: d{i}\n    spec:\n      containers:\n      - name: app\n        image: registry.example.com/team/app:1.2.{i}\n        args: [\"--port=8080\", \"--log-level=info\"]\n        ports:\n        - containerPort: 8080\n          name: http\n        envFrom:\n        - secretRef:\n            name: s{}\n        env:\n        - name: API_KEY\n          value: {ph}\n",
                    i - 3
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

/// Secrets from memory: the hit's reads without Vault (the server's read cache does the same).
struct Memory(Fetched);

#[async_trait::async_trait]
impl SecretSource for Memory {
    async fn read(&self, req: &SecretRequest) -> Result<SecretData, ReadError> {
        self.0
            .get(req)
            .cloned()
            .unwrap_or_else(|| Err(ReadError::NotFound(req.clone())))
    }
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
    let text = input(1);
    let bytes = text.len();
    // The same input for timing the binary (`avp-sidecar generate - < file`, with the secrets of
    // `fetched()` in a Vault): written out, then the bench runs as usual.
    if let Ok(path) = std::env::var("BENCH_WRITE_INPUT") {
        std::fs::write(&path, &text).expect("write the input");
    }
    let fetched = fetched();
    let opts = Options::default();
    let mut t: [Vec<f64>; 9] = Default::default();
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
    // Not part of `generate`: what the server adds on a render-cache hit (getting the cached
    // documents for this request) and per answer (one JSON string per document). In their own
    // loop, so the freed copies do not change the heap the stages above run on.
    // The cache holds its documents behind `Arc`s, shared with every hit.
    let docs =
        share(parse_documents_within(&text, &AliasBudget::for_output(bytes)).expect("parse"));
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
    // A whole hit as the server runs it: the cached documents, the substitute stage (reads
    // from memory, rollout hashes on) and the JSON answer; once with a placeholder in every
    // object, once in one object of ten (closer to real renders, where most objects have none).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let backend = Backend {
        source: Some(Arc::new(Memory(fetched.clone()))),
        options: Options::default(),
        vault: None,
    };
    let policy = Policy::default();
    let guard = Guard {
        policy: &policy,
        project: "bench",
        max_reads: usize::MAX,
        rollout_hash: true,
    };
    for (every, v) in [1, 10].into_iter().zip(t[6..].iter_mut()) {
        let text = input(every);
        let cached = share(
            parse_documents_within(&text, &AliasBudget::for_output(text.len())).expect("parse"),
        );
        let mut first = None;
        for _ in 0..rounds {
            let started = Instant::now();
            let documents = cached.clone();
            let out = runtime
                .block_on(read_and_apply_shared(
                    &backend,
                    documents,
                    &AliasBudget::for_output(text.len()),
                    8,
                    None,
                    Some(guard),
                ))
                .expect("stage");
            let json: Vec<String> = out.iter().map(|d| to_json_string(d)).collect();
            v.push(started.elapsed().as_secs_f64() * 1e3);
            drop(out);
            // Every hit answers the same, whatever the hits before it did.
            match &first {
                None => first = Some(json),
                Some(first) => assert!(first == &json, "hits differ"),
            }
        }
    }
    for _ in 0..rounds {
        let started = Instant::now();
        let mut events = 0_usize;
        for event in saphyr_parser::Parser::new_from_str(&text) {
            std::hint::black_box(event.expect("event"));
            events += 1;
        }
        assert!(events > OBJECTS);
        t[8].push(started.elapsed().as_secs_f64() * 1e3);
    }
    let mb = bytes as f64 / 1e6;
    println!(
        "### Substitution path: {mb:.2} MB YAML in, {:.2} MB out, {OBJECTS} placeholders, {rounds} rounds (medians)\n",
        out_len as f64 / 1e6
    );
    println!("| stage | ms (median) | ms (min) | MB/s (median) |");
    println!("| --- | ---: | ---: | ---: |");
    let stages = [
        "parse",
        "collect + apply",
        "emit",
        "total (generate)",
        "server: documents of a cache hit (shared)",
        "server: JSON encode",
        "server hit, every object with a placeholder",
        "server hit, one object in ten with a placeholder",
        "reference: saphyr events alone",
    ];
    for (name, v) in stages.iter().zip(t.iter_mut()) {
        let m = median(v);
        // The fastest round too: the least disturbed by other work on a shared machine.
        println!("| {name} | {m:.2} | {:.2} | {:.0} |", v[0], mb / (m / 1e3));
    }
}
