"""The docs name every config option there is: the README's config-group table lists each YAML
of every group under conf/, every option file opens with a comment saying what it is, and
docs/samplers.md describes every sampler. A new option without docs fails here."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _groups() -> dict[str, list[str]]:
    """{group: [option, ...]} for every folder of conf/ holding option YAMLs (hydra/launcher too)."""
    out = {}
    for d in sorted(p for p in CONF.rglob("*") if p.is_dir()):
        opts = sorted(f.stem for f in d.glob("*.yaml"))
        if opts:
            out[d.relative_to(CONF).as_posix()] = opts
    return out


def _readme_rows() -> dict[str, str]:
    """The README's config-group table: {group: the row's text}."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Config groups")
    rows = {}
    for line in text[start:].splitlines()[1:]:
        if line.startswith("## "):
            break
        m = re.match(r"\| `([\w/]+)` \|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_conf_has_the_groups_the_readme_names():
    groups, rows = _groups(), _readme_rows()
    assert len(groups) >= 13 and {"process", "sampler", "experiment"} <= set(groups)
    assert set(rows) == set(groups), (
        f"README's config-group table: missing {sorted(set(groups) - set(rows))}, "
        f"no such group {sorted(set(rows) - set(groups))}")


@pytest.mark.parametrize("group", sorted(_groups()))
def test_readme_names_every_option_of_the_group(group):
    row = _readme_rows().get(group, "")
    opts = _groups()[group]
    if opts == ["default"]:  # a one-file group (evaluation): the row says what it holds
        assert row.strip(), f"README: the `{group}` row says nothing"
        return
    words = set(re.findall(r"[\w.-]+", row))
    missing = [o for o in opts if o not in words]
    assert not missing, f"README's `{group}` row does not name {missing}"


def test_every_option_file_opens_with_a_comment():
    silent = [str(f.relative_to(ROOT)) for f in sorted(CONF.rglob("*.yaml"))
              if not f.read_text().lstrip().startswith("#")]
    assert not silent, f"option files without a comment saying what they are: {silent}"


def test_docs_samplers_describes_every_sampler():
    doc = (ROOT / "docs" / "samplers.md").read_text()
    missing = [s for s in _groups()["sampler"] if f"`{s}`" not in doc]
    assert not missing, f"docs/samplers.md does not describe {missing}"
