//! A client that talks to a CMP server the way Argo CD's repo-server does: the whole repository
//! as a gzip'd tar in Go's layout (`filepath.Walk` order, a `.` root entry, no `./` prefixes or
//! trailing slashes, symlinks not followed), sha256 of the compressed bytes, metadata first,
//! then 1 KiB chunks. Used by `avp-sidecar call`, the demo, the benchmarks and the tests.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint, Uri};

use super::pb::config_management_plugin_service_client::ConfigManagementPluginServiceClient;
use super::pb::{
    AppStreamRequest, EnvEntry, File, ManifestRequestMetadata, app_stream_request::Request,
};

/// The repo-server's default chunk size (`ARGOCD_CMP_CHUNK_SIZE`).
pub const DEFAULT_CHUNK: usize = 1024;

/// Archives `dir` exactly as the repo-server would.
pub fn tgz_dir(dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, ".", std::io::empty())?;
    walk(&mut b, dir, Path::new(""))?;
    gzip(&b.into_inner()?)
}

pub fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes)?;
    enc.finish()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    super::stream::hex(&Sha256::digest(bytes))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h
}

fn walk(b: &mut tar::Builder<Vec<u8>>, root: &Path, rel: &Path) -> std::io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(root.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let rel_path = rel.join(&name);
        let full = root.join(&rel_path);
        let meta = std::fs::symlink_metadata(&full)?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full)?;
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, &rel_path, &target)?;
        } else if meta.is_dir() {
            let mut h = header(tar::EntryType::Directory, mode, 0);
            b.append_data(&mut h, &rel_path, std::io::empty())?;
            walk(b, root, &rel_path)?;
        } else if meta.is_file() {
            let data = std::fs::read(&full)?;
            let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
            b.append_data(&mut h, &rel_path, data.as_slice())?;
        }
    }
    Ok(())
}

/// One request's messages: metadata, then the archive in `chunk`-byte pieces.
#[derive(Clone, Debug)]
pub struct RepoStream {
    pub archive: Vec<u8>,
    pub app_rel_path: String,
    pub env: Vec<(String, String)>,
    pub chunk: usize,
    /// Overrides the computed checksum (for tests of the server's verification).
    pub checksum: Option<String>,
}

impl RepoStream {
    pub fn for_dir(
        repo: &Path,
        app_rel_path: &str,
        env: Vec<(String, String)>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            archive: tgz_dir(repo)?,
            app_rel_path: app_rel_path.to_owned(),
            env,
            chunk: DEFAULT_CHUNK,
            checksum: None,
        })
    }

    pub fn messages(&self) -> Vec<AppStreamRequest> {
        let checksum = self
            .checksum
            .clone()
            .unwrap_or_else(|| sha256_hex(&self.archive));
        let app_name = Path::new(&self.app_rel_path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| ".".to_owned());
        let metadata = ManifestRequestMetadata {
            app_name,
            app_rel_path: self.app_rel_path.clone(),
            checksum,
            size: i64::try_from(self.archive.len()).unwrap_or(i64::MAX),
            env: self
                .env
                .iter()
                .map(|(name, value)| EnvEntry {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        std::iter::once(AppStreamRequest {
            request: Some(Request::Metadata(metadata)),
        })
        .chain(
            self.archive
                .chunks(self.chunk.max(1))
                .map(|c| AppStreamRequest {
                    request: Some(Request::File(File { chunk: c.to_vec() })),
                }),
        )
        .collect()
    }
}

/// A fresh connection to a plugin socket (the repo-server opens one per operation).
pub async fn connect(
    socket: &Path,
) -> Result<ConfigManagementPluginServiceClient<Channel>, tonic::transport::Error> {
    let socket: PathBuf = socket.to_path_buf();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await?;
    Ok(ConfigManagementPluginServiceClient::new(channel)
        .max_decoding_message_size(100 << 20)
        .max_encoding_message_size(100 << 20))
}
