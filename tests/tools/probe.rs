//! A stand-in for kustomize or helm in the sandbox tests: it tries what a hostile tool would
//! try and prints one ConfigMap whose `data` says, per attempt, `allowed` or `denied` (never
//! anything it read). Attempts come from `probe-plan` in its working directory (the app dir),
//! one per line:
//!
//! - `read <path>`: open and read one byte;
//! - `list <dir>`: list a directory;
//! - `write <path>`: create a file;
//! - `connect <host:port>`: open a TCP connection;
//! - `exec <path>`: run a program;
//! - `signal <pid>`: send signal 0 to a process;
//! - `linger`: start a copy of itself in a new session that sleeps for two minutes (its pid
//!   goes into the output as `linger-pid`), then exit without waiting for it;
//! - `sleep <ms>`: wait.
//!
//! Built by `cargo test` as the example `tool-probe` (see Cargo.toml).

use std::io::Read;
use std::time::Duration;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--linger") {
        let _ = nix::unistd::setsid();
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    let plan = std::fs::read_to_string("probe-plan").unwrap_or_default();
    let mut data = Vec::new();
    for (i, line) in plan.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
        let key = format!("r{i}-{verb}");
        let result = match verb {
            "read" => std::fs::File::open(arg)
                .and_then(|mut f| f.read(&mut [0u8; 1]))
                .map(drop),
            "list" => std::fs::read_dir(arg).map(drop),
            "write" => std::fs::write(arg, b"x"),
            "connect" => arg
                .parse()
                .map_err(std::io::Error::other)
                .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)))
                .map(drop),
            "exec" => std::process::Command::new(arg).output().map(drop),
            "signal" => arg
                .parse::<i32>()
                .map_err(std::io::Error::other)
                .and_then(|pid| {
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                        .map_err(std::io::Error::from)
                }),
            "linger" => std::env::current_exe()
                .and_then(|me| std::process::Command::new(me).arg("--linger").spawn())
                .map(|child| data.push(("linger-pid".to_owned(), child.id().to_string()))),
            "sleep" => {
                std::thread::sleep(Duration::from_millis(arg.parse().unwrap_or(0)));
                Ok(())
            }
            other => Err(std::io::Error::other(format!("unknown verb {other}"))),
        };
        let word = match result {
            Ok(()) => "allowed".to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => "denied".to_owned(),
            Err(e) => format!("error: {}", e.kind()),
        };
        data.push((key, word));
    }
    println!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\ndata:");
    for (k, v) in data {
        println!("  {k}: {v:?}");
    }
}
