"""``nextcase simulate``: replay an annotation campaign with an oracle annotator, through the REST API.

The simulator is a client of the product: it creates projects, imports images without labels,
starts cycles, claims cases from ``queue/next`` and uploads the true masks, so the experiment runs
the same code that annotators and workers use. Splits and the initial labelled set are drawn from
the seed alone, so they are identical across strategies for the same seed.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import SimpleITK as sitk

from app import live_estimate
from app.bulk_import import read_msd
from worker.experiment import FULL_POOL, Splits
from worker.experiment import draw_splits as shared_splits

log = logging.getLogger("nextcase.simulate")


@dataclass
class Protocol:
    initial: int = 11
    per_cycle: int = 5
    cycles: int = 4
    val: int = 6
    test: int = 22
    strategies: list[str] = field(default_factory=lambda: ["mc_dropout_variance", "random"])
    seeds: int = 3  # split seeds 0..seeds-1: splits and initial labelled set
    train_seeds: int = 1  # training replicates per split seed: the cycles' seed (weights, patches, MC masks)
    params: dict[str, Any] = field(default_factory=dict)
    resample: float = 1.0
    full_pool: bool = True
    # The queue's control arm (see app.campaign): the fraction of the oracle's claims drawn at random, which
    # gives the live estimate of live.csv. Off by default: in a strategy comparison its random picks would
    # dilute every arm towards random. A run saved before it existed had none.
    control_fraction: float = 0.0


@dataclass
class Case:
    name: str
    image: bytes
    label: bytes


# --- data --------------------------------------------------------------------------------------


def _encode(image: sitk.Image) -> bytes:
    with tempfile.TemporaryDirectory(prefix="nextcase-sim-") as tmp:
        path = Path(tmp) / "x.nii.gz"
        sitk.WriteImage(image, str(path), useCompression=True)
        return path.read_bytes()


def _coarser(image: sitk.Image, factor: float, interpolator: int) -> sitk.Image:
    if factor == 1.0:
        return image
    spacing = [s * factor for s in image.GetSpacing()]
    size = [max(1, round(n / factor)) for n in image.GetSize()]
    return sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(), spacing,
                         image.GetDirection(), 0, image.GetPixelID())


def load_cases(root: Path, resample: float, on_case: Callable[[], None] | None = None) -> list[Case]:
    """All labelled cases of an MSD folder, optionally on a grid ``resample`` times coarser."""
    cases = []
    for image_path, label_path in read_msd(root).pairs:
        if label_path is None:
            continue
        image = _coarser(sitk.ReadImage(str(image_path)), resample, sitk.sitkLinear)
        label = _coarser(sitk.ReadImage(str(label_path)), resample, sitk.sitkNearestNeighbor)
        label.CopyInformation(image)
        cases.append(Case(image_path.name.split(".")[0], _encode(image), _encode(label)))
        if on_case:
            on_case()
    return cases


def draw_splits(names: list[str], protocol: Protocol, seed: int) -> Splits:
    """The same splits as ``python -m worker.experiment`` draws for this seed."""
    return shared_splits(names, protocol.test, protocol.val, protocol.initial, seed)


# --- service -----------------------------------------------------------------------------------


class Service:
    """A REST session with a NextCase server as an admin and an oracle annotator."""

    def __init__(self, url: str, admin_token: str) -> None:
        self.url = url.rstrip("/")
        self.admin = httpx.Client(base_url=f"{self.url}/api/v1", timeout=600,
                                  headers={"Authorization": f"Bearer {admin_token}"})
        created = self.ok(self.admin.post("/users", json={"name": f"oracle-{os.getpid()}-{int(time.time())}",
                                                          "role": "annotator"}))
        self.oracle = httpx.Client(base_url=f"{self.url}/api/v1", timeout=600,
                                   headers={"Authorization": f"Bearer {created['token']}"})

    @staticmethod
    def ok(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise RuntimeError(f"{response.request.method} {response.request.url.path}: "
                               f"{response.status_code} {response.text}")
        return response.json() if response.content else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def embedded_service(workdir: Path) -> Iterator[Service]:
    """Start ``nextcase serve`` (embedded database, blob store and worker) in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NEXTCASE_DATABASE_URL": f"sqlite:///{workdir.resolve()}/nextcase.db",
           "NEXTCASE_BLOB_DIR": str(workdir.resolve() / "blobs"), "NEXTCASE_BROKER_URL": "",
           "NEXTCASE_LOG_LEVEL": "WARNING"}
    cli = [sys.executable, "-m", "app.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    token = subprocess.run([*cli, "create-user", f"simulator-{int(time.time() * 1000)}", "--role", "admin"],
                           env=env, check=True, capture_output=True, text=True).stdout.strip()
    port = _free_port()
    with (workdir / "server.log").open("ab") as server_log:
        server = subprocess.Popen([*cli, "serve", "--port", str(port), "--no-demo"], env=env,
                                  stdout=server_log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(f"http://127.0.0.1:{port}", server)
        yield Service(f"http://127.0.0.1:{port}", token)
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


def _wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the embedded NextCase server exited; see server.log in the work directory")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the embedded NextCase server did not become ready")


