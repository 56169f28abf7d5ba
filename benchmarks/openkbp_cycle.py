"""One full retraining cycle with default parameters on openkbp-ct5, through the running service.

    .venv/bin/python -m benchmarks.openkbp_cycle --labelled 11 --validation 6

Imports the 99 CT cases into a fresh embedded instance (the first LABELLED + VALIDATION with their
masks), moves VALIDATION of them to the validation split, starts ``nextcase serve`` (embedded
worker), triggers one cycle with default parameters over the REST API and prints its progress,
phase timings and validation Dice. Not a test: it measures and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from app.bulk_import import msd_subset

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "openkbp-ct5"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labelled", type=int, default=11)
    parser.add_argument("--validation", type=int, default=6)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--params", default="{}", help="cycle parameters as JSON (default: all defaults)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nextcase-openkbp-"))
    env = {**os.environ, "NEXTCASE_DATABASE_URL": f"sqlite:///{root}/nextcase.db",
           "NEXTCASE_BLOB_DIR": str(root / "blobs"), "NEXTCASE_LOG_LEVEL": "WARNING"}
    cli = [sys.executable, "-m", "app.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    token = subprocess.run([*cli, "create-user", "bench-admin", "--role", "admin"], env=env, check=True,
                           capture_output=True, text=True).stdout.strip()
    data = msd_subset(DATA, root / "openkbp", labelled=args.labelled + args.validation)
    start = time.perf_counter()
    subprocess.run([*cli, "import-msd", "openkbp", str(data), "--with-labels"], env=env, check=True,
                   capture_output=True)
    print(f"import: {time.perf_counter() - start:.1f} s")
    server = subprocess.Popen([*cli, "serve", "--port", str(args.port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    http = httpx.Client(base_url=f"http://127.0.0.1:{args.port}/api/v1",
                        headers={"Authorization": f"Bearer {token}"}, timeout=60)
    try:
        for _ in range(120):
            try:
                http.get("/projects").raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        project = http.get("/projects").json()[0]
        cases = http.get(f"/projects/{project['id']}/cases", params={"status": "labelled", "limit": 1000}).json()
        for case in cases["items"][: args.validation]:
            http.patch(f"/cases/{case['id']}", json={"split": "validation"}).raise_for_status()
        cycle = http.post(f"/projects/{project['id']}/cycles", json=json.loads(args.params)).json()
        print(f"cycle {cycle['id']} params {cycle['params']}", flush=True)
        last = None
        while cycle["status"] in ("queued", "running"):
            time.sleep(10)
            cycle = http.get(f"/cycles/{cycle['id']}").json()
            now = (cycle["phase"], cycle["progress"].get("epoch"), cycle["progress"].get("scored"))
            if now != last:
                print(f"  {cycle['status']} {cycle['phase']} {cycle['progress']}", flush=True)
                last = now
        print(f"status {cycle['status']} error {cycle['error']}")
        print(f"timings (s) {cycle['timings']}")
        print(f"metrics {json.dumps(cycle['metrics'], indent=1)}")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
