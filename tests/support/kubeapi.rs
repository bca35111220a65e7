//! A local stand-in for the Kubernetes API server (no cluster runs here): answers
//! `GET /api/v1/namespaces/<ns>/secrets/<name>` for the Secrets it was given, and only to the
//! expected bearer token; accepts and records `PATCH /apis/argoproj.io/v1alpha1/namespaces/<ns>/
//! applications/<name>` (rotation refreshes). Plain HTTP on loopback; one thread, stops on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

pub(crate) const TOKEN: &str = "test-sa-token";

pub(crate) struct KubeApi {
    pub url: String,
    pub token_file: tempfile::NamedTempFile,
    stop: Arc<AtomicBool>,
    patches: Arc<Mutex<Vec<Patch>>>,
}

/// One authorized PATCH request as received.
#[derive(Clone, Debug)]
pub(crate) struct Patch {
    pub path: String,
    pub content_type: String,
    pub body: serde_json::Value,
}

impl KubeApi {
    /// `secrets`: (namespace, name) → data (plain values; base64-encoded in responses).
    pub(crate) fn start(secrets: HashMap<(String, String), Vec<(String, String)>>) -> KubeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let patches = Arc::new(Mutex::new(Vec::new()));
        let recorded = patches.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut authorized = false;
                let mut content_length = 0usize;
                let mut content_type = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if lower.starts_with("authorization:") {
                        authorized = line.trim_end().ends_with(&format!("Bearer {TOKEN}"));
                    } else if let Some(v) = lower.strip_prefix("content-length:") {
                        content_length = v.trim().parse().unwrap_or(0);
                    } else if let Some(v) = lower.strip_prefix("content-type:") {
                        content_type = v.trim().to_owned();
                    }
                }
                let mut body = vec![0u8; content_length.min(1 << 20)];
                let _ = reader.read_exact(&mut body);
                let method = request_line.split_whitespace().next().unwrap_or("");
                let path = request_line.split_whitespace().nth(1).unwrap_or("");
                let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                if method == "PATCH" {
                    let is_app = matches!(
                        parts.as_slice(),
                        [
                            "apis",
                            "argoproj.io",
                            "v1alpha1",
                            "namespaces",
                            _,
                            "applications",
                            _
                        ]
                    );
                    let status = match (authorized, is_app) {
                        (false, _) => "401 Unauthorized",
                        (true, false) => "404 Not Found",
                        (true, true) => {
                            recorded.lock().expect("lock").push(Patch {
                                path: path.to_owned(),
                                content_type,
                                body: serde_json::from_slice(&body)
                                    .unwrap_or(serde_json::Value::Null),
                            });
                            "200 OK"
                        }
                    };
                    let mut stream = reader.into_inner();
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
                    );
                    continue;
                }
                let found = match parts.as_slice() {
                    ["api", "v1", "namespaces", ns, "secrets", name] => {
                        secrets.get(&(ns.to_string(), name.to_string()))
                    }
                    _ => None,
                };
                let (status, body) = match (authorized, found) {
                    (false, _) => ("401 Unauthorized", "{}".to_owned()),
                    (true, None) => ("404 Not Found", "{}".to_owned()),
                    (true, Some(data)) => {
                        let data: serde_json::Map<String, serde_json::Value> = data
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    base64::engine::general_purpose::STANDARD.encode(v).into(),
                                )
                            })
                            .collect();
                        (
                            "200 OK",
                            serde_json::json!({"kind": "Secret", "data": data}).to_string(),
                        )
                    }
                };
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let mut token_file = tempfile::NamedTempFile::new().expect("token file");
        token_file.write_all(TOKEN.as_bytes()).expect("write token");
        KubeApi {
            url,
            token_file,
            stop,
            patches,
        }
    }

    /// The PATCH requests received so far, in order.
    pub(crate) fn patches(&self) -> Vec<Patch> {
        self.patches.lock().expect("lock").clone()
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
