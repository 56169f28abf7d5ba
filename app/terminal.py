"""What `nextcase serve` tells the person at the terminal: how to start, and how the first cycle goes.

Runs in a thread beside uvicorn. It prints after the server answers and the worker has picked the demo
cycle up, so the start-up logs do not bury the tokens, and then one line per phase or every
``EVERY_S`` seconds, so a long CPU training is visibly alive.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from app.core import db
from app.demo import Demo, instructions
from app.models import Cycle, utcnow

EVERY_S = 20.0
POLL_S = 2.0


@dataclass(frozen=True)
class CycleView:
    status: str
    phase: str | None
    progress: dict[str, Any]
    metrics: dict[str, Any]
    error: str | None
    seconds: float


def read_cycle(cycle_id: int) -> CycleView:
    with db.session_scope() as session:
        cycle = session.get(Cycle, cycle_id)
        assert cycle is not None
        started = cycle.started_at or cycle.created_at
        end = cycle.finished_at or utcnow()
        return CycleView(cycle.status, cycle.phase, dict(cycle.progress or {}), dict(cycle.metrics or {}),
                         cycle.error, (end - started).total_seconds())


def progress_line(cycle_id: int, view: CycleView) -> str:
    """One line: phase, how far it is, time so far."""
    p = view.progress
    if view.phase == "train" and p.get("steps"):
        detail = f"training step {p.get('step', 0)}/{p['steps']} ({100 * p.get('step', 0) / p['steps']:.0f} %)"
    elif view.phase == "score" and p.get("total"):
        detail = f"scoring case {p.get('scored', 0)}/{p['total']} (MC dropout)"
    elif view.phase:
        detail = {"train": "loading the labelled cases", "evaluate": "measuring validation Dice",
                  "publish": "publishing the ranking"}.get(
            view.phase, view.phase)
    else:
        detail = "waiting for the worker"
    return f"[cycle {cycle_id}] {detail}, {_duration(view.seconds)} so far"


def outcome_line(cycle_id: int, view: CycleView) -> str:
    if view.status != "done":
        return f"[cycle {cycle_id}] {view.status} after {_duration(view.seconds)}: {view.error or 'no reason recorded'}"
    return f"[cycle {cycle_id}] done in {_duration(view.seconds)}. {explain_dice(view.metrics)}"


def explain_dice(metrics: dict[str, Any]) -> str:
    """Validation Dice per structure, with what the numbers mean (a bare 0.00 reads as a bug)."""
    per_class = {k: v for k, v in (metrics.get("per_class") or {}).items() if v is not None}
    if not per_class:
        return "No validation Dice (no labelled validation case)."
    structures = list(per_class.items())[1:]  # index 0 is the background, left out of the mean
    listed = ", ".join(f"{name} {value:.2f}" for name, value in structures)
    text = (f"Validation Dice (overlap with the reference mask: 1 = perfect, 0 = none; the mean "
            f"{metrics.get('mean_dice') or 0:.2f} leaves out the background): {listed}.")
    if any(value < 0.05 for _, value in structures):
        text += (" A structure near 0 was not found yet: a small model after one short training misses thin or "
                 "rare structures; labels and cycles improve it.")
    return text + " The model's pre-segmentations are served now (the .../prediction command above)."


def _duration(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes} min {sec:02d} s" if minutes else f"{sec} s"


class Announcer(threading.Thread):
    def __init__(self, base: str, admin_token: str | None, demo: Demo | None) -> None:
        super().__init__(name="announcer", daemon=True)
        self.base, self.admin_token, self.demo = _local(base), admin_token, demo
        self._stopped = threading.Event()
        self._told = threading.Lock()
        self._told_already = False

    def stop(self) -> None:
        self._stopped.set()

    def tell_once(self) -> None:
        """Print the instructions and one-time tokens, once, whatever else failed: they are not shown again."""
        with self._told:
            if self._told_already:
                return
            self._told_already = True
        if self.demo is not None:
            _say(instructions(self.demo, self.admin_token, self.base))
        elif self.admin_token:
            _say(f"\nAPI: {self.base}/api/v1 (docs: {self.base}/docs)\nadmin token (shown once): {self.admin_token}\n")

    def run(self) -> None:
        try:
            self._wait(self._answers, timeout=300)
            if self.demo is not None:
                demo = self.demo
                self._wait(lambda: read_cycle(demo.cycle_id).status != "queued", timeout=300)
        finally:  # a failed wait must not swallow the tokens
            if not self._stopped.is_set():
                self.tell_once()
        if self.demo is not None:
            self._watch(self.demo.cycle_id)

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200
        except Exception:  # not up yet, or an address httpx cannot dial: keep waiting until the timeout
            return False

    def _wait(self, ready: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._stopped.is_set() and time.monotonic() < deadline:
            if ready():
                return True
            self._stopped.wait(POLL_S)
        return False

    def _watch(self, cycle_id: int) -> None:
        last_phase, last_said = "", 0.0
        while not self._stopped.wait(POLL_S):
            try:
                view = read_cycle(cycle_id)
            except Exception as exc:  # progress is a courtesy: the cycle goes on without it
                _say(f"[cycle {cycle_id}] progress unavailable ({type(exc).__name__}); "
                     f"see GET /api/v1/cycles/{cycle_id}")
                return
            if view.status not in ("queued", "running"):
                _say(outcome_line(cycle_id, view))
                return
            if view.phase != last_phase or time.monotonic() - last_said >= EVERY_S:
                _say(progress_line(cycle_id, view))
                last_phase, last_said = view.phase or "", time.monotonic()


def _local(base: str) -> str:
    """The server as this process reaches it: a wildcard bind address is not a destination."""
    for wildcard in ("//0.0.0.0:", "//[::]:", "//:::"):
        if wildcard in base:
            return base.replace(wildcard, "//127.0.0.1:")
    return base


def _say(text: str) -> None:
    print(text, flush=True)
