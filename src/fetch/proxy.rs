//! The forward proxy the sidecar owns: the only place a confined tool's TCP connections go
//! (Landlock lets fetching tools connect to this port alone; helm and kustomize's helm get
//! `HTTPS_PROXY`/`HTTP_PROXY` pointing here). Each connection names its destination
//! (`CONNECT host:port` for HTTPS and OCI registries, an absolute `http://` URL for plain
//! HTTP), which is resolved here, checked by [`super::dest::Rules`] and connected to by
//! address, so what a tenant writes in `Chart.yaml` never reaches what the rules refuse.
//!
//! Tool runs get a session: a random token in the proxy URL's user info (Go sends it as
//! `Proxy-Authorization`). Connections without a live session's token are refused, so only
//! the tool runs that fetch use the proxy, and refusals are recorded per session for the
//! render's error. The proxy writes only its own short texts in its answers; it never reads
//! or repeats a response body.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::dest::{Denied, Rules};

/// Request heads larger than this are refused (helm's are a few hundred bytes).
const MAX_HEAD: usize = 16 << 10;
/// Time for a client to send its request head, and for an upstream connect.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A relayed connection ends after this long whatever its peers do (the tool run's own
/// deadline normally ends it first), so no stalled upstream keeps a task alive.
const RELAY_LIMIT: Duration = Duration::from_secs(600);

/// What the proxy knows about one tool run.
#[derive(Debug, Default)]
struct SessionState {
    denials: Vec<Denied>,
    connections: u64,
    /// The run's request has not verified its stream yet: connections wait until it has
    /// (`true`), and are refused if it never does.
    verified: Option<tokio::sync::watch::Receiver<bool>>,
}

type Sessions = Arc<Mutex<HashMap<String, SessionState>>>;

/// A running proxy on 127.0.0.1 (an ephemeral port).
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    sessions: Sessions,
    _task: AbortOnDrop,
}

/// The accept loop, stopped when the proxy is dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One tool run's use of the proxy; ends (its token no longer accepted) when dropped.
#[derive(Debug)]
pub struct Session {
    token: String,
    port: u16,
    sessions: Sessions,
}

impl Session {
    /// The proxy URL for `HTTPS_PROXY`/`HTTP_PROXY` (holds the session's token).
    pub fn url(&self) -> String {
        format!("http://avp:{}@127.0.0.1:{}", self.token, self.port)
    }

    /// The destinations refused so far.
    pub fn denials(&self) -> Vec<Denied> {
        lock(&self.sessions)
            .get(&self.token)
            .map(|s| s.denials.clone())
            .unwrap_or_default()
    }

    /// Connections the proxy opened for this session (0: nothing was fetched).
    pub fn connections(&self) -> u64 {
        lock(&self.sessions)
            .get(&self.token)
            .map_or(0, |s| s.connections)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        lock(&self.sessions).remove(&self.token);
    }
}

fn lock(s: &Sessions) -> std::sync::MutexGuard<'_, HashMap<String, SessionState>> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Proxy {
    /// Binds 127.0.0.1:0 and serves until dropped. `resolve` maps host names to addresses
    /// before DNS (operator-only, for tests: Go never proxies `localhost`).
    pub async fn start(rules: Rules, resolve: HashMap<String, IpAddr>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let sessions: Sessions = Arc::default();
        let shared = Arc::new((rules, resolve, sessions.clone()));
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let (rules, resolve, sessions) = &*shared;
                    if let Err(e) = serve(conn, rules, resolve, sessions).await {
                        tracing::debug!(error = %e, "fetch proxy connection ended");
                    }
                });
            }
        });
        Ok(Self {
            port,
            sessions,
            _task: AbortOnDrop(task),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new session with a random token. With `verified`, its connections wait until that
    /// is `true` (the request's stream has verified) before anything is resolved or connected.
    pub fn session(
        &self,
        verified: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> std::io::Result<Session> {
        let mut raw = [0u8; 16];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut raw)?;
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        lock(&self.sessions).insert(
            token.clone(),
            SessionState {
                verified,
                ..SessionState::default()
            },
        );
        Ok(Session {
            token,
            port: self.port,
            sessions: self.sessions.clone(),
        })
    }
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    method: String,
    /// `host:port` for CONNECT; the absolute URL otherwise.
    target: String,
    version: String,
    headers: Vec<(String, String)>,
}

fn parse_head(raw: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    if first.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Some(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        version: version.to_owned(),
        headers,
    })
}

/// The session token from `Proxy-Authorization: Basic base64(user:token)`.
fn token(head: &Head) -> Option<String> {
    use base64::Engine;
    let value = head
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))?
        .1
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':')?.1.to_owned())
}

/// `host:port` (IPv6 in brackets) → (host, port).
fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_owned(), p.parse().ok()?)),
        None => Some((authority.to_owned(), default_port)),
    }
    .filter(|(h, _)| !h.is_empty() && !h.contains(['/', '@', ' ']))
}

