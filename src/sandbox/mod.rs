//! Tool confinement: what a kustomize or helm process (and anything it starts) may touch.
//!
//! A tenant controls the repository, so everything kustomize and helm do is driven by hostile
//! input. Three layers keep them in their request:
//!
//! - [`gate`]: every helm call kustomize makes goes through `avp-sidecar` itself in gate mode
//!   (`--helm-command` points at our binary), which accepts only the argv shapes kustomize 5.x
//!   produces for chart inflation and refuses flag-like values, post-renderers and plugins. The
//!   direct helm path is checked by the same code.
//! - [`helper`]: the kernel's Landlock LSM. The server does not restrict itself; it starts
//!   `avp-sandbox-exec <policy> -- <tool> <args>` (a binary of its own next to ours, or
//!   `avp-sidecar sandbox-exec` when it is missing or another version), a small re-exec
//!   helper that marks
//!   inherited descriptors close-on-exec, disables core dumps, restricts itself (read and write
//!   only the request's directories, read the system files a tool needs, execute only the tool
//!   binaries, TCP connect only to operator-listed ports and, for runs that fetch charts, the
//!   port of the sidecar's fetch proxy (`crate::fetch`), no signals or abstract sockets out
//!   of the sandbox) and then execs the tool. Restrictions are inherited by every descendant and
//!   cannot be lifted, and no `unsafe` is needed (no `pre_exec` in the server).
//! - [`reaper`]: the server is non-dumpable (same-uid children cannot read its `/proc` files)
//!   and a child subreaper, so a tool's descendants that escape its process group (`setsid`)
//!   are adopted by us and killed when their request's tool run ends.

pub mod gate;
pub mod helper;
pub mod reaper;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, Scope,
};

use crate::pipeline::render::tool::ToolCommand;

/// The newest Landlock ABI whose rights we ask for; the helper degrades per right on older
/// kernels (best effort) and the startup probe reports what is enforced.
pub const TARGET_ABI: ABI = ABI::V6;

/// Set to `1`, the startup probe behaves as on a kernel without Landlock.
pub const NO_LANDLOCK_ENV: &str = "AVP_SIDECAR_ASSUME_NO_LANDLOCK";

/// `--tool-sandbox`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    /// On where the kernel supports Landlock; otherwise off with a warning, a metric and
    /// `/readyz` detail.
    Auto,
    /// Refuse to start without Landlock.
    Require,
    /// Never confine tools (not recommended: a repository can then read what the server can).
    Off,
}

/// What the running kernel's Landlock can enforce, probed once at startup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Support {
    /// File-system rules (ABI 1+, Linux 5.13).
    pub fs: bool,
    /// TCP bind/connect rules (ABI 4+, Linux 6.7).
    pub net: bool,
    /// Signal and abstract unix socket scoping (ABI 6+, Linux 6.12).
    pub scopes: bool,
}

impl Support {
    /// Asks the kernel by creating (never applying) rulesets that require each feature.
    /// [`NO_LANDLOCK_ENV`] set to `1` makes it answer "nothing", as on a kernel without
    /// Landlock (how the tests exercise `auto` and `require` there).
    pub fn probe() -> Self {
        if std::env::var_os(NO_LANDLOCK_ENV).is_some_and(|v| v == "1") {
            return Self::default();
        }
        let hard = || Ruleset::default().set_compatibility(CompatLevel::HardRequirement);
        let fs = hard()
            .handle_access(AccessFs::from_all(ABI::V1))
            .and_then(Ruleset::create)
            .is_ok();
        let net = hard()
            .handle_access(AccessNet::ConnectTcp)
            .and_then(Ruleset::create)
            .is_ok();
        let scopes = hard()
            .scope(Scope::Signal | Scope::AbstractUnixSocket)
            .and_then(Ruleset::create)
            .is_ok();
        Self { fs, net, scopes }
    }

    /// `fs, net, scopes` for logs, `/readyz` and docs.
    pub fn describe(&self) -> String {
        let mut parts = vec![];
        if self.fs {
            parts.push("files");
        }
        if self.net {
            parts.push("tcp");
        }
        if self.scopes {
            parts.push("signals+abstract sockets");
        }
        parts.join(", ")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "--tool-sandbox require: this kernel has no usable Landlock (Linux 5.13+ with `landlock` in the lsm= boot list); see docs/security.md"
    )]
    Unsupported,
    #[error(
        "{what} at {path} is a script; the tool sandbox executes binaries only (no shell): point the flag at the {what} binary (or kubectl for kustomize), or run with --tool-sandbox off"
    )]
    Script { what: &'static str, path: String },
    #[error("cannot find our own executable for the sandbox helper: {0}")]
    SelfExe(#[source] std::io::Error),
}

/// The confinement in force for this process's tool runs.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub mode: SandboxMode,
    /// What is enforced; `None` when tools run unconfined.
    pub enforced: Option<Support>,
    /// Our own binary: the helm gate (kustomize's `--helm-command`).
    pub helper: PathBuf,
    /// What a confined run starts: the re-exec helper.
    runner: Runner,
    /// Files tools may execute: the tool binaries, our binary, and their ELF interpreters.
    exec: Vec<PathBuf>,
    /// TCP ports tools may connect to (none: no outbound TCP at all).
    pub connect_ports: Vec<u16>,
}

