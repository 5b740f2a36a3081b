//! Exit codes, and the two ways a command ends: a result on stdout, or a one-line reason on stderr.

use std::io::Write;
use std::process::ExitCode;

/// EX_USAGE: bad command line or configuration.
pub const EXIT_USAGE: u8 = 64;
/// Start-up or runtime failure.
pub const EXIT_FAILURE: u8 = 1;

/// Writes a command's result to stdout; a write failure (e.g. a closed pipe) is exit 1.
pub(super) fn print_result(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_FAILURE, format!("cannot write to stdout: {e}")),
    }
}

/// Prints `aml-auth-proxy: <message>` on stderr and returns `code`.
pub(super) fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("aml-auth-proxy: {message}");
    ExitCode::from(code)
}

/// Parses the command line into `T`. On `--help` or `--version` clap prints and this is exit 0; on a usage error
/// clap prints it and this is exit 64.
pub fn parse_or_exit<T: clap::Parser>() -> Result<T, ExitCode> {
    T::try_parse().map_err(|e| {
        let _ = e.print();
        match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                ExitCode::SUCCESS
            }
            _ => ExitCode::from(EXIT_USAGE),
        }
    })
}
