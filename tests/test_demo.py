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
    env.update(NEXTCASE_DATA_DIR=str(tmp_path / "var"))
    log = tmp_path / "serve.log"
    with log.open("wb") as fh:
        server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env,
                                  stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        # Generous bounds: on a loaded 2-core machine the first cycle has taken over 10 minutes.
        text = _wait_for(r"export ANNOTATOR=\S+", log, server, timeout=600)
        annotator = re.search(r"export ANNOTATOR=(\S+)", text)
        admin = re.search(r"export ADMIN=(\S+)", text)
        assert annotator and admin
        lines = text.splitlines()
        commands = [line for line in lines if line.startswith(("CLAIM=", "CASE=", "LEASE=", "curl "))]
        assert len(commands) == 6 and all(" -fsS " in c for c in commands if "curl " in c)
        # The tokens come last, after every command, so start-up output does not bury them.
        assert lines.index(f"export ANNOTATOR={annotator.group(1)}") > lines.index(commands[-1])
        assert re.search(r"patient-id key: generated a random key in \S+secret\.key", text)
        assert (tmp_path / "var" / "secret.key").stat().st_mode & 0o777 == 0o600

        text = _wait_for(r"\[cycle 1\] (done|failed|cancelled)", log, server, timeout=3000)
        assert re.search(r"\[cycle 1\] training step \d+/\d+ \(\d+ %\)", text), text[-3000:]
        assert re.search(r"\[cycle 1\] done in .* Validation Dice \(overlap", text), text[-3000:]
        api = f"http://127.0.0.1:{port}/api/v1"
        headers = {"Authorization": f"Bearer {admin.group(1)}"}
        cycle = httpx.get(f"{api}/cycles/1", headers=headers).json()
        assert cycle["status"] == "done", cycle["error"]
        print("demo cycle 1 timings (s):", cycle["timings"])

        script = "set -e\n" + "\n".join(commands) + '\necho "CASE=$CASE LEASE=$LEASE"\n'
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**env, "ANNOTATOR": annotator.group(1)})
        assert done.returncode == 0, done.stderr
        case_id = int(re.search(r"CASE=(\d+)", done.stdout).group(1))  # type: ignore[union-attr]
        assert re.search(r"LEASE=[A-Za-z0-9_-]{20,}", done.stdout), done.stdout  # the claim's lease token is kept
        assert sitk.ReadImage(str(tmp_path / "image.nii.gz")).GetSize() == (64, 64, 32)
        versions = httpx.get(f"{api}/cases/{case_id}/labels", headers=headers).json()
        assert [(v["version"], v["author"]) for v in versions] == [(1, "annotator")]
        queue = httpx.get(f"{api}/projects/1/queue/stats", headers=headers).json()
        assert queue["labelled"] == 7 and queue["model_version"] is not None
        assert sitk.ReadImage(str(tmp_path / "mask.nii.gz")).GetSize() == (64, 64, 32)  # the prediction
    finally:
        server.terminate()
        server.wait(timeout=60)
