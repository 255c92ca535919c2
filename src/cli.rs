//! The command line: `vaultboot run|plan [--refresh]|check [--print-outputs] [--config PATH]`,
//! `--help`, `--version`.

use crate::app::Mode;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: vaultboot <command> [--config PATH] [--refresh] [--print-outputs]

Fetches secrets from HashiCorp Vault at boot, logging in with the instance's AWS identity,
and writes them to root-only files, all or nothing.

commands:
  run      do the boot job: IMDSv2 -> Vault login -> secrets -> files -> revoke token
  plan     log in, fetch, and print what run would do to every file and which on_change
           commands would run; writes nothing but the nonce state, shows no secret
  check    validate the configuration offline (no network); for image builds and CI;
           warns about an output whose directory others can search

options:
  -c, --config PATH   configuration file (default /etc/vaultboot/config.toml)
      --refresh       run, plan: a refresh (the timer's run), not the boot run: secrets
                      marked boot_only = true are skipped
      --print-outputs check: print every output path, one per line, and nothing else on
                      stdout; a {{ name }} part is printed as a shell glob of its AWS
                      format (i-* for instance-id)
  -h, --help          show this help
  -V, --version       show the version

exit status: 0 done, 64 usage, 65 malformed answer, 69 IMDS or Vault unavailable,
             73 cannot write a file or the state, 77 Vault refused, 78 configuration error";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run {
        config: PathBuf,
        mode: Mode,
    },
    Plan {
        config: PathBuf,
        mode: Mode,
    },
    Check {
        config: PathBuf,
        print_outputs: bool,
    },
    Help,
    Version,
}

/// Parses the arguments after the program name; the error is a usage message.
pub fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut config = None;
    let mut command: Option<String> = None;
    let mut refresh = false;
    let mut print_outputs = false;
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Short('c') | Long("config") => {
                let value = parser.value().map_err(|e| e.to_string())?;
                config = Some(PathBuf::from(value));
            }
            Long("refresh") => refresh = true,
            Long("print-outputs") => print_outputs = true,
            Value(v) if command.is_none() => {
                command = Some(
                    v.into_string()
                        .map_err(|_| "command is not UTF-8".to_string())?,
                )
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    let config = config.unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_PATH));
    if print_outputs && command.as_deref() != Some("check") {
        return Err("--print-outputs is an option of check".into());
    }
    let mode = if refresh { Mode::Refresh } else { Mode::Boot };
    match command.as_deref() {
        Some("run") => Ok(Command::Run { config, mode }),
        Some("plan") => Ok(Command::Plan { config, mode }),
        Some("check") if refresh => Err("--refresh is an option of run and plan".into()),
        Some("check") => Ok(Command::Check {
            config,
            print_outputs,
        }),
        Some(other) => Err(format!("unknown command {other:?} (run, plan, check)")),
        None => Err("a command is required (run, plan, check)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|a| a.into()))
    }

    #[test]
    fn commands_and_options() {
        assert_eq!(
            p(&["run"]).unwrap(),
            Command::Run {
                config: "/etc/vaultboot/config.toml".into(),
                mode: Mode::Boot,
            }
        );
        assert_eq!(
            p(&["run", "--refresh"]).unwrap(),
            Command::Run {
                config: "/etc/vaultboot/config.toml".into(),
                mode: Mode::Refresh,
            }
        );
        assert!(p(&["check", "--refresh"]).is_err());
        assert_eq!(
            p(&["plan", "--refresh", "-c", "/z"]).unwrap(),
            Command::Plan {
                config: "/z".into(),
                mode: Mode::Refresh,
            }
        );
        assert_eq!(
            p(&["check", "--config", "/x.toml"]).unwrap(),
            Command::Check {
                config: "/x.toml".into(),
                print_outputs: false,
            }
        );
        assert_eq!(
            p(&["check", "--print-outputs"]).unwrap(),
            Command::Check {
                config: "/etc/vaultboot/config.toml".into(),
                print_outputs: true,
            }
        );
        assert!(p(&["run", "--print-outputs"]).is_err());
        assert_eq!(
            p(&["--config=/y", "run"]).unwrap(),
            Command::Run {
                config: "/y".into(),
                mode: Mode::Boot,
            }
        );
        assert_eq!(p(&["--help"]).unwrap(), Command::Help);
        assert_eq!(p(&["-V"]).unwrap(), Command::Version);
        assert!(p(&[]).is_err());
        assert!(p(&["fly"]).unwrap_err().contains("fly"));
        assert!(p(&["run", "--bogus"]).is_err());
        assert!(p(&["run", "extra"]).is_err());
    }
}
