//! `man`: the manual pages, generated from the clap definition plus hand-written sections for what clap does not
//! know (exit status, environment, signals).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::args::LONG_VERSION;
use super::command;
use super::exit::{EXIT_FAILURE, fail, print_result};

pub(super) fn man(out_dir: Option<&Path>) -> ExitCode {
    let result = match out_dir {
        None => man_page(),
        Some(dir) => write_man_pages(dir).map(|written| {
            let mut list = String::new();
            for path in written {
                list.push_str(&format!("{}\n", path.display()));
            }
            list.into_bytes()
        }),
    };
    match result {
        Ok(bytes) => print_result(&bytes),
        Err(e) => fail(EXIT_FAILURE, format!("man: {e}")),
    }
}

/// The definition the man pages describe: without the `help` subcommand, which has no page of its own.
fn man_command() -> clap::Command {
    let mut cmd = command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The main manual page: clap_mangen's sections from the CLI definition, then exit status, environment and
/// signals. Its SUBCOMMANDS section refers to the per-command pages [`write_man_pages`] writes.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(man_command());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    out.extend_from_slice(MAN_EXTRA_SECTIONS.as_bytes());
    // clap_mangen would run the `--version` lines together; one line each.
    out.extend_from_slice(b".SH VERSION\n");
    let lines: Vec<String> = LONG_VERSION
        .lines()
        .map(|l| l.replace('-', "\\-"))
        .collect();
    out.extend_from_slice(lines.join("\n.br\n").as_bytes());
    out.push(b'\n');
    Ok(out)
}

/// Writes `aml-auth-proxy.1` and `aml-auth-proxy-<command>.1` for every command into `dir` (created if
/// missing); returns the paths written.
pub fn write_man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let cmd = man_command();
    let mut written = Vec::new();
    let main = dir.join("aml-auth-proxy.1");
    std::fs::write(&main, man_page()?)?;
    written.push(main);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.push(clap_mangen::Man::new(sub.clone()).generate_to(dir)?);
    }
    Ok(written)
}

/// Hand-written roff for what clap does not know: exit codes, environment, signals.
const MAN_EXTRA_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success, or a clean shutdown.
.TP
\fB1\fR
Start\-up or runtime failure, for example a port in use, or a token that could not be acquired.
.TP
\fB64\fR
Bad usage or configuration; every problem is listed with its key path.
.PP
Each failure comes with a one\-line reason on stderr. stdout carries only a command's result.
.SH ENVIRONMENT
.TP
\fBAML_AUTH_PROXY_CONFIG\fR
The configuration file, as \fB\-\-config\fR.
.TP
\fBAML_AUTH_PROXY_LISTEN\fR
The proxy listener, as \fB\-\-listen\fR: \fIIP:port\fR or \fIunix:/path.sock\fR.
.TP
\fBAML_AUTH_PROXY_ADMIN_LISTEN\fR
The admin listener (/healthz, /readyz, /metrics), as \fB\-\-admin\-listen\fR.
.TP
\fBAML_AUTH_PROXY_LOG_FORMAT\fR
\fBtext\fR or \fBjson\fR, as \fB\-\-log\-format\fR; default: text on a terminal, JSON otherwise.
.TP
\fBAML_AUTH_PROXY_LOG_LEVEL\fR
A level or tracing directives, as \fB\-\-log\-level\fR.
.TP
\fBRUST_LOG\fR
Used when neither \fB\-\-log\-level\fR nor \fBAML_AUTH_PROXY_LOG_LEVEL\fR is set; default \fBinfo\fR.
.TP
\fBAZURE_TENANT_ID\fR, \fBAZURE_CLIENT_ID\fR, \fBAZURE_CLIENT_SECRET\fR, \fBAZURE_CLIENT_CERTIFICATE_PATH\fR, \fBAZURE_FEDERATED_TOKEN_FILE\fR, \fBAZURE_AUTHORITY_HOST\fR
Read by the credential sources, as the Azure SDKs read them (docs/credentials.md lists them all).
.TP
\fBAZURE_TOKEN_CREDENTIALS\fR
Without a configuration file: \fBprod\fR, \fBdev\fR or one source's name narrows the built\-in credential chain,
as azure\-identity's DefaultAzureCredential does; any other value is exit 64.
.TP
\fBBROWSER\fR
The command \fBlogin\fR opens the sign\-in page with.
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Drain: stop accepting connections, turn /readyz to 503, let in\-flight requests finish for up to
\fBlimits.drain_timeout\fR, then exit 0. A second signal stops at once.
.TP
\fBSIGHUP\fR
Reload the configuration file; a file with any problem is refused and the running configuration stays.
.SH "SEE ALSO"
The page of each command, \fBaml\-auth\-proxy\-run\fR(1) and the others above, written by
\fBaml\-auth\-proxy man \-\-out\-dir\fR \fIDIR\fR; \fBaml\-auth\-proxy help\fR \fICOMMAND\fR; in the source repository,
docs/configuration.md for the configuration reference, docs/errors.md for error codes and docs/deployment.md for
deployment.
"#;