impl Sandbox {
    /// Decides the sandbox for `mode` on this kernel. `tools` are the binaries the renderer
    /// runs (checked to be executables, not scripts, when confinement is on).
    pub fn new(
        mode: SandboxMode,
        tools: &[(&'static str, &Path)],
        connect_ports: Vec<u16>,
    ) -> Result<Self, SandboxError> {
        let helper = std::env::current_exe().map_err(SandboxError::SelfExe)?;
        let runner = Runner::beside(&helper);
        let support = Support::probe();
        let enforced = match mode {
            SandboxMode::Off => None,
            SandboxMode::Auto => support.fs.then_some(support),
            SandboxMode::Require if support.fs => Some(support),
            SandboxMode::Require => return Err(SandboxError::Unsupported),
        };
        let mut exec = vec![helper.clone()];
        if enforced.is_some() {
            for (what, path) in tools {
                if is_script(path) {
                    return Err(SandboxError::Script {
                        what,
                        path: path.display().to_string(),
                    });
                }
                exec.push(path.to_path_buf());
            }
        }
        if enforced.is_some() {
            let interpreters: Vec<PathBuf> =
                exec.iter().filter_map(|p| elf_interpreter(p)).collect();
            exec.extend(interpreters);
        }
        exec.sort();
        exec.dedup();
        Ok(Self {
            mode,
            enforced,
            runner,
            helper,
            exec,
            connect_ports,
        })
    }

    /// Whether a tool may open a TCP connection at all (unconfined, a kernel without Landlock
    /// TCP rules, or `--tool-connect-ports`). When it may not, kustomize cannot pull a
    /// `helmCharts` chart, so it writes nothing into the repository.
    pub fn tools_may_connect(&self) -> bool {
        self.enforced.as_ref().is_none_or(|s| !s.net) || !self.connect_ports.is_empty()
    }

    /// One line for the startup log and `/readyz`.
    pub fn status_line(&self) -> String {
        match (&self.enforced, self.mode) {
            (Some(s), _) => format!(
                "tool sandbox on (landlock: {}; helper: {})",
                s.describe(),
                self.runner.describe()
            ),
            (None, SandboxMode::Off) => "tool sandbox OFF (--tool-sandbox off)".to_owned(),
            (None, _) => "tool sandbox OFF: this kernel has no usable Landlock".to_owned(),
        }
    }

    /// The policy for a tool run that may read and write `dirs` (the request's own
    /// directories) and only read `read_only` (the shared repository tree, which no request
    /// may change).
    pub fn policy(&self, dirs: &[PathBuf], read_only: &[PathBuf]) -> Policy {
        Policy {
            read_write: dirs.to_vec(),
            read_only: read_only
                .iter()
                .cloned()
                .chain(SYSTEM_READ.iter().map(PathBuf::from).filter(|p| p.exists()))
                .collect(),
            exec: self.exec.clone(),
            devices: DEVICES.iter().map(PathBuf::from).collect(),
            connect_ports: self.connect_ports.clone(),
        }
    }

    /// `cmd` as run through the helper, confined to writing `dirs` and reading `read_only`
    /// besides; unchanged when confinement is off.
    pub fn wrap(&self, cmd: ToolCommand, dirs: &[PathBuf], read_only: &[PathBuf]) -> ToolCommand {
        self.wrap_with(cmd, dirs, read_only, &[])
    }

    /// [`Sandbox::wrap`] for a run that fetches charts: `read_only` also holds the operator's
    /// repository credentials and trust (for this run only), and it may connect to the fetch
    /// proxy's port (`proxy_port`), besides `--tool-connect-ports`.
    pub fn wrap_fetching(
        &self,
        cmd: ToolCommand,
        dirs: &[PathBuf],
        read_only: &[PathBuf],
        proxy_port: u16,
    ) -> ToolCommand {
        let mut policy = self.policy(dirs, read_only);
        policy.connect_ports.push(proxy_port);
        self.wrap_policy(cmd, policy)
    }

    /// [`Sandbox::wrap`] that may also execute `programs` (an operator command plugin's own
    /// program, resolved; its ELF loader is added).
    pub fn wrap_with(
        &self,
        cmd: ToolCommand,
        dirs: &[PathBuf],
        read_only: &[PathBuf],
        programs: &[PathBuf],
    ) -> ToolCommand {
        if self.enforced.is_none() {
            return cmd;
        }
        let mut policy = self.policy(dirs, read_only);
        for p in programs {
            policy.exec.push(p.clone());
            policy.exec.extend(elf_interpreter(p));
        }
        self.wrap_policy(cmd, policy)
    }

    /// `cmd` run through the helper under `policy`; unchanged when confinement is off.
    fn wrap_policy(&self, cmd: ToolCommand, policy: Policy) -> ToolCommand {
        if self.enforced.is_none() {
            return cmd;
        }
        let mut args: Vec<OsString> = Vec::new();
        if self.runner.subcommand {
            args.push(helper::SUBCOMMAND.into());
        }
        args.extend(policy.to_args());
        args.push("--".into());
        args.push(cmd.program.into_os_string());
        args.extend(cmd.args);
        ToolCommand {
            program: self.runner.program.clone(),
            args,
            cwd: cmd.cwd,
            env: cmd.env,
        }
    }
}

/// The re-exec helper a confined run starts.
///
/// Every tool run pays for starting it. `avp-sidecar` is a 16 MB binary whose start costs
/// ~300 page faults (~3 ms on a small VM, more than half the wall time of a tool's start);
/// `avp-sandbox-exec` holds only the helper's code and starts in ~1 ms. Both run the same
/// [`helper::main`], so a server whose dedicated helper is not installed beside it confines
/// exactly the same, only more slowly (the status line says which one runs).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Runner {
    program: PathBuf,
    /// `program` is our own binary, which needs [`helper::SUBCOMMAND`] first.
    subcommand: bool,
}

impl Runner {
    /// [`helper::BINARY`] in the directory of `own_exe` (the server's resolved executable, so
    /// as trusted as the server itself) when it says it is this build's version
    /// ([`helper::version_line`]), or `own_exe` in helper mode.
    fn beside(own_exe: &Path) -> Self {
        let dedicated = own_exe.with_file_name(helper::BINARY);
        let same_version = || {
            std::process::Command::new(&dedicated)
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .is_ok_and(|o| {
                    o.status.success()
                        && String::from_utf8_lossy(&o.stdout).trim() == helper::version_line()
                })
        };
        if is_executable(&dedicated) && same_version() {
            Self {
                program: dedicated,
                subcommand: false,
            }
        } else {
            Self {
                program: own_exe.to_path_buf(),
                subcommand: true,
            }
        }
    }

