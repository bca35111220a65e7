//! Receives the repo-server's client stream: one metadata message, then the gzip'd tarball in
//! chunks of any size. The archive is spooled to a file inside the request's `WorkDir` while its
//! sha256 is computed. It may be read (scanned, extracted into a tree nobody sees yet) as it
//! arrives, but nothing made from it is used or shared before the checksum has been verified.

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use super::pb::{AppStreamRequest, ManifestRequestMetadata, app_stream_request::Request};
use super::spool::SpoolWriter;

/// Why receiving the stream failed. Messages match Argo's where Argo has one.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The client closed the stream without sending anything.
    #[error("error getting stream metadata: stream is empty")]
    Empty,
    /// The first message did not carry metadata.
    #[error("error getting stream metadata: metadata is nil")]
    MetadataMissing,
    /// A later message carried metadata again instead of a file chunk.
    #[error("stream request file is nil")]
    FileMissing,
    /// More compressed bytes than the operator allows.
    #[error("compressed repository exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The sha256 of the received bytes does not match the metadata.
    #[error("file checksum validation error: expected {expected}, got {actual}")]
    Checksum { expected: String, actual: String },
    /// The client aborted or the transport failed mid-stream.
    #[error("error receiving stream: {0}")]
    Transport(String),
    /// Writing the spool file failed (e.g. disk full).
    #[error("error writing received archive: {0}")]
    Io(#[from] std::io::Error),
}

/// What arrived: the metadata and how many compressed bytes were spooled to the archive file.
#[derive(Debug)]
pub(crate) struct Received {
    pub metadata: ManifestRequestMetadata,
    pub compressed_bytes: u64,
}

/// Reads the metadata message only; the caller decides whether the archive is needed.
pub(crate) async fn receive_metadata<S>(
    stream: &mut S,
) -> Result<ManifestRequestMetadata, StreamError>
where
    S: Stream<Item = Result<AppStreamRequest, tonic::Status>> + Unpin,
{
    match stream.next().await {
        None => Err(StreamError::Empty),
        Some(Err(status)) => Err(StreamError::Transport(status.message().to_owned())),
        Some(Ok(AppStreamRequest {
            request: Some(Request::Metadata(m)),
        })) => Ok(m),
        Some(Ok(_)) => Err(StreamError::MetadataMissing),
    }
}

/// Spools the remaining file chunks to `spool` (or only hashes them, when `None`) and
/// verifies the checksum from `metadata`. The spool is complete (its reader sees the end) once
/// every chunk has arrived, before the checksum is compared: what was read from it may be used
/// only once this has returned `Ok`.
pub(crate) async fn receive_archive<S>(
    stream: &mut S,
    metadata: ManifestRequestMetadata,
    mut spool: Option<SpoolWriter>,
    max_compressed_bytes: u64,
) -> Result<Received, StreamError>
where
    S: Stream<Item = Result<AppStreamRequest, tonic::Status>> + Unpin,
{
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    while let Some(msg) = stream.next().await {
        let msg = msg.map_err(|s| StreamError::Transport(s.message().to_owned()))?;
        let Some(Request::File(f)) = msg.request else {
            return Err(StreamError::FileMissing);
        };
        total = total.saturating_add(f.chunk.len() as u64);
        if total > max_compressed_bytes {
            return Err(StreamError::TooLarge {
                limit: max_compressed_bytes,
            });
        }
        hasher.update(&f.chunk);
        if let Some(spool) = spool.as_mut() {
            spool.write(&f.chunk).await?;
        }
    }
    if let Some(spool) = spool {
        spool.finish().await?;
    }
    let actual = hex(&hasher.finalize());
    if !actual.eq_ignore_ascii_case(metadata.checksum.trim()) {
        return Err(StreamError::Checksum {
            expected: metadata.checksum,
            actual,
        });
    }
    Ok(Received {
        metadata,
        compressed_bytes: total,
    })
}

/// What [`receive_forwarding`] saw: whether every chunk reached the
/// receiver (`false` once more than the cap arrived; chunks stop going to a receiver that has
/// gone away, which is not counted as a cut).
#[derive(Debug)]
pub(crate) struct Forwarded {
    pub cut_at_cap: bool,
    /// The whole archive is in the spool file.
    pub spooled: bool,
}

/// Receives the remaining file chunks: each is hashed and sent to `tx` while the receiver wants
/// more and at most `max_forward_bytes` have gone; the rest is only hashed. With `spool`, the
/// chunks are also written to it until `max_forward_bytes` (past it the spool is abandoned:
/// [`Forwarded::spooled`] is false). Never fails on size. The checksum from
/// `metadata` is verified at the end: whatever the receiver concluded from the chunks, and the
/// spooled file, may be used only once this has returned `Ok`.
pub(crate) async fn receive_forwarding<S>(
    stream: &mut S,
    metadata: ManifestRequestMetadata,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    mut spool: Option<SpoolWriter>,
    max_forward_bytes: u64,
) -> Result<Forwarded, StreamError>
where
    S: Stream<Item = Result<AppStreamRequest, tonic::Status>> + Unpin,
{
    let mut tx = Some(tx);
    let mut block = Vec::new();
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    let mut cut_at_cap = false;
    while let Some(msg) = stream.next().await {
        let msg = msg.map_err(|s| StreamError::Transport(s.message().to_owned()))?;
        let Some(Request::File(f)) = msg.request else {
            return Err(StreamError::FileMissing);
        };
        total = total.saturating_add(f.chunk.len() as u64);
        hasher.update(&f.chunk);
        if total > max_forward_bytes && (tx.is_some() || spool.is_some()) {
            tx = None;
            spool = None;
            cut_at_cap = true;
        }
        if let Some(spool) = spool.as_mut() {
            spool.write(&f.chunk).await?;
        }
        if tx.is_some() {
            block.extend_from_slice(&f.chunk);
            if block.len() >= FORWARD_BLOCK {
                forward(&mut tx, std::mem::take(&mut block)).await;
            }
        }
    }
    if !block.is_empty() {
        forward(&mut tx, block).await;
    }
    drop(tx);
    let spooled = match spool {
        Some(spool) => {
            spool.finish().await?;
            true
        }
        None => false,
    };
    let actual = hex(&hasher.finalize());
    if !actual.eq_ignore_ascii_case(metadata.checksum.trim()) {
        return Err(StreamError::Checksum {
            expected: metadata.checksum,
            actual,
        });
    }
    Ok(Forwarded {
        cut_at_cap,
        spooled,
    })
}

/// Bytes gathered before they go to [`receive_forwarding`]'s receiver: the repo-server sends
/// 1 KiB chunks, and waking a blocking reader for each cost more than what it did with them.
const FORWARD_BLOCK: usize = 64 << 10;

/// Sends `block` to the receiver, forgetting a receiver that has gone away.
async fn forward(tx: &mut Option<tokio::sync::mpsc::Sender<Vec<u8>>>, block: Vec<u8>) {
    if let Some(sender) = tx.as_ref()
        && sender.send(block).await.is_err()
    {
        *tx = None;
    }
}

/// Consumes and discards the rest of the stream. Called before answering with an error: a Go
/// client that is still sending would otherwise see only `EOF` and lose our message.
pub(crate) async fn drain<S>(stream: &mut S)
where
    S: Stream<Item = Result<AppStreamRequest, tonic::Status>> + Unpin,
{
    while let Some(Ok(_)) = stream.next().await {}
}

/// Lowercase hex, as Go's `hex.EncodeToString`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
