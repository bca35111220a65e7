//! The only place that spawns processes. Always argv (never a shell for built-in pipelines),
//! each child in its own process group so the whole tree can be stopped, output captured with a
//! cap, and a deadline that ends in TERM, a grace period, then KILL of the group.
//!
//! If the calling future is dropped (tonic drops handlers on client cancel or its own timeout),
//! a guard terminates the process group the same way, so no render outlives its request.
//! Unlike Go's `CommandContext` (which SIGKILLs the direct child at once), the leader gets the
//! same TERM and grace period as the rest of its group, so tools can clean up.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::time::Instant;

/// One command to run. `env` is the complete environment of the child: nothing is inherited
/// implicitly, so secrets in the server's own environment never reach tools by accident.
#[derive(Clone, Debug)]
pub struct ToolCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
}

impl ToolCommand {
    /// `program arg1 arg2`, quoted like a shell would need, for error messages and logs.
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(|a| a.as_os_str()))
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Limits applied to every run.
#[derive(Clone, Copy, Debug)]
pub struct RunLimits {
    /// Hard cap on captured stdout (and separately stderr) bytes.
    pub max_output_bytes: usize,
    /// Time between SIGTERM and SIGKILL when a deadline passes.
    pub kill_grace: Duration,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_output_bytes: 256 << 20,
            kill_grace: Duration::from_secs(5),
        }
    }
}

#[derive(Debug)]
pub struct ToolOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program could not be started (missing binary, bad cwd).
    #[error("`{cmd}` could not be started: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// The program ran and failed; the message carries its stderr, as Argo's does.
    #[error("`{cmd}` failed {status}: {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
        /// The end of its stdout (not in the message; some tools, such as helm's
        /// `dependency build`, report repository failures there).
        stdout_tail: String,
    },
    /// The deadline passed before the program finished; its process group was terminated.
    #[error("`{cmd}` did not finish before the deadline and was terminated")]
    Deadline { cmd: String },
    /// The program printed more than the cap allows.
    #[error("`{cmd}` printed more than {limit} bytes")]
    OutputTooLarge { cmd: String, limit: usize },
    /// Reading the program's output failed.
    #[error("reading output of `{cmd}`: {source}")]
    Io {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `cmd` to completion or until `deadline`.
pub async fn run(
    cmd: &ToolCommand,
    deadline: Option<Instant>,
    limits: RunLimits,
) -> Result<ToolOutput, ToolError> {
    let shown = cmd.display();
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return Err(ToolError::Deadline { cmd: shown });
    }
    let started = Instant::now();
    let mut command = Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .current_dir(&cmd.cwd)
        .env_clear()
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // Not kill_on_drop: that would SIGKILL the leader at once and deny it the TERM grace
        // period; `GroupGuard` signals the whole group instead, and tokio reaps the orphan.
        .kill_on_drop(false);
    let (child, leader) =
        crate::sandbox::reaper::spawn_registered(|| command.spawn(), tokio::process::Child::id)
            .map_err(|source| ToolError::Spawn {
                cmd: shown.clone(),
                source,
            })?;
    let mut guard = GroupGuard {
        pgid: child.id().and_then(|id| i32::try_from(id).ok()),
        child: Some(child),
        grace: limits.kill_grace,
        leader: Some(leader),
    };
    let Some(child) = guard.child.as_mut() else {
        unreachable!("set above");
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(ToolError::Io {
            cmd: shown,
            source: std::io::Error::other("child pipes missing"),
        });
    };
    let cap = limits.max_output_bytes;
    // Readers are tasks of their own, so an abandoned run keeps draining the pipes: a tool that
    // is cleaning up after SIGTERM must not die of SIGPIPE on its next write.
    let out_task = tokio::spawn(read_capped(stdout, cap));
    let err_task = tokio::spawn(read_capped(stderr, cap));
    // Wait for the leader, then end whatever it left behind (in its group or escaped from it,
    // e.g. a daemon holding our stdout pipe), then collect the output: the pipes close once
    // every process that held them is gone.
    let Some(status) = before(deadline, child.wait()).await else {
        // Dropping the guard stops the whole group in the background (TERM, grace, KILL).
        drop(guard);
        return Err(ToolError::Deadline { cmd: shown });
    };
    guard.disarm().await;
    let Some((out, err)) = before(deadline, async { tokio::join!(out_task, err_task) }).await
    else {
        return Err(ToolError::Deadline { cmd: shown });
    };
    let joined = |r: Result<std::io::Result<(Vec<u8>, bool)>, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    };
    let (out, err) = (joined(out), joined(err));
    let io = |source| ToolError::Io {
        cmd: shown.clone(),
        source,
    };
    let status = status.map_err(io)?;
    let (stdout, out_overflow) = out.map_err(io)?;
    let (stderr, _) = err.map_err(io)?;
    if out_overflow {
        return Err(ToolError::OutputTooLarge {
            cmd: shown,
            limit: cap,
        });
    }
    if !status.success() {
        return Err(ToolError::Failed {
            cmd: shown,
            status: describe(status),
            stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
            stdout_tail: String::from_utf8_lossy(&stdout[stdout.len().saturating_sub(4096)..])
                .trim()
                .to_owned(),
        });
    }
    Ok(ToolOutput {
        stdout,
        stderr,
        elapsed: started.elapsed(),
    })
}

