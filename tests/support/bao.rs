//! A real OpenBao dev server per test, started and seeded with the same scripts the demo uses
//! (`vault-dev/`), on a free port, stopped on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use super::repo_root;

pub(crate) struct Bao {
    pub addr: String,
    pub state: PathBuf,
    pub port: u16,
    audit: bool,
    _dir: tempfile::TempDir,
}

pub(crate) const ROOT_TOKEN: &str = "test-root";

impl Bao {
    /// Starts and seeds a fresh server (each call its own).
    pub(crate) fn start() -> Bao {
        Self::start_inner(false)
    }

    /// Like `start`, with a file audit device at `<state>/audit.log` (see `audited_requests`).
    pub(crate) fn start_with_audit() -> Bao {
        Self::start_inner(true)
    }

    pub(crate) fn audit_log(&self) -> PathBuf {
        self.state.join("audit.log")
    }

    fn start_inner(audit: bool) -> Bao {
        // The free port is only free when chosen: another test may take it before bao binds
        // it. Then choose again.
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port_pair();
            let bao = Bao {
                addr: format!("http://127.0.0.1:{port}"),
                state: dir.path().join("vault"),
                port,
                audit,
                _dir: dir,
            };
            match bao.try_launch() {
                Ok(()) => return bao,
                Err(e) if e.contains("address already in use") || e.contains("already listens") => {
                    last = e
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no free port for OpenBao after 5 tries:\n{last}")
    }

    /// Stops the server and starts a fresh one on the same port (the dev server keeps nothing:
    /// it is seeded again, with new AppRole credentials; the root token stays the same).
    pub(crate) fn restart(&self) {
        self.stop();
        if let Err(e) = self.try_launch() {
            panic!("{e}");
        }
    }

    fn try_launch(&self) -> Result<(), String> {
        let audit_env: Vec<(&str, String)> = if self.audit {
            vec![("BAO_AUDIT_LOG", self.audit_log().display().to_string())]
        } else {
            Vec::new()
        };
        let run = |script: &str, extra: &[(&str, String)]| {
            let out = Command::new(repo_root().join("vault-dev").join(script))
                .env("VAULT_DEV_STATE", &self.state)
                .env("BAO_PORT", self.port.to_string())
                .env("BAO_ROOT_TOKEN", ROOT_TOKEN)
                .envs(extra.iter().map(|(k, v)| (*k, v.clone())))
                .output()
                .expect("run vault-dev script");
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "vault-dev/{script} failed:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        run("start.sh", &audit_env)?;
        run(
            "seed.sh",
            &[
                ("VAULT_ADDR", self.addr.clone()),
                ("VAULT_TOKEN", ROOT_TOKEN.to_owned()),
            ],
        )
    }

    /// Env for the sidecar: token login with the root token, which survives `restart`.
    pub(crate) fn token_env(&self) -> Vec<(String, String)> {
        vec![
            ("AVP_TYPE".into(), "vault".into()),
            ("VAULT_ADDR".into(), self.addr.clone()),
            ("AVP_AUTH_TYPE".into(), "token".into()),
            ("VAULT_TOKEN".into(), ROOT_TOKEN.into()),
        ]
    }

    pub(crate) fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.state.join(name)).expect("seeded credential")
    }

    /// Env for the sidecar: approle login, as the demo uses.
    pub(crate) fn approle_env(&self) -> Vec<(String, String)> {
        vec![
            ("AVP_TYPE".into(), "vault".into()),
            ("VAULT_ADDR".into(), self.addr.clone()),
            ("AVP_AUTH_TYPE".into(), "approle".into()),
            ("AVP_ROLE_ID".into(), self.file("approle_role_id")),
            ("AVP_SECRET_ID".into(), self.file("approle_secret_id")),
        ]
    }

    /// A Vault API call with the root token; returns the JSON body.
    pub(crate) fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let body = body.map(|b| b.to_string());
        let response = super::http::request(
            &self.addr,
            method,
            &format!("/v1/{path}"),
            &[
                ("X-Vault-Token", ROOT_TOKEN),
                ("Content-Type", "application/json"),
            ],
            body.as_deref().map(str::as_bytes),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(
            (200..300).contains(&response.status),
            "{method} {path}: HTTP {}: {}",
            response.status,
            response.text()
        );
        if response.body.is_empty() {
            return serde_json::json!({});
        }
        serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", response.text()))
    }

    /// Audited requests for `path` with `operation` (`read`, `update`, ...), in order
    /// (responses are logged separately and not included).
    pub(crate) fn audited(
        audit: &std::path::Path,
        operation: &str,
        path: &str,
    ) -> Vec<serde_json::Value> {
        std::fs::read_to_string(audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| {
                e["type"] == "request"
                    && e["request"]["path"] == path
                    && e["request"]["operation"] == operation
            })
            .collect()
    }

    pub(crate) fn audited_requests(audit: &std::path::Path, operation: &str, path: &str) -> usize {
        Self::audited(audit, operation, path).len()
    }

    /// Makes the audit log record request header `name` (in clear).
    pub(crate) fn audit_header(&self, name: &str) {
        self.api(
            "POST",
            &format!("sys/config/auditing/request-headers/{name}"),
            Some(serde_json::json!({"hmac": false})),
        );
    }

    /// Values of request header `name` on the audited reads of `path` (not the root token's:
    /// seeding), in order.
    pub(crate) fn audited_header(audit: &std::path::Path, path: &str, name: &str) -> Vec<String> {
        Self::audited(audit, "read", path)
            .iter()
            .filter(|e| e["auth"]["display_name"] != "token")
            .map(|e| {
                e["request"]["headers"][name][0]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    }

    pub(crate) fn stop(&self) {
        let _ = Command::new(repo_root().join("vault-dev/stop.sh"))
            .env("VAULT_DEV_STATE", &self.state)
            .status();
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port whose successor is free too (the dev server also binds port+1).
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        if port < 65000 && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair");
}
