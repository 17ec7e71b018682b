"""Rows to records, the column lists they read, and the recall query's helpers.

Pure functions, no I/O. asyncpg returns a `Record` for a row and a plain tuple for a `ROW(...)`
inside a query (how `backlog` and `last_exchange` return several kinds of rows in one); both
are read by position, so every query that builds a `Turn` or a `Summary` selects the same
columns, in the same order, as the function that reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ...models import ChatKey, Summary, Turn
from .. import records
from ..records import SUMMARY_COLUMNS as SUMMARY_COLUMNS
from ..records import TURN_COLUMNS as TURN_COLUMNS
from ..records import prefixed as prefixed

# The text search configuration of migration p002 (language-neutral, accents folded).
TEXT_SEARCH_CONFIG = "telegram_bot_text"


def _when(value: datetime) -> datetime:
    """asyncpg returns a `timestamptz` as an aware datetime already."""
    return value


def turn(row: Sequence[Any]) -> Turn:
    return records.turn(row, _when)


def summary(row: Sequence[Any]) -> Summary:
    return records.summary(row, _when)


def chat_token(chat: ChatKey) -> str:
    """The tsquery matching the lexeme p002 adds to each message of `chat` ('#c42t0',
    '#cn100t7'): the text parser never makes a lexeme with '#', so no word can be one."""
    sign = "n" if chat.chat_id < 0 else ""
    return f"'#c{sign}{abs(chat.chat_id)}t{chat.thread_id}'"


def tsquery(words: Sequence[str]) -> str:
    """A `to_tsquery` text matching any of `words`; each is a quoted lexeme (quotes doubled,
    backslashes escaped), so no user text can be query syntax. Words of four letters or more
    also match as prefixes ("sister" finds "sisters"), as the SQLite backend's do. A word
    without a letter or digit could only ever be an empty query, and is left out."""
    terms = []
    for raw in words:
        word = "".join(ch for ch in raw if ch.isprintable()).strip()  # no NUL in PostgreSQL text
        if not any(ch.isalnum() for ch in word):
            continue
        quoted = "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"
        terms.append(quoted + ":*" if len(word) >= 4 else quoted)
    return " | ".join(terms)
