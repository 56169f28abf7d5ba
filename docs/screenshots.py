"""Take README's screenshots from the running app: `python -m docs.screenshots` (about 4 minutes on 2 CPU cores).

Serves a fresh embedded NextCase (`nextcase serve --no-demo`, a temporary data folder), creates a CT project of the
demo's thoracic phantoms (16 cases, 4 labelled for training and 2 for validation), runs three cycles with the demo's
parameters, labelling two more cases (the phantoms' own ground truth, uploaded through the API as an annotator would)
before each of the later ones, and then photographs, in headless Chromium at 1280x800:
- the annotator workspace with the model's pre-segmentation (soft-tissue window, four views);
- the learning curve (validation Dice per structure against labelled cases, one point per cycle).
Writes docs/images/workspace.png and docs/images/learning-curve.png.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import SimpleITK as sitk

from app.demo import DEMO_CYCLE
from app.phantom import LABELS, make_phantom, to_image
from tests.webapp import CHROMIUM_ARGS, VIEWPORT, _cli, _wait_ready, free_port

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
CASES, FIRST_LABELLED, VALIDATION, PER_ROUND, ROUNDS = 16, 4, 2, 2, 3


def nifti(array: object, folder: Path, name: str) -> bytes:
    path = folder / f"{name}.nii.gz"
    sitk.WriteImage(to_image(array), str(path), useCompression=True)  # type: ignore[arg-type]
    return path.read_bytes()


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="nextcase-shots-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTCASE_")}
    env.update(NEXTCASE_DATA_DIR=str(tmp / "data"), NEXTCASE_SECRET_KEY="screenshots-" + "k" * 40,
               PYTHONPATH=str(ROOT))
    admin = _cli(env, "create-user", "lead", "--role", "admin")
    annotator = _cli(env, "create-user", "annotator", "--role", "annotator")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--no-demo"],
                                  env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        _wait_ready(url, server, log)
        project_id = seed_and_train(url, admin, tmp)
        photograph(url, project_id, admin, annotator)
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def seed_and_train(url: str, admin: str, tmp: Path) -> int:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=120) as api:
        project = api.post("/api/v1/projects", json={"name": "thorax-phantoms", "modality": "CT",
                                                     "labels": list(LABELS), "control_fraction": 0}).json()
        phantoms, ids = [], []
        for i in range(CASES):
            phantom = make_phantom(i)
            phantoms.append(phantom)
            r = api.post(f"/api/v1/projects/{project['id']}/cases", data={"patient": f"PHANTOM-{i:03d}"},
                         files={"file": (f"p{i}.nii.gz", nifti(phantom.image, tmp, f"img{i}"))})
            r.raise_for_status()
            ids.append(r.json()["id"])

        def label(index: int) -> None:
            api.put(f"/api/v1/cases/{ids[index]}/label", files={
                "file": ("l.nii.gz", nifti(phantoms[index].label, tmp, f"lab{index}"))}).raise_for_status()

        for index in range(FIRST_LABELLED + VALIDATION):
            label(index)
        for index in range(FIRST_LABELLED, FIRST_LABELLED + VALIDATION):
            api.patch(f"/api/v1/cases/{ids[index]}", json={"split": "validation"}).raise_for_status()
        params = DEMO_CYCLE.model_dump(exclude_none=True) | {"strategy": "mc_dropout_variance"}
        next_index = FIRST_LABELLED + VALIDATION
        for round_ in range(ROUNDS):
            if round_:
                for index in range(next_index, next_index + PER_ROUND):
                    label(index)
                next_index += PER_ROUND
            cycle = api.post(f"/api/v1/projects/{project['id']}/cycles", json=params).json()
            while (status := api.get(f"/api/v1/cycles/{cycle['id']}").json()["status"]) not in (
                    "done", "failed", "cancelled"):
                time.sleep(2)
            print(f"cycle {cycle['id']}: {status}", flush=True)
        return int(project["id"])


def photograph(url: str, project_id: int, admin: str, annotator: str) -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        sign_in(page, url, f"#/projects/{project_id}/work", "annotator", annotator)
        page.click("#next-case")
        page.wait_for_selector("#viewer[data-case-id]")
        page.select_option("#window-preset", "soft-tissue")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(OUT / "workspace.png"))
        page.click("#signout")
        sign_in(page, url, f"#/projects/{project_id}/curve", "lead", admin)
        page.wait_for_selector("#learning-curve")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(OUT / "learning-curve.png"))
        browser.close()
    print(f"wrote {OUT / 'workspace.png'} and {OUT / 'learning-curve.png'}")


def sign_in(page: object, url: str, hash_: str, name: str, token: str) -> None:
    page.goto(f"{url}/{hash_}")  # type: ignore[attr-defined]
    page.fill("#signin-name", name)  # type: ignore[attr-defined]
    page.fill("#signin-token", token)  # type: ignore[attr-defined]
    page.click("#signin-submit")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
