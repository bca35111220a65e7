//! Removal of request work dirs and evicted repository trees off the request path.
//!
//! Deleting a checkout of thousands of files costs more than rendering it (one `unlink` per
//! file, ~0.5 ms each on a slow disk), so a dropped [`super::workdir::WorkDir`] or
//! [`super::trees::Tree`] is only *renamed* into the trash dir (one syscall, same file
//! system) and a single background thread deletes it after the response has gone. Bounded:
//! one thread, and once [`MAX_PENDING`] removals are queued the dropping request removes its
//! own directory in line (back-pressure instead of an unbounded backlog). Without a janitor
//! (the CLI, unit tests) or when the rename fails, removal happens in line as before.
//! [`flush`] waits for the queue to drain (shutdown), so nothing is left behind.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, mpsc};

/// Removals queued at most before callers remove in line.
pub const MAX_PENDING: usize = 64;

static JANITOR: OnceLock<Janitor> = OnceLock::new();
static SEQ: AtomicU64 = AtomicU64::new(0);

struct Janitor {
    trash: PathBuf,
    tx: Mutex<mpsc::Sender<PathBuf>>,
    pending: AtomicUsize,
    idle: (Mutex<()>, Condvar),
}

/// Starts the background remover with `trash` (created empty, on the same file system as the
/// work dirs) as its staging dir. Once per process; later calls are ignored.
pub fn start(trash: &Path) -> io::Result<()> {
    reset_dir(trash)?;
    let (tx, rx) = mpsc::channel::<PathBuf>();
    let janitor = Janitor {
        trash: trash.to_path_buf(),
        tx: Mutex::new(tx),
        pending: AtomicUsize::new(0),
        idle: (Mutex::new(()), Condvar::new()),
    };
    if JANITOR.set(janitor).is_err() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("avp-janitor".to_owned())
        .spawn(move || {
            for path in rx {
                remove_now(&path);
                if let Some(j) = JANITOR.get() {
                    let _guard = j.idle.0.lock().unwrap_or_else(|p| p.into_inner());
                    j.pending.fetch_sub(1, Ordering::AcqRel);
                    j.idle.1.notify_all();
                }
            }
        })?;
    Ok(())
}

/// Removes `dir` (and everything below it): in the background when a janitor runs and has
/// room, else now. `dir` is gone from its place when this returns either way.
pub fn remove(dir: &Path) {
    if let Some(j) = JANITOR.get()
        && j.pending.load(Ordering::Acquire) < MAX_PENDING
    {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let staged = j.trash.join(format!("{n}"));
        if std::fs::rename(dir, &staged).is_ok() {
            j.pending.fetch_add(1, Ordering::AcqRel);
            let sent =
                j.tx.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .send(staged.clone());
            if sent.is_err() {
                j.pending.fetch_sub(1, Ordering::AcqRel);
                remove_now(&staged);
            }
            return;
        }
    }
    remove_now(dir);
}

/// Waits until every queued removal has finished (at shutdown, before exiting).
pub fn flush() {
    let Some(j) = JANITOR.get() else { return };
    let mut guard = j.idle.0.lock().unwrap_or_else(|p| p.into_inner());
    while j.pending.load(Ordering::Acquire) > 0 {
        guard = j.idle.1.wait(guard).unwrap_or_else(|p| p.into_inner());
    }
}

/// Deletes `dir` in line. With `preserveFileMode` an archive may create read-only
/// directories, which `remove_dir_all` cannot empty: those are made writable and it tries once
/// more.
pub fn remove_now(dir: &Path) {
    if let Err(first) = std::fs::remove_dir_all(dir) {
        if first.kind() == io::ErrorKind::NotFound {
            return;
        }
        make_writable(dir);
        if let Err(err) = std::fs::remove_dir_all(dir)
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %dir.display(), %first, %err, "could not remove directory");
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

/// Removes and recreates `dir` (mode 0700): leftovers of a crashed process must not
/// accumulate.
pub fn reset_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            make_writable(dir);
            std::fs::remove_dir_all(dir).map_err(|_| e)?;
        }
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
