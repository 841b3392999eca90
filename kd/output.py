"""Tables for people: every CLI table is printed here, so it reads the same on any terminal and in a log file.

A table never cuts a cell: it is printed whole when it fits the width, else its columns are folded into groups
that fit (the key columns repeated in each group), else each row becomes a block of ``column: value`` lines.
Cells are literal text (a ``[`` in a path is not rich markup); only wrap columns (descriptions, messages) break,
and only at spaces. When stdout is not a terminal (``| tee``, Slurm logs, CI) the output is plain: no colour, no
box-drawing characters. The width is the terminal's, or ``$COLUMNS``, or 80 when piped.

rich is imported inside the functions: the CLI modules import this one while `kdbench --help` builds its parser.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

# Like rich's SIMPLE_HEAD, in ASCII, for output that is not a terminal.
PLAIN_HEAD = "    \n    \n -- \n    \n    \n    \n    \n    \n"
WRAP_MIN = 24  # a wrap column is narrowed to this (or its longest word) before the table is folded


@dataclass
class Column:
    name: str
    justify: str = "left"
    wrap: bool = False  # may break between words (descriptions, error messages); every other column never breaks


@dataclass
class TextTable:
    """Columns and rows of literal text; `key` leading columns identify a row and repeat when the table folds."""

    title: str = ""
    caption: str = ""
    key: int = 1
    columns: list[Column] = field(default_factory=list)
    rows: list[tuple[list[Text], str | None, bool]] = field(default_factory=list)

    def add_column(self, name: str, justify: str = "left", wrap: bool = False) -> None:
        self.columns.append(Column(name, justify, wrap))

    def add_row(self, *cells: str | Text, style: str | None = None, end_section: bool = False) -> None:
        """Cells are printed verbatim; pass `styled(...)` to colour one."""
        from rich.text import Text

        texts = [cell.copy() if isinstance(cell, Text) else Text(str(cell)) for cell in cells]
        self.rows.append((texts, style, end_section))

    def cells(self, index: int) -> list[Text]:
        return [row[0][index] for row in self.rows]


def markdown_table(header: list[str], rows: list[list[str]], left: int | None = None) -> list[str]:
    """A markdown table's lines; the first `left` columns left-aligned (all by default), the rest right-aligned."""
    left = len(header) if left is None else left
    return (["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * left + ["---:"] * (len(header) - left)) + "|"]
            + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows])


def duration(seconds: float | None) -> str:
    """A span of time for people: '45s', '12m05s', '3h04m'; '-' when unknown."""
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def styled(*parts: str | tuple[str, str]) -> Text:
    """A cell of literal parts, each plain or (text, style): `styled(("failed", "red"), ": " + message)`."""
    from rich.text import Text

    return Text.assemble(*parts)


def out_console(stderr: bool = False, quiet: bool = False) -> Console:
    """A console for command output; user values in it go through `print_table` or `kd.messages.say`."""
    from rich.console import Console

    return Console(stderr=stderr, quiet=quiet, highlight=False)


def _need(table: TextTable, index: int) -> int:
    """Width a column needs so that no cell breaks (a wrap column: its longest word, at least WRAP_MIN)."""
    from rich.cells import cell_len

    column = table.columns[index]
    texts = [column.name, *(cell.plain for cell in table.cells(index))]
    natural = max(cell_len(line) for text in texts for line in text.splitlines() or [""])
    if not column.wrap:
        return natural
    longest_word = max((cell_len(word) for text in texts for word in text.split()), default=0)
    return min(natural, max(longest_word, WRAP_MIN))


def _fits(widths: list[int], width: int) -> bool:
    # Cells have one space of padding on each inner side and one separator column between them.
    return sum(widths) + 3 * (len(widths) - 1) <= width


def column_groups(table: TextTable, width: int) -> list[list[int]] | None:
    """Column indices of each printed group (key columns first in every group), or None when no group fits."""
    needs = [_need(table, i) for i in range(len(table.columns))]
    keys = list(range(min(table.key, len(table.columns))))
    rest = list(range(len(keys), len(table.columns)))
    if not rest:
        return [keys] if _fits([needs[i] for i in keys], width) else None
    groups: list[list[int]] = []
    current: list[int] = []
    for index in rest:
        if _fits([needs[i] for i in keys + current + [index]], width):
            current.append(index)
            continue
        if not current or not _fits([needs[i] for i in keys + [index]], width):
            return None  # this column does not fit beside the key columns even alone
        groups.append(keys + current)
        current = [index]
    groups.append(keys + current)
    return groups


def _rich_table(table: TextTable, indices: list[int], plain: bool) -> Table:
    from rich import box
    from rich.table import Table

    view = Table(box=box.Box(PLAIN_HEAD, ascii=True) if plain else box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                 header_style="" if plain else "bold", safe_box=plain)
    for i in indices:
        column = table.columns[i]
        view.add_column(column.name, justify=column.justify, no_wrap=not column.wrap, overflow="fold",
                        min_width=_need(table, i) if column.wrap else None)
    for cells, style, end_section in table.rows:
        view.add_row(*(cells[i] for i in indices), style=None if plain else style, end_section=end_section)
    return view


def _print_records(console: Console, table: TextTable, width: int) -> None:
    """Narrow layout: one block per row, the key cells as its heading and one `column: value` line per cell."""
    from rich.cells import cell_len
    from rich.text import Text

    keys = range(min(table.key, len(table.columns)))
    label_width = max(cell_len(c.name) for c in table.columns)
    for n, (cells, _, _) in enumerate(table.rows):
        if n:
            console.print()
        heading = Text(" · ").join(cells[i] for i in keys)
        console.print(heading if console.is_terminal else Text(heading.plain), soft_wrap=True)
        for i, column in enumerate(table.columns[len(keys):], start=len(keys)):
            prefix = f"  {column.name.ljust(label_width)}  "
            value = cells[i] if console.is_terminal else Text(cells[i].plain)
            if column.wrap and value.plain:
                lines = _wrap(value.plain, max(width - len(prefix), 16)).splitlines()
                value = Text(("\n" + " " * len(prefix)).join(lines))
            console.print(Text(prefix).append_text(value), soft_wrap=True)


def print_table(table: TextTable, console: Console | None = None) -> None:
    """Print `table` whole at the console's width: as is, folded into column groups, or one block per row."""
    from rich.text import Text

    console = console or out_console()
    width = console.width
    plain = not console.is_terminal
    if table.title:
        console.print(Text(_wrap(table.title, width), style="" if plain else "bold"), soft_wrap=True)
    groups = column_groups(table, width)
    if groups is None:
        _print_records(console, table, width)
    else:
        for n, indices in enumerate(groups):
            if n:
                console.print()
            view = _rich_table(table, indices, plain)
            if plain:  # without the padding rich adds to the width of the table: clean lines in a log file
                lines = console.render_lines(view, console.options, pad=False)
                console.out("\n".join("".join(s.text for s in line).rstrip() for line in lines), highlight=False)
            else:
                console.print(view)
    if table.caption:
        console.print(Text(_wrap(table.caption, width), style="" if plain else "dim"), soft_wrap=True)


def _wrap(text: str, width: int) -> str:
    """Break at spaces only: a path or a number longer than the width stays whole on its own line."""
    return "\n".join(textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False))
