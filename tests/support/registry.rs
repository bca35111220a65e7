//! A real OCI registry for the chart fetch tests: Debian's `docker-registry` (distribution
//! v2) on 127.0.0.1, with TLS from a self-signed CA made by `openssl` for the name
//! `charts.test`, and optionally htpasswd basic auth (`htpasswd -B`). `.ci/run` installs both
//! packages (`scripts/install-tools.sh`). Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
pub(crate) const HTPASSWD_BIN: &str = "/usr/bin/htpasswd";

pub(crate) struct Registry {
    pub port: u16,
    /// The CA that signed the registry's certificate (PEM).
    pub ca: PathBuf,
    pub dir: tempfile::TempDir,
    child: Child,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a certificate for `charts.test` signed by it, in `dir`: (ca.pem, cert.pem, key.pem).
pub(crate) fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |f: &str| dir.join(f);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(Command::new("openssl")
        .args(["req", "-x509"])
        .args(ec)
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.pem"))
        .args(["-days", "2", "-subj", "/CN=avp-sidecar test CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]));
    run(Command::new("openssl")
        .arg("req")
        .args(ec)
        .arg("-keyout")
        .arg(p("key.pem"))
        .arg("-out")
        .arg(p("req.csr"))
        .args(["-subj", "/CN=charts.test"]));
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=DNS:charts.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write");
    run(Command::new("openssl")
        .args(["x509", "-req", "-in"])
        .arg(p("req.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-CAcreateserial")
        .arg("-out")
        .arg(p("cert.pem"))
        .args(["-days", "2", "-extfile"])
        .arg(p("ext.cnf")));
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

impl Registry {
    /// Starts a registry over TLS; with `auth` (user, password) every call needs it.
    pub(crate) fn start(auth: Option<(&str, &str)>) -> Self {
        for bin in [REGISTRY_BIN, HTPASSWD_BIN] {
            assert!(
                Path::new(bin).exists(),
                "{bin} missing: install Debian's docker-registry and apache2-utils (scripts/install-tools.sh does, as root)"
            );
        }
        let dir = tempfile::tempdir().expect("tmp");
        let (ca, cert, key) = certificates(dir.path());
        let port = super::free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\n",
            dir.path().join("data").display(),
            cert.display(),
            key.display()
        );
        if let Some((user, password)) = auth {
            let file = dir.path().join("htpasswd");
            let out = Command::new(HTPASSWD_BIN)
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(&file, out.stdout).expect("write");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                file.display()
            ));
        }
        let config_file = dir.path().join("config.yml");
        std::fs::write(&config_file, config).expect("write");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).expect("log"))
            .spawn()
            .expect("start docker-registry");
        let up = super::wait::poll(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up.is_ok(),
            "docker-registry did not come up: {}",
            std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
        );
        Self {
            port,
            ca,
            dir,
            child,
        }
    }

    /// A helm registry config (docker `config.json`) with `user:password` for this registry.
    pub(crate) fn config(&self, user: &str, password: &str) -> PathBuf {
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let file = self.dir.path().join(format!("config-{password}.json"));
        std::fs::write(
            &file,
            format!(
                "{{\"auths\":{{\"charts.test:{}\":{{\"auth\":\"{auth}\"}}}}}}",
                self.port
            ),
        )
        .expect("write");
        file
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
