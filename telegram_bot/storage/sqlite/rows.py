"""Rows to records, the column lists they read, and the recall index's query helpers.

Pure functions, no I/O: every query that builds a `Turn` or a `Summary` selects the same columns,
in the same order, as the mapping function that reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ...models import ChatKey, Summary, Turn
from .. import records
from ..records import SUMMARY_COLUMNS as SUMMARY_COLUMNS
from ..records import TURN_COLUMNS as TURN_COLUMNS
from ..records import prefixed as prefixed


def _when(value: float) -> datetime:
    """SQLite keeps times as seconds since the epoch (UTC)."""
    return datetime.fromtimestamp(value, UTC)


def turn(row: Sequence[Any]) -> Turn:
    return records.turn(row, _when)


def summary(row: Sequence[Any]) -> Summary:
    return records.summary(row, _when)


def chat_token(chat: ChatKey) -> str:
    """The token the recall index stores with each message of `chat` (migration m005)."""
    sign = "n" if chat.chat_id < 0 else ""
    return f"c{sign}{abs(chat.chat_id)}t{chat.thread_id}"


def fts_query(words: Sequence[str]) -> str:
    """An FTS5 query matching any of `words`; each is a quoted string, so no user text can
    be FTS syntax. Words of four letters or more also match as prefixes ("sister" finds
    "sisters")."""
    terms = []
    for raw in words:
        word = "".join(ch for ch in raw if ch.isprintable()).strip()  # FTS5 rejects NUL
        if not word:
            continue
        quoted = '"' + word.replace('"', '""') + '"'
        terms.append(quoted + "*" if len(word) >= 4 else quoted)
    return " OR ".join(terms)
