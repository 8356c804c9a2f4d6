#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, runs every test.
# Tests start their own servers (the Capsule simulator, in-process, on 127.0.0.1:0).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

# The API samples the simulator's shape tests compare against (../shared beside the repo).
export CAPSULE_API_SAMPLES="${CAPSULE_API_SAMPLES:-$(cd .. && pwd)/shared/capsule-api-samples}"

cargo nextest run --workspace --no-fail-fast "$@"