async fn answer(conn: &mut TcpStream, status: &str, text: &str) -> std::io::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    conn.write_all(msg.as_bytes()).await
}

async fn serve(
    mut conn: TcpStream,
    rules: &Rules,
    resolve: &HashMap<String, IpAddr>,
    sessions: &Sessions,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let end = tokio::time::timeout(HEAD_TIMEOUT, async {
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok::<_, std::io::Error>(Some(i));
            }
            if buf.len() > MAX_HEAD {
                return Ok(None);
            }
            let mut chunk = [0u8; 2048];
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| std::io::Error::other("request head timeout"))??;
    let Some(end) = end else {
        return answer(&mut conn, "400 Bad Request", "bad request head").await;
    };
    let rest = buf.split_off(end + 4);
    let Some(head) = parse_head(&buf[..end]) else {
        return answer(&mut conn, "400 Bad Request", "bad request head").await;
    };
    let Some(token) = token(&head).filter(|t| lock(sessions).contains_key(t)) else {
        return answer(
            &mut conn,
            "407 Proxy Authentication Required",
            "avp-sidecar fetch proxy: no session",
        )
        .await;
    };
    let verified = lock(sessions).get(&token).and_then(|s| s.verified.clone());
    if let Some(mut verified) = verified
        && !*verified.borrow()
    {
        tracing::debug!("fetch proxy: waiting for the request's archive to verify");
        if verified.wait_for(|v| *v).await.is_err() {
            return answer(
                &mut conn,
                "403 Forbidden",
                "avp-sidecar fetch proxy: the request's archive did not verify",
            )
            .await;
        }
    }
    let connect = head.method == "CONNECT";
    let (authority, path) = if connect {
        (head.target.clone(), String::new())
    } else if let Some(url) = head.target.strip_prefix("http://") {
        let (auth, path) = url.split_at(url.find('/').unwrap_or(url.len()));
        (
            auth.to_owned(),
            if path.is_empty() {
                "/".to_owned()
            } else {
                path.to_owned()
            },
        )
    } else {
        return answer(
            &mut conn,
            "400 Bad Request",
            "avp-sidecar fetch proxy: only CONNECT and http:// URLs",
        )
        .await;
    };
    let Some((host, port)) = split_authority(&authority, if connect { 443 } else { 80 }) else {
        return answer(&mut conn, "400 Bad Request", "bad destination").await;
    };
    // A name that takes too long to resolve counts as not resolving.
    let checked = tokio::time::timeout(CONNECT_TIMEOUT, destination(rules, resolve, &host, port))
        .await
        .unwrap_or_else(|_| Err(Denied::NoAddress { host: host.clone() }));
    let ip = match checked {
        Ok(ip) => ip,
        Err(denied) => {
            let text = format!("avp-sidecar fetch proxy refused: {denied}");
            tracing::warn!(reason = %denied, "chart fetch destination refused");
            if let Some(s) = lock(sessions).get_mut(&token) {
                s.denials.push(denied);
            }
            return answer(&mut conn, "403 Forbidden", &text).await;
        }
    };
    let upstream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect(SocketAddr::new(ip, port)),
    )
    .await;
    let mut upstream = match upstream {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => {
            let text = format!("avp-sidecar fetch proxy: cannot connect to {host}:{port}: {e}");
            return answer(&mut conn, "502 Bad Gateway", &text).await;
        }
        Err(_) => {
            let text = format!("avp-sidecar fetch proxy: connecting to {host}:{port} timed out");
            return answer(&mut conn, "504 Gateway Timeout", &text).await;
        }
    };
    if let Some(s) = lock(sessions).get_mut(&token) {
        s.connections += 1;
    }
    if connect {
        conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
    } else {
        // Origin-form request line, our headers dropped, one request per connection.
        let mut out = format!("{} {path} {}\r\n", head.method, head.version);
        for (k, v) in &head.headers {
            let hop = [
                "proxy-authorization",
                "proxy-connection",
                "connection",
                "keep-alive",
            ];
            if !hop.iter().any(|h| k.eq_ignore_ascii_case(h)) {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        upstream.write_all(out.as_bytes()).await?;
    }
    upstream.write_all(&rest).await?;
    tokio::time::timeout(
        RELAY_LIMIT,
        tokio::io::copy_bidirectional(&mut conn, &mut upstream),
    )
    .await
    .map_err(|_| std::io::Error::other("relay time limit"))??;
    Ok(())
}

/// Resolves `host` (operator overrides first) and checks name, port and every address.
async fn destination(
    rules: &Rules,
    resolve: &HashMap<String, IpAddr>,
    host: &str,
    port: u16,
) -> Result<IpAddr, Denied> {
    rules.check_name(host, port)?;
    let ips: Vec<IpAddr> = if let Some(ip) = resolve.get(&host.to_ascii_lowercase()) {
        vec![*ip]
    } else if let Ok(ip) = host.parse::<IpAddr>() {
        vec![ip]
    } else {
        tokio::net::lookup_host((host, port))
            .await
            .map(|addrs| addrs.map(|a| a.ip()).collect())
            .unwrap_or_default()
    };
    rules.check_resolved(host, &ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_authorities_parse() {
        let head = parse_head(
            b"CONNECT charts.test:443 HTTP/1.1\r\nHost: charts.test:443\r\nProxy-Authorization: Basic YXZwOmFiYw==",
        )
        .expect("head");
        assert_eq!(head.method, "CONNECT");
        assert_eq!(token(&head).as_deref(), Some("abc"));
        assert!(parse_head(b"GET / HTTP/2\r\n").is_none());
        assert!(parse_head(b"GET / x y HTTP/1.1\r\n").is_none());
        assert_eq!(
            split_authority("[::1]:8443", 443),
            Some(("::1".to_owned(), 8443))
        );
        assert_eq!(
            split_authority("charts.test", 80),
            Some(("charts.test".to_owned(), 80))
        );
        assert_eq!(split_authority("a@b:1", 80), None);
        assert_eq!(split_authority("h:notaport", 80), None);
    }

    /// Loopback only: an upstream on 127.0.0.1, reached as `charts.test` through the proxy.
    #[tokio::test]
    async fn proxies_allowed_destinations_and_refuses_without_a_session() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let up_port = upstream.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = upstream.accept().await {
                let mut b = [0u8; 1024];
                let n = c.read(&mut b).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&b[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let body = format!("saw {line}");
                let _ = c
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let rules = Rules {
            ports: vec![up_port],
            deny: vec![],
            allow: vec!["127.0.0.0/8".parse().expect("cidr")],
        };
        let resolve = HashMap::from([("charts.test".to_owned(), "127.0.0.1".parse().expect("ip"))]);
        let proxy = Proxy::start(rules, resolve).await.expect("proxy");
        let session = proxy.session(None).expect("session");
        let auth = "Proxy-Authorization: Basic ";
        use base64::Engine;
        let cred =
            base64::engine::general_purpose::STANDARD.encode(format!("avp:{}", session.token));
        let port = proxy.port();
        let send = |req: String| async move {
            let mut c = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            c.write_all(req.as_bytes()).await.expect("write");
            let mut out = String::new();
            let _ = c.read_to_string(&mut out).await;
            out
        };
        let ok = send(format!(
            "GET http://charts.test:{up_port}/index.yaml HTTP/1.1\r\nHost: charts.test\r\n{auth}{cred}\r\n\r\n"
        ))
        .await;
        assert!(ok.ends_with("saw GET /index.yaml HTTP/1.1"), "{ok}");
        assert_eq!(session.connections(), 1);
        let refused = send(format!(
            "CONNECT charts.test:{} HTTP/1.1\r\n{auth}{cred}\r\n\r\n",
            up_port.wrapping_add(1)
        ))
        .await;
        assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
        assert!(matches!(session.denials()[..], [Denied::Port { .. }]));
        let anonymous = send(format!(
            "GET http://charts.test:{up_port}/ HTTP/1.1\r\n\r\n"
        ))
        .await;
        assert!(anonymous.starts_with("HTTP/1.1 407"), "{anonymous}");
        drop(session);
        let ended = send(format!(
            "GET http://charts.test:{up_port}/ HTTP/1.1\r\n{auth}{cred}\r\n\r\n"
        ))
        .await;
        assert!(ended.starts_with("HTTP/1.1 407"), "{ended}");

        // A session of a request whose stream has not verified connects nowhere until it has,
        // and never if it does not.
        for verifies in [true, false] {
            let (tx, rx) = tokio::sync::watch::channel(false);
            let session = proxy.session(Some(rx)).expect("session");
            let cred =
                base64::engine::general_purpose::STANDARD.encode(format!("avp:{}", session.token));
            let call = tokio::spawn(send(format!(
                "GET http://charts.test:{up_port}/gated HTTP/1.1\r\n{auth}{cred}\r\n\r\n"
            )));
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            assert_eq!(session.connections(), 0, "nothing before verification");
            assert!(!call.is_finished());
            if verifies {
                tx.send_replace(true);
            } else {
                drop(tx);
            }
            let out = call.await.expect("join");
            if verifies {
                assert!(out.ends_with("saw GET /gated HTTP/1.1"), "{out}");
                assert_eq!(session.connections(), 1);
            } else {
                assert!(out.starts_with("HTTP/1.1 403"), "{out}");
                assert!(out.contains("did not verify"), "{out}");
                assert_eq!(session.connections(), 0);
            }
        }
    }
}
