#!/usr/bin/env bash
# Runs a command with moto_server (S3, DynamoDB, Secrets Manager) on a free loopback port and
# the AWS environment pointed at it; installs moto if missing, stops it afterwards.
#   bash scripts/with-moto.sh cargo bench -p capsule-sync-e2e --bench rate_windows
set -euo pipefail
cd "$(dirname "$0")/.."

# MOTO_PYTHON: the interpreter moto runs under (scripts/deploy-check.sh passes its virtualenv's,
# which has moto's CloudFormation too).
python=${MOTO_PYTHON:-python3}
# 5.2.5 exactly: 5.2.1 breaks S3 CompleteMultipartUpload for the Rust SDK.
if ! "$python" -m pip show moto 2>/dev/null | grep -q '^Version: 5.2.5$'; then
  "$python" -m pip install --quiet --disable-pip-version-check "moto[server]==5.2.5"
fi

port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
log=$(mktemp)
# moto_server with one lock around DynamoDB requests: moto alone applies conditional writes
# non-atomically (scripts/moto_server.py says what was seen).
"$python" scripts/moto_server.py -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
  if "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then break; fi
  kill -0 "$moto_pid" 2>/dev/null || { cat "$log" >&2; echo "moto_server did not start" >&2; exit 1; }
  sleep 0.2
done

export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE
export AWS_EC2_METADATA_DISABLED=true

"$@"
