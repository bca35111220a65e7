//! `avp-sandbox-exec <policy> -- <tool> <args>`: the tool sandbox's re-exec helper on its own.
//!
//! The server starts this for every kustomize or helm run (see `avp_sidecar::sandbox`). It is
//! the same code as `avp-sidecar sandbox-exec`, in a binary that links nothing else: starting
//! the whole server binary cost a tool run ~2 ms more.

use std::process::ExitCode;

use avp_sidecar::sandbox::helper;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if args.len() == 1 && args[0] == "--version" {
        println!("{}", helper::version_line());
        return ExitCode::SUCCESS;
    }
    let err = helper::main(args);
    eprintln!("{err}");
    ExitCode::from(helper::EXIT_REFUSED)
}
