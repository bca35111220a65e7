//! A minimal HTTP/1.1 server for unit tests: answers canned responses in order (one request per
//! connection, `Connection: close`) and records each request, head and body, as text.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

pub(super) struct Server {
    pub addr: String,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub(super) async fn start(mut answers: Vec<(u16, String)>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        answers.reverse();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                // One request per connection is enough: we answer `Connection: close`.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let text = loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        break None;
                    };
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break Some(text);
                        }
                    }
                };
                let Some(text) = text else { continue };
                log.lock().await.push(text);
                let (status, body) = answers.pop().unwrap_or((500, String::new()));
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        Server { addr, seen, task }
    }

    pub(super) async fn requests(&self) -> Vec<String> {
        self.seen.lock().await.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
