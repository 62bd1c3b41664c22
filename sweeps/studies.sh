#!/usr/bin/env bash
# The four studies of the README, on a CPU: each is one -m sweep and one difflab-report.
#   bash sweeps/studies.sh [RUNS_DIR] [study ...]     (default runs/studies; all four studies)
# Reports (report.md + PNGs) go to docs/studies/<study>/; the job directories to RUNS_DIR/<study>.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/studies}; shift || true
STUDIES=${*:-"schedules_weightings langevin samplers_nfe process_parameterization"}
BIN=${BIN:-.venv/bin}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

report() { rm -rf "docs/studies/$1"; "$BIN/difflab-report" "$RUNS/$1" --out "docs/studies/$1"; }
# difflab-train -m skips finished jobs by itself; difflab-eval refuses to overwrite, so a scored sweep is kept
scored() { [ -f "$RUNS/$1/multirun.yaml" ] && echo "$RUNS/$1 already scored (delete it to score again)"; }

for study in $STUDIES; do
  case $study in
    schedules_weightings)  # seed 000 (VDM): schedule x weighting on continuous-SNR, each job trained then scored
      "$BIN/difflab-train" -m experiment=gmm process=continuous_snr schedule=linear,cosine weighting=elbo,simple,snr,min_snr \
        trainer.max_steps=2000 'eval_at_end=[nll_elbo,swd,weights]' output="$RUNS/$study"
      # the exact model on both schedules (same log-SNR endpoints): the continuous ELBO is the same number
      scored "${study}_oracle" || "$BIN/difflab-eval" -m model=oracle data=gmm process=continuous_snr schedule=linear,cosine \
        'metrics=[nll_elbo]' output="$RUNS/${study}_oracle"
      report "${study}_oracle" ;;
    langevin)  # seed 002 (NCSN): annealed Langevin's sigma_max / sigma_min / levels on the exact score
      scored "$study" || "$BIN/difflab-eval" -m model=oracle data=gmm 'data.means=[[-5,-5],[5,5]]' 'data.stds=[1,1]' 'data.weights=[0.2,0.8]' \
        process=ve process.sigma_max=1,10,50 process.sigma_min=0.01,0.5 sampler=annealed_langevin sampler.steps=1,10,100 \
        'metrics=[weights,swd]' num_samples=2048 output="$RUNS/$study" ;;
    samplers_nfe)  # sampler x NFE on the exact oracle (VP-SDE)
      scored "$study" || "$BIN/difflab-eval" -m model=oracle data=gmm process=vp \
        sampler=ddim,dpm_solver,dpm_solver_3m,unipc,ode_euler,ode_heun,euler_maruyama,ancestral,edm_stochastic \
        sampler.steps=5,10,20,50 'metrics=[swd,weights]' num_samples=4096 output="$RUNS/$study" ;;
    process_parameterization)  # process x parameterization, each trained on the 2-D mixture then scored
      "$BIN/difflab-train" -m experiment=gmm process=vp,ve,continuous_snr parameterization=eps,x0,v,score \
        trainer.max_steps=1000 evaluation.mc_samples=1000000 'eval_at_end=[nll_elbo,swd,weights]' output="$RUNS/$study" ;;
    *) echo "unknown study $study" >&2; exit 2 ;;
  esac
  report "$study"
done
