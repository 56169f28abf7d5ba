#!/usr/bin/env bash
# The deciding experiment (issue 15 E) and the paper-protocol cost (F) on one GPU machine, in one call.
#
# Prepared here (CPU), then run on the lent GPU with the device tool:
#   python -m worker.experiment ../shared/data/msd-hippocampus --out /dev/null --save-npz .gpu/hippo.npz
#   pip download --no-deps --only-binary=:all: -d .gpu/whl monai==1.6.1
#   device run: carry [".gpu"], command "bash benchmarks/gpu_experiment.sh"
# The machine's own python3 brings torch with CUDA; MONAI comes from the carried wheel. Campaign state
# is kept under .gpuout/ (ignored, not carried), so a second call on the same warm machine resumes it.
# Figures land in $OUT (results.csv, per_case.csv, scores.csv, protocol.json, logs, cost projection).
set -uo pipefail
OUT=${OUT:-.gpuout/returned}
DEADLINE_S=${DEADLINE_S:-470}
WORKERS=${WORKERS:-25}
mkdir -p "$OUT" .gpuout
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__)" | tee -a "$OUT/gpu.txt"

# E: msd-hippocampus, whole-volume patches (48x64x48 covers every case), UNet 16-128, decoder dropout 0.5.
PARAMS='{"channels":[16,32,64,128],"strides":[2,2,2],"patch_size":[48,64,48],"batch_size":2,"steps":1500,
"learning_rate":0.002,"lr_schedule":"poly","augment":true,"val_every":500,"dropout":0.5,"dropout_position":"decoder",
"mc_passes":5,"query_size":10,"temperature":1.0,"temperature_decay":0.5}'
start=$(date +%s)
python3 -m worker.experiment .gpu/hippo.npz --out .gpuout/e --device cuda --workers "$WORKERS" \
  --arms random,mc_dropout_variance,stratified_power,coreset --split-seeds 0,1,2,3,4 --train-seeds 0 \
  --initial 10 --per-cycle 10 --cycles 9 --test 50 --val 20 --params "$PARAMS" --warm-steps 300 \
  --deadline-s "$DEADLINE_S" > "$OUT/experiment.log" 2>&1
echo "experiment wall $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu.txt"
cp .gpuout/e/*.csv .gpuout/e/protocol.json "$OUT/" 2>/dev/null
tar czf "$OUT/states.tgz" --exclude='*.pt' -C .gpuout/e campaigns

# F: unit costs of the paper's 128^3 protocol with the default network, and its projection.
timeout 60 python3 -m benchmarks.paper_protocol_cost --device cuda --steps 30 --cases 2 > "$OUT/paper_cost.txt" 2>&1
tail -3 "$OUT/experiment.log"; cat "$OUT/paper_cost.txt"
