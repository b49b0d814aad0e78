#!/usr/bin/env bash
# Sets up what the tests need and runs them all: the Python and JavaScript SDKs' own tests
# (pytest, node's test runner), the Rust unit tests, and the end-to-end tests that start the real
# evhost binary on a free port with a fresh data directory and deploy plugins built from this
# repository in Rust, Python and JavaScript.
set -euo pipefail
cd "$(dirname "$0")/.."

# The toolchain is pinned by rust-toolchain.toml; rustup installs it on first use. Plugins and
# the tests' guest fixtures are built for wasm32-wasip2, whose standard library rustup adds once
# (rust-toolchain.toml's `targets` does not install it into a toolchain that is already there).
cargo --version
rustup target add wasm32-wasip2 --toolchain "$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"

# componentize-py in a virtual environment and componentize-js from npm, for the Python and
# JavaScript plugins and SDKs.
bash scripts/guest-tools.sh
target/guest-tools/python/bin/python -m pytest -q sdk/python/tests
(cd sdk/js && npm test --silent)

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
