"""Label upload latency with and without the effort computation, against real servers on SQLite (the default).

Three servers, each on a fresh database with CASES cases that a published model has scored (so every claim
carries a stored prediction), all three on the same machine:
- ``off``: the effort record disabled (no row, no comparison): the upload as before effort telemetry;
- ``on``: as shipped: the row written in the upload's transaction, the comparison a background task that
  runs after the response has been sent;
- ``inline``: the row written and the comparison run before the response (its result discarded): what the
  upload would cost if the comparison were synchronous.
One annotator claims a case (not timed) and uploads a mask (timed, client side, until the response has been
read); modes take turns in blocks of BLOCK uploads with a pause between blocks, so a slow spell of the shared
machine hits every mode alike. The next upload starts as soon as the previous one returns, so in ``on`` the
previous comparison may still be running: the worst case for interference.

    .venv/bin/python -m benchmarks.label_upload_latency --uploads 50 --shape 48,160,160

Not a test: it measures and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import SimpleITK as sitk

MODES = ("off", "on", "inline")
LABELS = ["background", "organ", "lesion"]


# --- the servers ---------------------------------------------------------------------------------


def serve(mode: str, port: int) -> None:
    """Run one server in this process, with the effort computation switched as ``mode`` says."""
    import uvicorn

    from app.campaign import service as campaign
    from app.core.logging import setup_logging
    from app.main import create_app

    setup_logging("INFO", True)
    original = campaign.after_label_upload
    if mode == "off":
        campaign.after_label_upload = lambda session, stored: None
    elif mode == "inline":
        def inline(session: Any, stored: Any) -> None:
            effort_id = original(session, stored)
            if effort_id is not None:
                effort = session.get(campaign.LabelEffort, effort_id)
                store = campaign.get_blob_store()
                campaign.metrics.compare(campaign._array(store, effort.prediction_key),
                                         campaign._array(store, stored.version.blob_key), len(LABELS))
        campaign.after_label_upload = inline
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_config=None, access_log=False)


def start(mode: str, port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.label_upload_latency", "--serve", mode,
                                 "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the {mode} server did not start; see {log_path}")


# --- data ----------------------------------------------------------------------------------------


def arrays(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image, a prediction (a ball of organ with a lesion) and the annotator's mask (the ball moved by 2)."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    centre = [s / 2 for s in shape]

    def ball(shift: float) -> np.ndarray:
        r2 = ((z - centre[0]) / (shape[0] / 3)) ** 2 + ((y - centre[1] - shift) / (shape[1] / 3)) ** 2 \
            + ((x - centre[2]) / (shape[2] / 3)) ** 2
        return np.asarray(r2 <= 1)

    prediction = ball(0).astype(np.uint8)
    prediction[ball(0) & (np.abs(x - centre[2]) < shape[2] / 12)] = 2
    mask = ball(2).astype(np.uint8)
    mask[ball(2) & (np.abs(x - centre[2]) < shape[2] / 10)] = 2
    image = np.random.default_rng(0).integers(-100, 400, size=shape).astype(np.int16)
    return image, prediction, mask


def nifti(array: np.ndarray) -> bytes:
    from app.cases.imaging import write_nifti

    return write_nifti(sitk.GetImageFromArray(array))


def seed(n_cases: int, shape: tuple[int, int, int], blob_dir: Path) -> tuple[int, str, bytes]:
    """A project whose model has scored n cases; returns its id, an annotator token and the mask to upload."""
    from sqlalchemy import insert

    from app.auth import service as auth
    from app.cases.imaging import Geometry
    from app.core import db
    from app.core.storage import BlobStore
    from app.models import Case, CaseScore, Cycle, ModelVersion, Patient
    from app.projects.service import create_project
    from app.queue.service import publish_ranking

    image, prediction, mask = arrays(shape)
    store = BlobStore(blob_dir)
    image_key, prediction_key = store.put(nifti(image), "nii.gz").key, store.put(nifti(prediction), "nii.gz").key
    geo = Geometry.of(sitk.GetImageFromArray(image))
    with db.session_scope() as session:
        project = create_project(session, "bench", "CT", LABELS, control_fraction=0.0)
        token = auth.issue_token(session, auth.create_user(session, "bench", "annotator")).token
        patient = Patient(project_id=project.id, pseudonym="PT-bench", external_id_hash="0" * 64)
        cycle = Cycle(project_id=project.id, status="done", strategy="random", params={})
        session.add_all([patient, cycle])
        session.flush()
        rows = [{"project_id": project.id, "patient_id": patient.id, "sha256": f"{i:064x}", "blob_key": image_key,
                 "shape": list(geo.shape), "spacing": list(geo.spacing), "origin": list(geo.origin),
                 "direction": list(geo.direction), "dtype": "int16", "source_format": "nifti", "status": "unlabelled",
                 "split": "pool", "pinned": False, "excluded": False} for i in range(n_cases)]
        ids = list(session.scalars(insert(Case).returning(Case.id), rows))
        model = ModelVersion(project_id=project.id, version=1, cycle_id=cycle.id, weights_key="unused", params={},
                             metrics={}, trained_case_ids=[])
        session.add(model)
        session.flush()
        session.add_all(CaseScore(cycle_id=cycle.id, case_id=cid, score=0.0, prediction_key=prediction_key)
                        for cid in ids)
        publish_ranking(session, project.id, [(cid, float(-cid)) for cid in ids], kind="model", strategy="random",
                        model_version_id=model.id)
        return project.id, token, nifti(mask)


def prepare(mode: str, n_cases: int, shape: tuple[int, int, int], root: Path) -> tuple[dict[str, str], int, str, bytes]:
    from app.core import db, migrate
    from app.core.config import get_settings

    folder = root / mode
    env = {**os.environ, "NEXTCASE_DATABASE_URL": f"sqlite:///{folder}/nextcase.db",
           "NEXTCASE_BLOB_DIR": str(folder / "blobs"), "NEXTCASE_DATA_DIR": str(folder),
           "NEXTCASE_LOG_LEVEL": "INFO", "NEXTCASE_LOG_JSON": "true"}
    os.environ.update(env)
    get_settings.cache_clear()
    migrate.upgrade(env["NEXTCASE_DATABASE_URL"])
    db.configure()
    project_id, token, mask = seed(n_cases, shape, folder / "blobs")
    db.dispose()
    return env, project_id, token, mask


# --- measuring -----------------------------------------------------------------------------------


def upload_once(http: httpx.Client, project_id: int, mask: bytes) -> float:
    claim = http.post(f"/api/v1/projects/{project_id}/queue/next")
    claim.raise_for_status()
    case_id = claim.json()["case"]["id"]
    started = time.perf_counter()
    r = http.put(f"/api/v1/cases/{case_id}/label", files={"file": ("mask.nii.gz", mask)})
    elapsed = time.perf_counter() - started
    if r.status_code != 201:
        raise RuntimeError(f"upload answered {r.status_code}: {r.text}")
    return elapsed * 1000


def effort_ms(log_path: Path) -> list[float]:
    """Server-side duration of each background comparison, from the server's JSON log lines."""
    out = []
    for line in log_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("msg") == "label effort computed":
            out.append(float(record["ms"]))
    return out


