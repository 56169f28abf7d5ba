"""The README's run command on an empty machine: it seeds a demo and prints curl commands that work."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import SimpleITK as sitk


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(pattern: str, log: Path, server: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        if re.search(pattern, text):
            return text
        assert server.poll() is None, text[-3000:]
        time.sleep(0.5)
    raise AssertionError(f"{pattern!r} never printed:\n{log.read_text()[-3000:]}")


def test_serve_seeds_demo_and_printed_curl_commands_work(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTCASE_")}
    env.update(NEXTCASE_DATABASE_URL=f"sqlite:///{tmp_path}/var/nextcase.db",
               NEXTCASE_BLOB_DIR=str(tmp_path / "var/blobs"))
    log = tmp_path / "serve.log"
    with log.open("wb") as fh:
        server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env,
                                  stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        text = _wait_for(r"-F file=@mask\.nii\.gz \S+/label", log, server, timeout=180)
        annotator = re.search(r"export ANNOTATOR=(\S+)", text)
        admin = re.search(r"export ADMIN=(\S+)", text)
        assert annotator and admin
        commands = [line for line in text.splitlines() if line.startswith(("CASE=", "curl "))]
        assert len(commands) == 4
        api = f"http://127.0.0.1:{port}/api/v1"
        for _ in range(100):  # the service is up once the demo text is printed; wait for readiness
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        headers = {"Authorization": f"Bearer {admin.group(1)}"}
        deadline = time.monotonic() + 600
        while (cycle := httpx.get(f"{api}/cycles/1", headers=headers).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, cycle
            time.sleep(2)
        assert cycle["status"] == "done", cycle["error"]

        script = "set -e\n" + "\n".join(commands) + '\necho "CASE=$CASE"\n'
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**env, "ANNOTATOR": annotator.group(1)})
        assert done.returncode == 0, done.stderr
        case_id = int(re.search(r"CASE=(\d+)", done.stdout).group(1))  # type: ignore[union-attr]
        assert sitk.ReadImage(str(tmp_path / "image.nii.gz")).GetSize() == (64, 64, 32)
        versions = httpx.get(f"{api}/cases/{case_id}/labels", headers=headers).json()
        assert [(v["version"], v["author"]) for v in versions] == [(1, "annotator")]
        queue = httpx.get(f"{api}/projects/1/queue/stats", headers=headers).json()
        assert queue["labelled"] == 7 and queue["model_version"] is not None
    finally:
        server.terminate()
        server.wait(timeout=60)
