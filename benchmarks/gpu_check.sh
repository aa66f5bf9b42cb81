#!/usr/bin/env bash
# One prepared run on a GPU machine (the workplace's device tool runs it from the repo root):
# the device, a correctness subset of the tests on the GPU, then both benchmarks at full size.
# Results land in $OUT (or /tmp/gpu_out); copy the JSON lines into benchmarks/RESULTS.md.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax; print('jax', jax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_layers.py tests/test_losses.py tests/test_train.py 2>&1 | tail -4 | tee "$OUT/tests.txt"
timeout 240 python3 benchmarks/bench_train.py --ref-steps 50 2>&1 | tee "$OUT/bench_train.txt"
timeout 240 python3 benchmarks/bench_sweep.py 2>&1 | tee "$OUT/bench_sweep.txt"
timeout 120 python3 benchmarks/bench_sweep.py --hidden-dims 1024 1024 2>&1 | tee "$OUT/bench_sweep_1024.txt"
