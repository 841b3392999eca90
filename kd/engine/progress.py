"""Rich progress bar for training: steps, elapsed time, ETA and the latest loss terms."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def format_terms(values: dict[str, float]) -> str:
    shown = {k: v for k, v in values.items() if k != "lr"}
    return " ".join(f"{k} {v:.4g}" for k, v in shown.items()) + (f" lr {values['lr']:.2e}" if "lr" in values else "")


class RichProgress:
    def __init__(self, console: Console, description: str) -> None:
        self.console = console
        self.description = description
        self._bar: Progress | None = None
        self._task = None

    def start(self, total: int, completed: int) -> None:
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[terms]}"),
            console=self.console,
        )
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=total, completed=completed, terms="")

    def update(self, step: int, values: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step, terms=format_terms(values))

    def note(self, text: str) -> None:
        (self._bar.console if self._bar is not None else self.console).print(text, highlight=False)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