    fn describe(&self) -> String {
        let name = self.program.file_name().map_or_else(
            || self.program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        if self.subcommand {
            format!(
                "{name} {} (slower: no {} of this version beside it)",
                helper::SUBCOMMAND,
                helper::BINARY
            )
        } else {
            name
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `program` as the kernel will execute it: a path as given, a bare name looked up in
/// `path_var` (none when it is not found: the run then fails as it would unconfined).
pub fn resolve_program(program: &Path, path_var: &str) -> Vec<PathBuf> {
    if program.components().count() > 1 {
        return std::fs::canonicalize(program).into_iter().collect();
    }
    std::env::split_paths(path_var)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
        .into_iter()
        .collect()
}

/// System files a tool may read: TLS trust, name resolution, time zones, and the shared
/// libraries and loader cache a dynamically linked binary (our own helper) needs. Missing
/// entries are skipped. Nothing here holds credentials.
pub const SYSTEM_READ: &[&str] = &[
    "/etc/ssl",
    "/etc/pki",
    "/etc/ca-certificates",
    "/usr/share/ca-certificates",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/etc/ld.so.cache",
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
];

/// Devices a tool may open for reading and writing (Go's `os/exec` opens `/dev/null` for a
/// child's unset stdin).
pub const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"];

/// The rules one confined run gets; passed to the helper on its command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Directories with every file right but execute (the request's work dir parts).
    pub read_write: Vec<PathBuf>,
    /// Files and directories that may be read.
    pub read_only: Vec<PathBuf>,
    /// Files that may be read and executed.
    pub exec: Vec<PathBuf>,
    /// Device files that may be read and written.
    pub devices: Vec<PathBuf>,
    /// TCP ports that may be connected to.
    pub connect_ports: Vec<u16>,
}

impl Policy {
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out = Vec::new();
        let mut push = |flag: &str, p: &Path| {
            out.push(OsString::from(flag));
            out.push(p.as_os_str().to_owned());
        };
        for p in &self.read_write {
            push("--rw", p);
        }
        for p in &self.read_only {
            push("--ro", p);
        }
        for p in &self.exec {
            push("--exec", p);
        }
        for p in &self.devices {
            push("--dev", p);
        }
        for port in &self.connect_ports {
            out.push("--connect-port".into());
            out.push(port.to_string().into());
        }
        out
    }
}

fn is_script(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"#!")
}

/// The `PT_INTERP` of a 64-bit little-endian ELF file (the dynamic loader the kernel opens
/// for execution, which Landlock checks like the binary itself); `None` for static binaries
/// and anything we do not recognise.
fn elf_interpreter(path: &Path) -> Option<PathBuf> {
    use std::io::Read;
    const PT_INTERP: u32 = 3;
    // Program headers and the interpreter path sit at the start of the file.
    let mut data = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(64 << 10)
        .read_to_end(&mut data)
        .ok()?;
    let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| {
        let v = u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?);
        usize::try_from(v).ok()
    };
    // ELF magic, 64-bit class, little-endian.
    if data.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = u64_at(0x20)?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? == PT_INTERP {
            let off = u64_at(ph + 8)?;
            let len = u64_at(ph + 32)?;
            let raw = data.get(off..off.checked_add(len)?)?;
            let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
            let interp = PathBuf::from(std::str::from_utf8(raw).ok()?);
            return std::fs::canonicalize(&interp).ok().or(Some(interp));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dedicated_helper_is_used_when_installed_beside_the_server() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let server = dir.path().join("avp-sidecar");
        std::fs::write(&server, b"").expect("write");
        let fallback = Runner::beside(&server);
        assert_eq!(fallback.program, server);
        assert!(fallback.subcommand);
        assert!(
            fallback.describe().contains("slower"),
            "{}",
            fallback.describe()
        );

        let dedicated = dir.path().join(helper::BINARY);
        let say = |line: &str| {
            std::fs::write(&dedicated, format!("#!/bin/sh\necho '{line}'\n")).expect("write");
        };
        say(&helper::version_line());
        // Not executable: not a helper to run.
        assert!(Runner::beside(&server).subcommand);
        std::fs::set_permissions(&dedicated, std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        // Another version (a stale helper left beside a new server): not used.
        say("avp-sandbox-exec 0.0.1 landlock-abi 1");
        assert!(Runner::beside(&server).subcommand);
        say(&helper::version_line());
        let runner = Runner::beside(&server);
        assert_eq!(runner.program, dedicated);
        assert!(!runner.subcommand);
        assert_eq!(runner.describe(), helper::BINARY);
    }

    #[test]
    fn own_binary_interpreter_is_found_and_static_tools_have_none() {
        let me = std::env::current_exe().expect("current exe");
        // The test binary is linked like the server: dynamically, against the system loader.
        let interp = elf_interpreter(&me).expect("dynamic test binary has PT_INTERP");
        assert!(interp.is_absolute() && interp.exists(), "{interp:?}");
        assert_eq!(elf_interpreter(Path::new("/nonexistent")), None);
        let script = tempfile::NamedTempFile::new().expect("tmp");
        std::fs::write(script.path(), "#!/bin/sh\ntrue\n").expect("write");
        assert!(is_script(script.path()));
        assert_eq!(elf_interpreter(script.path()), None);
        assert!(!is_script(&me));
    }

    #[test]
    fn policy_round_trips_through_the_helper_command_line() {
        let p = Policy {
            read_write: vec!["/w/req-1/repo".into(), "/w/req-1/tmp".into()],
            read_only: vec!["/etc/ssl".into()],
            exec: vec!["/usr/bin/helm".into()],
            devices: vec!["/dev/null".into()],
            connect_ports: vec![443],
        };
        let parsed = helper::parse_policy(p.to_args()).expect("parse");
        assert_eq!(parsed, p);
    }

    #[test]
    fn off_leaves_commands_alone() {
        let sb = Sandbox::new(SandboxMode::Off, &[], Vec::new()).expect("off");
        let cmd = ToolCommand {
            program: "/bin/true".into(),
            args: vec!["x".into()],
            cwd: "/".into(),
            env: vec![],
        };
        let out = sb.wrap(cmd.clone(), &["/tmp".into()], &[]);
        assert_eq!(out.program, cmd.program);
        assert_eq!(out.args, cmd.args);
    }
}
