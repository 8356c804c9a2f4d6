#!/usr/bin/env python3
"""Measures a Lambda bootstrap's cold-start init time locally.

Serves the Lambda Runtime API on loopback, starts the bootstrap with the environment Lambda would
give it, and reports the time from process start to its first `GET .../invocation/next` (that is
the init phase: config, SDK clients, tracing). Then answers that call with no event and stops it.
Usage: cold_start.py PATH_TO_BOOTSTRAP [RUNS]
"""
import http.server
import os
import statistics
import subprocess
import sys
import threading
import time


def measure(binary: str) -> float:
    polled = threading.Event()

    class Runtime(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the Runtime API's verb)
            if self.path.endswith("/invocation/next"):
                polled.set()
                time.sleep(0.2)  # hold the poll while the measurement is taken
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Runtime)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": "capsule-sync-table-sync",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "CAPSULE_STATE_TABLE": "state",
        "CAPSULE_BUCKET": "bucket",
        "CAPSULE_TABLE_SYNC_FUNCTION": "capsule-sync-table-sync",
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    start = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ok = polled.wait(timeout=10)
    elapsed = time.perf_counter() - start
    proc.kill()
    proc.wait()
    server.shutdown()
    if not ok:
        raise SystemExit(f"{binary} never polled the Runtime API")
    return elapsed * 1000


def main() -> None:
    binary = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    times = [measure(binary) for _ in range(runs)]
    print(f"{os.path.basename(binary)}: init to first poll "
          f"median {statistics.median(times):.1f} ms, min {min(times):.1f} ms, max {max(times):.1f} ms over {runs} runs; "
          f"size {os.path.getsize(binary) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
