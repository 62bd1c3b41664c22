"""Comparing finished runs: their last.ckpt state bit for bit, and their logged training rows."""
import csv

import torch

#: an image recipe with DataLoader workers (digits, 8x8: with workers the batches come from 2 loader processes)
WORKERS = ["experiment=digits", "data.num_workers=2", "data.batch_size=32", "model.hidden=32",
           "model.depth=1", "model.emb_dim=16", "callbacks=none", "threads=1", "trainer.val_check_interval=100000",
           "trainer.log_every_n_steps=5", "+trainer.enable_progress_bar=false", "checkpoint_every=50", "trainer.max_steps=400"]


def assert_same_state(a, b, steps):
    """Two last.ckpt dicts hold the same state after `steps` optimiser steps, bit for bit."""
    assert a["global_step"] == b["global_step"] == steps
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert a["ema"]["num_updates"] == b["ema"]["num_updates"] == steps
    for k, v in a["ema"]["shadow"].items():
        assert torch.equal(v, b["ema"]["shadow"][k]), f"ema {k}"
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), f"optimizer {i}.{k}"
    assert a["lr_schedulers"] == b["lr_schedulers"]


def rows(run):
    """(step, train loss) of every logged training row (the epoch counter of a run stopped mid-epoch
    restarts at the next epoch on resume; the steps, and the data of each step, do not change)."""
    with open(run / "logs" / "metrics.csv") as f:
        return [(int(r["step"]), r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
