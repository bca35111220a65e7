//! The monitoring bundle (`sidecar/monitoring`): the alerts pass `promtool check rules` and
//! their own `promtool test rules`, every metric a rule or dashboard panel queries is one the
//! server exports, and the kustomize component and the Helm chart make the same objects.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{self, argo_env, find, fixture};

fn monitoring() -> PathBuf {
    support::repo_root().join("sidecar/monitoring")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_docs(text: &str) -> Vec<Value> {
    avp_sidecar::yaml::parse_documents(text)
        .expect("valid yaml")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Every PromQL expression of the rules and the dashboard's panels.
fn queries() -> Vec<(String, String)> {
    let rules = yaml_docs(&read(&monitoring().join("rules.yaml"))).remove(0);
    let mut out = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().or(rule["record"].as_str());
            out.push((
                format!("rule {}", name.expect("alert or record")),
                rule["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    let dashboard: Value =
        serde_json::from_str(&read(&monitoring().join("dashboard.json"))).expect("dashboard json");
    fn panels(v: &Value, out: &mut Vec<(String, String)>) {
        for p in v["panels"].as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((format!("panel {}", p["title"]), expr.to_owned()));
                }
            }
            panels(p, out);
        }
    }
    panels(&dashboard, &mut out);
    for v in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push((format!("variable {}", v["name"]), q.to_owned()));
        }
    }
    out
}

/// Metric names in a PromQL expression: ours all start with `avp_sidecar_` or `process_`;
/// `up` is Prometheus' own.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re =
        regex::Regex::new(r"\b(avp_sidecar_[a-z0-9_]+|process_[a-z0-9_]+|up)\b").expect("regex");
    re.captures_iter(expr).map(|c| c[1].to_owned()).collect()
}

/// The sample names `/metrics` can carry, from its `# TYPE` lines (a histogram `h` as
/// `h_bucket`, `h_sum`, `h_count`).
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.to_owned());
        }
    }
    names
}

#[tokio::test]
async fn rules_and_dashboard_query_only_exported_metrics() {
    let (server, port) = support::metrics_server();
    let spec = support::dir_stream(&fixture("mono"), "apps/chart", argo_env("web", "demo", &[]));
    support::generate(&server.socket, &spec, None)
        .await
        .expect("generate");
    let missing = support::dir_stream(&fixture("mono"), "apps/nope", argo_env("web", "demo", &[]));
    assert!(
        support::generate(&server.socket, &missing, None)
            .await
            .is_err()
    );
    let text = support::http_get(port, "/metrics");
    let exported = exported(&text);
    // A request of each kind has been counted: the series the rules divide by exist.
    assert!(support::counter_with(port, "requests_total", &[("code", "OK")]) >= 1);
    assert!(support::counter_with(port, "requests_total", &[("reason", "bad_request")]) >= 1);
    let queries = queries();
    assert!(queries.len() > 20, "{queries:?}");
    let mut used = BTreeSet::new();
    for (what, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{what} queries no metric: {expr}");
        for name in names {
            assert!(
                name == "up" || exported.contains(&name),
                "{what} queries {name}, which /metrics does not export:\n{expr}"
            );
            used.insert(name);
        }
    }
    // The alerts' label values are ones the server uses.
    for value in [
        "cancelled",
        "shutting_down",
        "internal",
        "disk_full",
        "config",
        "deadline",
        "render_queue",
        "busy",
        "unreachable",
        "timeout",
        "server_error",
        "denied",
        "login",
        "read",
        "GenerateManifest",
    ] {
        assert!(
            text.contains(&format!("\"{value}\""))
                || avp_sidecar::metrics::Reason::ALL
                    .iter()
                    .any(|r| r.name() == value),
            "{value}"
        );
    }
    // The dashboard shows the areas an operator asks about.
    for name in [
        "avp_sidecar_requests_total",
        "avp_sidecar_request_duration_seconds_bucket",
        "avp_sidecar_vault_requests_total",
        "avp_sidecar_tool_runs_total",
        "avp_sidecar_render_cache_hits_total",
        "avp_sidecar_secret_cache_hits_total",
        "avp_sidecar_tool_sandbox_enabled",
    ] {
        assert!(used.contains(name), "{name} is on no panel or rule");
    }
}

