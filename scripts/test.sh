#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, starts moto_server
# (S3, DynamoDB, Secrets Manager) on loopback for the AWS tests (scripts/with-moto.sh), installs
# the DuckDB CLI the warehouse test builds a database with (scripts/duckdb.sh) and the IAM
# policy evaluator (npm), runs every test, stops moto. Tests start their own other servers
# (the Capsule simulator, a local Lambda Invoke endpoint, an OAuth token endpoint, the IAM
# tests' recording proxy) on 127.0.0.1:0.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

source scripts/duckdb.sh
# The IAM policy evaluator the IAM tests run (tests/iam-evaluator, pinned by its lock file).
if [ ! -d tests/iam-evaluator/node_modules/@cloud-copilot/iam-simulate ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "installing Node.js and npm (the IAM tests' policy evaluator runs on Node)" >&2
    apt-get install -y -qq nodejs npm >/dev/null
  fi
  npm ci --prefix tests/iam-evaluator --no-audit --no-fund --silent
fi
# The table-sync bootstrap the Runtime API tests run as a process (tests/src/runtime.rs) is built
# by the test build itself, for table-sync's own bootstrap test, with the test build's features:
# a separate `cargo build -p table-sync` resolved other features and built the AWS SDK twice.
bash scripts/with-moto.sh cargo nextest run --workspace --no-fail-fast "$@"
