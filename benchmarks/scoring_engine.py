"""Scoring engine: NextCase vs a naive MONAI-Label-style loop vs T full passes, time and peak memory.

    .venv/bin/python -m benchmarks.scoring_engine              # T = 5 and 10, one 128^3 openkbp-ct5 case
    python3 -m benchmarks.scoring_engine --device cuda         # on a GPU: wall time (benchmarks/gpu_scoring.sh)

One real 128^3 CT (../shared/data/openkbp-ct5; a seeded random volume of that size when absent), the
default network (channels 16-128, 96^3 windows, 25 % overlap) with decoder-only dropout p = 0.5 and random
weights (timing and memory do not depend on training). Each variant produces what the score phase needs:
the MC-dropout variance score and the deterministic prediction served to annotators.

- ``nextcase``: :func:`worker.ml.scoring.score_case` with its defaults (encoder once, decoder T + 1 times,
  running sums; ``score_precision="auto"``: bfloat16 autocast where the device has it natively, else float32;
  ``score_pass_batch`` auto: one MC pass per network call on the CPU, all T in one call on CUDA).
- ``nextcase, float32``: the same in float32 (what the encoder cache alone gains).
- ``nextcase, passes together`` / ``nextcase, one pass per call``: ``score_pass_batch`` = T / 1, whichever the
  device's default is not (the CPU's default run lists the first, a GPU's the second).
- ``full passes``: the same statistics from T full sliding-window passes plus one eval pass for the
  prediction, in float32 (NextCase's engine before the encoder cache).
- ``nextcase, whole volume``: the same with ``score_whole_volume_voxels`` = 128^3 (one window: no voxel
  computed twice by overlapping windows; its score differs a little, see the docstring of that parameter).
- ``naive``: T separate ``monai.inferers.sliding_window_inference`` calls with dropout in train mode, all T
  outputs held and stacked, plus one eval pass (the shape of MONAI Label's epistemic scoring).

Each variant runs in its own fresh process, so its peak resident memory (ru_maxrss, minus the process's
resident size before it started; with ``--device cuda`` the peak GPU memory allocated) is its own. Time is the
process's CPU time (all its threads), which other work on a shared machine disturbs far less than wall time;
with ``--threads 1`` it is the work done (on CUDA: wall time, the GPU synchronised). Each variant runs
``--repeats`` times, interleaved with the others, and its fastest run counts. Prints seconds and MiB and the
ratios; not a test.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "openkbp-ct5"
SIZE = 128


def _volume() -> tuple[np.ndarray, str]:
    from worker.ml.transforms import normalise

    if (DATA / "dataset.json").exists():
        import SimpleITK as sitk  # here: a GPU machine without the data need not have it

        entry = json.loads((DATA / "dataset.json").read_text())["training"][0]
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / entry["image"]))).astype(np.float32)
        source = f"openkbp-ct5 {entry['image']}"
    else:
        image = np.random.default_rng(0).normal(0, 300, (SIZE,) * 3).astype(np.float32)
        source = "random volume (../shared/data/openkbp-ct5 absent)"
    crop = tuple(slice(max(0, (n - SIZE) // 2), max(0, (n - SIZE) // 2) + SIZE) for n in image.shape)
    return normalise(image[crop], "CT"), source


def _setup(passes: int) -> tuple[Any, np.ndarray, Any]:
    from worker.ml.network import build_unet
    from worker.ml.params import TrainParams

    params = TrainParams(mc_passes=passes, dropout_position="decoder")
    torch.manual_seed(0)
    model = build_unet(6, params)
    image, _ = _volume()
    return model, image, params


def _nextcase(model: Any, image: np.ndarray, params: Any, device: str) -> float:
    from worker.ml.scoring import score_case

    return score_case(model, image, "mc_dropout_variance", params, case_key=0, device=device).score


def _full_passes(model: Any, image: np.ndarray, params: Any, device: str) -> float:
    from dataclasses import replace

    from worker.ml.inference import predict_labels
    from worker.ml.scoring import mc_dropout_statistics

    one_at_a_time = replace(params, score_pass_batch=1)
    stats = mc_dropout_statistics(model, image, one_at_a_time, device)  # no encoder cache: T full passes
    predict_labels(model, image, params, device)
    return float(stats.moments.variance.mean(dim=0).sum())


def _naive(model: Any, image: np.ndarray, params: Any, device: str) -> float:
    from monai.inferers import sliding_window_inference

    from worker.ml.inference import predict_labels
    from worker.ml.network import mc_dropout_mode

    x = torch.from_numpy(np.ascontiguousarray(image))[None, None].to(device)
    outputs = []
    with mc_dropout_mode(model), torch.inference_mode():
        for _ in range(params.mc_passes):
            logits = sliding_window_inference(x, params.patch_size, params.sw_batch_size, model,
                                              overlap=params.sw_overlap)
            assert isinstance(logits, torch.Tensor)
            outputs.append(torch.softmax(logits, dim=1)[0])
    stacked = torch.stack(outputs)
    predict_labels(model, image, params, device)
    return float(stacked.double().var(dim=0, unbiased=False).mean(dim=0).sum())


def _with(**changes: Any) -> Callable[[Any, np.ndarray, Any, str], float]:
    from dataclasses import replace

    def variant(model: Any, image: np.ndarray, params: Any, device: str) -> float:
        return _nextcase(model, image, replace(params, **{k: v(params) if callable(v) else v
                                                        for k, v in changes.items()}), device)

    return variant


VARIANTS: dict[str, Callable[[Any, np.ndarray, Any, str], float]] = {
    "nextcase": _nextcase,
    "nextcase, float32": _with(score_precision="float32"),
    "nextcase, passes together": _with(score_pass_batch=lambda params: params.mc_passes),
    "nextcase, one pass per call": _with(score_pass_batch=1),
    "full passes": _full_passes,
    "naive": _naive,
    "nextcase, whole volume": _with(score_whole_volume_voxels=SIZE**3),
}
# On the CPU "nextcase" runs one pass per call (score_pass_batch auto), on CUDA all T together.
DEFAULTS = {"cpu": ["nextcase", "nextcase, float32", "nextcase, passes together", "full passes", "naive",
                    "nextcase, whole volume"],
            "cuda": ["nextcase", "nextcase, one pass per call", "nextcase, float32", "full passes", "naive",
                     "nextcase, whole volume"]}


def _run(name: str, passes: int, threads: int, device: str, out: Any) -> None:
    torch.set_num_threads(threads)
    model, image, params = _setup(passes)
    model.to(device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    before = _rss_mib()
    start = time.perf_counter() if cuda else time.process_time()
    score = VARIANTS[name](model, image, params, device)
    if cuda:
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        seconds = time.process_time() - start
        peak = max(0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before)
    out.send((seconds, peak, score))


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def measure(name: str, passes: int, threads: int, device: str) -> tuple[float, float, float]:
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_run, args=(name, passes, threads, device, send))
    process.start()
    result: tuple[float, float, float] = receive.recv()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", default="5,10", help="comma-separated T values")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant, interleaved; the fastest counts")
    parser.add_argument("--device", default="cpu", help="cpu (CPU time, resident memory) or cuda (wall time on a "
                        "synchronised GPU, peak GPU memory allocated)")
    parser.add_argument("--variants", default=None, help="separated by semicolons, from: " + "; ".join(VARIANTS))
    args = parser.parse_args()
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    names = [n.strip() for n in args.variants.split(";")] if args.variants else DEFAULTS[kind]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or "nextcase" not in names:
        parser.error(f"--variants must include nextcase and name only: {'; '.join(VARIANTS)} (got {unknown})")
    _, source = _volume()
    from worker.ml.inference import native_bfloat16

    unit, memory = ("wall s", "peak GPU MiB") if kind == "cuda" else ("CPU s", "peak MiB")
    print(f"{SIZE}^3 case: {source}; default network, decoder-only dropout p=0.5; {args.device}, {args.threads} CPU "
          f"thread(s); nextcase's passes in {'bfloat16' if native_bfloat16(args.device) else 'float32'}")
    for passes in (int(t) for t in args.passes.split(",")):
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
        for _ in range(args.repeats):  # interleaved, so a burst of load elsewhere hits every variant alike
            for name in names:
                runs[name].append(measure(name, passes, args.threads, args.device))
        rows = {name: min(results) for name, results in runs.items()}
        ours_s, ours_mib, ours_score = rows["nextcase"]
        print(f"\nT = {passes}")
        print(f"  {'variant':<28} {unit:>8} {memory:>12} {'x slower than nextcase':>23} {'score':>12}")
        for name, (seconds, mib, score) in rows.items():
            print(f"  {name:<28} {seconds:8.2f} {mib:12.0f} {seconds / ours_s:23.2f} {score:12.2f}")
        if "nextcase, float32" in rows and "full passes" in rows:
            exact = rows["nextcase, float32"][2]
            same = abs(rows["full passes"][2] - exact) <= 1e-4 * max(1.0, abs(exact))
            print(f"  nextcase (float32) score equals the full passes' score: {same}; nextcase's differs from it by "
                  f"{abs(ours_score - exact) / max(abs(exact), 1e-12):.2%}")
        if "naive" in rows:
            print(f"  memory ratio naive / nextcase: {rows['naive'][1] / max(ours_mib, 1.0):.2f}")


if __name__ == "__main__":
    main()