/// Every alert links to a runbook section that exists, and says what it is.
#[test]
fn every_alert_has_a_runbook() {
    let runbooks = read(&support::repo_root().join("docs/runbooks.md"));
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let rules = yaml_docs(&read(&monitoring().join("rules.yaml"))).remove(0);
    let mut alerts = 0;
    for rule in rules["groups"][0]["rules"].as_array().expect("rules") {
        let alert = rule["alert"].as_str().expect("alert");
        let a = &rule["annotations"];
        assert!(
            a["summary"].is_string() && a["description"].is_string(),
            "{alert}"
        );
        let url = a["runbook_url"].as_str().expect("runbook_url");
        let anchor = url
            .strip_prefix("https://github.com/avp-sidecar/avp-sidecar/blob/main/docs/runbooks.md#")
            .unwrap_or_else(|| panic!("{alert}: {url}"));
        assert_eq!(anchor, alert.to_lowercase(), "{alert}");
        assert!(
            anchors.contains(anchor),
            "docs/runbooks.md has no section {alert}"
        );
        assert!(
            ["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{alert}"
        );
        alerts += 1;
    }
    assert_eq!(alerts, anchors.len(), "one runbook section per alert");
}

/// `prometheusrule.yaml` (the kustomize component's) is `rules.yaml` under a PrometheusRule's
/// spec, line for line. `AVP_SIDECAR_WRITE_MONITORING=1` rewrites it from `rules.yaml`.
#[test]
fn the_prometheus_rule_is_rules_yaml() {
    const HEAD: &str = "\
# GENERATED from rules.yaml (the same groups under a PrometheusRule's spec) for the kustomize
# component; edit rules.yaml, then run
#   AVP_SIDECAR_WRITE_MONITORING=1 cargo test --test integration -- monitoring::
# (the test fails while this file and rules.yaml differ).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: avp-sidecar
  labels:
    app.kubernetes.io/name: avp-sidecar
    app.kubernetes.io/part-of: argocd
spec:
";
    let mut want = HEAD.to_owned();
    for line in read(&monitoring().join("rules.yaml")).split_inclusive('\n') {
        if line.starts_with('#') {
            continue;
        }
        if !line.trim().is_empty() {
            want.push_str("  ");
        }
        want.push_str(line);
    }
    let path = monitoring().join("prometheusrule.yaml");
    if std::env::var_os("AVP_SIDECAR_WRITE_MONITORING").is_some() {
        std::fs::write(&path, &want).expect("write prometheusrule.yaml");
    }
    assert!(
        read(&path) == want,
        "sidecar/monitoring/prometheusrule.yaml differs from rules.yaml; run \
         AVP_SIDECAR_WRITE_MONITORING=1 cargo test --test integration -- monitoring::"
    );
}

/// promtool from PATH or `.tools/bin`; `None` (the test is skipped, loudly) unless `CI` is set.
fn promtool() -> Option<PathBuf> {
    let local = support::repo_root().join(".tools/bin/promtool");
    if local.exists() {
        return Some(local);
    }
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    if on_path.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required in CI (scripts/install-tools.sh installs Debian's prometheus)"
        );
        eprintln!("SKIPPED: promtool not found (apt-get install prometheus)");
    }
    on_path
}