# --- one run -----------------------------------------------------------------------------------


@dataclass
class RunResult:
    strategy: str
    seed: int
    train_seed: int
    rows: list[dict[str, Any]]
    initial: list[str]
    claimed: list[list[str]]
    per_case: list[dict[str, Any]] = field(default_factory=list)
    project_id: int = 0
    ids: dict[str, int] = field(default_factory=dict)
    next_cycle: int = 0
    annotating: bool = False  # the oracle is labelling the picks of cycle next_cycle - 1
    done: bool = False
    model_versions: list[int | None] = field(default_factory=list)  # per row: the model that cycle published
    live: list[dict[str, Any]] = field(default_factory=list)  # app.live_estimate rows


class Run:
    """One (strategy, split seed, train seed) campaign in a project of its own."""

    def __init__(self, service: Service, dataset: Any, cases: list[Case], protocol: Protocol, state: RunResult,
                 tag: str) -> None:
        self.s, self.protocol, self.state = service, protocol, state
        self.strategy, self.seed, self.train_seed = state.strategy, state.seed, state.train_seed
        self.cases = {c.name: c for c in cases}
        self.splits = draw_splits(sorted(self.cases), protocol, self.seed)
        self.labels = list(dataset.labels)
        if not state.project_id:
            project = service.ok(service.admin.post("/projects", json={
                "name": f"sim-{tag}-{self.strategy}-seed{self.seed}-train{self.train_seed}",
                "modality": dataset.modality, "labels": dataset.labels,
                "control_fraction": protocol.control_fraction, "control_seed": 1000 * self.seed + self.train_seed}))
            state.project_id = int(project["id"])
        self.project_id = state.project_id
        self.ids: dict[str, int] = dict(state.ids)
        self.names: dict[int, str] = {i: n for n, i in self.ids.items()}

    def _import(self) -> None:
        for name, case in self.cases.items():
            created = self.s.ok(self.s.admin.post(f"/projects/{self.project_id}/cases", data={"patient": name},
                                                  files={"file": (f"{name}.nii.gz", case.image)}))
            self.ids[name], self.names[int(created["id"])] = int(created["id"]), name
        self.state.ids = dict(self.ids)

    def _label(self, client: httpx.Client, name: str) -> None:
        self.s.ok(client.put(f"/cases/{self.ids[name]}/label",
                             files={"file": (f"{name}.nii.gz", self.cases[name].label)}))

    def _set_split(self, name: str, split: str) -> None:
        self.s.ok(self.s.admin.patch(f"/cases/{self.ids[name]}", json={"split": split}))

    def prepare(self, labelled_pool: int) -> list[str]:
        self._import()
        for split, names in (("test", self.splits.test), ("validation", self.splits.val)):
            for name in names:
                self._set_split(name, split)
                self._label(self.s.admin, name)
        initial = self.splits.pool[:labelled_pool]
        for name in initial:
            self._label(self.s.admin, name)
        return initial

    def end_interrupted_cycles(self) -> None:
        """Force-cancel a cycle left active by an interrupted run: its result was never recorded, and the
        project accepts one active cycle at a time."""
        for cycle in self.s.ok(self.s.admin.get(f"/projects/{self.project_id}/cycles")):
            if cycle["status"] in ("queued", "running"):
                self.s.ok(self.s.admin.delete(f"/cycles/{cycle['id']}", params={"force": "true"}))

    def cycle(self, strategy: str) -> dict[str, Any]:
        body = {**self.protocol.params, "strategy": strategy, "seed": self.train_seed}
        started = time.monotonic()
        cycle = self.s.ok(self.s.admin.post(f"/projects/{self.project_id}/cycles", json=body))
        while cycle["status"] in ("queued", "running"):
            time.sleep(1.0)
            cycle = self.s.ok(self.s.admin.get(f"/cycles/{cycle['id']}"))
        if cycle["status"] != "done":
            raise RuntimeError(f"cycle {cycle['id']} {cycle['status']}: {cycle['error']}")
        return {**cycle, "wall_time_s": round(time.monotonic() - started, 1)}

    def annotate_next(self, n: int, on_label: Callable[[str], None]) -> None:
        """The oracle claims n cases from the queue and uploads their true masks, reporting each one."""
        for _ in range(n):
            r = self.s.oracle.post(f"/projects/{self.project_id}/queue/next")
            if r.status_code == 204:
                break
            name = self.names[int(self.s.ok(r)["case"]["id"])]
            self._label(self.s.oracle, name)
            on_label(name)

    def labelled_in_pool(self) -> int:
        page = self.s.ok(self.s.admin.get(f"/projects/{self.project_id}/cases",
                                          params={"split": "pool", "status": "labelled", "limit": 1}))
        return int(page["total"])

    def row(self, cycle_index: int, cycle: dict[str, Any], labelled: int, spearman: float | None) -> dict[str, Any]:
        test = cycle["metrics"].get("test") or {}
        per_class = test.get("per_class") or {}
        row: dict[str, Any] = {
            "strategy": self.strategy, "split_seed": self.seed, "train_seed": self.train_seed, "cycle": cycle_index,
            "labelled": labelled, "labelled_fraction": round(labelled / len(self.splits.pool), 4),
        }
        row.update({f"dice_{name}": per_class.get(name) for name in self.labels[1:]})
        row.update(mean_dice=test.get("mean_dice"), spearman=spearman, wall_time_s=cycle["wall_time_s"])
        return row

    def per_case(self, cycle_index: int, cycle: dict[str, Any], labelled: int) -> list[dict[str, Any]]:
        """Test Dice of every test case (the cycle's metrics keep them by case id)."""
        out = []
        for case in (cycle["metrics"].get("test") or {}).get("per_case", []):
            out.append({"strategy": self.strategy, "split_seed": self.seed, "train_seed": self.train_seed,
                        "cycle": cycle_index, "labelled": labelled, "case": self.names[int(case["case_id"])],
                        "mean_dice": case["mean_dice"],
                        **{f"dice_{n}": case["per_class"].get(n) for n in self.labels[1:]}})
        return out

    def live_rows(self) -> list[dict[str, Any]]:
        """Control-arm estimate next to the test Dice per finished cycle, from the campaign report."""
        from app.live_estimate import rows_for

        return rows_for(self.state, self.s.ok(self.s.admin.get(f"/projects/{self.project_id}/campaign")))

    def score_error_correlation(self) -> float | None:
        """Spearman correlation of the published scores with each unlabelled case's true error
        (1 - mean foreground Dice of the served prediction against the oracle's mask)."""
        from worker.experiment import spearman

        page = self.s.ok(self.s.admin.get(f"/projects/{self.project_id}/queue", params={"limit": 1000}))
        scores, errors = [], []
        for item in page["items"]:
            if item["status"] != "open" or item["score"] is None:
                continue
            response = self.s.admin.get(f"/cases/{item['case_id']}/prediction")
            if response.status_code != 200:
                continue
            truth = self.cases[self.names[int(item["case_id"])]].label
            scores.append(float(item["score"]))
            errors.append(1.0 - _foreground_dice(response.content, truth, len(self.labels)))
        return spearman(scores, errors)


