#!/usr/bin/env bash
# The protocol's sampler for an experiment=mnist checkpoint, picked on tuning data only: 1,000 samples per
# sampler at 20 network evaluations from tuning seed 100 (the protocol scores seed 1), the classifier's
# confident fraction and FID against 10,000 *training* images. Prints one JSON with a row per sampler and
# the pick (the highest confident fraction); pass it on as
#   MNIST_SAMPLER="sampler=<pick> sampler.steps=20" bash bench/mnist_protocol.sh ...
#   bash bench/mnist_confident_by_sampler.sh RUN_DIR MNIST_ROOT OUT_DIR [THREADS]
set -euo pipefail
run=${1:?usage: mnist_confident_by_sampler.sh RUN_DIR MNIST_ROOT OUT_DIR [THREADS]}; root=${2:?MNIST root}; out=${3:?output}
threads=${4:-2}
bin=$(dirname "$0")/../.venv/bin
samplers=${MNIST_SAMPLERS:-dpm_solver dpm_solver_sde dpm_solver_3m_sde unipc ancestral}
mkdir -p "$out"
for s in $samplers; do
  [ -f "$out/$s/metrics.json" ] || "$bin/difflab-eval" ckpt_path="$run/checkpoints/last.ckpt" data=mnist data.root="$root" \
    threads="$threads" seed=100 metrics=[confidence,fid] features=classifier reference_split=train num_samples=1000 \
    num_reference=10000 sampler="$s" sampler.steps=20 output="$out/$s"
done
"$bin/python" - "$out" "$run" $samplers <<'PY'
import json, sys
from pathlib import Path
out, run, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
rows = []
for s in names:
    m = json.loads((out / s / "metrics.json").read_text())
    fid = next(k for k in m if k.startswith("fid_classifier_n") and not k.endswith("_floor"))
    rows.append({"sampler": s, "steps": 20, "nfe": m.get("nfe"), "classifier_confident": m["classifier_confident"],
                 "fid_vs_train": m[fid], "class_fraction_min": m["class_fraction_min"], "class_fraction_max": m["class_fraction_max"]})
res = {"what": f"{run}: 1,000 samples per sampler from tuning seed 100 (not the protocol's seed 1); FID against 10,000 "
               "training images in the protocol classifier's features", "rows": rows,
       "pick": max(rows, key=lambda r: r["classifier_confident"])["sampler"]}
(out / "confident_by_sampler_tuning.json").write_text(json.dumps(res, indent=1) + "\n")
print(json.dumps(res, indent=1))
PY
