//! `avp-sidecar generate`, the drop-in for `argocd-vault-plugin generate`, against OpenBao.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::bao::Bao;
use crate::support::{self, find};

fn generate(env: &[(String, String)], args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_avp-sidecar"))
        .arg("generate")
        .args(args)
        .env_remove("AVP_TYPE")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pipe_from_kustomize() {
    let bao = Bao::shared();
    let rendered = Command::new(support::tool("kustomize"))
        .args(["build", "--enable-helm", "--helm-command"])
        .arg(support::tool("helm"))
        .arg(support::repo_root().join("examples/kustomize-app"))
        .output()
        .expect("kustomize");
    assert!(rendered.status.success());
    let (ok, stdout, stderr) = generate(&bao.approle_env(), &["-"], &rendered.stdout);
    assert!(ok, "{stderr}");
    assert!(
        stdout.ends_with("---\n"),
        "AVP framing: each document followed by ---"
    );
    let docs = avp_sidecar::yaml::parse_documents(&stdout).expect("valid yaml");
    let docs: Vec<_> = docs.into_iter().filter(|d| !d.is_null()).collect();
    assert_eq!(
        find(&docs, "Secret", "web-db")["stringData"]["DB_PASSWORD"],
        "s3cr3t-v2"
    );
    assert_eq!(
        find(&docs, "ConfigMap", "web-legacy")["data"]["API_USER"],
        "alice"
    );
    // AVP's flags as AVP plugin configs pass them: accepted; the verbose one names reads,
    // never values.
    let (ok, again, stderr) = generate(
        &bao.approle_env(),
        &["--verbose-sensitive-output", "--disable-token-cache", "-"],
        &rendered.stdout,
    );
    assert!(ok, "{stderr}");
    assert_eq!(again, stdout);
    assert!(
        stderr.contains("avp-sidecar: reading secret/data/demo/web"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
}

#[test]
fn empty_input_is_refused_unless_allowed() {
    let (ok, _, stderr) = generate(&[], &["-"], b"");
    assert!(!ok);
    assert!(stderr.contains("no manifests in the input"), "{stderr}");
    let (ok, stdout, stderr) = generate(&[], &["--allow-empty", "-"], b"---\n# nothing\n");
    assert!(ok, "{stderr}");
    assert!(stdout.is_empty());
}

#[test]
fn errors_are_precise_and_secret_free() {
    let bao = Bao::shared();
    let input = b"apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  a: <path:secret/data/demo/web#password>\n  b: <path:secret/data/demo/web#nope>\n";
    let (ok, stdout, stderr) = generate(&bao.approle_env(), &["-"], input);
    assert!(!ok);
    assert!(stdout.is_empty(), "nothing printed on failure: {stdout}");
    assert!(
        stderr.contains("Secret/db") && stderr.contains("nope"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
    assert!(
        !stderr.to_lowercase().contains("usage"),
        "no usage dump: {stderr}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("values.yaml"), "replicas: 3\n").expect("write");
    let (ok, _, stderr) = generate(
        &bao.approle_env(),
        &[dir.path().to_str().expect("utf8")],
        b"",
    );
    assert!(!ok);
    assert!(stderr.contains("has no 'kind'"), "{stderr}");
}

/// AVP's `-s` outside a cluster: one clear line naming the flag and the cause.
#[test]
fn secret_name_outside_a_cluster_is_one_clear_line() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_avp-sidecar"));
    cmd.args(["generate", "-s", "argocd:avp", "-"])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("AVP_TYPE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"kind: ConfigMap\nmetadata: {name: x}\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        stderr.trim(),
        "avp-sidecar: -s argocd:avp: Kubernetes API client: KUBERNETES_SERVICE_HOST is not set (not running in a cluster?)"
    );
}
