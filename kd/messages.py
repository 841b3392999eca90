"""Console lines that carry user values (paths, option values, exception text).

Such text must reach the terminal verbatim: rich would read ``[...]`` in a path or in a list of
choices as markup and drop it, and would hard-wrap a long path in the middle of a file name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

LABEL_STYLES = {"error": "bold red", "warning": "yellow", "note": "yellow", "ready": "green"}


def say(console: Console, text: str, label: str | None = None) -> None:
    """Print ``text`` unparsed and unwrapped, after an optional styled ``label:`` prefix."""
    from rich.text import Text  # here, not above: the CLI imports this module while building its parser

    line = Text()
    if label is not None:
        line.append(f"{label}:", style=LABEL_STYLES.get(label, "bold"))
        line.append(" ")
    line.append(text)
    console.print(line, soft_wrap=True, highlight=False)
