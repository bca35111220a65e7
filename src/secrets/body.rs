//! Reading an HTTP answer that may hold credentials or secret values (Vault, Kubernetes
//! Secrets): size-capped, into a buffer that is wiped whenever it is freed, including the
//! copies left behind when it grows. The one body reader of both clients.

use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    #[error("response larger than {} MiB", .limit >> 20)]
    TooLarge { limit: usize },
}

/// The whole body of `resp`, at most `limit` bytes.
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, BodyError> {
    let expected = resp
        .content_length()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
        .min(limit);
    let mut bytes = Zeroizing::new(Vec::with_capacity(expected));
    while let Some(chunk) = resp.chunk().await? {
        let needed = bytes.len() + chunk.len();
        if needed > limit {
            return Err(BodyError::TooLarge { limit });
        }
        if needed > bytes.capacity() {
            // Grown by hand: the old buffer is wiped as it is replaced.
            let grown = (2 * bytes.capacity()).clamp(4096, limit).max(needed);
            let mut larger = Vec::with_capacity(grown);
            larger.extend_from_slice(&bytes);
            bytes = Zeroizing::new(larger);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
