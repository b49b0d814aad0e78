#!/usr/bin/env bash
# Sets up what the tests need and runs them all: unit tests, and the end-to-end tests that start
# the real evhost binary on a free port with a fresh data directory.
set -euo pipefail
cd "$(dirname "$0")/.."

# The toolchain is pinned by rust-toolchain.toml; rustup installs it on first use.
cargo --version

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
