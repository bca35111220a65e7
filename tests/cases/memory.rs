//! One memory budget per render: YAML aliases in a tool's output cannot expand without bound
//! across its documents, measured on the real server's memory (`/proc/<pid>/status`).

use std::process::Command;
use std::time::{Duration, Instant};

use tonic::Code;

use crate::support::{self, ServerOptions, TestServer, argo_env};

/// Templates in the red-team chart.
const BOMB_TEMPLATES: usize = 40;
/// Each template's anchored string, and how many times it is aliased. The red-team finding had
/// 1 000 aliases (1.6 GB of strings, 1.95 GB RSS); a quarter keeps helm's own expansion of every
/// document (it converts each to JSON) to seconds, and still expands to 400 MB.
const BOMB_STRING: usize = 40_000;
const BOMB_ALIASES: usize = 250;

/// The red-team chart: 40 small templates, each aliasing a 40 KB string many times. Every
/// document is inside go-yaml's alias ratio (an alias of a scalar is one alias node per two
/// decoded nodes), so helm accepts them and prints them as written: ~1.6 MB of output.
fn red_team_chart() -> tempfile::TempDir {
    let template = |i: usize| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb-{i:02}\ndata:\n  big: &s {}\n  copies: [{}]\n",
            "x".repeat(BOMB_STRING),
            vec!["*s"; BOMB_ALIASES].join(", ")
        )
    };
    let templates: Vec<(String, String)> = (0..BOMB_TEMPLATES)
        .map(|i| (format!("app/templates/bomb-{i:02}.yaml"), template(i)))
        .collect();
    let mut files: Vec<(&str, &str)> = vec![(
        "app/Chart.yaml",
        "apiVersion: v2\nname: red-team\nversion: 0.1.0\n",
    )];
    files.extend(templates.iter().map(|(p, t)| (p.as_str(), t.as_str())));
    support::repo_of(&files)
}

