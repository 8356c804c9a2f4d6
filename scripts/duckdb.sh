#!/usr/bin/env bash
# Sourced by scripts/demo.sh and scripts/test.sh: makes the DuckDB CLI available as
# $CAPSULE_DUCKDB, installing the pinned `duckdb-cli` wheel (a prebuilt binary, ~2 s) when no
# `duckdb` is on PATH. capsule-sync calls it to load its DuckDB warehouse kit; nothing compiles.
if [ -z "${CAPSULE_DUCKDB:-}" ]; then
  if command -v duckdb >/dev/null 2>&1; then
    CAPSULE_DUCKDB=$(command -v duckdb)
  else
    echo "installing the DuckDB CLI (pip: duckdb-cli==1.5.6)" >&2
    python3 -m pip install --quiet --disable-pip-version-check "duckdb-cli==1.5.6" >&2
    CAPSULE_DUCKDB=$(python3 -c 'import os, sysconfig; print(os.path.join(sysconfig.get_path("scripts"), "duckdb"))')
    # pip may have installed for the user only (~/.local/bin, perhaps not on PATH).
    [ -x "$CAPSULE_DUCKDB" ] || CAPSULE_DUCKDB="$(python3 -m site --user-base)/bin/duckdb"
    [ -x "$CAPSULE_DUCKDB" ] || CAPSULE_DUCKDB=$(command -v duckdb)
  fi
fi
export CAPSULE_DUCKDB
