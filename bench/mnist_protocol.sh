#!/usr/bin/env bash
# The MNIST evaluation protocol (docs/evaluation.md) of one experiment=mnist checkpoint, on the CPU:
#   bash bench/mnist_protocol.sh RUN_DIR MNIST_ROOT OUT_DIR [THREADS]
# 1. 10,000 samples (DPM-Solver++ 2M, 20 steps, seed 1, EMA weights): FID and KID in the protocol
#    classifier's features against the 10,000 test images, the floor from 10,000 training images,
#    the classifier's confident fraction and class balance, the nearest-training-image check;
# 2. bits/dim per MNIST pixel on the 10,000 test images: the ELBO with the discretised decoder
#    (VDM), 50,000 Monte Carlo draws (5 per test image);
# 3. bits/dim by the probability-flow ODE (uniform dequantisation, Hutchinson divergence) on the
#    first 64 test images (each an adaptive dopri5 solve: the cost is stated in metrics.json).
# Each step writes OUT_DIR/<step>/metrics.json; OUT_DIR/mnist_protocol.json gathers them.
# Sampling batch: batch_size=auto (64 on a CPU for 28x28 images; sample i depends only on (seed, i)).
# MNIST_SAMPLER="sampler=dpm_solver_sde sampler.steps=20" replaces step 1's sampler: pick it on other seeds
# (bench/mnist_confident_by_sampler.sh, tuning seed 100), never on seed 1.
set -euo pipefail
run=${1:?usage: mnist_protocol.sh RUN_DIR MNIST_ROOT OUT_DIR [THREADS]}; root=${2:?MNIST root}; out=${3:?output}
threads=${4:-2}
bin=$(dirname "$0")/../.venv/bin
ckpt=$run/checkpoints/last.ckpt
common=(ckpt_path="$ckpt" data=mnist data.root="$root" threads="$threads" seed=1)
mkdir -p "$out"
t0=$(date +%s)
"$bin/difflab-eval" "${common[@]}" metrics=[fid,kid,confidence,copying] features=classifier reference_split=val \
  num_samples=10000 num_reference=10000 ${MNIST_SAMPLER:-sampler=dpm_solver sampler.steps=20} output="$out/samples"
t1=$(date +%s)
"$bin/difflab-eval" "${common[@]}" metrics=[bpd_elbo] elbo.decoder=discretized split=val num_eval=10000 \
  mc_samples=50000 mc_batch_size=500 output="$out/elbo"
t2=$(date +%s)
if [ "${MNIST_ODE:-1}" = 1 ]; then  # MNIST_ODE=0 leaves the ODE likelihood out
  "$bin/difflab-eval" "${common[@]}" metrics=[bpd_ode] split=val num_eval=64 ode.batch_size=64 output="$out/ode"
fi
t3=$(date +%s)
"$bin/python" - "$out" "$run" "$((t1 - t0))" "$((t2 - t1))" "$((t3 - t2))" <<'PY'
import json, sys
from pathlib import Path
out, run = Path(sys.argv[1]), Path(sys.argv[2])
res = {"run": str(run), "seconds": dict(zip(["samples", "elbo", "ode"], map(int, sys.argv[3:6])))}
for step in ("samples", "elbo", "ode"):
    if (out / step / "metrics.json").is_file():
        res[step] = json.loads((out / step / "metrics.json").read_text())
        res[step].pop("provenance", None)  # kept in each step's own metrics.json
(out / "mnist_protocol.json").write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
print(json.dumps(res, indent=1, sort_keys=True))
PY
