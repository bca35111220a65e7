//! `avp-sidecar check`: the built binary on repositories written here, rendered with the real
//! kustomize and helm, verified against a real OpenBao (approle with the read-only policy).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::bao::Bao;
use crate::support::{self};

/// Values seeded in `secret/demo/web`: none may appear in any output.
const SEEDED_VALUES: &[&str] = &["s3cr3t-v1", "s3cr3t-v2", "demo-user"];

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn check(dir: &Path, args: &[&str], env: &[(String, String)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_avp-sidecar"))
        .arg("check")
        .arg(dir)
        .args(args)
        .arg("--kustomize")
        .arg(support::kustomize())
        .arg("--helm")
        .arg(support::tool("helm"))
        .arg("--config-dir")
        .arg(dir.join("no-such-config-dir"))
        .env_remove("AVP_TYPE")
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run check");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for value in SEEDED_VALUES {
        assert!(
            !run.stdout.contains(value) && !run.stderr.contains(value),
            "secret value {value} printed:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
    run
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// An app in `apps/web` with a base outside the app path, reading `web` (the seeded
/// `secret/data/demo/web` or a copy of it). Line numbers matter to the tests.
fn kustomize_repo(web: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(
        root,
        "apps/web/kustomization.yaml",
        "resources:\n  - secret.yaml\n  - configmap.yaml\n  - ../../base\n",
    );
    write(
        root,
        "apps/web/secret.yaml",
        &format!(
            "apiVersion: v1
kind: Secret
metadata:
  name: web
stringData:
  ok: <path:{web}#password>
  missing: <path:secret/data/demo/nope#password>
  pinned: <path:{web}#password#9>
  typo: <path:{web}#pasword>
  nokey: <path:{web}>
  deleted: <path:{web}#username#1>
"
        ),
    );
    write(
        root,
        "apps/web/configmap.yaml",
        &format!(
            "apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  user: <path:{web}#username>
  html: <b>hello</b><br>
"
        ),
    );
    write(root, "base/kustomization.yaml", "resources:\n  - db.yaml\n");
    write(
        root,
        "base/db.yaml",
        &format!(
            "apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  port: <path:{web}#port>
"
        ),
    );
    dir
}

fn clean_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "kustomization.yaml",
        "resources:\n  - secret.yaml\n",
    );
    write(
        dir.path(),
        "secret.yaml",
        "apiVersion: v1
kind: Secret
metadata:
  name: web
stringData:
  password: <path:secret/data/demo/web#password>
  user: <path:secret/data/demo/web#username#2>
",
    );
    dir
}

fn has_line(text: &str, prefix: &str, rest: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with(prefix) && l.contains(rest))
}

