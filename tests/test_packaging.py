"""The declared ranges (pyproject.toml), the tested set (constraints.txt) and the floors
(`make floors`, installed by `make test-floor`) agree with each other and with torchvision's
compatibility table (docs/pitfalls.md: a mismatched torch/torchvision pair fails to load the
operators FID needs)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def _pins(lines) -> dict[str, Version]:
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not a name==version pin: {line!r}"
            pins[canonicalize_name(name)] = Version(version.strip())
    return pins


def _torchvision_for(torch: Version) -> tuple[int, int]:
    """torchvision's README table: torch 2.0 <-> 0.15, 2.1 <-> 0.16, ..., 2.14 <-> 0.29."""
    assert torch.major == 2, f"no torchvision rule for torch {torch}"
    return 0, torch.minor + 15


def test_every_declared_requirement_has_a_floor_that_make_floors_pins():
    if shutil.which("make") is None:
        pytest.skip("no make here")
    out = subprocess.run(["make", "-s", "floors"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    floors = _pins(out.splitlines())
    expected = {}
    for req in _declared():
        lower = [s.version for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{req}: declare exactly one '>=' floor, so `make test-floor` can test it"
        expected[canonicalize_name(req.name)] = Version(lower[0])
    assert floors == expected


def test_tested_set_lies_within_the_declared_ranges():
    pins = _pins(l for l in (ROOT / "constraints.txt").read_text().splitlines() if not l.startswith("#"))
    for req in _declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints.txt pins no {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"constraints.txt: {req.name}=={pins[name]} is outside {req}"


@pytest.mark.parametrize("source", ["constraints.txt", "floors", "installed"])
def test_torch_and_torchvision_form_a_matching_pair(source):
    if source == "constraints.txt":
        pins = _pins(l for l in (ROOT / source).read_text().splitlines() if not l.startswith("#"))
        torch_v, vision_v = pins["torch"], pins["torchvision"]
    elif source == "floors":
        req = {canonicalize_name(r.name): r for r in _declared()}
        floor = lambda name: Version(next(s.version for s in req[name].specifier if s.operator == ">="))  # noqa: E731
        torch_v, vision_v = floor("torch"), floor("torchvision")
    else:
        import torch
        import torchvision

        torch_v, vision_v = Version(torch.__version__), Version(torchvision.__version__)
    assert (vision_v.major, vision_v.minor) == _torchvision_for(torch_v), (
        f"{source}: torch {torch_v} needs torchvision 0.{torch_v.minor + 15}.x, not {vision_v}"
    )


def test_torchvision_operators_load():
    """The pair actually installed loads torchvision's compiled operators (FID's Inception needs them)."""
    import torch
    from torchvision.ops import nms

    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.01], [2.0, 2.0, 3.0, 3.0]])
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
