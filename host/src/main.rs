//! `evhost`: an event store and WebAssembly plugin host in one binary.
//!
//! `evhost serve` runs the host; the other subcommands are clients of a running host.

mod api;
mod cli;
mod log;
mod store;

fn main() -> std::process::ExitCode {
    cli::main()
}
