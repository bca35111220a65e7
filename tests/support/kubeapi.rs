//! A local stand-in for the Kubernetes API server (no cluster runs here): answers
//! `GET /api/v1/namespaces/<ns>/secrets/<name>` for the Secrets it was given, and only to the
//! expected bearer token. Plain HTTP on loopback; one thread, stops on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;

pub const TOKEN: &str = "test-sa-token";

pub struct KubeApi {
    pub url: String,
    pub token_file: tempfile::NamedTempFile,
    stop: Arc<AtomicBool>,
}

impl KubeApi {
    /// `secrets`: (namespace, name) → data (plain values; base64-encoded in responses).
    pub fn start(secrets: HashMap<(String, String), Vec<(String, String)>>) -> KubeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
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
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if line.to_ascii_lowercase().starts_with("authorization:") {
                        authorized = line.trim_end().ends_with(&format!("Bearer {TOKEN}"));
                    }
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("");
                let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
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
        }
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
