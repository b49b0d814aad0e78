//! `evhost`: an event store and WebAssembly plugin host in one binary.
//!
//! `evhost serve` runs the host; the other subcommands are clients of a running host.

#[cfg(test)]
mod architecture;
mod cli;

/// The writer thread and the request handlers allocate many small buffers; mimalloc serves
/// them with less contention and bookkeeping than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
