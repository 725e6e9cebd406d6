//! The `sealpost` binary: everything lives in the library; this only runs it.

use std::process::ExitCode;

fn main() -> ExitCode {
    sealpost::cli::main()
}
