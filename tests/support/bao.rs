//! OpenBao dev servers for the tests, started and seeded with the same scripts the demo uses
//! (`vault-dev/`), on free ports.
//!
//! Most tests use [`Bao::shared`]: one seeded server per test binary, started on first use.
//! Tests on it keep apart by what they touch: a test that changes data writes under paths of its
//! own (`own_demo_web`, a namespace or prefix no other test uses), and a test that counts audit
//! entries counts its own identity's (`own_approle` + `audited_as`, `own_token`), since every
//! other test's calls land in the same audit log. Only a test that must stop, restart or break
//! its server starts a private one ([`Bao::start`]), and says why.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use super::repo_root;

pub(crate) struct Bao {
    pub addr: String,
    pub state: PathBuf,
    pub port: u16,
    audit: bool,
    /// The shared server: its `bao-tether.sh`, whose stdin pipe we hold until the binary exits.
    tether: Option<Mutex<Child>>,
    /// A private server's dir, removed on drop (the shared server's tether removes its own).
    _dir: Option<tempfile::TempDir>,
}

pub(crate) const ROOT_TOKEN: &str = "test-root";

static SHARED: OnceLock<Bao> = OnceLock::new();

impl Bao {
    /// The seeded server this test binary shares (audit log on), started on first use and
    /// stopped when the binary exits (`tests/support/bao-tether.sh`). Never stopped before:
    /// `stop` and `restart` panic on it.
    pub fn shared() -> &'static Bao {
        SHARED.get_or_init(|| Self::with_free_port(true, Self::launch_tethered))
    }

    /// Starts and seeds a private server (each call its own), stopped on drop. Only for tests
    /// that stop, restart or break their server; the caller says why.
    pub fn start() -> Bao {
        Self::with_free_port(false, Self::launch_private)
    }

    pub(crate) fn audit_log(&self) -> PathBuf {
        self.state.join("audit.log")
    }

    fn with_free_port(audit: bool, launch: fn(&mut Bao) -> Result<(), String>) -> Bao {
        // The free port is only free when chosen: another test may take it before bao binds
        // it. Then choose again.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port_pair();
            let mut bao = Bao {
                addr: format!("http://127.0.0.1:{port}"),
                state: PathBuf::new(),
                port,
                audit,
                tether: None,
                _dir: None,
            };
            match launch(&mut bao) {
                Ok(()) => return bao,
                Err(e) if e.contains("address already in use") || e.contains("already listens") => {
                    last = e
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no free port for OpenBao after 5 tries:\n{last}")
    }

    fn launch_private(bao: &mut Bao) -> Result<(), String> {
        let dir = tempfile::tempdir().expect("tempdir");
        bao.state = dir.path().join("vault");
        bao._dir = Some(dir);
        bao.try_launch()
    }

    /// Starts `bao-tether.sh` in a dir of its own (kept: the tether removes it when the binary
    /// exits) and waits for its "ready".
    fn launch_tethered(bao: &mut Bao) -> Result<(), String> {
        let dir = tempfile::Builder::new()
            .prefix("avp-sidecar-shared-bao-")
            .tempdir()
            .expect("tempdir")
            .keep();
        bao.state = dir.join("vault");
        let mut child = Command::new(repo_root().join("tests/support/bao-tether.sh"))
            .arg(&dir)
            .env("BAO_PORT", bao.port.to_string())
            .env("BAO_ROOT_TOKEN", ROOT_TOKEN)
            .env("BAO_AUDIT_LOG", bao.audit_log())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tests/support/bao-tether.sh");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("tether stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        let mut stderr = String::new();
        if line.trim() == "ready" {
            bao.tether = Some(Mutex::new(child));
            return Ok(());
        }
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        let status = child.wait().expect("wait for the tether");
        Err(format!(
            "shared OpenBao did not start ({status}):\n{stderr}"
        ))
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

    /// Makes the audit log record request header `name` (in clear).
    pub(crate) fn audit_header(&self, name: &str) {
        self.api(
            "POST",
            &format!("sys/config/auditing/request-headers/{name}"),
            Some(serde_json::json!({"hmac": false})),
        );
    }

    /// Values of request header `name` on the audited reads of `path` made with AppRole role
    /// `role`'s tokens (`own_approle`), in order.
    pub fn audited_header_as(
        audit: &std::path::Path,
        role: &str,
        path: &str,
        name: &str,
    ) -> Vec<String> {
        Self::audited_as(audit, role, "read", path)
            .iter()
            .map(|e| {
                e["request"]["headers"][name][0]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    }

    pub fn stop(&self) {
        assert!(
            self.tether.is_none(),
            "the shared OpenBao cannot be stopped: start a private one (Bao::start)"
        );
        let _ = Command::new(repo_root().join("vault-dev/stop.sh"))
            .env("VAULT_DEV_STATE", &self.state)
            .status();
    }

    /// A login of this test's own: AppRole role `role` (policy `avp-reader`, like the seeded
    /// role `avp`), as sidecar env. Its calls carry `auth.metadata.role_name` = `role` in the
    /// audit log (`audited_as`), so they can be told from other tests' on the shared server.
    /// `role` must be unique in the test binary.
    pub fn own_approle(&self, role: &str) -> Vec<(String, String)> {
        self.api(
            "POST",
            &format!("auth/approle/role/{role}"),
            Some(serde_json::json!({"token_policies": "avp-reader", "token_ttl": "1h"})),
        );
        let role_id =
            self.api("GET", &format!("auth/approle/role/{role}/role-id"), None)["data"]["role_id"]
                .as_str()
                .expect("role id")
                .to_owned();
        let secret_id = self.api(
            "POST",
            &format!("auth/approle/role/{role}/secret-id"),
            None,
        )["data"]["secret_id"]
            .as_str()
            .expect("secret id")
            .to_owned();
        vec![
            ("AVP_TYPE".into(), "vault".into()),
            ("VAULT_ADDR".into(), self.addr.clone()),
            ("AVP_AUTH_TYPE".into(), "approle".into()),
            ("AVP_ROLE_ID".into(), role_id),
            ("AVP_SECRET_ID".into(), secret_id),
        ]
    }

    /// A token of this test's own with `policies` (`root` for a root token), shown in the audit
    /// log as `auth.display_name` = `token-<name>`. `name` must be unique in the test binary.
    pub fn own_token(&self, name: &str, policies: &[&str]) -> String {
        self.api(
            "POST",
            "auth/token/create",
            Some(serde_json::json!({"policies": policies, "display_name": name, "ttl": "2h"})),
        )["auth"]["client_token"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    /// A copy of the seeded `secret/data/demo/web` (both versions, same values) at
    /// `secret/data/<name>/web`, for a test that changes it: the seeded one stays as other
    /// tests expect it. Returns the API path. `name` must be unique in the test binary.
    pub fn own_demo_web(&self, name: &str) -> String {
        let path = format!("secret/data/{name}/web");
        for version in [1, 2] {
            let data = self.api(
                "GET",
                &format!("secret/data/demo/web?version={version}"),
                None,
            )["data"]["data"]
                .clone();
            self.api("POST", &path, Some(serde_json::json!({ "data": data })));
        }
        path
    }

    /// Audited requests for `path` with `operation` made with AppRole role `role`'s tokens
    /// (`own_approle`), in order. Logins are unauthenticated requests: count them with
    /// `audited_logins_as`.
    pub fn audited_as(
        audit: &std::path::Path,
        role: &str,
        operation: &str,
        path: &str,
    ) -> Vec<serde_json::Value> {
        Self::audited(audit, operation, path)
            .into_iter()
            .filter(|e| e["auth"]["metadata"]["role_name"] == role)
            .collect()
    }

    /// AppRole logins of role `role`: the audited login responses that name it.
    pub fn audited_logins_as(audit: &std::path::Path, role: &str) -> usize {
        std::fs::read_to_string(audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| {
                e["type"] == "response"
                    && e["request"]["path"] == "auth/approle/login"
                    && e["response"]["auth"]["metadata"]["role_name"] == role
            })
            .count()
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        // The shared server lives in a static and is never dropped; its tether stops it.
        if self.tether.is_none() {
            self.stop();
        }
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
