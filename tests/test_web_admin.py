"""The admin views in headless Chromium against a real `nextcase serve`: a cycle started from the form, its live
progress and the learning curve's new point; a server refusal shown in words; a revoked token signing its user out.

A screenshot of each admin view goes to the test's temporary folder, and to $NEXTCASE_SCREENSHOT_DIR when set
(the README's images: admin-<view>.png, learning-curve.png).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.webapp import (
    CHROMIUM_ARGS,
    TINY_CYCLE,
    VIEWPORT,
    WebApp,
    case_image,
    chromium_path,
    nifti_bytes,
    start_web_app,
)

pytestmark = pytest.mark.slow

CYCLE_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()  # skips (or fails under NEXTCASE_TEST_REQUIRE_WEB=1) before a server starts
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def web(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebApp]:
    yield from start_web_app(tmp_path_factory.mktemp("web-admin"), cases=6, labelled=4)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folders = [tmp_path_factory.mktemp("web-admin-screenshots")]
    if os.environ.get("NEXTCASE_SCREENSHOT_DIR"):
        folder = Path(os.environ["NEXTCASE_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        folders.append(folder)
    return folders


def expect(locator: Any) -> Any:
    """playwright's expect, imported late: without playwright the module still loads, and chromium_path() skips."""
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=30_000)  # a loaded 2-core machine trains, serves and renders at once
    return playwright_expect(locator)


def screenshot(page: Any, shots: list[Path], name: str) -> None:
    png = page.screenshot(full_page=False)  # the 1280x800 viewport the app is made for
    for folder in shots:
        (folder / name).write_bytes(png)


class Browser:
    """One signed-in browser context; collects uncaught page errors so a broken view fails its test."""

    def __init__(self, browser: Any, web: WebApp, name: str, token: str) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", lambda dialog: dialog.accept())  # the "Revoke?" and "Cancel?" confirmations
        self.page.goto(f"{web.url}/#/signin")
        self.page.fill("#signin-name", name)
        self.page.fill("#signin-token", token)
        self.page.press("#signin-token", "Enter")
        self.page.wait_for_selector("#who")

    def tab(self, name: str) -> None:
        self.page.click(f'nav.tabs a[data-tab="{name}"]')
        self.page.wait_for_selector(f"#tab-{name}")

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], self.errors


@pytest.fixture
def admin(browser: Any, web: WebApp) -> Iterator[Browser]:
    session = Browser(browser, web, "lead", web.admin_token)
    yield session
    session.close()


def test_admin_starts_a_cycle_watches_it_and_sees_the_learning_curve(
    admin: Browser, web: WebApp, shots: list[Path]
) -> None:
    page = admin.page
    page.wait_for_selector("#projects-table")
    screenshot(page, shots, "admin-projects.png")

    page.click('#projects-table a[data-action="manage"]')
    page.wait_for_selector("#queue-stats")
    assert page.text_content('#queue-stats dd[data-stat="labelled"]') == "4"
    screenshot(page, shots, "admin-overview.png")

    # Ranking: one labelled case moves to the validation split, so the cycle has Dice to report.
    admin.tab("ranking")
    moved = web.labelled_ids[0]
    row = f'#ranking-table tr[data-case-id="{moved}"]'
    page.select_option(f"{row} select", "validation")
    page.wait_for_selector(row, state="detached")
    expect(page.locator("#ranking-table tbody tr")).to_have_count(len(web.case_ids) - 1)
    screenshot(page, shots, "admin-ranking.png")

    # Cases: one more case uploaded through the form, with its progress bar.
    admin.tab("cases")
    image, _ = case_image(seed=40)
    volume = web.tmp / "upload.nii.gz"
    volume.write_bytes(nifti_bytes(image, web.tmp, "upload-src"))
    page.set_input_files("#upload-file", str(volume))
    page.fill("#upload-patient", "P900")
    page.click("#upload-submit")
    expect(page.locator("#upload-text")).to_have_text(re.compile(r"^Added case #\d+"), timeout=60_000)
    assert page.eval_on_selector("#upload-bar", "bar => bar.value") == 1
    # The list refreshes after the upload's answer: wait for the row rather than count it at once.
    expect(page.locator("#cases-table tbody tr")).to_have_count(len(web.case_ids) + 1)
    screenshot(page, shots, "admin-cases.png")

    # Cycles: the tiny parameters typed into the form, submitted with Enter.
    admin.tab("cycles")
    for key, value in TINY_CYCLE.items():
        selector = f"#cycle-{key.replace('_', '-')}"
        if isinstance(value, bool):
            page.select_option(selector, "true" if value else "false")
        else:
            page.fill(selector, ",".join(map(str, value)) if isinstance(value, list) else str(value))
    page.press("#cycle-steps", "Enter")
    page.wait_for_selector("#cycles-table tbody tr")
    cycle_id = int(page.get_attribute("#cycles-table tbody tr", "data-cycle-id") or 0)
    seen: list[str] = []
    deadline = time.monotonic() + CYCLE_TIMEOUT_S
    running_shot = False
    while time.monotonic() < deadline:
        text = page.text_content(f'#cycles-table tr[data-cycle-id="{cycle_id}"] .cycle-progress-text') or ""
        if not seen or seen[-1] != text:
            seen.append(text)
        if re.match(r"train: step [1-9]", text) and not running_shot:
            screenshot(page, shots, "admin-cycles-running.png")
            running_shot = True
        if not text.startswith(("queued", "train", "evaluate", "score", "publish", "starting")):
            break
        time.sleep(0.25)
    assert seen[-1].startswith("done"), (seen, web.log.read_text()[-3000:])
    assert len(seen) >= 2, seen  # the page showed the cycle before it was done: it advanced in place
    assert any(t.startswith(("train:", "score:")) for t in seen), seen
    cycle = web.wait_cycle(cycle_id, timeout=5)
    assert cycle["status"] == "done"
    page.wait_for_selector('#cycles[data-active="false"]', state="attached")
    screenshot(page, shots, "admin-cycles.png")

    admin.tab("models")
    page.wait_for_selector('#models-table tr[data-version="1"]')
    screenshot(page, shots, "admin-models.png")

    # Curve: a point at the cycle's labelled-case count (3 pool cases: one of the 4 moved to validation).
    with web.client(web.admin_token) as api:
        model = api.get(f"/api/v1/projects/{web.project_id}/models").json()[0]
    labelled = len(model["trained_case_ids"])
    assert labelled == 3
    admin.tab("curve")
    page.wait_for_selector("#learning-curve canvas")
    series = json.loads(page.get_attribute("#learning-curve", "data-points") or "[]")
    assert {s["label"] for s in series} == {"lesion (validation)", "organ (validation)"}
    for s in series:
        assert [(p["x"], p["version"]) for p in s["points"]] == [(labelled, 1)]
        assert s["points"][0]["y"] == pytest.approx(model["metrics"]["per_class"][s["className"]])
    assert page.locator(f'#curve-table tr[data-x="{labelled}"]').count() == 1
    coloured = page.eval_on_selector("#learning-curve canvas", """canvas => {
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 0; i < data.length; i += 4) {
            const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
            if (a > 200 && Math.max(r, g, b) - Math.min(r, g, b) > 60) n++;
        }
        return n;
    }""")
    assert coloured > 50, "the chart drew no coloured point"
    screenshot(page, shots, "learning-curve.png")

    admin.tab("campaign")
    page.wait_for_selector("#campaign-csv")
    screenshot(page, shots, "admin-campaign.png")


