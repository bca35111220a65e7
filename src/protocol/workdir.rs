//! Per-request scratch directory. Everything a request writes lives below its `WorkDir`, and the
//! whole tree is removed when the `WorkDir` is dropped, on every path (success, error, deadline,
//! client cancel: tonic drops the handler future and with it this value).

use std::io;
use std::path::{Path, PathBuf};

/// A request's private directory: `repo/` holds the extracted tarball, `tmp/` our own files
/// (the received archive, helm homes, generated values files).
#[derive(Debug)]
pub struct WorkDir {
    root: PathBuf,
}

impl WorkDir {
    /// Creates a fresh, uniquely named directory (mode 0700) under `parent`.
    pub fn create(parent: &Path) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("req-")
            .tempdir_in(parent)?
            .keep();
        let wd = Self { root: dir };
        std::fs::create_dir(wd.repo())?;
        std::fs::create_dir(wd.tmp())?;
        Ok(wd)
    }

    /// The directory the repository tarball is extracted into.
    pub fn repo(&self) -> PathBuf {
        self.root.join("repo")
    }

    /// Scratch space that is not part of the repository.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn path(&self) -> &Path {
        &self.root
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(first) = std::fs::remove_dir_all(&self.root) {
            // With `preserveFileMode` an archive may create read-only directories, which
            // remove_dir_all cannot empty. Make everything writable and try once more.
            make_writable(&self.root);
            if let Err(err) = std::fs::remove_dir_all(&self.root)
                && err.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %self.root.display(), %first, %err, "could not remove request work dir");
            }
        }
    }
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&entry.path());
            }
        }
    }
}

/// Removes and recreates the work root at startup, like Argo's sidecar: leftovers of a crashed
/// process must not accumulate.
pub fn reset_work_root(root: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_dir_all(root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(root)?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
}
