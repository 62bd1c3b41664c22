#!/usr/bin/env bash
# The MNIST objective study (parameterization x weighting), 2,000 steps per job, on tuning data only:
# the classifier's confident fraction (standard error <= 1.1 points) and FID of 2,000 samples (DPM-Solver++ 2M, 20 steps) against 10,000
# *training* images (reference_split=train); the test set stays unscored. Jobs:
#   parameterization=v   (the recipe)            x weighting=simple (the recipe: eps-MSE, t uniform)
#   parameterization=edm (Karras et al. 2022 Eq. 7, sigma_data 0.5, its paper's value for [-1, 1] images) x weighting=edm
#   (lambda(sigma~) = (sigma~^2 + sigma_d^2)/(sigma~ sigma_d)^2, ln sigma~ ~ N(-1.2, 1.2^2))
#   bash bench/mnist_study_objective.sh MNIST_ROOT OUT [extra overrides]
cd "$(dirname "$0")/.."
root=${1:?usage: mnist_study_objective.sh MNIST_ROOT OUT}; out=${2:?output}; shift 2
exec .venv/bin/difflab-train -m experiment=mnist data.root="$root" parameterization=v,edm weighting=simple,edm \
  trainer.max_steps=2000 trainer.val_check_interval=1000 \
  "eval_at_end=[confidence,fid]" evaluation.features=classifier evaluation.reference_split=train \
  evaluation.num_samples=2000 evaluation.num_reference=10000 sampler=dpm_solver sampler.steps=20 \
  output="$out" "$@"
