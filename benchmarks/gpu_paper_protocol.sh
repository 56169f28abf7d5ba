#!/usr/bin/env bash
# The paper's full-size protocol (issue 15 F) on one lent GPU: openkbp-ct5 at its native 128^3 grid, the
# default network (UNet 16-128, 96^3 patches, p = 0.5 everywhere), 11 initial + 5 per cycle x 4, T = 5,
# arms random and mc_dropout_variance, split seed 0. Prepare here:
#   python -m worker.experiment ../shared/data/openkbp-ct5 --out /dev/null --save-npz .gpu/openkbp.npz
#   pip download --no-deps --only-binary=:all: -d .gpu/whl monai==1.6.1
# then with the device tool: carry [".gpu"], command "bash benchmarks/gpu_paper_protocol.sh".
# Projected cost (benchmarks/paper_protocol_cost.py on an H200: 104.7 ms per step, 0.98 s per scored case):
# about 16 min serial for this 2-arm, 1-seed, 500-step protocol; the 3-arm x 3-seed paper protocol at 2000
# steps about 198 min. DEADLINE_S pauses the campaigns cleanly; rerunning resumes them (weights kept in
# .gpuout on the same machine).
set -uo pipefail
OUT=${OUT:-.gpuout/returned}
DEADLINE_S=${DEADLINE_S:-480}
STEPS=${STEPS:-500}
mkdir -p "$OUT" .gpuout
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
PARAMS="{\"steps\": $STEPS, \"mc_passes\": 5, \"dropout\": 0.5, \"dropout_position\": \"all\", \"val_every\": 250}"
start=$(date +%s)
python3 -m worker.experiment .gpu/openkbp.npz --out .gpuout/paper --device cuda --workers 3 \
  --arms random,mc_dropout_variance --split-seeds 0 --train-seeds 0 --initial 11 --per-cycle 5 --cycles 4 \
  --test 22 --val 6 --params "$PARAMS" --deadline-s "$DEADLINE_S" > "$OUT/paper.log" 2>&1
echo "wall $(( $(date +%s) - start )) s" | tee "$OUT/paper_wall.txt"
cp .gpuout/paper/*.csv .gpuout/paper/protocol.json "$OUT/" 2>/dev/null
tail -5 "$OUT/paper.log"