def test_a_refused_form_shows_the_servers_problem_and_changes_nothing(admin: Browser, web: WebApp) -> None:
    page = admin.page
    with web.client(web.admin_token) as api:
        cycles_before = len(api.get(f"/api/v1/projects/{web.project_id}/cycles").json())
        projects_before = len(api.get("/api/v1/projects").json())

    # By keyboard: the tabs are links, so focus and Enter open them.
    page.goto(f"{web.url}/#/projects/{web.project_id}")
    page.wait_for_selector("#queue-stats")
    page.focus('nav.tabs a[data-tab="cycles"]')
    page.keyboard.press("Enter")
    page.wait_for_selector("#cycle-form")
    page.fill("#cycle-steps", "10")
    page.fill("#cycle-mc-passes", "1")  # the server wants at least 2
    page.click("#cycle-start")
    page.wait_for_selector("#banner.banner-error")
    banner = page.text_content("#banner .banner-text") or ""
    assert banner.startswith("Invalid request"), banner
    assert "mc_passes" in banner and "greater than or equal to 2" in banner, banner

    page.goto(f"{web.url}/#/projects")
    page.wait_for_selector("#project-form")
    page.fill("#project-name", "refused")
    page.fill("#project-labels", "lesion\nbackground")  # background must come first
    page.press("#project-name", "Enter")
    page.wait_for_selector("#banner.banner-error")
    banner = page.text_content("#banner .banner-text") or ""
    assert "Invalid request" in banner and "background" in banner, banner

    with web.client(web.admin_token) as api:
        assert len(api.get(f"/api/v1/projects/{web.project_id}/cycles").json()) == cycles_before
        assert len(api.get("/api/v1/projects").json()) == projects_before


def test_a_revoked_token_sends_its_user_back_to_sign_in(
    admin: Browser, browser: Any, web: WebApp, shots: list[Path]
) -> None:
    annotator = Browser(browser, web, "ann", web.annotator_token)
    try:
        annotator.page.wait_for_selector("#projects-table")

        page = admin.page
        page.click('header.shell a[href="#/users"]')
        page.wait_for_selector("#users-table")
        # A new user's token is shown once, with a copy button; it works.
        page.fill("#user-name", "reader2")
        page.select_option("#user-role", "reviewer")
        page.press("#user-name", "Enter")
        page.wait_for_selector("#new-token")
        token = page.text_content("#new-token") or ""
        with web.client(token) as api:
            assert api.get("/api/v1/users/me").json()["name"] == "reader2"
        page.click("#token-copy")
        expect(page.locator("#token-copied")).to_have_text(re.compile(r"Copied|Selected"))
        screenshot(page, shots, "admin-users.png")

        page.click('#users-table tr[data-user="ann"] button[data-action="tokens"]')
        page.wait_for_selector("#tokens-title >> text=Tokens of ann")
        page.click('#tokens-table tr[data-revoked="false"] button[data-action="revoke"]')
        page.wait_for_selector('#tokens-table tr[data-revoked="true"]')
        assert "revoked" in (page.text_content("#banner") or "")

        annotator.page.reload()  # the annotator's next request
        annotator.page.wait_for_selector("#signin-notice")
        notice = annotator.page.text_content("#signin-notice") or ""
        assert "no longer valid" in notice, notice
    finally:
        annotator.close()
