"""Training progress and the run's log file.

On a terminal: a live bar (steps, elapsed, ETA, the latest loss terms). Elsewhere (a pipe, `tee`, a Slurm or CI
log): one plain line every `train.log_every` steps, since a bar cannot redraw there. Those plain lines, and
everything else printed during a run, are appended to `<run>/train.log` (`tee_to_file`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.control import Control
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


def _term_pairs(values: dict[str, float]) -> list[str]:
    pairs = [f"{k} {v:.4g}" for k, v in values.items() if k != "lr"]
    return pairs + ([f"lr {values['lr']:.2e}"] if "lr" in values else [])


def format_terms(values: dict[str, float]) -> str:
    return " ".join(_term_pairs(values))


def fit_terms(values: dict[str, float], room: int) -> str:
    """As many whole `name value` pairs of `format_terms` as fit in `room` characters (a cut pair says nothing)."""
    shown = ""
    for pair in _term_pairs(values):
        longer = f"{shown} {pair}" if shown else pair
        if len(longer) > room:
            break
        shown = longer
    return shown


# The live bar's columns besides the description and the loss terms: "<step>/<total>", the elapsed time, "ETA" and
# the remaining time (H:MM:SS, 8 characters from 10 hours on), one space between columns. The bar takes what is left
# up to BAR_WIDTH (never less than MIN_BAR_WIDTH), the loss terms the rest: the step total and the ETA stay whole.
CLOCK_WIDTH, BAR_WIDTH, MIN_BAR_WIDTH, MIN_TERMS_WIDTH = 8, 30, 5, 24


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class _Tee:
    """A rich render hook: what is printed on the console is also printed, plain, on the log console."""

    def __init__(self, log: Console) -> None:
        self.log = log

    def process_renderables(self, renderables):
        shown = [r for r in renderables if not isinstance(r, Control)]  # a live display's cursor moves
        if shown:
            self.log.print(*shown)
        return renderables


class _NamedFile:
    """A text file whose write errors name it: a full disk raises ENOSPC without a file name."""

    def __init__(self, handle: IO[str], path: Path) -> None:
        self.handle, self.path = handle, path

    def write(self, text: str) -> int:
        try:
            return self.handle.write(text)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc

    def flush(self) -> None:
        try:
            self.handle.flush()
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc


@contextlib.contextmanager
def tee_to_file(console: Console, path: Path) -> Iterator[Console]:
    """While open, everything printed on `console` is also appended, as plain text, to `path`; yields the
    console that writes to the file alone (for lines that must reach the file but not the screen)."""
    handle = path.open("a", encoding="utf-8")
    try:
        log = Console(file=_NamedFile(handle, path), width=120, color_system=None, force_terminal=False,
                      highlight=False, soft_wrap=True, emoji=False)
        log.print(Text(time.strftime("---- %Y-%m-%d %H:%M:%S%z")))
        console.push_render_hook(_Tee(log))
        try:
            yield log
        finally:
            console.pop_render_hook()
    finally:
        try:
            handle.close()
        except OSError as exc:  # the last buffered lines on a full disk
            raise OSError(exc.errno, exc.strerror, str(path)) from exc


class TrainingProgress:
    """The trainer's progress: a live bar on a terminal, else a plain line every `every` steps (step, loss terms,
    lr, s/step, ETA). `console` None shows nothing; `log`, when given, gets the plain lines in any case."""

    def __init__(self, console: Console | None, description: str, every: int, log: Console | None = None) -> None:
        self.console = console
        self.description = description
        self.every = max(1, every)
        self.log = log
        self._bar: Progress | None = None
        self._task = None
        self._total = 0
        self._fixed = 0  # characters of a bar line besides the loss terms
        self._mark = (0, 0.0)  # (step, time) of the last plain line, which s/step is measured from

    def start(self, total: int, completed: int) -> None:
        self._total, self._mark = total, (completed, time.perf_counter())
        if self.console is not None and self.console.is_terminal:
            self._fixed = len(self.description) + len(f"{total}/{total}") + 2 * CLOCK_WIDTH + len("ETA") + 6
            bar = max(MIN_BAR_WIDTH, min(BAR_WIDTH, self.console.width - self._fixed - MIN_TERMS_WIDTH))
            self._fixed += bar
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(bar_width=bar), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[terms]}"),
                console=self.console,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=total, completed=completed, terms="")
        if completed:
            self._plain(f"{self.description}: resuming at step {completed}/{total}")

    def line(self, step: int, values: dict[str, float]) -> str:
        """The plain progress line. s/step and ETA use the steps since the previous line, not since the start:
        after a suspended machine or a stopped job the ETA is right again one line later."""
        now = time.perf_counter()
        done = step - self._mark[0]
        per_step = (now - self._mark[1]) / done if done > 0 else 0.0
        self._mark = (step, now)
        return (f"{self.description} step {step}/{self._total} | {format_terms(values)} | {per_step:.3f} s/step | "
                f"ETA {_clock(per_step * (self._total - step))}")

    def update(self, step: int, values: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step, terms=fit_terms(values, self.console.width - self._fixed))
        if step % self.every == 0 or step == self._total:
            self._plain(self.line(step, values))

    def _plain(self, text: str) -> None:
        """A line for the log and, where no bar is drawn, for the console (whose output the log already tees)."""
        if self.console is not None and self._bar is None:
            self.console.print(Text(text), soft_wrap=True)
        elif self.log is not None:
            self.log.print(Text(text))

    def note(self, text: str) -> None:
        if self.console is not None:
            (self._bar.console if self._bar is not None else self.console).print(Text(text), soft_wrap=True)
        elif self.log is not None:
            self.log.print(Text(text))

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
