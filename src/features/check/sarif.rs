//! Report formats: text for people, JSON for scripts, SARIF 2.1.0 for code-scanning UIs
//! (GitHub's accepts it as uploaded; every result there needs a file, so findings that could
//! not be traced point at the app's kustomization or Chart.yaml and name the object).

use serde_json::{Value, json};

use super::{Finding, Level, Report, Rule};

/// Where the SARIF `informationUri` points: the placeholder syntax the rules are about.
pub const INFORMATION_URI: &str =
    "https://argocd-vault-plugin.readthedocs.io/en/stable/howitworks/";

/// `file:line: level rule: message` (or `Kind/name: ...`), then a summary line.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.findings {
        let place = match (&f.location.file, f.location.line) {
            (Some(file), Some(line)) => format!("{file}:{line}"),
            (Some(file), None) => file.clone(),
            _ => f.location.object.clone(),
        };
        out.push_str(&format!(
            "{place}: {} {}: {}\n",
            f.level.as_str(),
            f.rule.id(),
            f.message
        ));
    }
    out.push_str(&format!(
        "{} placeholder(s): {} error(s), {} warning(s), {} note(s)\n",
        report.placeholders,
        report.count(Level::Error),
        report.count(Level::Warning),
        report.count(Level::Note),
    ));
    out
}

fn finding_json(f: &Finding) -> Value {
    json!({
        "rule": f.rule.id(),
        "level": f.level.as_str(),
        "message": f.message,
        "file": f.location.file,
        "line": f.location.line,
        "object": f.location.object,
    })
}

/// A JSON array of findings: `rule`, `level`, `message`, `file`, `line` (null when not
/// traced), `object`.
pub fn json(report: &Report) -> String {
    let all: Vec<Value> = report.findings.iter().map(finding_json).collect();
    let mut s = serde_json::to_string_pretty(&Value::Array(all)).unwrap_or_default();
    s.push('\n');
    s
}

/// One SARIF 2.1.0 log with one run.
pub fn sarif(report: &Report) -> String {
    let rules: Vec<Value> = Rule::ALL
        .iter()
        .map(|r| {
            json!({
                "id": r.id(),
                "shortDescription": { "text": r.description() },
                "defaultConfiguration": { "level": r.default_level().as_str() },
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let (uri, line) = match &f.location.file {
                Some(file) => (file.clone(), f.location.line.unwrap_or(1)),
                None => (report.app_entry.clone(), 1),
            };
            let rule_index = Rule::ALL.iter().position(|r| *r == f.rule).unwrap_or(0);
            json!({
                "ruleId": f.rule.id(),
                "ruleIndex": rule_index,
                "level": f.level.as_str(),
                "message": { "text": format!("{} ({})", f.message, f.location.object) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri.replace('\\', "/") },
                        "region": { "startLine": line },
                    },
                    "logicalLocations": [{
                        "fullyQualifiedName": f.location.object,
                        "kind": "object",
                    }],
                }],
            })
        })
        .collect();
    let log = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "avp-sidecar",
                    "version": env!("CARGO_PKG_VERSION"),
                    "informationUri": INFORMATION_URI,
                    "rules": rules,
                }
            },
            "results": results,
        }],
    });
    let mut s = serde_json::to_string_pretty(&log).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::check::Location;

    fn report() -> Report {
        Report {
            findings: vec![
                Finding {
                    rule: Rule::PathMissing,
                    level: Level::Error,
                    message: "no secret".into(),
                    location: Location {
                        file: Some("apps/web/secret.yaml".into()),
                        line: Some(7),
                        object: "Secret/web".into(),
                    },
                },
                Finding {
                    rule: Rule::Leak,
                    level: Level::Warning,
                    message: "leak".into(),
                    location: Location {
                        file: None,
                        line: None,
                        object: "ConfigMap/c".into(),
                    },
                },
            ],
            placeholders: 2,
            app_entry: "apps/web/kustomization.yaml".into(),
        }
    }

    #[test]
    fn text_lines_and_summary() {
        let t = text(&report());
        assert!(t.contains("apps/web/secret.yaml:7: error path-missing: no secret\n"));
        assert!(t.contains("ConfigMap/c: warning leak: leak\n"));
        assert!(t.ends_with("2 placeholder(s): 1 error(s), 1 warning(s), 0 note(s)\n"));
    }

    #[test]
    fn json_array() {
        let v: Value = serde_json::from_str(&json(&report())).expect("json");
        assert_eq!(v[0]["rule"], "path-missing");
        assert_eq!(v[0]["line"], 7);
        assert_eq!(v[1]["file"], Value::Null);
    }

    #[test]
    fn sarif_shape() {
        let v: Value = serde_json::from_str(&sarif(&report())).expect("json");
        assert_eq!(v["version"], "2.1.0");
        assert!(
            v["$schema"]
                .as_str()
                .expect("schema")
                .contains("sarif-2.1.0")
        );
        let driver = &v["runs"][0]["tool"]["driver"];
        assert_eq!(driver["name"], "avp-sidecar");
        assert!(driver["informationUri"].is_string());
        let rules = driver["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), Rule::ALL.len());
        for r in rules {
            assert!(r["id"].is_string() && r["shortDescription"]["text"].is_string());
        }
        let results = v["runs"][0]["results"].as_array().expect("results");
        assert_eq!(results.len(), 2);
        for r in results {
            let id = r["ruleId"].as_str().expect("ruleId");
            let index =
                usize::try_from(r["ruleIndex"].as_u64().expect("ruleIndex")).expect("index");
            assert_eq!(rules[index]["id"], id);
            assert!(["error", "warning", "note"].contains(&r["level"].as_str().expect("level")));
            assert!(r["message"]["text"].is_string());
            let loc = &r["locations"][0]["physicalLocation"];
            assert!(loc["artifactLocation"]["uri"].is_string());
            assert!(loc["region"]["startLine"].as_u64().expect("line") >= 1);
        }
        let untraced = &results[1]["locations"][0]["physicalLocation"];
        assert_eq!(
            untraced["artifactLocation"]["uri"],
            "apps/web/kustomization.yaml"
        );
        assert!(
            results[1]["message"]["text"]
                .as_str()
                .expect("text")
                .contains("ConfigMap/c")
        );
    }
}
