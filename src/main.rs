//! The `sealpost` binary: everything lives in the library; this only runs it.

use std::process::ExitCode;

/// A request allocates and frees many small buffers across two worker
/// threads; glibc's allocator was ~15% of a landing-page request in perf,
/// mimalloc is markedly cheaper for that pattern.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    sealpost::cli::main()
}
