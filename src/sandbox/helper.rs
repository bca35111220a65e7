//! `avp-sandbox-exec <policy> -- <tool> <args>` (or `avp-sidecar sandbox-exec ...`): the
//! re-exec helper that confines one tool run. It runs single-threaded, before any tool code, as the tool's own process:
//!
//! 1. marks every inherited descriptor above stderr close-on-exec (the tool gets only stdio);
//! 2. sets `RLIMIT_CORE` to 0 (a crashing tool leaves no core file with its memory);
//! 3. builds a Landlock ruleset from the policy and restricts itself (this also sets
//!    `no_new_privs`, so no set-uid binary can lift anything);
//! 4. execs the tool, which inherits the restrictions, as does everything it starts.
//!
//! Any failure ends the helper with exit status 126 and a one-line reason on stderr, before the
//! tool ran: a run that cannot be confined does not run.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};

use super::{Policy, TARGET_ABI};

/// The helper's subcommand name in `avp-sidecar` (not shown in `--help`).
pub const SUBCOMMAND: &str = "sandbox-exec";

/// The helper as a binary of its own (`src/bin/avp-sandbox-exec.rs`), installed beside
/// `avp-sidecar`: it starts faster than the server binary (see `sandbox::Runner`).
pub const BINARY: &str = "avp-sandbox-exec";

/// What `avp-sandbox-exec --version` prints: the server uses the dedicated helper only when it
/// is the same version with the same Landlock ABI (a stale one left beside a new server could
/// enforce less than the server reports).
pub fn version_line() -> String {
    format!(
        "{BINARY} {} landlock-abi {}",
        env!("CARGO_PKG_VERSION"),
        super::TARGET_ABI as i32
    )
}

/// Exit status when the helper refuses or fails (as a shell does for "cannot execute").
pub const EXIT_REFUSED: u8 = 126;

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("sandbox-exec: {0}")]
    Usage(String),
    #[error("sandbox-exec: landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    #[error("sandbox-exec: the kernel did not enforce the file-system rules")]
    NotEnforced,
    #[error("sandbox-exec: disabling core dumps: {0}")]
    Rlimit(#[source] nix::Error),
    #[error("sandbox-exec: cannot execute {program}: {source}")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// Entry point; returns only on failure.
pub fn main(args: Vec<OsString>) -> HelperError {
    match confine_and_exec(args) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn confine_and_exec(args: Vec<OsString>) -> Result<std::convert::Infallible, HelperError> {
    let split = args
        .iter()
        .position(|a| a == "--")
        .ok_or_else(|| HelperError::Usage("missing `-- <program> [args]`".to_owned()))?;
    let mut rest = args;
    let tool = rest.split_off(split + 1);
    rest.pop();
    let policy = parse_policy(rest)?;
    let (program, tool_args) = tool
        .split_first()
        .ok_or_else(|| HelperError::Usage("no program after `--`".to_owned()))?;

    close_fds::CloseFdsBuilder::new().cloexecfrom(3);
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
        .map_err(HelperError::Rlimit)?;
    restrict(&policy)?;
    let err = std::process::Command::new(program).args(tool_args).exec();
    Err(HelperError::Exec {
        program: Path::new(program).display().to_string(),
        source: err,
    })
}

/// Applies `policy` to the calling thread (the helper has only one) and its future children.
fn restrict(policy: &Policy) -> Result<(), HelperError> {
    let abi = TARGET_ABI;
    let all = AccessFs::from_all(abi);
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let file_rw = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate;
    let rules = |paths: &[PathBuf], access: BitFlags<AccessFs>| {
        paths
            .iter()
            // A path that vanished since the server listed it grants nothing; skip it.
            .filter_map(|p| PathFd::new(p).ok())
            .map(move |fd| Ok::<_, landlock::RulesetError>(PathBeneath::new(fd, access)))
            .collect::<Vec<_>>()
    };
    let ruleset =
        Ruleset::default()
            .handle_access(all)?
            .handle_access(AccessNet::ConnectTcp | AccessNet::BindTcp)?
            .scope(Scope::Signal | Scope::AbstractUnixSocket)?
            .create()?
            .add_rules(rules(&policy.read_write, all & !AccessFs::Execute))?
            .add_rules(rules(&policy.read_only, read))?
            .add_rules(rules(&policy.exec, AccessFs::ReadFile | AccessFs::Execute))?
            .add_rules(rules(&policy.devices, file_rw))?
            .add_rules(policy.connect_ports.iter().map(|p| {
                Ok::<_, landlock::RulesetError>(NetPort::new(*p, AccessNet::ConnectTcp))
            }))?;
    let status = ruleset.restrict_self()?;
    if status.ruleset == RulesetStatus::NotEnforced || !status.no_new_privs {
        return Err(HelperError::NotEnforced);
    }
    Ok(())
}

/// Parses `--rw P --ro P --exec P --dev P --connect-port N`, repeated, in any order.
pub fn parse_policy(args: Vec<OsString>) -> Result<Policy, HelperError> {
    let mut policy = Policy::default();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| {
            HelperError::Usage(format!("{} needs a value", flag.to_string_lossy()))
        })?;
        match flag.to_str() {
            Some("--rw") => policy.read_write.push(absolute(value)?),
            Some("--ro") => policy.read_only.push(absolute(value)?),
            Some("--exec") => policy.exec.push(absolute(value)?),
            Some("--dev") => policy.devices.push(absolute(value)?),
            Some("--connect-port") => policy.connect_ports.push(
                value
                    .to_str()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| HelperError::Usage("--connect-port needs a port".to_owned()))?,
            ),
            _ => {
                return Err(HelperError::Usage(format!(
                    "unknown option {}",
                    flag.to_string_lossy()
                )));
            }
        }
    }
    Ok(policy)
}

fn absolute(p: OsString) -> Result<PathBuf, HelperError> {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(HelperError::Usage(format!(
            "{} is not an absolute path",
            p.display()
        )))
    }
}
