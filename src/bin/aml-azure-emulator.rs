//! The `aml-azure-emulator` binary: everything lives in the library; see [`aml_auth_proxy::emulator`].

fn main() -> std::process::ExitCode {
    aml_auth_proxy::emulator::cli::main()
}
