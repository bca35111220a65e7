//! Chart repositories for the fetch tests, on loopback only: a tiny static HTTP server (one
//! thread per connection, `Connection: close`, optional basic auth, a count of requests per
//! path) serving what `helm package` + `helm repo index` made, and chart writers.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A static file server on 127.0.0.1; stopped on drop.
pub(crate) struct StaticServer {
    pub port: u16,
    hits: Arc<Mutex<HashMap<String, u32>>>,
    stop: Arc<AtomicBool>,
}

impl StaticServer {
    /// Serves the files of `root`; with `auth` (user, password) every request needs it.
    pub(crate) fn start(root: &Path, auth: Option<(&str, &str)>) -> Self {
        use base64::Engine;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hits: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let expected = auth.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let (root, hits2, stop2) = (root.to_path_buf(), hits.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, hits, expected) = (root.clone(), hits2.clone(), expected.clone());
                std::thread::spawn(move || serve(conn, &root, &hits, expected.as_deref()));
            }
        });
        Self { port, hits, stop }
    }

    /// Requests seen for `path` (e.g. `/redis-1.2.3.tgz`).
    pub(crate) fn hits(&self, path: &str) -> u32 {
        self.hits
            .lock()
            .expect("hits")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut conn: TcpStream, root: &Path, hits: &Mutex<HashMap<String, u32>>, auth: Option<&str>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .to_owned();
    *hits.lock().expect("hits").entry(path.clone()).or_default() += 1;
    let authorized = auth.is_none_or(|want| {
        head.lines().any(|l| {
            l.split_once(':')
                .is_some_and(|(k, v)| k.eq_ignore_ascii_case("authorization") && v.trim() == want)
        })
    });
    let file = root.join(path.trim_start_matches('/'));
    let (status, body) = if !authorized {
        ("401 Unauthorized", b"secret-body-text".to_vec())
    } else if path.contains("..") || !file.is_file() {
        ("404 Not Found", b"not here".to_vec())
    } else {
        ("200 OK", std::fs::read(&file).unwrap_or_default())
    };
    let _ = conn.write_all(
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
            body.len(),
            if authorized {
                ""
            } else {
                "WWW-Authenticate: Basic realm=\"charts\"\r\n"
            }
        )
        .as_bytes(),
    );
    let _ = conn.write_all(&body);
}

/// Writes a chart at `dir`: `Chart.yaml` (plus `extra` lines, e.g. a `dependencies:` list)
/// and one ConfigMap template naming the chart and a value.
pub(crate) fn write_chart(dir: &Path, name: &str, version: &str, extra: &str) {
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
    std::fs::write(
        dir.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: {version}\n{extra}"),
    )
    .expect("write");
    std::fs::write(dir.join("values.yaml"), "greeting: hello\n").expect("write");
    std::fs::write(
        dir.join("templates/cm.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ .Release.Name }}}}-{name}\ndata:\n  chart: {name}-{version}\n  greeting: {{{{ .Values.greeting | quote }}}}\n"
        ),
    )
    .expect("write");
}

/// `helm package` of each chart dir into `out`, then `helm repo index out` (relative URLs, so
/// the same repository works under any host name).
pub(crate) fn package_repo(charts: &[PathBuf], out: &Path) {
    std::fs::create_dir_all(out).expect("mkdir");
    for c in charts {
        helm(&[
            "package".as_ref(),
            c.as_os_str(),
            "-d".as_ref(),
            out.as_os_str(),
        ]);
    }
    helm(&["repo".as_ref(), "index".as_ref(), out.as_os_str()]);
}

/// Runs the real helm with homes in a temp dir; panics with its stderr on failure.
pub(crate) fn helm(args: &[&std::ffi::OsStr]) -> String {
    helm_via(args, &[])
}

/// [`helm`] with `env` added (e.g. `HTTPS_PROXY` from [`by_hand_proxy`], `SSL_CERT_FILE`,
/// `HELM_REGISTRY_CONFIG`).
pub(crate) fn helm_via(args: &[&std::ffi::OsStr], env: &[(String, String)]) -> String {
    let home = tempfile::tempdir().expect("home");
    let mut cmd = Command::new(super::tool("helm"));
    cmd.args(args)
        .env("HOME", home.path())
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("NO_PROXY");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = cmd.output().expect("run helm");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A forward proxy for helm run by hand: the sidecar's own proxy code, in this process,
/// resolving `charts.test` to 127.0.0.1 (so by-hand runs use the same URLs, and so the same
/// `Chart.lock` digests, as the sidecar's). Keep the proxy and session alive while helm runs.
pub(crate) async fn by_hand_proxy(
    port: u16,
) -> (
    avp_sidecar::fetch::proxy::Proxy,
    avp_sidecar::fetch::proxy::Session,
) {
    use avp_sidecar::fetch::dest::Rules;
    let rules = Rules {
        ports: vec![port],
        deny: vec![],
        allow: vec!["127.0.0.0/8".parse().expect("cidr")],
    };
    let resolve = HashMap::from([(
        "charts.test".to_owned(),
        std::net::IpAddr::from([127, 0, 0, 1]),
    )]);
    let proxy = avp_sidecar::fetch::proxy::Proxy::start(rules, resolve)
        .await
        .expect("proxy");
    let session = proxy.session(None).expect("session");
    (proxy, session)
}

/// `helm dependency <verb>` (build or update) in `chart`, by hand through `proxy`, on a
/// blocking thread (the proxy runs on this test's runtime).
pub(crate) async fn dependency(verb: &'static str, chart: PathBuf, proxy: String) -> String {
    let env = vec![
        ("HTTPS_PROXY".to_owned(), proxy.clone()),
        ("HTTP_PROXY".to_owned(), proxy),
    ];
    helm_blocking(
        vec!["dependency".into(), verb.into(), chart.into_os_string()],
        env,
    )
    .await
}

/// [`helm_via`] on a blocking thread (when a proxy runs on this test's runtime).
pub(crate) async fn helm_blocking(
    args: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
) -> String {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        helm_via(&args, &env)
    })
    .await
    .expect("join")
}
