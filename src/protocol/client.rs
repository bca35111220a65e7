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

/// What [`generate_like_argo`] saw before the manifests.
#[derive(Clone, Debug)]
pub struct ArgoCall {
    pub is_discovery_configured: bool,
    /// `None` when discovery is not configured (the repo-server then skips MatchRepository).
    pub is_supported: Option<bool>,
    pub manifests: Vec<String>,
}

/// GenerateManifest the way Argo CD's repo-server calls a named plugin, all on one connection:
/// `CheckPluginConfiguration`, `MatchRepository` only if discovery is configured
/// (util/app/discovery/discovery.go `cmpSupports`), `CheckPluginConfiguration` again (for
/// `provideGitCreds`), then `GenerateManifest` (reposerver/repository/repository.go
/// `runConfigManagementPluginSidecars`). Like Argo for a named plugin, a repository the
/// plugin's discovery does not match is still sent when discovery is off for it.
pub async fn generate_like_argo(
    client: &mut ConfigManagementPluginServiceClient<Channel>,
    stream: &RepoStream,
    timeout: Option<std::time::Duration>,
) -> Result<ArgoCall, tonic::Status> {
    let request = || {
        let mut r = tonic::Request::new(futures::stream::iter(stream.messages()));
        if let Some(t) = timeout {
            r.set_timeout(t);
        }
        r
    };
    let config = client.check_plugin_configuration(()).await?.into_inner();
    let is_supported = if config.is_discovery_configured {
        let m = client.match_repository(request()).await?.into_inner();
        if !m.is_supported && m.is_discovery_enabled {
            return Err(tonic::Status::failed_precondition(
                "the plugin's discovery does not match this repository (the repo-server would not use it)",
            ));
        }
        Some(m.is_supported)
    } else {
        None
    };
    client.check_plugin_configuration(()).await?;
    let manifests = client
        .generate_manifest(request())
        .await?
        .into_inner()
        .manifests;
    Ok(ArgoCall {
        is_discovery_configured: config.is_discovery_configured,
        is_supported,
        manifests,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The layout of Argo CD's `files.Tgz` (util/io/files/tar.go: `filepath.Walk` from the
    /// root, `header.Name = RelativePath(...)`): the root as `.`, then entries in lexical order,
    /// names without `./` and directories without a trailing slash, `.git` included, modes kept,
    /// symlinks as links (not followed), nothing but files, directories and symlinks.
    #[test]
    fn archives_like_argo_tgz() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join(".git/refs")).expect("mkdir");
        std::fs::write(root.join(".git/HEAD"), "ref: refs/heads/main\n").expect("write");
        std::fs::create_dir_all(root.join("app/sub")).expect("mkdir");
        std::fs::write(root.join("app/kustomization.yaml"), "resources: []\n").expect("write");
        std::fs::write(root.join("app/run.sh"), "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(
            root.join("app/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("../outside", root.join("app/link")).expect("symlink");
        nix_fifo(&root.join("app/fifo"));

        let tgz = tgz_dir(root).expect("tgz");
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(tgz.as_slice())
            .read_to_end(&mut tar)
            .expect("gunzip");
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, tar::EntryType, u32, Option<String>)> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let h = e.header();
                (
                    String::from_utf8(h.path_bytes().into_owned()).expect("utf-8"),
                    h.entry_type(),
                    h.mode().expect("mode"),
                    h.link_name()
                        .expect("link")
                        .map(|l| l.display().to_string()),
                )
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                ".",
                ".git",
                ".git/HEAD",
                ".git/refs",
                "app",
                "app/kustomization.yaml",
                "app/link",
                "app/run.sh",
                "app/sub",
            ]
        );
        let get = |n: &str| entries.iter().find(|e| e.0 == n).expect(n);
        assert_eq!(get(".").1, tar::EntryType::Directory);
        assert_eq!(get("app/sub").1, tar::EntryType::Directory);
        assert_eq!(get("app/run.sh").2 & 0o777, 0o755);
        assert_eq!(get("app/link").1, tar::EntryType::Symlink);
        assert_eq!(get("app/link").3.as_deref(), Some("../outside"));
    }

    fn nix_fifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo");
        assert!(status.success());
    }
}
