//! The command line: `run` (the default), `check-config`, `token`, `login`, `probe`, `env`, plus `completions` and `man`,
//! generated from the clap definition ([`Cli`]). One file per command; the shared parts are the argument
//! definitions (`args`), exit codes (`exit`), runtime setup (`setup`) and signal handling (`signals`).
//!
//! Exit codes: 0 success or clean shutdown, 64 bad usage or configuration, 1 start-up or runtime failure —
//! each failure with a one-line reason on stderr. stdout carries only a command's result.

mod args;
mod check_config;
mod completions;
mod env;
mod exit;
mod login;
mod man;
mod probe;
mod run;
mod setup;
mod signals;
mod token;

#[cfg(test)]
mod tests;

use std::process::ExitCode;
use std::sync::Arc;

use clap::CommandFactory;

use crate::env::{Env, ProcessEnv};
pub use args::Cli;
use args::Command;
pub use exit::{EXIT_FAILURE, EXIT_USAGE, parse_or_exit};
pub use man::{man_page, write_man_pages};

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match exit::parse_or_exit::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let env: Arc<dyn Env> = Arc::new(ProcessEnv);
    match cli.command {
        None => run::run(cli.run, env),
        Some(Command::Run(args)) => run::run(args, env),
        Some(Command::CheckConfig(args)) => check_config::check_config(&args, env.as_ref()),
        Some(Command::Token(args)) => token::token(args, env),
        Some(Command::Login(args)) => login::login(&args, env.as_ref()),
        Some(Command::Probe(args)) => probe::probe(&args.url),
        Some(Command::Env(args)) => env::env(args, env),
        Some(Command::Completions(args)) => completions::completions(args.shell),
        Some(Command::Man(args)) => man::man(args.out_dir.as_deref()),
    }
}

/// The clap definition, for generators (`completions`, `man`) and tests.
pub fn command() -> clap::Command {
    Cli::command()
}
