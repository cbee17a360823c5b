#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and root integration tests.
# Run as root on Debian/Ubuntu; installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# A one-shot build gains nothing from incremental caches; they doubled the disk used.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "== disk"; df -h . | tail -1

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== build"
# The VM tests run the workspace binaries inside QEMU (shared over 9p): build them first.
cargo build --workspace --bins
trap 'target/debug/skiff-vm down --all || true' EXIT
echo "== tests"
# Tests that need root, a VM or a tool are #[ignore = "needs ..."]: this run (root, all
# installed) runs them too.
cargo nextest run --workspace --no-fail-fast --run-ignored all
