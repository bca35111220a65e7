//! Socket lifecycle: bind at Argo's conventional path, replace a stale socket, make it usable by
//! the repo-server's uid, remove it on shutdown.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// A bound socket whose file is removed when this value is dropped.
#[derive(Debug)]
pub struct BoundSocket {
    pub path: PathBuf,
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path`. A leftover socket file from a previous run is replaced; any other kind of file
/// at that path is an error (we never delete what is not ours). The socket is made
/// connectable by every user (mode 0666): the repo-server runs as uid 999 and the socket dir
/// is an emptyDir shared only by the containers of the repo-server pod.
pub fn bind(path: &Path) -> io::Result<(UnixListener, BoundSocket)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    let guard = BoundSocket {
        path: path.to_path_buf(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok((listener, guard))
}
