//! Process hygiene of the server around tool runs.
//!
//! - [`harden_server`]: the server is made non-dumpable, so a same-uid process (a tool that
//!   somehow runs code) cannot read `/proc/<server>/environ`, `mem` or `fd/*`, and a child
//!   subreaper, so descendants that leave their tool's process group (`setsid`,
//!   `setpgid`) and lose their parent are re-parented to us instead of to init.
//! - [`Leaders`]: the tool processes we spawned and have not reaped yet. Any other child of
//!   ours is such an adopted orphan: it outlived the tool that started it, belongs to no
//!   running tool, and [`sweep_orphans`] kills and reaps it.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

/// Set once the process is a subreaper: only then are stray children ours to kill (a test
/// binary or a CLI command has children of its own that are none of the reaper's business).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Non-dumpable and child subreaper; called once by `serve` before any tool runs.
pub fn harden_server() -> nix::Result<()> {
    nix::sys::prctl::set_dumpable(false)?;
    nix::sys::prctl::set_child_subreaper(true)?;
    ACTIVE.store(true, Ordering::SeqCst);
    Ok(())
}

/// Pids of tool processes we spawned and tokio has not reaped yet.
static LEADERS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// A registered tool process; unregisters on drop, which must happen only after the process
/// was reaped (until then the sweep must not touch it).
#[derive(Debug)]
pub struct Leader(Option<i32>);

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            leaders().remove(&pid);
        }
    }
}

fn leaders() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    LEADERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `spawn` with the registry locked, so a sweep never sees the new child unregistered.
pub fn spawn_registered<C>(
    spawn: impl FnOnce() -> std::io::Result<C>,
    pid_of: impl FnOnce(&C) -> Option<u32>,
) -> std::io::Result<(C, Leader)> {
    let mut set = leaders();
    let child = spawn()?;
    let pid = pid_of(&child).and_then(|p| i32::try_from(p).ok());
    if let Some(pid) = pid {
        set.insert(pid);
    }
    Ok((child, Leader(pid)))
}

/// Kills and reaps every child of this process that is not a registered tool process; returns
/// how many it found. Blocking (it waits up to a second for each killed orphan): call from a
/// blocking task. The registry stays locked from listing to reaping, so no pid it saw can be
/// freed and reused by a new tool process meanwhile (spawning waits for the lock).
pub fn sweep_orphans() -> usize {
    if !ACTIVE.load(Ordering::SeqCst) {
        return 0;
    }
    let me = nix::unistd::getpid().as_raw();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let set = leaders();
    let orphans: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !set.contains(pid) && parent_of(*pid) == Some(me))
        .collect();
    for pid in &orphans {
        let pid = Pid::from_raw(*pid);
        let _ = kill(pid, Signal::SIGKILL);
        reap(pid, std::time::Duration::from_secs(1));
    }
    drop(set);
    if !orphans.is_empty() {
        crate::metrics::TOOL_ORPHANS_KILLED.add([], orphans.len() as u64);
        tracing::warn!(
            count = orphans.len(),
            "killed tool descendants that outlived their tool"
        );
    }
    orphans.len()
}

/// At exit: kills the process group of every tool still running (a request the drain timeout
/// cut off, or one whose TERM grace has not run out: the task that would send its KILL dies with
/// the runtime), then sweeps what they left. Nothing a request started outlives the server.
/// Blocking, like [`sweep_orphans`]. Returns how many groups and orphans it killed.
pub fn kill_all_tools() -> usize {
    let groups: Vec<i32> = leaders().iter().copied().collect();
    for pgid in &groups {
        // Tool leaders lead their own group (`process_group(0)`), so pid == pgid.
        let _ = nix::sys::signal::killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
    }
    if !groups.is_empty() {
        tracing::warn!(
            count = groups.len(),
            "killed tools still running at shutdown"
        );
    }
    groups.len() + sweep_orphans()
}

/// Waits for a killed child without blocking forever (a process in uninterruptible I/O may
/// take a while; the next sweep reaps it).
fn reap(pid: Pid, within: std::time::Duration) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus};
    let until = std::time::Instant::now() + within;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            _ => return,
        }
    }
}

/// The parent pid from `/proc/<pid>/stat` (`pid (comm) state ppid ...`; comm may hold spaces
/// and parentheses, so fields are counted after the last `)`).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_reads_stat() {
        let me = nix::unistd::getpid().as_raw();
        let parent = nix::unistd::getppid().as_raw();
        assert_eq!(parent_of(me), Some(parent));
        assert_eq!(parent_of(-5), None);
    }
}
