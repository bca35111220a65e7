//! `avp-sandbox-exec <policy> -- <tool> <args>`: the tool sandbox's re-exec helper on its own.
//!
//! The server starts this for every kustomize or helm run (see `avp_sidecar::sandbox`). It is
//! the same code as `avp-sidecar sandbox-exec`, in a binary that links nothing else: starting
//! the whole server binary cost a tool run ~2 ms more.

use std::process::ExitCode;

use avp_sidecar::sandbox::helper;

fn main() -> ExitCode {
    let err = helper::main(std::env::args_os().skip(1).collect());
    eprintln!("{err}");
    ExitCode::from(helper::EXIT_REFUSED)
}
