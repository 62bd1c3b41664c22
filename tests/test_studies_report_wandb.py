"""difflab-report --wandb ENTITY/PROJECT --group G: the same table from W&B runs as from a
multirun directory, read here from a fake `wandb.Api` (no network): each run's summary gives its
metrics, its name its overrides, its history its loss curves."""
import sys
import types

import pytest

from difflab.cli.report import main as report_main

from helpers.reports import table_rows


class FakeRun:
    def __init__(self, name, summary, history, config):
        self.name, self.id, self.summary, self.config, self._history = name, name[-6:], summary, config, history

    def scan_history(self):
        return iter(self._history)


def fake_runs():
    runs = []
    for i, s in enumerate(("linear", "cosine")):
        history = [{"_step": k, "trainer/global_step": 50 * (k + 1) - 1, "train/loss": 2.0 - 0.1 * k - i, "epoch": 0} for k in range(3)]
        history.append({"_step": 3, "trainer/global_step": 149, "val/loss": 1.5 + i, "epoch": 0})
        summary = {"nll_elbo": 1.25 + 0.5 * i, "nll_elbo_se": 0.0123 + i * 0.01, "swd": 0.03125 * (i + 1), "nfe": 20,
                   "train/loss": 1.8 - i, "val/loss": 1.5 + i, "epoch": 0, "trainer/global_step": 149, "_runtime": 12.0,
                   "_wandb": {"runtime": 12}}
        runs.append(FakeRun(f"experiment=gmm,schedule={s}", summary, history, {"seed": 0, "process": {"schedule": s}}))
    return runs


class FakeApi:
    calls = []

    def runs(self, path, filters=None):
        FakeApi.calls.append((path, filters))
        return fake_runs()


def use_api(monkeypatch, api_class):
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=api_class))
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)


def test_report_from_wandb_runs(tmp_path, monkeypatch, capsys):
    use_api(monkeypatch, FakeApi)
    out = tmp_path / "report"
    report_main(["--wandb", "me/difflab", "--group", "study", "--out", str(out)])
    assert FakeApi.calls[-1] == ("me/difflab", {"group": "study"})
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    text = (out / "report.md").read_text()
    assert "`experiment=gmm`" in text and "group study" in text
    rows = table_rows(out / "report.md")
    runs = {r.name.split("schedule=")[1]: r for r in fake_runs()}
    assert [r["schedule"] for r in rows] == ["cosine", "linear"]  # by value, as the grids (W&B lists newest first)
    for r in rows:
        summary = runs[r["schedule"]].summary
        assert r["nll_elbo"] == f"{summary['nll_elbo']:.4g} ± {summary['nll_elbo_se']:.2g}"
        assert r["swd"] == f"{summary['swd']:.4g}" and r["nfe"] == "20"
        assert float(r["val/loss (last)"]) == summary["val/loss"]
    # the logged training values (in the history) and W&B's own keys are not results
    assert not {"train/loss", "epoch", "trainer/global_step", "_runtime", "nll_elbo_se"} & set(rows[0])
    assert (out / "loss_curves.png").stat().st_size > 1000


def test_no_key_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=FakeApi))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    with pytest.raises(SystemExit) as e:
        report_main(["--wandb", "me/difflab", "--group", "study", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "WANDB_API_KEY" in err and "wandb login" in err


def test_unreachable_wandb_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    class Offline:
        def runs(self, path, filters=None):
            raise ConnectionError("HTTPSConnectionPool(host='api.wandb.ai', port=443): Max retries exceeded\n  with url: /graphql")

    use_api(monkeypatch, Offline)
    with pytest.raises(SystemExit) as e:
        report_main(["--wandb", "me/difflab", "--group", "study", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "could not read W&B runs of me/difflab" in err


def test_wandb_needs_a_group(capsys):
    with pytest.raises(SystemExit) as e:
        report_main(["--wandb", "me/difflab"])
    assert e.value.code == 2 and "--group" in capsys.readouterr().err
