#!/usr/bin/env bash
# The MNIST precision x weighting study, 2,000 steps per job, on tuning data only (the protocol of
# bench/mnist_study_objective.sh: confident fraction and FID of 2,000 samples, DPM-Solver++ 2M 20 steps,
# against 10,000 *training* images; the test set stays unscored). Jobs, all v-prediction as the recipe:
#   trainer.precision=bf16-mixed (bf16 autocast for the network in training; sampling stays fp32)
#   x weighting=simple (the recipe) | min_snr (Hang et al. 2023, gamma 5)
# The fp32 v+simple job of the objective study is the control (same seed, same steps).
#   bash bench/mnist_study_bf16.sh MNIST_ROOT OUT [extra overrides]
cd "$(dirname "$0")/.."
root=${1:?usage: mnist_study_bf16.sh MNIST_ROOT OUT}; out=${2:?output}; shift 2
exec .venv/bin/difflab-train -m experiment=mnist data.root="$root" trainer.precision=bf16-mixed weighting=simple,min_snr \
  trainer.max_steps=2000 trainer.val_check_interval=1000 \
  "eval_at_end=[confidence,fid]" evaluation.features=classifier evaluation.reference_split=train \
  evaluation.num_samples=2000 evaluation.num_reference=10000 sampler=dpm_solver sampler.steps=20 \
  output="$out" "$@"
