//! The `aml-auth-proxy` binary: everything lives in the library; see [`aml_auth_proxy::cli`].

fn main() -> std::process::ExitCode {
    aml_auth_proxy::cli::main()
}
