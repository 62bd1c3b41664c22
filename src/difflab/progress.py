"""What a command says while it works: no step longer than a few seconds runs in silence.

`Progress(what, total, unit)` is a context manager around one step (a likelihood estimate,
sampling, feature extraction, grid tuning, writing a report). A step that ends within `DELAY`
seconds prints nothing; one that runs longer prints a line then and every `EVERY` seconds after,
and one last line with its duration when it ends:

      difflab-eval: nll_elbo  1.31M/4M draws  5.0 s  eta 10 s
      difflab-eval: nll_elbo  4M draws in 15.2 s

Plain lines on stderr (no bar, no carriage return), so a terminal and a log file (SLURM, nohup)
read the same; each fits `WIDTH` (80) columns. They start with two spaces, like the model
summary, so they are never taken for a command's own one-line messages (`difflab-eval: error:
...`). A background thread prints them, so one long call (a 1000-sample batch, a reference ODE
solve) is announced too; `update(n)` / `set(done)` only count. Only process rank 0 of a
distributed run prints. `program(name)` names the command in the lines (default: the console
script's name, else "difflab").
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Iterable, Iterator, TextIO

#: seconds a step runs before its first line, and between lines after that
DELAY = 5.0
EVERY = 10.0
#: columns a line may take (a terminal's and a log viewer's width)
WIDTH = 80

_programs: list[str] = []


@contextlib.contextmanager
def program(name: str) -> Iterator[None]:
    """Name the command in the progress lines printed inside the `with` (e.g. "difflab-eval")."""
    _programs.append(name)
    try:
        yield
    finally:
        _programs.pop()


def program_name() -> str:
    if _programs:
        return _programs[-1]
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return script if script.startswith("difflab-") else "difflab"


def _rank_zero() -> bool:
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) in ("", "0")


def count(n: float) -> str:
    """4000000 → 4M, 1310720 → 1.31M, 65536 → 65.5k, 2048 → 2048."""
    n = float(n)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(n) >= div:
            scale = 1e3 if suffix == "k" else div
            return f"{n / scale:.3g}{suffix}"
    return f"{int(n)}" if n == int(n) else f"{n:.3g}"


def seconds(s: float) -> str:
    """3.2 s, 45 s, 2 min 05 s."""
    if s < 10:
        return f"{s:.1f} s"
    if s < 120:
        return f"{s:.0f} s"
    m, r = divmod(int(round(s)), 60)
    return f"{m} min {r:02d} s"


def fit(line: str, width: int = WIDTH) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


class Progress:
    """One step's progress lines (module docstring).

    what: the step ("nll_elbo", "sampling (ddim, 50 steps)"); total, unit: how much work it is
    (4_000_000, "draws"), or None for a step that is not counted (its lines give the elapsed
    time). `note` is appended to the lines (e.g. the best distance so far). enabled=False: silent.
    """

    def __init__(self, what: str, total: float | None = None, unit: str = "", *, enabled: bool | None = True,
                 stream: TextIO | None = None, delay: float | None = None, every: float | None = None):
        self.what, self.total, self.unit = what, total, unit
        self.enabled = enabled is not False and _rank_zero()
        self.stream = stream
        self.delay = DELAY if delay is None else float(delay)
        self.every = EVERY if every is None else float(every)
        self.done = 0
        self.note = ""
        self.lines = 0
        self.prefix = f"  {program_name()}: "
        self._t0 = time.perf_counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- counting
    def update(self, n: float = 1) -> None:
        self.done += n

    def set(self, done: float) -> None:
        self.done = done

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    # -- lines
    def _amount(self, final: bool) -> str:
        if self.total is None:
            return count(int(self.done)) + f" {self.unit}" if self.done and self.unit else ""
        if final and self.done >= self.total:
            return f"{count(self.total)} {self.unit}".strip()
        return f"{count(int(self.done))}/{count(self.total)} {self.unit}".strip()

    def line(self, final: bool = False) -> str:
        """The step's line now (or its last line): what, how much of it, seconds, eta, note; the
        note is left out, then `what` cut short, where the line would pass WIDTH columns."""
        t = self.elapsed
        amount = self._amount(final)
        if final:
            tail = f"{amount} in {seconds(t)}" if amount else f"done in {seconds(t)}"
        else:
            parts = [amount] if amount else []
            parts.append(seconds(t))
            if self.total and 0 < self.done < self.total:
                parts.append(f"eta {seconds(t * (self.total - self.done) / self.done)}")
            tail = "  ".join(parts)
        if self.note and len(self.prefix) + len(self.what) + len(tail) + len(self.note) + 4 <= WIDTH:
            tail += f"  {self.note}"
        room = WIDTH - len(self.prefix) - len(tail) - 2
        what = self.what if len(self.what) <= room else self.what[: max(room - 3, 8)] + "..."
        return fit(f"{self.prefix}{what}  {tail}")

    def _print(self, final: bool = False) -> None:
        with self._lock:
            print(self.line(final), file=self.stream or sys.stderr, flush=True)
            self.lines += 1

    def _beat(self) -> None:
        wait = self.delay
        while not self._stop.wait(wait):
            self._print()
            wait = self.every

    # -- context
    def __enter__(self) -> "Progress":
        self._t0 = time.perf_counter()
        if self.enabled:
            self._thread = threading.Thread(target=self._beat, name="difflab-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            if exc_type is None and (self.lines or self.elapsed >= self.delay):
                self._print(final=True)


def track(items: Iterable, what: str, total: float | None = None, unit: str = "", **kwargs) -> Iterator:
    """Iterate over `items` inside a `Progress` that counts one per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(what, total, unit, **kwargs) as p:
        for item in items:
            yield item
            p.update(1)