#[test]
fn kustomize_findings_with_locations() {
    let bao = Bao::shared();
    // Version 1 of (this test's copy of) demo/web deleted: a pin to it is not live any more.
    let web = bao.own_demo_web("check-findings");
    bao.api(
        "POST",
        &web.replacen("/data/", "/delete/", 1),
        Some(serde_json::json!({"versions": [1]})),
    );
    let repo = kustomize_repo(&web);
    let run = check(
        repo.path(),
        &["--app-path", "apps/web", "--read-keys"],
        &bao.approle_env(),
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let out = &run.stdout;
    let s = "apps/web/secret.yaml";
    assert!(
        has_line(out, &format!("{s}:6: note placeholder"), &web),
        "{out}"
    );
    assert!(!has_line(out, &format!("{s}:6: error"), ""), "{out}");
    assert!(
        has_line(out, &format!("{s}:7: error path-missing"), "demo/nope"),
        "{out}"
    );
    assert!(
        has_line(out, &format!("{s}:8: error path-missing"), "version 9"),
        "{out}"
    );
    assert!(
        has_line(out, &format!("{s}:9: error key-missing"), "\"pasword\""),
        "{out}"
    );
    assert!(
        has_line(out, &format!("{s}:10: warning not-a-placeholder"), "#KEY"),
        "{out}"
    );
    assert!(
        has_line(out, &format!("{s}:11: error path-missing"), "version 1"),
        "{out}"
    );
    assert!(
        has_line(
            out,
            "apps/web/configmap.yaml:6: warning leak",
            "ConfigMap/web-config"
        ),
        "{out}"
    );
    assert!(!out.contains("<b>"), "HTML is not a finding: {out}");
    // A resource from outside the app path is traced to its file.
    assert!(
        has_line(out, "base/db.yaml:6: note placeholder", "#port"),
        "{out}"
    );
    assert!(
        out.lines().last().unwrap_or("").contains("error(s)"),
        "{out}"
    );

    // Without --read-keys no data is read: the typo'd key cannot be seen, the rest can.
    let run = check(repo.path(), &["--app-path", "apps/web"], &bao.approle_env());
    assert_eq!(run.code, 1);
    assert!(!run.stdout.contains("key-missing"), "{}", run.stdout);
    assert!(run.stdout.contains("path-missing"), "{}", run.stdout);

    // JSON: the same findings as data.
    let run = check(
        repo.path(),
        &["--app-path", "apps/web", "--read-keys", "--format", "json"],
        &bao.approle_env(),
    );
    assert_eq!(run.code, 1);
    let findings: Vec<Value> = serde_json::from_str(&run.stdout).expect("json array");
    assert!(findings.iter().any(|f| f["rule"] == "key-missing"
        && f["file"] == "apps/web/secret.yaml"
        && f["line"] == 9
        && f["level"] == "error"
        && f["object"] == "Secret/web"));
}

#[test]
fn sarif_output() {
    let bao = Bao::shared();
    let repo = kustomize_repo("secret/data/demo/web");
    let run = check(
        repo.path(),
        &["--app-path", "apps/web", "--read-keys", "--format", "sarif"],
        &bao.approle_env(),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let log: Value = serde_json::from_str(&run.stdout).expect("sarif is json");
    assert_eq!(log["version"], "2.1.0");
    assert!(log["$schema"].as_str().expect("$schema").contains("sarif"));
    let run0 = &log["runs"][0];
    let driver = &run0["tool"]["driver"];
    assert_eq!(driver["name"], "avp-sidecar");
    assert!(
        driver["informationUri"]
            .as_str()
            .expect("uri")
            .starts_with("https://")
    );
    let rules: Vec<&str> = driver["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            assert!(r["shortDescription"]["text"].is_string());
            r["id"].as_str().expect("rule id")
        })
        .collect();
    for id in [
        "placeholder",
        "path-missing",
        "key-missing",
        "leak",
        "not-a-placeholder",
    ] {
        assert!(rules.contains(&id), "{id}");
    }
    let results = run0["results"].as_array().expect("results");
    assert!(!results.is_empty());
    for r in results {
        assert!(rules.contains(&r["ruleId"].as_str().expect("ruleId")));
        assert!(["error", "warning", "note"].contains(&r["level"].as_str().expect("level")));
        assert!(r["message"]["text"].is_string());
        let loc = &r["locations"][0]["physicalLocation"];
        let uri = loc["artifactLocation"]["uri"].as_str().expect("uri");
        assert!(!uri.starts_with('/') && !uri.contains('\\'), "{uri}");
        assert!(loc["region"]["startLine"].as_u64().expect("startLine") >= 1);
    }
    assert!(results.iter().any(|r| r["ruleId"] == "key-missing"
        && r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            == "apps/web/secret.yaml"
        && r["locations"][0]["physicalLocation"]["region"]["startLine"] == 9));
}

#[test]
fn clean_repo_passes_and_policy_denies() {
    let bao = Bao::shared();
    let repo = clean_repo();
    let run = check(repo.path(), &["--read-keys"], &bao.approle_env());
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("0 error(s)"), "{}", run.stdout);

    // The project may read only another tree: denied before Vault is asked.
    let run = check(
        repo.path(),
        &[
            "--project",
            "team-a",
            "--path-allow",
            "team-a=secret/data/team-a/**",
        ],
        &bao.approle_env(),
    );
    assert_eq!(run.code, 1);
    assert!(
        has_line(&run.stdout, "secret.yaml:6: error path-denied", "team-a"),
        "{}",
        run.stdout
    );
    // A rule for every project that covers the path: allowed.
    let run = check(
        repo.path(),
        &["--path-allow", "secret/data/demo/*"],
        &bao.approle_env(),
    );
    assert_eq!(run.code, 0, "{}", run.stdout);

    // Grammar, leak and policy checks work without Vault.
    let run = check(repo.path(), &["--no-vault", "--format", "json"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Vault checks wanted but no backend: the check cannot run.
    let run = check(repo.path(), &[], &[]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--no-vault"), "{}", run.stderr);
}

#[test]
fn permission_denied_without_reading() {
    let bao = Bao::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "kustomization.yaml",
        "resources:\n  - secret.yaml\n",
    );
    write(
        dir.path(),
        "secret.yaml",
        "apiVersion: v1
kind: Secret
metadata:
  name: web
stringData:
  a: <path:private/data/thing#key>
  b: <path:secret/data/demo/web#password>
",
    );
    let run = check(dir.path(), &[], &bao.approle_env());
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        has_line(
            &run.stdout,
            "secret.yaml:6: error permission-denied",
            "private/data/thing"
        ),
        "{}",
        run.stdout
    );

    // A token that may read data but not metadata (a common AVP policy): capabilities-self
    // tells the readable path from the denied one without reading either.
    bao.api(
        "PUT",
        "sys/policies/acl/data-only",
        Some(serde_json::json!({"policy": "path \"secret/data/*\" { capabilities = [\"read\"] }"})),
    );
    let token = bao.api(
        "POST",
        "auth/token/create",
        Some(serde_json::json!({"policies": ["data-only"], "ttl": "1h"})),
    )["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let env = vec![
        ("AVP_TYPE".to_owned(), "vault".to_owned()),
        ("VAULT_ADDR".to_owned(), bao.addr.clone()),
        ("AVP_AUTH_TYPE".to_owned(), "token".to_owned()),
        ("VAULT_TOKEN".to_owned(), token),
    ];
    let run = check(dir.path(), &[], &env);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        has_line(
            &run.stdout,
            "secret.yaml:6: error permission-denied",
            "capabilities: deny"
        ),
        "{}",
        run.stdout
    );
    assert!(
        has_line(
            &run.stdout,
            "secret.yaml:7: note unverified",
            "capabilities-self"
        ),
        "{}",
        run.stdout
    );
    assert!(
        !has_line(&run.stdout, "secret.yaml:7: error", ""),
        "{}",
        run.stdout
    );
}

