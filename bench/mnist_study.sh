#!/usr/bin/env bash
# The MNIST 2x2 study (schedule x weighting), 1,000 steps per job; tuning data only:
# FID/KID against 10k training images (reference_split=train), bits/dim on 1,000 training images.
cd "$(dirname "$0")/.."
exec .venv/bin/difflab-train -m experiment=mnist data.root="${1:?usage: mnist_study.sh MNIST_ROOT OUT}" schedule=cosine,linear weighting=simple,min_snr \
  trainer.max_steps=1000 trainer.val_check_interval=500 \
  "eval_at_end=[confidence,fid,kid,bpd_elbo]" evaluation.features=classifier evaluation.reference_split=train \
  evaluation.num_samples=1000 evaluation.num_reference=10000 sampler=dpm_solver sampler.steps=20 \
  evaluation.split=train evaluation.num_eval=1000 evaluation.mc_samples=10000 evaluation.mc_batch_size=500 \
  evaluation.elbo.decoder=discretized output="${2:?output}"