def _foreground_dice(prediction: bytes, truth: bytes, classes: int) -> float:
    from app.cases.imaging import read_nifti
    from worker.ml.inference import dice_per_class, mean_foreground_dice

    pred = sitk.GetArrayFromImage(read_nifti(prediction))
    true = sitk.GetArrayFromImage(read_nifti(truth))
    return mean_foreground_dice(dice_per_class(pred, true, classes))


def run_campaign(service: Service, dataset: Any, cases: list[Case], protocol: Protocol, state: RunResult,
                 tag: str, progress: Callable[[str], None], save: Callable[[], None]) -> RunResult:
    """Run a campaign from its first unfinished cycle; ``save`` is called after every finished cycle."""
    run = Run(service, dataset, cases, protocol, state, tag)
    name = f"{state.strategy} seed {state.seed}/{state.train_seed}"
    if not state.initial:
        full = state.strategy == FULL_POOL
        state.initial = run.prepare(len(run.splits.pool) if full else protocol.initial)
        save()
    last = 0 if state.strategy == FULL_POOL else protocol.cycles
    run.end_interrupted_cycles()

    def labelled_one(case_name: str) -> None:
        state.claimed[-1].append(case_name)
        save()  # every upload is recorded, so an interruption mid-batch loses nothing

    if state.annotating:  # interrupted while labelling a batch: finish it, do not retrain
        run.annotate_next(protocol.per_cycle - len(state.claimed[-1]), labelled_one)
        state.annotating = False
        state.live = run.live_rows()
        save()
    for index in range(state.next_cycle, last + 1):
        labelled = run.labelled_in_pool()
        cycle = run.cycle("random" if state.strategy == FULL_POOL else state.strategy)
        rho = run.score_error_correlation() if index < last and state.strategy not in ("random", FULL_POOL) else None
        state.rows.append(run.row(index, cycle, labelled, rho))
        state.model_versions += [None] * (len(state.rows) - 1 - len(state.model_versions))  # a run saved before
        state.model_versions.append(cycle.get("model_version_id"))
        state.per_case += run.per_case(index, cycle, labelled)
        progress(f"{name} cycle {index}: {labelled} labelled, mean test Dice {state.rows[-1]['mean_dice']}, "
                 f"{cycle['wall_time_s']} s")
        state.next_cycle = index + 1
        if index < last:
            state.claimed.append([])
            state.annotating = True
            save()
            run.annotate_next(protocol.per_cycle, labelled_one)
            state.annotating = False
        state.live = run.live_rows()
        save()
    state.done = True
    save()
    return state


