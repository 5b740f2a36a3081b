//! `completions`: a shell completion script, generated from the clap definition.

use std::process::ExitCode;

use super::command;
use super::exit::print_result;

pub(super) fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command(), "aml-auth-proxy", &mut out);
    print_result(&out)
}
