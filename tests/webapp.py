"""A real `nextcase serve` (embedded default) with the built web app, and headless Chromium pointed at it.

Shared by the browser tests. Chromium is Debian's package (Playwright's own download is not reachable here) and
renders WebGL 2 on SwiftShader. Without chromium or a built frontend the tests skip with the reason, unless
NEXTCASE_TEST_REQUIRE_WEB=1 (set by .ci/run), where a missing piece is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
WEB_DIST = ROOT / "frontend" / "dist"
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]
VIEWPORT = {"width": 1280, "height": 800}  # the size the issue asks the app to be usable at

# Tiny cycle: trains in seconds on 2 cores, enough for the boxes below to be learnt.
TINY_CYCLE = {"steps": 60, "learning_rate": 0.01, "batch_size": 2, "patch_size": [16, 16, 16], "mc_passes": 2,
              "channels": [8, 16], "strides": [2], "samples_per_volume": 2, "seed": 3, "val_every": 0,
              "augment": False, "strategy": "mc_dropout_variance"}


def require(reason: str) -> None:
    if os.environ.get("NEXTCASE_TEST_REQUIRE_WEB") == "1":
        pytest.fail(f"NEXTCASE_TEST_REQUIRE_WEB=1 but {reason}")
    pytest.skip(reason)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        require("the browser tests need Debian's chromium package (apt-get install chromium)")
    if not (WEB_DIST / "index.html").is_file():
        require("the web app is not built (cd frontend && npm ci && npm run build; make test builds it)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        require("the browser tests need the playwright package (pip install -e '.[dev]')")
    assert path is not None
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- synthetic cases ---------------------------------------------------------------------------------------------

SHAPE_ZYX = (12, 28, 36)
SPACING = (0.9, 0.8, 2.0)  # x, y, z: anisotropic, so a swapped axis shows
ORIGIN = (-14.0, 9.0, 30.0)
# An asymmetric bright bar the annotator test paints across (voxel index ranges, inclusive-exclusive; z, y, x).
# It is background in every training label, so the model learns to leave it alone.
MARKER = (slice(3, 10), slice(6, 10), slice(20, 32))


def case_image(seed: int) -> tuple[sitk.Image, sitk.Image]:
    """An MR-like volume: noise, two boxes that are labels 1 and 2, and the unlabelled marker bar; and its label."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 10, SHAPE_ZYX).astype(np.float32)
    label = np.zeros(SHAPE_ZYX, np.uint8)
    dz, dy, dx = rng.integers(0, 3, 3)
    one = (slice(2 + dz, 9 + dz), slice(14 + dy, 22 + dy), slice(3 + dx, 11 + dx))
    two = (slice(2 + dz, 8 + dz), slice(16 + dy, 24 + dy), slice(13 + dx, 18 + dx))
    image[one], label[one] = 500, 1
    image[two], label[two] = 300, 2
    image[MARKER] = 1000
    img = sitk.GetImageFromArray(image)
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    lab = sitk.GetImageFromArray(label)
    lab.CopyInformation(img)
    return img, lab


def nifti_bytes(image: sitk.Image, tmp: Path, name: str) -> bytes:
    path = tmp / f"{name}.nii.gz"
    sitk.WriteImage(image, str(path), useCompression=True)
    return path.read_bytes()


@dataclass
class WebApp:
    url: str
    admin_token: str
    annotator_token: str
    project_id: int
    case_ids: list[int]
    labelled_ids: list[int]
    log: Path
    tmp: Path

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def wait_cycle(self, cycle_id: int, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client(self.admin_token) as api:
            while time.monotonic() < deadline:
                cycle: dict[str, Any] = api.get(f"/api/v1/cycles/{cycle_id}").json()
                if cycle["status"] in ("done", "failed", "cancelled"):
                    return cycle
                time.sleep(1)
        raise AssertionError(f"cycle {cycle_id} did not end in {timeout} s; log: {self.log.read_text()[-3000:]}")


def _cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def start_web_app(tmp: Path, *, cases: int = 8, labelled: int = 4) -> Iterator[WebApp]:
    """Serves a fresh embedded installation with one MR project: `cases` cases, the first `labelled` labelled."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTCASE_")}
    env.update(NEXTCASE_DATA_DIR=str(tmp / "data"), NEXTCASE_SECRET_KEY="web-test-" + "k" * 40,
               PYTHONPATH=str(ROOT), NEXTCASE_LEASE_MINUTES="30", NEXTCASE_LOG_LEVEL="INFO")
    admin = _cli(env, "create-user", "lead", "--role", "admin")
    annotator = _cli(env, "create-user", "ann", "--role", "annotator")
    port = free_port()
    log = tmp / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--no-demo"],
                                  env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, server, log)
        app = _seed(url, admin, annotator, tmp, log, cases, labelled)
        yield app
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


def _wait_ready(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"nextcase serve did not become ready: {log.read_text()[-3000:]}")


def _seed(url: str, admin: str, annotator: str, tmp: Path, log: Path, cases: int, labelled: int) -> WebApp:
    headers = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as api:
        project = api.post("/api/v1/projects", json={"name": "web", "modality": "MR", "control_fraction": 0,
                                                     "labels": ["background", "lesion", "organ"]})
        assert project.status_code == 201, project.text
        project_id = project.json()["id"]
        ids: list[int] = []
        for i in range(cases):
            image, label = case_image(seed=i)
            r = api.post(f"/api/v1/projects/{project_id}/cases",
                         files={"file": (f"case{i}.nii.gz", nifti_bytes(image, tmp, f"img{i}"))},
                         data={"patient": f"P{i:03d}"})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
            if i < labelled:
                r = api.put(f"/api/v1/cases/{ids[-1]}/label",
                            files={"file": ("label.nii.gz", nifti_bytes(label, tmp, f"lab{i}"))})
                assert r.status_code == 201, r.text
    return WebApp(url, admin, annotator, project_id, ids, ids[:labelled], log, tmp)


def rgb(png: bytes) -> np.ndarray:
    """A screenshot as an (H, W, 3) uint8 array (decoded by SimpleITK's PNG reader, no extra dependency)."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"nextcase-shot-{os.getpid()}-{time.monotonic_ns()}.png"
    path.write_bytes(png)
    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    finally:
        path.unlink()
    return np.asarray(array[..., :3], dtype=np.uint8)
