//! `vaultboot`: argv → command; hardening; the command; its failure's kind → exit status.

use std::process::ExitCode;
use vaultboot::{Command, Kind};

// sysexits(3), as docs/command-line.md's table says.
const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_UNAVAILABLE: u8 = 69;
const EX_CANTCREAT: u8 = 73;
const EX_TEMPFAIL: u8 = 75;
const EX_NOPERM: u8 = 77;
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    // Before anything else, and long before any secret is read.
    let problems = vaultboot::harden();

    let command = match vaultboot::parse_command_line(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vaultboot: {e}\n\n{}", vaultboot::USAGE);
            return ExitCode::from(EX_USAGE);
        }
    };
    let status = match command {
        Command::Help => {
            println!("{}", vaultboot::USAGE);
            0
        }
        Command::Version => {
            println!("vaultboot {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Check {
            config,
            print_outputs,
        } => vaultboot::check(&config, print_outputs, exit_status),
        Command::Run { config, mode } => vaultboot::run(&config, mode, &problems, exit_status),
        Command::Plan { config, mode } => vaultboot::plan(&config, mode, &problems, exit_status),
    };
    ExitCode::from(status)
}

/// The exit status of each kind of failure (sysexits(3), as docs/command-line.md's table says).
fn exit_status(kind: Kind) -> u8 {
    match kind {
        Kind::Malformed => EX_DATAERR,
        Kind::Unavailable => EX_UNAVAILABLE,
        Kind::CannotWrite => EX_CANTCREAT,
        Kind::Refused => EX_NOPERM,
        Kind::Config => EX_CONFIG,
        Kind::Stopped => EX_TEMPFAIL,
    }
}
