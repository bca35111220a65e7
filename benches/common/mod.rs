//! Shared by the bench binaries: tool paths, a server on a unix socket, an OpenBao dev server.

#![allow(dead_code)]

/// The tests' small HTTP/1.1 client (plain http on this machine).
#[path = "../../tests/support/http.rs"]
pub mod http;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tool(name: &str) -> String {
    let p = root().join(".tools/bin").join(name);
    assert!(
        p.exists(),
        "{} missing: run scripts/install-tools.sh",
        p.display()
    );
    p.display().to_string()
}

/// `avp-sidecar serve` on `<dir>/<name>.sock`, ready to take requests.
pub fn start_server(
    dir: &Path,
    name: &str,
    env: &[(String, String)],
    args: &[&str],
) -> (Child, PathBuf) {
    let socket = dir.join(format!("{name}.sock"));
    let child = Command::new(env!("CARGO_BIN_EXE_avp-sidecar"))
        .args(["serve", "--socket"])
        .arg(&socket)
        .arg("--workdir")
        .arg(dir.join(name))
        .args(["--kustomize", &tool("kubectl"), "--helm", &tool("helm")])
        .args(args)
        .env("ARGOCD_CMP_SERVER_LOGLEVEL", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(Stdio::null())
        .spawn()
        .expect("server");
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, socket)
}

pub fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// An OpenBao dev server from `vault-dev/`, seeded; stopped by `stop_bao`.
pub struct Bao {
    pub state: PathBuf,
    pub port: &'static str,
    pub root_token: &'static str,
}

impl Bao {
    pub fn start(state: &Path, port: &'static str, audit_log: Option<&Path>) -> Bao {
        let bao = Bao {
            state: state.to_path_buf(),
            port,
            root_token: "bench-root",
        };
        bao.script("stop.sh", &[]);
        let audit = audit_log.map(|p| p.display().to_string());
        let extra: Vec<(&str, &str)> = audit
            .as_deref()
            .map(|a| ("BAO_AUDIT_LOG", a))
            .into_iter()
            .collect();
        bao.script("start.sh", &extra);
        let addr = bao.addr();
        bao.script(
            "seed.sh",
            &[("VAULT_ADDR", &addr), ("VAULT_TOKEN", bao.root_token)],
        );
        bao
    }

    fn script(&self, script: &str, extra: &[(&str, &str)]) {
        let ok = Command::new(root().join("vault-dev").join(script))
            .env("VAULT_DEV_STATE", &self.state)
            .env("BAO_PORT", self.port)
            .env("BAO_ROOT_TOKEN", self.root_token)
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .status()
            .expect("vault-dev");
        assert!(ok.success(), "vault-dev/{script} failed");
    }

    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The sidecar's env for an approle login.
    pub fn approle_env(&self) -> Vec<(String, String)> {
        let read = |f: &str| std::fs::read_to_string(self.state.join(f)).expect("credential");
        vec![
            ("AVP_TYPE".into(), "vault".into()),
            ("VAULT_ADDR".into(), self.addr()),
            ("AVP_AUTH_TYPE".into(), "approle".into()),
            ("AVP_ROLE_ID".into(), read("approle_role_id")),
            ("AVP_SECRET_ID".into(), read("approle_secret_id")),
        ]
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.script("stop.sh", &[]);
    }
}