# --- the whole experiment ------------------------------------------------------------------------


def runs_of(protocol: Protocol) -> list[tuple[str, int, int]]:
    strategies = [*protocol.strategies, *([FULL_POOL] if protocol.full_pool else [])]
    return [(strategy, seed, train) for seed in range(protocol.seeds) for train in range(protocol.train_seeds)
            for strategy in strategies]


def simulate(dataset_dir: Path, out: Path, protocol: Protocol, *, url: str | None, token: str | None,
             progress: Callable[[str], None]) -> list[RunResult]:
    """Run (or resume, from each campaign's last finished cycle) every campaign; write the CSVs and report.

    A resumed campaign continues in its project on the same server (the embedded one keeps its
    database under ``out``).
    """
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "runs.json"
    state: dict[str, Any] = (json.loads(state_path.read_text()) if state_path.exists()
                             else {"protocol": asdict(protocol), "runs": []})
    if {"control_fraction": 0.0, **state["protocol"]} != asdict(protocol):  # saved before the control arm: none
        raise ValueError(f"{out} holds results of another protocol; choose another --out")
    runs = {(r["strategy"], r["seed"], r["train_seed"]): RunResult(**r) for r in state["runs"]}
    todo = [key for key in runs_of(protocol) if not (key in runs and runs[key].done)]

    def save() -> None:
        state["runs"] = [asdict(r) for r in runs.values()]
        state_path.write_text(json.dumps(state, indent=1))
        write_csv(out / "results.csv", [row for r in runs.values() for row in r.rows])
        write_csv(out / "per_case.csv", [row for r in runs.values() for row in r.per_case])
        live = [row for r in runs.values() for row in r.live]
        if live:
            live_estimate.write_csv(out / "live.csv", live)

    if todo:
        dataset = read_msd(dataset_dir)
        progress(f"loading {len(dataset.pairs)} cases (resample x{protocol.resample})")
        cases = load_cases(dataset_dir, protocol.resample)
        with _service(url, token, out) as service:
            for strategy, seed, train in todo:
                runs.setdefault((strategy, seed, train), RunResult(strategy, seed, train, [], [], []))
                run_campaign(service, dataset, cases, protocol, runs[(strategy, seed, train)], _tag(), progress,
                             save)
    from app.report import write_report

    write_report(out)
    live = [row for r in runs.values() for row in r.live]
    if live:
        live_estimate.plot(live, out / "live_estimate.png")
    return list(runs.values())


def _tag() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


@contextmanager
def _service(url: str | None, token: str | None, out: Path) -> Iterator[Service]:
    if url:
        if not token:
            raise ValueError("--url needs --token (an admin token of that server)")
        yield Service(url, token)
        return
    with embedded_service(out / "service") as service:
        yield service


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
