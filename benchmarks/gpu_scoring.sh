#!/usr/bin/env bash
# The score phase on one GPU (issue 11, item 1): all T decoder passes per network call and bfloat16, in one call.
#
# Prepared here (CPU: `DEVICE=cpu bash benchmarks/gpu_scoring.sh` runs the same steps), then on the lent GPU:
#   pip download --no-deps --only-binary=:all: -d .gpu/whl monai==1.6.1
#   device run: carry [".gpu"], command "bash benchmarks/gpu_scoring.sh", timeout_s 420
# The machine's own python3 brings torch with CUDA; MONAI comes from the carried wheel. Without ../shared the
# scoring benchmark uses a seeded random 128^3 volume (timing and memory do not depend on the image).
# Prints: time and peak GPU memory of NextCase (auto: bfloat16, all T passes per call) against one pass per call,
# float32, T full passes and the naive loop, at T = 5 and 10; then Spearman's rho between the orders of a fixed
# synthetic set scored by float32 one pass per call and by the device's defaults (target >= 0.99).
set -uo pipefail
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-.gpuout/returned}
mkdir -p "$OUT"
PYTHON=python3
if [ "$DEVICE" = cpu ]; then
  PYTHON=.venv/bin/python
else
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
export PYTHONUNBUFFERED=1
$PYTHON -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__)" | tee -a "$OUT/gpu.txt"
REPEATS=${REPEATS:-2}
timeout 240 $PYTHON -m benchmarks.scoring_engine --device "$DEVICE" --passes 5,10 --repeats "$REPEATS" \
  2>&1 | tee "$OUT/scoring_engine.txt"
timeout 150 $PYTHON -m benchmarks.score_agreement --device "$DEVICE" 2>&1 | tee "$OUT/score_agreement.txt"
