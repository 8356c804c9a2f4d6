#!/usr/bin/env bash
# The demo on a fresh machine: installs the DuckDB CLI if missing (scripts/duckdb.sh), then runs
# `capsule-sync demo`, which syncs a simulated account twice and loads both runs into DuckDB.
#   bash scripts/demo.sh [--parties N] [--data-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/duckdb.sh
cargo run --release -p capsule-sync -- demo "$@"
