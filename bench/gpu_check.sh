#!/usr/bin/env bash
# The whole GPU check in one run (about 7-9 minutes on an H200), writing as it goes to $OUT:
#   gpu_check.jsonl  one JSON line per stage and per benchmark result
#   pytest.txt / junit.xml, recipe_throughput_cuda*.json, sampling_throughput_cuda.json, *.log
#
# Prepare on a machine with the package index, from the project root (the GPU host has none):
#   ../shared/tools/offline-wheels constraints.txt        # -> .whl/ (hydra, omegaconf, diffusers, ...)
# then run it there with .whl carried along, e.g. with the device tool:
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=590)
# Stages (each under its own timeout, so a slow one cannot eat the others' time; ~7-9 minutes):
#   1. install the wheels into .site             3. recipe bench, ddpm_cifar10, compile on (vs diffusers
#   2. fast suite on CUDA (DIFFLAB_TEST_DEVICE)     bf16 + channels_last + torch.compile)
#   4. recipe bench, compile off (bf16, tf32)    5. sampling bench: difflab DDIM bf16, bf16-true vs DDIMPipeline
# tests/test_gpu_check_script.py runs this script on the CPU with a stand-in $PYTHON: every stage must
# write a valid JSON line and every bench command must pass the bench's own `--check` validation.
set -u
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
J="$OUT/gpu_check.jsonl"
T0=$(date +%s)
note() {  # note STAGE RC [extra json fields]
  local extra=${3:-}
  echo "{\"stage\": \"$1\", \"rc\": $2, \"elapsed_s\": $(( $(date +%s) - T0 ))${extra:+, $extra}}" >> "$J"
  echo "== $1 rc=$2 t=$(( $(date +%s) - T0 ))s"
}
PY=${PYTHON:-python3}

# 1. wheels (hydra-core, omegaconf, diffusers, torch-fidelity, ...) and the project on the path
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target .site .whl/*.whl > "$OUT/install.log" 2>&1
  note install $?
else
  note install 1 '"error": "no .whl/ here: run ../shared/tools/offline-wheels constraints.txt and carry .whl"'
fi
export PYTHONPATH=$PWD/src:$PWD/.site${PYTHONPATH:+:$PYTHONPATH}  # the work tree before its wheel
export PATH=$PWD/.site/bin:$PATH
export WANDB_MODE=disabled DIFFLAB_TEST_DEVICE=cuda
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
note device 0 "\"gpu\": \"$(head -1 "$OUT/gpu.txt" | tr -d '"')\", \"torch\": \"$($PY -c 'import torch; print(torch.__version__)' 2>/dev/null)\""

# 2. the fast suite with CUDA as the test device (65 s for ~1070 tests on the H200 on 2026-12-04; 1172 now:
#    150 s, which in the worst case leaves stage 4 less, never stage 5)
timeout 150 $PY -m pytest -q -m "not slow" -n 8 -p no:cacheprovider --junitxml="$OUT/junit.xml" tests > "$OUT/pytest.txt" 2>&1
rc=$?
summary=$(tail -1 "$OUT/pytest.txt" | tr -d '"=' | sed 's/^ *//; s/ *$//')
note fast_suite_cuda $rc "\"summary\": \"$summary\""

# 3. training throughput with torch.compile on both sides (each side compiles for ~1-2 minutes):
#    ddpm_cifar10 under Lightning vs diffusers' fastest bare loop (bf16 + channels_last + compile)
#    (--bare-minimal: also the loop without flips, clipping, LR schedule and EMA, as PITFALLS' 3504 img/s may have been)
timeout 270 $PY bench/recipe_throughput.py --recipes ddpm_cifar10 --precisions bf16-mixed --compile on \
  --steps 80 --warmup 15 --repeats 1 --block 20 --bare-minimal --jsonl "$J" --out "$OUT/recipe_throughput_cuda.json" > "$OUT/recipe_compile.log" 2>&1
note recipe_throughput_compile $?

# 4. the same without compile, bf16 and tf32
left=$(( 450 - ($(date +%s) - T0) ))
timeout $(( left > 90 ? 90 : (left > 10 ? left : 10) )) $PY bench/recipe_throughput.py --recipes ddpm_cifar10 \
  --precisions bf16-mixed,32-true --compile off --steps 60 --warmup 15 --repeats 1 --block 20 --bare-minimal --jsonl "$J" \
  --out "$OUT/recipe_throughput_cuda_eager.json" > "$OUT/recipe_eager.log" 2>&1
note recipe_throughput_eager $?

# 5. sampling throughput, bf16 (float32 state on our side), no compile
left=$(( 560 - ($(date +%s) - T0) ))
timeout $(( left > 100 ? 100 : (left > 10 ? left : 10) )) $PY bench/sampling_throughput.py --config ddpm_cifar10 \
  --batch 1024 --steps 20 --precision bf16,bf16-true --compile off --repeats 2 --jsonl "$J" \
  --out "$OUT/sampling_throughput_cuda.json" > "$OUT/sampling.log" 2>&1
note sampling_throughput $?
cat "$J"