def summary(name: str, values: list[float]) -> str:
    from app.campaign.stats import mean_ci

    ci = mean_ci(values)
    q = statistics.quantiles(values, n=10)
    return (f"{name:>7} n={len(values):>3}  median {statistics.median(values):7.1f} ms  p90 {q[8]:7.1f} ms  "
            f"mean {ci.mean:7.1f} ms (95 % CI {ci.low:.1f} to {ci.high:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=50, help="timed uploads per mode")
    parser.add_argument("--block", type=int, default=10, help="uploads per mode before the next mode's turn")
    parser.add_argument("--shape", default="48,160,160", help="volume shape z,y,x")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between blocks")
    parser.add_argument("--warmup", type=int, default=3, help="untimed uploads per mode first")
    parser.add_argument("--gap", type=float, default=0.0,
                        help="seconds to wait after each upload (0: back to back, the previous upload's background "
                             "comparison still running; 0.5: it has finished, as when an annotator works)")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    z, y, x = (int(v) for v in args.shape.split(","))
    shape = (z, y, x)
    root = Path(tempfile.mkdtemp(prefix="nextcase-upload-bench-"))
    servers: dict[str, subprocess.Popen[bytes]] = {}
    clients: dict[str, httpx.Client] = {}
    setups: dict[str, tuple[int, bytes]] = {}
    try:
        for i, mode in enumerate(MODES):
            env, project_id, token, mask = prepare(mode, args.uploads + args.warmup, shape, root)
            servers[mode] = start(mode, args.port + i, env, root / f"{mode}.log")
            clients[mode] = httpx.Client(base_url=f"http://127.0.0.1:{args.port + i}", timeout=120,
                                         headers={"Authorization": f"Bearer {token}"})
            setups[mode] = (project_id, mask)
        for mode in MODES:
            for _ in range(args.warmup):
                upload_once(clients[mode], *setups[mode])
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for block in range(-(-args.uploads // args.block)):
            for mode in MODES[block % 3:] + MODES[: block % 3]:  # rotate which mode goes first
                for _ in range(min(args.block, args.uploads - len(times[mode]))):
                    times[mode].append(upload_once(clients[mode], *setups[mode]))
                    time.sleep(args.gap)
                time.sleep(args.pause)
        time.sleep(args.pause)
        report(times, shape, root, args.gap)
    finally:
        for proc in servers.values():
            proc.terminate()
            proc.wait(timeout=30)


def report(times: dict[str, list[float]], shape: tuple[int, ...], root: Path, gap: float) -> None:
    from app.campaign.stats import difference_ci

    voxels = shape[0] * shape[1] * shape[2]
    print(f"label upload latency, SQLite, volume {'x'.join(map(str, shape))} ({voxels / 1e6:.2f} M voxels), "
          f"{len(LABELS)} classes, client side, {gap:g} s after each upload")
    for mode in MODES:
        print(summary(mode, times[mode]))
    for mode in ("on", "inline"):
        d = difference_ci(times[mode], times["off"])
        print(f"{mode} - off: mean {d.mean:+.1f} ms (Welch 95 % CI {d.low:+.1f} to {d.high:+.1f}); median "
              f"{statistics.median(times[mode]) - statistics.median(times['off']):+.1f} ms")
    computed = effort_ms(root / "on.log")
    if computed:
        print(f"background comparison (on): {len(computed)} runs, median {statistics.median(computed):.1f} ms "
              "server side, after the response")


if __name__ == "__main__":
    main()
