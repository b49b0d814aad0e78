#!/usr/bin/env bash
# A compiler for the workspace's own crates (RUSTC_WORKSPACE_WRAPPER, set by scripts/test.sh):
# clippy's driver, which compiles exactly as rustc does and lints on the way, with warnings as
# errors, as `cargo clippy -- -D warnings` would. Cargo calls it with the path of rustc first.
exec clippy-driver "$@" -D warnings
