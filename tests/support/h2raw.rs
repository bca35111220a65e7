//! A minimal hand-written HTTP/2 client that sends exactly the `:authority` values grpc-go
//! sends when it dials a unix socket. tonic/hyper clients refuse to emit such values, so this is
//! the only way to reproduce what Argo CD's repo-server does without Go.
//!
//! HPACK is written as literal, non-indexed, non-Huffman fields; responses are not HPACK-decoded:
//! the test reads the DATA frames (a protobuf message) and checks that no RST_STREAM or GOAWAY
//! with an error arrived.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK integer with an N-bit prefix.
fn hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u8, mut v: usize) {
    let max = (1usize << prefix_bits) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00); // literal header field without indexing, new name
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// Frames a protobuf message as a gRPC message (uncompressed).
pub(crate) fn grpc_message(body: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8];
    m.extend_from_slice(&(body.len() as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// What came back on stream 1.
#[derive(Debug, Default)]
pub(crate) struct RawResponse {
    pub headers_frames: usize,
    pub data: Vec<u8>,
    pub reset: Option<u32>,
    pub goaway: Option<u32>,
    pub ended: bool,
    pub ping_acks: usize,
}

impl RawResponse {
    /// The first gRPC message in the DATA frames.
    pub(crate) fn message(&self) -> Option<&[u8]> {
        let len = u32::from_be_bytes(self.data.get(1..5)?.try_into().ok()?) as usize;
        self.data.get(5..5 + len)
    }
}

/// One gRPC call: POST `path` with `authority`, body = already framed gRPC messages.
pub(crate) fn call(socket: &Path, authority: &str, path: &str, body: &[u8]) -> RawResponse {
    call_with_pings(socket, authority, path, body, None)
}

/// Like `call`, and while waiting sends a PING every `ping_every`, like grpc-go's keepalive.
pub(crate) fn call_with_pings(
    socket: &Path,
    authority: &str,
    path: &str,
    body: &[u8],
    ping_every: Option<Duration>,
) -> RawResponse {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    let mut block = Vec::new();
    literal(&mut block, ":method", "POST");
    literal(&mut block, ":scheme", "http");
    literal(&mut block, ":path", path);
    literal(&mut block, ":authority", authority);
    literal(&mut block, "content-type", "application/grpc");
    literal(&mut block, "te", "trailers");
    literal(&mut block, "user-agent", "grpc-go/1.64.0");
    literal(&mut block, "grpc-timeout", "59999m");
    out.extend(frame(HEADERS, END_HEADERS, 1, &block));
    let chunks: Vec<&[u8]> = body.chunks(16_000).collect();
    for (i, c) in chunks.iter().enumerate() {
        let flags = if i + 1 == chunks.len() { END_STREAM } else { 0 };
        out.extend(frame(DATA, flags, 1, c));
    }
    if chunks.is_empty() {
        out.extend(frame(DATA, END_STREAM, 1, &[]));
    }
    s.write_all(&out).expect("write");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(every) = ping_every {
        let mut w = s.try_clone().expect("clone");
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(every);
                if w.write_all(&frame(PING, 0, 0, b"keepaliv")).is_err() {
                    break;
                }
            }
        });
    }

    let mut resp = RawResponse::default();
    let mut head = [0u8; 9];
    while !resp.ended && resp.reset.is_none() && resp.goaway.is_none() {
        if s.read_exact(&mut head).is_err() {
            break;
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if s.read_exact(&mut payload).is_err() {
            break;
        }
        match kind {
            SETTINGS if flags & ACK == 0 => {
                let _ = s.write_all(&frame(SETTINGS, ACK, 0, &[]));
            }
            PING if flags & ACK == 0 => {
                let _ = s.write_all(&frame(PING, ACK, 0, &payload));
            }
            PING => resp.ping_acks += 1,
            HEADERS if stream == 1 => {
                resp.headers_frames += 1;
                resp.ended = flags & END_STREAM != 0;
            }
            DATA if stream == 1 => {
                resp.data.extend_from_slice(&payload);
                resp.ended = flags & END_STREAM != 0;
            }
            RST_STREAM if stream == 1 => {
                resp.reset = payload
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            }
            GOAWAY => {
                resp.goaway = payload
                    .get(4..8)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            }
            _ => {}
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    resp
}
