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


def _link_targets(path: Path) -> list[str]:
    """The local targets of a markdown file's links and images (no URLs, no #anchors alone)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:|#", t)]


@pytest.mark.parametrize("doc", ["README.md"] + sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")))
def test_links_resolve(doc):
    """Every link and image of the README and of docs/*.md points at a file or folder that exists
    (relative to the file), and every repository path the README names (`docs/...`, `tests/...`) exists."""
    path = ROOT / doc
    missing = [t for t in _link_targets(path) if not (path.parent / t).exists()]
    if doc == "README.md":
        named = re.findall(r"(?<![\w./-])((?:docs|tests|bench|sweeps|src|conf|docker|\.ci)/[\w./-]*\w)", path.read_text())
        missing += [n for n in named if not (ROOT / n).exists()]
    assert not missing, f"{doc} points at paths that do not exist: {sorted(set(missing))}"


#: A time, disk or test-count figure in the README's text (one place to update, so no stale copy stays behind).
FIGURES = {"test count": r"\b\d[\d,]*\s+(?:tests|passed|skipped)\b",
           "time": r"\b\d+(?:\.\d+)?\s*(?:min|minutes?|s|sec|seconds?|h|hours?)\b",
           "disk": r"\b\d+(?:\.\d+)?\s*[KMGT]i?B\b"}


def test_readme_states_its_time_disk_and_test_count_figures_once():
    """The README's figures stand in one paragraph, under a `<!-- figures: ... -->` comment, so that the
    next measurement updates one place: one time for `make demo` and one for `make test`, the test count,
    the size of .venv; no such figure anywhere else in the README."""
    text = (ROOT / "README.md").read_text()
    assert text.count("<!-- figures:") == 1, "README: one `<!-- figures: ... -->` comment above its figures"
    start = text.index("<!-- figures:")
    end = text.index("-->", start) + 3
    para_end = text.find("\n\n", end)
    para = text[end:para_end]
    rest = text[:start] + text[para_end:]
    for what, pattern in FIGURES.items():
        assert re.search(pattern, para), f"README's figures paragraph states no {what}"
        stray = re.findall(rf".{{0,40}}{pattern}", rest)
        assert not stray, f"README: a {what} figure outside the figures paragraph (move it there or to docs/): {stray}"
    assert "make demo" in para and "make test" in para and ".venv" in para
    assert len(re.findall(FIGURES["test count"], para)) == 1 and len(re.findall(FIGURES["disk"], para)) == 1


def test_the_studies_benchmarks_and_speed_live_in_docs():
    """The README's long sections (studies, benchmarks, speed) are in docs/, which the README links
    beside its one short table of each."""
    readme = (ROOT / "README.md").read_text()
    studies = (ROOT / "docs" / "studies.md").read_text()
    assert all(f"**{i}. " in studies for i in range(1, 5)), "docs/studies.md: the four seeds' studies"
    assert "## Samplers at low NFE" in (ROOT / "docs" / "benchmarks.md").read_text()
    assert "bench/recipe_throughput.py" in (ROOT / "docs" / "speed.md").read_text()
    for doc in ("docs/studies.md", "docs/benchmarks.md", "docs/speed.md"):
        assert f"]({doc})" in readme, f"README does not link {doc}"
    assert "### The seeds' studies" not in readme and "## Speed" not in readme
