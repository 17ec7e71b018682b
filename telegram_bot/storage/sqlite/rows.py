"""Rows to records, the column lists they read, and the recall index's query helpers.

Pure functions, no I/O: every query that builds a `Turn` or a `Summary` selects the same columns,
in the same order, as the mapping function that reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ...models import Author, ChatKey, MessageKind, Role, Status, Summary, Turn, Usage
from ..attachments import attachments_from_json

TURN_COLUMNS = (
    "id, chat_id, thread_id, role, text, tokens, created_at, author_id, author_name, status, "
    "tg_message_id, archived, summarised, kind, duration, attachments, undelivered"
)
SUMMARY_COLUMNS = (
    "id, chat_id, thread_id, text, tokens, first_message_id, last_message_id, messages_covered, "
    "created_at, model, prompt_tokens, completion_tokens"
)


def prefixed(columns: str, alias: str) -> str:
    """A column list qualified by a table alias, for queries that join."""
    return ", ".join(f"{alias}.{column.strip()}" for column in columns.split(","))


def turn(row: Sequence[Any]) -> Turn:
    author = Author(row[7], row[8]) if row[8] is not None else None
    return Turn(
        id=row[0],
        chat=ChatKey(row[1], row[2]),
        role=Role(row[3]),
        text=row[4],
        tokens=row[5],
        created_at=datetime.fromtimestamp(row[6], UTC),
        author=author,
        status=Status(row[9]),
        tg_message_id=row[10],
        archived=bool(row[11]),
        summarised=bool(row[12]),
        kind=MessageKind(row[13]),
        duration=row[14],
        attachments=attachments_from_json(row[15]),
        undelivered=bool(row[16]),
    )


def summary(row: Sequence[Any]) -> Summary:
    return Summary(
        id=row[0],
        chat=ChatKey(row[1], row[2]),
        text=row[3],
        tokens=row[4],
        first_message_id=row[5],
        last_message_id=row[6],
        messages_covered=row[7],
        created_at=datetime.fromtimestamp(row[8], UTC),
        model=row[9],
        usage=Usage(row[10] or 0, row[11] or 0),
    )


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
