"""`difflab-eval`: likelihoods and sample quality of a checkpoint or of the GMM oracle.

    difflab-eval model=oracle data=gmm metrics=[nll_ode,nll_elbo,swd,mmd] output=runs/eval
    difflab-eval ckpt_path=runs/x/checkpoints/last.ckpt metrics=[fid,kid,bpd_ode] output=runs/eval
    difflab-eval ckpt_path=... samples=runs/s/samples.npz metrics=[swd,fid]   # score existing samples

Writes `<output>/metrics.json`: every Monte Carlo estimate with `<metric>_se` beside it
(nats/dim for nll_*, bits/dim in 8-bit space for bpd_*), FIDs named by protocol with their
real-vs-real floor, `nfe` of the sampler, and for data=gmm the exact `nll` of the mixture; and
`samples.npz` with the samples it scored (the same as difflab-sample's for the same seed and
sampler). The work is `difflab.scoring.run` (metrics: `difflab.evaluation.evaluate`); this file composes.
"""
from __future__ import annotations

from pathlib import Path

from .. import scoring
from .common import user_chose
from .entry import hydra_entry

PROG = scoring.PROG
_user_chose = user_chose  # module-level, so tests can pretend data= was typed


def run(cfg, output_dir: Path) -> dict:
    return scoring.run(cfg, output_dir, data_chosen=_user_chose("data"))


main = hydra_entry("eval", PROG)(run)

if __name__ == "__main__":
    main()
