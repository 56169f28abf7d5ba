"""The annotator workspace in headless Chromium against a real `nextcase serve` (embedded default).

A stroke painted with the mouse must land on the voxels under it: the test finds the image's bright marker bar on the
rendered canvas, paints across it, and checks the stored label's voxels against the marker's voxel indices through
the case geometry (so a flipped or transposed axis anywhere between NiiVue and the server fails it).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from tests.webapp import (
    CHROMIUM_ARGS,
    MARKER,
    SHAPE_ZYX,
    TINY_CYCLE,
    VIEWPORT,
    WebApp,
    case_image,
    chromium_path,
    rgb,
    start_web_app,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebApp]:
    chromium_path()
    yield from start_web_app(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def page(web: WebApp) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(60_000)  # a loaded 2-core machine trains, serves and renders at once
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{web.url}/#/projects/{web.project_id}/work")
        page.fill("#signin-name", "ann")
        page.fill("#signin-token", web.annotator_token)
        page.click("#signin-submit")
        page.wait_for_selector("#next-case")
        yield page
        assert errors == [], errors  # no uncaught exception in the page
        browser.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=60_000)
    return playwright_expect(locator)


def shot(page: Any, web: WebApp, name: str) -> None:
    page.screenshot(path=str(web.tmp / f"{name}.png"))
    if folder := os.environ.get("NEXTCASE_SCREENSHOT_DIR"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def open_next(page: Any) -> int:
    before = page.get_attribute("#viewer", "data-case-id")
    page.click("#next-case")
    page.wait_for_function("b => { const c = document.querySelector('#viewer').dataset.caseId; return c && c !== b; }",
                           arg=before, timeout=60_000)
    page.wait_for_timeout(500)  # one more frame: NiiVue draws after the volume is uploaded to the GPU
    return int(page.get_attribute("#viewer", "data-case-id"))


def choose_layout(page: Any, layout: str) -> None:
    page.click(f"#view-{layout}")
    page.wait_for_timeout(500)  # NiiVue redraws on the next animation frame


def canvas_pixels(page: Any) -> tuple[np.ndarray, dict[str, float]]:
    box = page.locator("#viewer").bounding_box()
    return rgb(page.locator("#viewer").screenshot()), box


def set_window(page: Any, low: float, high: float) -> None:
    page.fill("#window-min", str(low))
    page.fill("#window-max", str(high))
    page.dispatch_event("#window-max", "change")
    page.wait_for_timeout(300)


def marker_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """The bright marker's bounding box on the canvas (x0, y0, x1, y1).

    The largest white blob: not the coloured crosshair, the orientation letters or the page showing through the
    canvas' rounded corners.
    """
    from scipy import ndimage

    blobs, count = ndimage.label(pixels.min(axis=2) >= 200)
    assert count > 0, "the marker bar is not visible on the canvas"
    sizes = ndimage.sum(np.ones_like(blobs), blobs, index=range(1, count + 1))
    ys, xs = np.nonzero(blobs == 1 + int(np.argmax(sizes)))
    assert len(xs) > 100, "the marker bar is not visible on the canvas"
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def stored_label(web: WebApp, case_id: int) -> sitk.Image:
    with web.client(web.admin_token) as api:
        r = api.get(f"/api/v1/cases/{case_id}/label")
        assert r.status_code == 200, r.text
    path = web.tmp / f"label-{case_id}.nii.gz"
    path.write_bytes(r.content)
    return sitk.ReadImage(str(path))


def to_source_indices(label: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """(z, y, x) indices, in the uploaded source image, of every labelled voxel of `label` (through physical space)."""
    array = sitk.GetArrayFromImage(label)
    points = []
    for z, y, x in np.argwhere(array > 0):
        physical = label.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
        i, j, k = reference.TransformPhysicalPointToIndex(physical)
        points.append((k, j, i))
    return np.array(points)


def test_a_stroke_lands_on_the_voxels_under_the_mouse_and_the_next_case_opens(web: WebApp, page: Any) -> None:
    case_id = open_next(page)
    assert page.get_attribute("#viewer", "data-prediction") == "no"  # no model yet: the drawing starts empty
    choose_layout(page, "axial")
    page.uncheck("#show-labels")
    set_window(page, 0, 1000)
    pixels, box = canvas_pixels(page)
    x0, y0, x1, y1 = marker_box(pixels)
    page.check("#show-labels")
    page.keyboard.press("[")
    page.keyboard.press("[")  # brush 3 -> 1 voxel
    page.keyboard.press("1")
    row = box["y"] + (y0 + y1) / 2
    start, end = box["x"] + x0 + 0.15 * (x1 - x0), box["x"] + x0 + 0.85 * (x1 - x0)
    page.mouse.move(start, row)
    page.mouse.down()
    page.mouse.move(end, row, steps=25)
    page.mouse.up()
    page.wait_for_timeout(300)
    shot(page, web, "workspace-annotator")
    page.click("#submit")
    page.wait_for_selector(f"text=Submitted version 1 of case {case_id}")
    page.wait_for_function("c => document.querySelector('#viewer').dataset.caseId !== String(c)", arg=case_id,
                           timeout=60_000)  # the next case opens by itself
    assert int(page.get_attribute("#viewer", "data-case-id")) != case_id

    label = stored_label(web, case_id)
    assert label.GetSize() == SHAPE_ZYX[::-1]
    values = np.unique(sitk.GetArrayFromImage(label))
    assert set(values.tolist()) == {0, 1}  # label 1 only, as selected
    image, _ = case_image(seed=web.case_ids.index(case_id))
    voxels = to_source_indices(label, image)
    zs, ys, xs = voxels[:, 0], voxels[:, 1], voxels[:, 2]
    assert len(set(zs.tolist())) == 1, f"the stroke spans several axial slices: {sorted(set(zs.tolist()))}"
    mz, my, mx = MARKER
    assert mz.start <= zs[0] < mz.stop
    assert ((ys >= my.start) & (ys < my.stop)).all(), f"rows {sorted(set(ys.tolist()))} are outside the marker"
    assert ((xs >= mx.start) & (xs < mx.stop)).all(), f"columns {sorted(set(xs.tolist()))} are outside the marker"
    # Painted along x (the marker's long axis), over most of its width: a transposed stroke would run along y.
    assert xs.max() - xs.min() >= 0.5 * (mx.stop - mx.start)
    assert ys.max() - ys.min() <= 1


def test_the_model_pre_segmentation_is_the_starting_drawing(web: WebApp, page: Any) -> None:
    with web.client(web.annotator_token) as api:  # hand back the case claimed before any model existed
        for lease in api.get("/api/v1/leases", params={"project_id": web.project_id}).json():
            assert api.delete(f"/api/v1/leases/{lease['token']}").status_code == 200
    page.reload()
    page.wait_for_selector("#next-case")
    with web.client(web.admin_token) as api:
        cycle = api.post(f"/api/v1/projects/{web.project_id}/cycles", json=TINY_CYCLE)
        assert cycle.status_code == 202, cycle.text
    assert web.wait_cycle(cycle.json()["id"])["status"] == "done"
    case_id = open_next(page)
    assert page.get_attribute("#viewer", "data-prediction") == "yes"
    with web.client(web.annotator_token) as api:
        r = api.get(f"/api/v1/cases/{case_id}/prediction")
    path = web.tmp / "prediction.nii.gz"
    path.write_bytes(r.content)
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert prediction[SHAPE_ZYX[0] // 2].any(), "the tiny model predicted no label on the middle slice"
    choose_layout(page, "axial")
    with_labels, _ = canvas_pixels(page)
    page.uncheck("#show-labels")
    page.wait_for_timeout(300)
    bare, _ = canvas_pixels(page)
    page.check("#show-labels")
    changed = np.abs(with_labels.astype(int) - bare.astype(int)).sum(axis=2) > 30
    assert changed.sum() > 200, "the pre-segmentation does not show on the canvas"
    choose_layout(page, "multi")
    page.check("#show-uncertainty")
    page.wait_for_timeout(300)
    shot(page, web, "workspace-prediction")
    page.uncheck("#show-uncertainty")


def expire_lease_in_database(web: WebApp, case_id: int) -> None:
    # Expiry is a comparison with now: moving it into the past is what an hour away from the desk does.
    with sqlite3.connect(web.tmp / "data" / "nextcase.db") as db:
        db.execute("UPDATE leases SET expires_at = '2000-01-01 00:00:00.000000' WHERE case_id = ? AND ended_at IS NULL",
                   (case_id,))
        db.execute("UPDATE cases SET lease_expires_at = '2000-01-01 00:00:00.000000' WHERE id = ?", (case_id,))


def current_case(page: Any) -> int:
    """The open case, claiming one when none is open (each test can run alone)."""
    page.wait_for_selector("#next-case, #submit")
    if page.locator("#submit").count() == 0:
        return open_next(page)
    return int(page.get_attribute("#viewer", "data-case-id"))


def test_a_lost_lease_is_explained_and_the_edits_can_be_downloaded(web: WebApp, page: Any) -> None:
    case_id = current_case(page)
    expire_lease_in_database(web, case_id)
    page.click("#renew")
    banner = page.locator("#banner")
    # Waits for these words, not merely a visible banner: an earlier message may still be showing.
    expect(banner).to_contain_text("Lease expired or ended")  # the server's problem title, in words
    expect(banner).to_contain_text("Your edits are still here")
    with page.expect_download() as download:
        page.click("#download-edits")
    path = web.tmp / "edits.nii"
    download.value.save_as(path)
    edits = sitk.ReadImage(str(path))
    assert edits.GetSize() == SHAPE_ZYX[::-1]
    shot(page, web, "workspace-lease-lost")


def test_a_server_4xx_shows_its_title_and_detail(web: WebApp, page: Any) -> None:
    # The lease of the open case has ended: skipping it is refused by the server, and the page says why.
    expire_lease_in_database(web, current_case(page))
    page.click("#skip")
    page.fill("#skip-reason", "motion artefact")
    page.click("#skip-confirm")
    expect(page.locator("#banner")).to_contain_text("Lease expired or ended:")
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    assert "Undo the last stroke" in page.locator("#help").inner_text()
    page.keyboard.press("Escape")