/// A normal chart that uses a few anchors, aliases and a merge key, as people write them.
fn anchors_chart() -> tempfile::TempDir {
    support::repo_of(&[
        (
            "app/Chart.yaml",
            "apiVersion: v2\nname: anchors\nversion: 0.1.0\n",
        ),
        (
            "app/templates/web.yaml",
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: &labels
    app: web
    tier: front
spec:
  selector:
    matchLabels: *labels
  template:
    metadata:
      labels:
        <<: *labels
        version: "1"
    spec:
      containers:
        - name: web
          image: nginx:1.25
          env: &env
            - name: MODE
              value: "on"
            - name: LEVEL
              value: debug
        - name: sidecar
          image: busybox:1.36
          env: *env
"#,
        ),
    ])
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in bytes.
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

const MB: u64 = 1 << 20;

#[tokio::test]
async fn red_team_alias_chart_is_refused_within_a_memory_bound() {
    let chart = red_team_chart();

    // helm itself accepts the chart and prints the aliases as written.
    let home = tempfile::tempdir().expect("tempdir");
    let out = Command::new(support::tool("helm"))
        .args(["template", "red-team"])
        .arg(chart.path().join("app"))
        .env_clear()
        .env("HOME", home.path())
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm refused the chart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(printed.matches("kind: ConfigMap").count(), BOMB_TEMPLATES);
    assert_eq!(printed.matches("*s").count(), BOMB_TEMPLATES * BOMB_ALIASES);
    let output_bytes = out.stdout.len();
    assert!(output_bytes < 2 * MB as usize, "{output_bytes}");

    let server = TestServer::start();
    let pid = server.pid();
    let hwm_before = proc_status(pid, "VmHWM");

    let err = support::render_app(&server, &chart, argo_env("red-team", "demo", &[]))
        .await
        .expect_err("the aliases exceed the render's budget");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let want = format!(
        "error generating manifests: helm output: document 1 (line 9): YAML anchors and aliases \
         would materialise more than 4194304 bytes of values (this render's budget: 2 × \
         {output_bytes} bytes of tool output, at least 4194304 and at most 67108864; node \
         estimate 64 bytes + string lengths)"
    );
    assert_eq!(err.message(), want);
    assert!(!err.message().contains("xxxx"), "never a value");

    // Without one budget per render the server materialised every document's aliases (400 MB
    // of strings here; peak RSS grew by 1.1 GB); with it, the render stops early in the first
    // document (growth measured: 8 MB with glibc malloc, 17-29 MB with mimalloc).
    let growth = proc_status(pid, "VmHWM").saturating_sub(hwm_before);
    eprintln!(
        "red-team render: {output_bytes} bytes of output, peak RSS {} -> {} KiB",
        hwm_before / 1024,
        (hwm_before + growth) / 1024
    );
    assert!(
        growth < 100 * MB,
        "peak RSS grew by {} MiB for {output_bytes} bytes of output",
        growth / MB
    );

    // The server keeps serving, and a chart with a few anchors renders as before.
    let docs = support::render_app(&server, &anchors_chart(), argo_env("anchors", "demo", &[]))
        .await
        .expect("a chart with a few anchors renders");
    let web = support::find(&docs, "Deployment", "web");
    let labels = serde_json::json!({"app": "web", "tier": "front"});
    assert_eq!(web["metadata"]["labels"], labels);
    assert_eq!(web["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(
        web["spec"]["template"]["metadata"]["labels"],
        serde_json::json!({"app": "web", "tier": "front", "version": "1"})
    );
    let containers = &web["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[1]["env"], containers[0]["env"]);
    assert_eq!(containers[1]["env"][0]["value"], "on");
    assert!(server.leftover_workdirs().is_empty());
}

/// A chart of `configmaps` ConfigMaps of 50 keys with 200-byte values: ~11 KB of output each.
fn big_chart(configmaps: usize) -> tempfile::TempDir {
    let template = format!(
        "{{{{- range $i := until {configmaps} }}}}\n---\napiVersion: v1\nkind: ConfigMap\n\
         metadata:\n  name: big-{{{{ $i }}}}\ndata:\n{{{{- range $j := until 50 }}}}\n  \
         key-{{{{ $j }}}}: {{{{ $.Values.filler | quote }}}}\n{{{{- end }}}}\n{{{{- end }}}}\n"
    );
    let values = format!("filler: {}\n", "v".repeat(200));
    support::repo_of(&[
        (
            "app/Chart.yaml",
            "apiVersion: v2\nname: big\nversion: 0.1.0\n",
        ),
        ("app/values.yaml", &values),
        ("app/templates/big.yaml", &template),
    ])
}

/// glibc malloc kept ~45% of a big render's memory resident for good (40 of 90 MB here, 118 of
/// 267 MB at 6 000 ConfigMaps); the allocator the binary uses returns it. Set
/// `MEMORY_TEST_CONFIGMAPS` to measure other sizes.
#[tokio::test]
async fn memory_goes_back_to_the_os_after_a_big_render() {
    // Without the render cache, which keeps a big render (and its memory) on purpose.
    let server = TestServer::start_with(ServerOptions {
        args: vec!["--render-cache-mb".into(), "0".into()],
        ..ServerOptions::default()
    });
    let pid = server.pid();
    let small = anchors_chart();
    let render_small = || async {
        support::render_app(&server, &small, argo_env("anchors", "demo", &[]))
            .await
            .expect("small render");
    };
    render_small().await;
    let rss_before = proc_status(pid, "VmRSS");
    let configmaps = std::env::var("MEMORY_TEST_CONFIGMAPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let docs = support::render_app(
        &server,
        &big_chart(configmaps),
        argo_env("big", "demo", &[]),
    )
    .await
    .expect("big render");
    assert_eq!(docs.len(), configmaps);
    drop(docs);
    let peak = proc_status(pid, "VmHWM");
    let right_after = proc_status(pid, "VmRSS");
    // Back to within a quarter of the growth while the server goes on serving small renders.
    let settled = rss_before + (peak - rss_before) / 4;
    let started = Instant::now();
    let report = |rss: u64| {
        format!(
            "big render ({configmaps} ConfigMaps): RSS before {} KiB, peak {} KiB, right after \
             {} KiB, {} KiB after {:?}",
            rss_before / 1024,
            peak / 1024,
            right_after / 1024,
            rss / 1024,
            started.elapsed()
        )
    };
    let settled_report = if right_after <= settled {
        report(right_after)
    } else {
        support::eventually_async(
            Duration::from_secs(30),
            "memory to be returned",
            async || {
                // A few at once, so that every worker thread allocates again (an allocator returns
                // a thread's free pages when that thread next works).
                futures::future::join_all((0..4).map(|_| render_small())).await;
                let rss = proc_status(pid, "VmRSS");
                if rss <= settled {
                    Ok(report(rss))
                } else {
                    Err(report(rss))
                }
            },
        )
        .await
    };
    eprintln!("{settled_report}");
}
