#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs the real peers the
# tests drive (lab/install.sh: Kamailio, sipp, baresip, redis-server...), then checks formatting,
# lints, and runs every unit and integration test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
lab/install.sh
# Playwright (playwright-core only: it drives Debian's Chromium, downloads no browser)
if [ ! -d tests/browser/node_modules/playwright-core ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules ]; then
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# integration tests mostly wait on real peers: run more of them at once than there are cores
cargo test --workspace --locked -- --test-threads 8