#[test]
fn promtool_checks_and_tests_the_rules() {
    let Some(promtool) = promtool() else {
        return;
    };
    for args in [
        ["check", "rules", "rules.yaml"],
        ["test", "rules", "rules.test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(monitoring())
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert is exercised by the tests, firing at least once.
    let tests = read(&monitoring().join("rules.test.yaml"));
    let rules = yaml_docs(&read(&monitoring().join("rules.yaml"))).remove(0);
    for rule in rules["groups"][0]["rules"].as_array().expect("rules") {
        let alert = rule["alert"].as_str().expect("alert");
        let fires = tests
            .split("alertname: ")
            .skip(1)
            .any(|t| t.starts_with(&format!("{alert}\n")) && t.contains("exp_labels"));
        assert!(fires, "rules.test.yaml never expects {alert} to fire");
    }
}

/// The objects of the component, built over Argo CD's repo-server with the sidecar component.
fn kustomize_objects() -> Vec<Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).expect("mkdir");
        for f in std::fs::read_dir(from).expect("dir") {
            let f = f.expect("entry").path();
            if f.is_file() {
                std::fs::copy(&f, to.join(f.file_name().expect("name"))).expect("copy");
            }
        }
    };
    copy(
        &support::repo_root().join("sidecar/kustomize/avp-sidecar"),
        &dir.path().join("avp-sidecar"),
    );
    copy(&monitoring(), &dir.path().join("monitoring"));
    std::fs::copy(
        support::repo_root().join("sidecar/kustomize/example/argocd-repo-server.yaml"),
        dir.path().join("repo-server.yaml"),
    )
    .expect("copy");
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: argocd\n\
         resources: [repo-server.yaml]\ncomponents: [avp-sidecar, monitoring]\n",
    )
    .expect("write");
    let out = Command::new(support::kustomize())
        .arg("kustomize")
        .arg(dir.path())
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(&String::from_utf8_lossy(&out.stdout))
}

fn helm_objects(set: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new(support::tool("helm"));
    cmd.args(["template", "avp-sidecar-monitoring"])
        .arg(monitoring())
        .args(["--namespace", "argocd"]);
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("helm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn component_and_chart_make_the_same_objects() {
    let docs = kustomize_objects();
    let deploy = find(&docs, "Deployment", "argocd-repo-server");
    let service = find(&docs, "Service", "avp-sidecar-metrics");
    // The Service selects the repo-server pods and reaches the sidecar's named port.
    for (k, v) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(
            &deploy["spec"]["template"]["metadata"]["labels"][k], v,
            "{k}"
        );
    }
    let port = &service["spec"]["ports"][0];
    let sidecar = deploy["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "avp-sidecar"))
        .expect("sidecar");
    assert!(
        sidecar["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == port["targetPort"] && p["containerPort"] == port["port"]),
        "{port}"
    );
    let monitor = find(&docs, "ServiceMonitor", "avp-sidecar");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(&service["metadata"]["labels"][k], v, "{k}");
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], port["name"]);
    let rule = find(&docs, "PrometheusRule", "avp-sidecar");
    let plain = yaml_docs(&read(&monitoring().join("rules.yaml"))).remove(0);
    assert_eq!(rule["spec"], plain);
    let dashboard = find(&docs, "ConfigMap", "avp-sidecar-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(
        dashboard["data"]["avp-sidecar.json"]
            .as_str()
            .expect("dashboard"),
    )
    .expect("json");
    assert_eq!(json["uid"], "avp-sidecar");

    // Off by default.
    assert!(helm_objects(&[]).is_empty());
    let chart = helm_objects(&[
        "serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
        "grafanaDashboard.enabled=true",
    ]);
    assert_eq!(chart.len(), 4, "{chart:#?}");
    for (kind, name) in [
        ("Service", "avp-sidecar-metrics"),
        ("ServiceMonitor", "avp-sidecar"),
        ("PrometheusRule", "avp-sidecar"),
        ("ConfigMap", "avp-sidecar-dashboard"),
    ] {
        let mut from_kustomize = find(&docs, kind, name).clone();
        // kustomize sets the overlay's namespace; helm leaves it to the release.
        if let Some(m) = from_kustomize["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let mut from_helm = find(&chart, kind, name).clone();
        // The dashboard as JSON (helm's block scalar drops the file's final newline).
        for o in [&mut from_kustomize, &mut from_helm] {
            if let Some(text) = o["data"]["avp-sidecar.json"].as_str() {
                o["data"]["avp-sidecar.json"] = serde_json::from_str(text).expect("json");
            }
        }
        assert!(from_helm == from_kustomize, "{kind}/{name} differs");
    }
    // The runbook links can point at the operator's own copy.
    let moved = helm_objects(&[
        "prometheusRule.enabled=true",
        "prometheusRule.runbookBaseUrl=https://wiki.example/runbooks",
    ]);
    let url = &find(&moved, "PrometheusRule", "avp-sidecar")["spec"]["groups"][0]["rules"][0]["annotations"]
        ["runbook_url"];
    assert_eq!(url, "https://wiki.example/runbooks#avpsidecardown");
}
