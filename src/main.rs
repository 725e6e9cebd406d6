//! The `sealpost` binary: everything lives in the library; this only runs it.

use std::process::ExitCode;

/// A request allocates and frees many small buffers across two worker
/// threads; glibc's allocator was ~15% of a landing-page request in perf.
/// jemalloc is as cheap as mimalloc there and, unlike mimalloc, gives
/// freed memory back even when the thread that freed it goes idle (a
/// blocking thread after an argon2 hash or a sealed upload).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    sealpost::cli::main()
}
