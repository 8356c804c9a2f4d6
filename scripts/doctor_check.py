"""`capsule-sync --backend aws doctor` against the stacks deploy_check.py created: a sound
integration passes, and a deliberately broken deployment is reported with its fix.

- production, integration `acme`: its secret exists under the stack's SecretPrefix → no problem.
- production, integration `initech`: its secret was never created → reported, with the
  `aws secretsmanager create-secret` command that fixes it.
- staging (SecretPrefix `staging/capsule/`), integration `globex`, created by an operator whose
  CLI still had the default prefix: its secret `capsule-sync/globex` is not the one the stack's
  table-sync may read → reported, naming `staging/capsule/globex`.

Usage: doctor_check.py --stacks FILE --cli PATH   (FILE: deploy_check.py --outputs)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3


def cli(binary: Path, stack: dict, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    physical = stack["physical"]
    command = [str(binary), "--backend", "aws", "--state-table", physical["StateTable"],
               "--bucket", physical["OutputBucket"], *args]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120)


def doctor(binary: Path, stack: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), "--backend", "aws", "doctor", "--stack", stack["stack"]],
                          capture_output=True, text=True, timeout=120)


def expect(failures: list[str], what: str, result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    output = result.stdout + result.stderr
    missing = [n for n in needles if n not in output]
    if result.returncode != code or missing:
        failures.append(f"{what}: exit {result.returncode} (want {code}), missing {missing}:\n{output}")
    else:
        print(f"doctor: {what}: as expected (exit {code})")
        print("\n".join("    " + line for line in output.splitlines()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stacks", type=Path, required=True)
    parser.add_argument("--cli", type=Path, required=True)
    args = parser.parse_args()
    production, staging = json.loads(args.stacks.read_text())
    secrets = boto3.client("secretsmanager")
    failures: list[str] = []

    secrets.create_secret(Name="capsule-sync/acme", SecretString=json.dumps({"token": "not-a-real-token"}))
    created = cli(args.cli, production, "integrations", "create", "acme",
                  "--token", "secretsmanager:capsule-sync/acme", "--no-check")
    assert created.returncode == 0, created.stderr
    expect(failures, "a sound deployment", doctor(args.cli, production), 0,
           "integration acme: secret capsule-sync/acme, readable by capsule-sync-production-table-sync",
           "schedule capsule-sync-production-tick", "capsule-sync-production-hook-receiver's URL http",
           "no problems found")

    created = cli(args.cli, production, "integrations", "create", "initech",
                  "--token", "secretsmanager:capsule-sync/initech", "--no-check")
    assert created.returncode == 0, created.stderr
    expect(failures, "a missing secret", doctor(args.cli, production), 1,
           "integration initech: its secret capsule-sync/initech",
           "fix: aws secretsmanager create-secret --name capsule-sync/initech")

    secrets.create_secret(Name="capsule-sync/globex", SecretString=json.dumps({"token": "not-a-real-token"}))
    created = cli(args.cli, staging, "integrations", "create", "globex",
                  "--token", "secretsmanager:capsule-sync/globex", "--no-check",
                  env={"CAPSULE_SECRET_PREFIX": "capsule-sync/"})
    assert created.returncode == 0, created.stderr
    expect(failures, "a secret under the wrong prefix", doctor(args.cli, staging), 1,
           "integration globex: invalid configuration: token source secretsmanager:capsule-sync/globex is not integration `globex`'s own secret",
           "fix: store the token as the secret staging/capsule/globex")

    for failure in failures:
        print(f"doctor check failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
