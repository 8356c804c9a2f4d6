#!/usr/bin/env bash
# Deploys template.yaml into an emulated AWS account (moto's CloudFormation on loopback) and
# verifies what was created, for two stacks side by side (scripts/deploy_check.py says how);
# then runs `capsule-sync --backend aws doctor` against them. CI runs it after the bootstraps
# are cross-built (cargo lambda build --release --arm64), whose packages it deploys.
#   bash scripts/deploy-check.sh              (--tools-only: install its tools, nothing else)
# The tools live in their own virtualenv (target/deploy-venv), pinned: aws-sam-cli's lint and
# translator, and moto with CloudFormation; the test suite's moto and cfn-lint are not touched.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/deploy-venv
pins=(aws-sam-cli==1.170.0 "moto[cloudformation,server]==5.2.5")
if ! "$venv/bin/python" -m pip freeze 2>/dev/null | grep -qx 'aws-sam-cli==1.170.0'; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
fi
# `--tools-only`: install the tools and stop (CI installs them while the code compiles).
if [ "${1:-}" = "--tools-only" ]; then exit 0; fi
export PATH="$PWD/$venv/bin:$PATH"

# No telemetry: nothing leaves loopback.
export SAM_CLI_TELEMETRY=0
echo "== sam validate --lint ($(sam --version))"
AWS_DEFAULT_REGION=us-east-1 sam validate --lint --template template.yaml

# The binary the test build made (nothing to do after scripts/test.sh, as in CI): a separate
# `cargo build -p capsule-sync` resolves other features and rebuilds the AWS SDK (~9 minutes).
echo "== capsule-sync (for doctor)"
cargo test --workspace --no-run --quiet
stacks=$(mktemp)
trap 'rm -f "$stacks"' EXIT
echo "== deploy two stacks into moto, verify them, run doctor against them"
MOTO_PYTHON="$PWD/$venv/bin/python" bash scripts/with-moto.sh bash -c '
  python scripts/deploy_check.py --outputs "$0" "${@}" &&
  python scripts/doctor_check.py --stacks "$0" --cli target/debug/capsule-sync' "$stacks" "$@"