/// `fut`'s output, or `None` if `deadline` passes first.
async fn before<T>(deadline: Option<Instant>, fut: impl Future<Output = T>) -> Option<T> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// Reads up to `cap` bytes, then keeps draining (so the child never blocks on a full pipe) and
/// reports the overflow.
async fn read_capped<R: AsyncRead + Unpin>(
    mut r: R,
    cap: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut overflow = false;
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok((buf, overflow));
        }
        if buf.len() + n > cap {
            overflow = true;
            let keep = cap.saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..keep]);
        } else {
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "unknown status".to_owned(),
    }
}

/// Owns a running child; if dropped before `disarm`, stops its whole process group: SIGTERM,
/// up to `grace` for the group to exit, then SIGKILL, and reaps the leader.
struct GroupGuard {
    pgid: Option<i32>,
    child: Option<tokio::process::Child>,
    grace: Duration,
    /// The leader's registration with the orphan reaper; dropped once the leader is reaped.
    leader: Option<crate::sandbox::reaper::Leader>,
}

impl GroupGuard {
    /// After the leader exited and was reaped: kills what is left of its group and any
    /// descendant that escaped it.
    async fn disarm(&mut self) {
        self.leader = None;
        if let Some(pgid) = self.pgid.take() {
            clear_leftovers(pgid).await;
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let (Some(pgid), Some(child)) = (self.pgid.take(), self.child.take()) else {
            return;
        };
        signal_group(pgid, Signal::SIGTERM);
        let grace = self.grace;
        let leader = self.leader.take();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(finish(child, pgid, grace, leader));
            }
            // Outside a runtime (cannot happen in the server): no grace, but nothing survives.
            Err(_) => signal_group(pgid, Signal::SIGKILL),
        }
    }
}

/// The rest of a group's termination after the SIGTERM, run as a background task.
async fn finish(
    mut child: tokio::process::Child,
    pgid: i32,
    grace: Duration,
    leader: Option<crate::sandbox::reaper::Leader>,
) {
    let until = Instant::now() + grace;
    let _ = tokio::time::timeout_at(until, child.wait()).await;
    while Instant::now() < until && group_alive(pgid) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal_group(pgid, Signal::SIGKILL);
    let _ = child.wait().await;
    drop(leader);
    clear_leftovers(pgid).await;
}

/// Kills the rest of a finished tool's process group, then (in the server, a subreaper) the
/// descendants that left the group and were adopted by us; repeats until both are gone, since
/// killing a group member can orphan its own children. Bounded: a process that survives
/// SIGKILL for two seconds (uninterruptible I/O) is left to the next sweep.
async fn clear_leftovers(pgid: i32) {
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        signal_group(pgid, Signal::SIGKILL);
        let swept = tokio::task::spawn_blocking(crate::sandbox::reaper::sweep_orphans)
            .await
            .unwrap_or(0);
        if (swept == 0 && !group_alive(pgid)) || Instant::now() >= until {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn signal_group(pgid: i32, sig: Signal) {
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), sig);
    }
}

fn group_alive(pgid: i32) -> bool {
    // Signal 0 only checks for existence.
    pgid > 1 && killpg(Pid::from_raw(pgid), None).is_ok()
}
