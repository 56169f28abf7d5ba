"""Quality gate (issue 15 B): a model trained on the full msd-hippocampus pool, on this machine's CPU.

    .venv/bin/python -m benchmarks.hippocampus_gate [--params JSON] [--split-seed 0] [--threads 2]

Trains once on the 190-case pool of split seed 0 (50 test, 20 validation cases, the same split as the
active-learning experiment), with the experiment's network and schedule by default, keeps the best
validation checkpoint, and prints the mean foreground test Dice against the 0.85 gate and the time
it took. Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from worker.experiment import Protocol, load_dataset, run_experiment

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "msd-hippocampus"
GATE = 0.85
# The network and schedule of docs/hippocampus-experiment.md (whole-volume patches).
EXPERIMENT = {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "patch_size": [48, 64, 48], "batch_size": 2,
              "steps": 1500, "learning_rate": 0.002, "lr_schedule": "poly", "augment": True, "val_every": 500,
              "dropout": 0.5, "dropout_position": "decoder", "mc_passes": 5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--params", default=json.dumps(EXPERIMENT))
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    load_dataset(args.data)  # fail early on a missing folder
    protocol = Protocol(arms=[], split_seeds=[args.split_seed], params=json.loads(args.params))
    with tempfile.TemporaryDirectory(prefix="nextcase-gate-") as tmp:
        start = time.perf_counter()
        run_experiment(args.data, protocol, Path(tmp), threads=args.threads)
        seconds = time.perf_counter() - start
        state = json.loads(next(Path(tmp).glob("campaigns/*/state.json")).read_text())
    row = state["rows"][0]
    verdict = "holds" if row["mean_dice"] >= GATE else "FAILS"
    print(f"full pool ({row['labelled']} cases, {row['train_steps']} steps, kept step {row['best_step']}): "
          f"mean foreground test Dice {row['mean_dice']:.4f} over {protocol.test} test cases; gate {GATE} {verdict}; "
          f"{seconds:.0f} s on this machine")


if __name__ == "__main__":
    main()