#[test]
fn helm_values_are_traced() {
    let bao = Bao::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(
        root,
        "chart/Chart.yaml",
        "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    );
    write(
        root,
        "chart/values.yaml",
        "replicas: 1\ndbPassword: <path:secret/data/demo/web#password>\ndbUser: <path:secret/data/demo/web#usernme>\n",
    );
    write(
        root,
        "chart/templates/secret.yaml",
        "apiVersion: v1
kind: Secret
metadata:
  name: {{ .Release.Name }}-db
stringData:
  DB_PASSWORD: {{ .Values.dbPassword | quote }}
  DB_USER: {{ .Values.dbUser | quote }}
  DB_HOST: {{ printf \"<path:%s#host>\" \"secret/data/demo/web\" | quote }}
",
    );
    let run = check(
        root,
        &["--app-path", "chart", "--app-name", "web", "--read-keys"],
        &bao.approle_env(),
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(
        has_line(out, "chart/values.yaml:2: note placeholder", "#password"),
        "{out}"
    );
    assert!(
        has_line(out, "chart/values.yaml:3: error key-missing", "usernme"),
        "{out}"
    );
    // Built by template logic: no file holds the text, so the object is named.
    assert!(
        has_line(out, "Secret/web-db: error key-missing", "\"host\""),
        "{out}"
    );
}
