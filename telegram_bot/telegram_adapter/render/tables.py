"""Tables as monospace text: Telegram has no tables, so a table becomes a ``pre`` block.

The renderer collects cell texts into a ``Table`` while it walks the table's events (cells
may hold inline Markdown; its formatting is dropped), then lays the rows out with padded
columns, measuring East Asian wide characters as two columns.
"""

from __future__ import annotations

import unicodedata

__all__ = ["Table", "format_table"]


class Table:
    """The cells of a table being walked: finished rows, the current row, the current cell."""

    __slots__ = ("cell", "row", "rows")

    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.row: list[str] = []
        self.cell: list[str] = []


def format_table(rows: list[list[str]]) -> str:
    """Lay a table out as monospace text (Telegram has no tables)."""
    columns = max((len(r) for r in rows), default=0)
    widths = [0] * columns
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], _display_width(cell))
    lines = [_table_line(row, widths) for row in rows]
    if len(lines) > 1:
        lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _table_line(row: list[str], widths: list[int]) -> str:
    cells = [c + " " * (w - _display_width(c)) for c, w in zip(row, widths, strict=False)]
    return " | ".join(cells).rstrip()


def _display_width(s: str) -> int:
    if s.isascii():
        return len(s)
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)
