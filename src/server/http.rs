//! A minimal HTTP/1.1 listener for probes and metrics: `GET /metrics` (Prometheus text),
//! `/healthz` (the process answers), `/readyz` (the plugin sockets are bound and, with a Vault
//! backend configured, its last login check passed: see [`Backend`]). No framework:
//! three fixed routes, one request per connection, bounded request size and time.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::metrics;

/// The default secret backend's state as `/readyz` reports it: `None` when it is usable (or
/// none is configured), else why not (a message naming the method and mount, never a
/// credential). Set by the login check task in `main.rs`.
pub type Backend = tokio::sync::watch::Receiver<Option<String>>;

/// Serves until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    ready: tokio::sync::watch::Receiver<bool>,
    backend: Backend,
) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let ready = *ready.borrow();
        let blocked = backend.borrow().clone();
        tokio::spawn(async move {
            // Read the request head (up to 2 KiB, 5 s); the body, if any, is ignored.
            let mut buf = Vec::with_capacity(512);
            let read_head = async {
                let mut chunk = [0u8; 512];
                while buf.len() < 2048 && !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read_head)
                .await
                .is_err()
            {
                return;
            }
            let line = String::from_utf8_lossy(&buf);
            let path = line
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("GET "))
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or("");
            let (status, ctype, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics::exposition()),
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
                "/readyz" if !ready => (
                    "503 Service Unavailable",
                    "text/plain",
                    "starting or stopping\n".to_owned(),
                ),
                "/readyz" => match &blocked {
                    None => ("200 OK", "text/plain", format!("ready\n{}", detail())),
                    Some(reason) => (
                        "503 Service Unavailable",
                        "text/plain",
                        format!("not ready: {}\n", one_line(reason)),
                    ),
                },
                _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
        });
    }
}

/// A reason on one line (a tool or server message may hold newlines).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

static DETAIL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A line `/readyz` adds after `ready` (the tool sandbox's state), set once at startup.
pub fn set_detail(line: &str) {
    let _ = DETAIL.set(format!("{line}\n"));
}

fn detail() -> &'static str {
    DETAIL.get().map_or("", String::as_str)
}

/// Binds the listener (an error at startup, not later).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
