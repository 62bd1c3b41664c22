"""Reading difflab-report's report.md back."""


def table_rows(report):
    """The rows of the per-job table (the first table; the per-metric grids follow it), as dicts by column."""
    text = report.read_text().splitlines()
    start = next(i for i, line in enumerate(text) if line.startswith("|"))
    lines = [line for line in text[start:] if line.startswith("|") or not line.strip()]
    lines = lines[:lines.index("")] if "" in lines else lines
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
