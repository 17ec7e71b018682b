"""Rows to records, for both backends: the column lists every query that builds a `Turn` or a
`Summary` selects, in the order the mapping functions read them, and the attachments column.

Pure, no I/O. The backends differ only in how a time comes back (SQLite: seconds since the
epoch; asyncpg: a `datetime`) and a boolean (SQLite: 0/1), so each passes its own `when`.
SQLite (m008) and PostgreSQL (p004) store a message's attachments as the same JSON text, so
`migrate-db` copies the column as it is; neither backend imports the other's modules.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ..models import (
    Attachment,
    Author,
    ChatKey,
    MessageKind,
    Role,
    Status,
    Summary,
    Turn,
    Usage,
)

TURN_COLUMNS = (
    "id, chat_id, thread_id, role, text, tokens, created_at, author_id, author_name, status, "
    "tg_message_id, archived, summarised, kind, duration, attachments, undelivered"
)
SUMMARY_COLUMNS = (
    "id, chat_id, thread_id, text, tokens, first_message_id, last_message_id, messages_covered, "
    "created_at, model, prompt_tokens, completion_tokens"
)

When = Callable[[Any], datetime]  # a `created_at` column's value as the backend returns it


def prefixed(columns: str, alias: str) -> str:
    """A column list qualified by a table alias, for queries that join."""
    return ", ".join(f"{alias}.{column.strip()}" for column in columns.split(","))


def turn(row: Sequence[Any], when: When) -> Turn:
    author = Author(row[7], row[8]) if row[8] is not None else None
    return Turn(
        id=row[0],
        chat=ChatKey(row[1], row[2]),
        role=Role(row[3]),
        text=row[4],
        tokens=row[5],
        created_at=when(row[6]),
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


def summary(row: Sequence[Any], when: When) -> Summary:
    return Summary(
        id=row[0],
        chat=ChatKey(row[1], row[2]),
        text=row[3],
        tokens=row[4],
        first_message_id=row[5],
        last_message_id=row[6],
        messages_covered=row[7],
        created_at=when(row[8]),
        model=row[9],
        usage=Usage(row[10] or 0, row[11] or 0),
    )


def attachments_to_json(attachments: Sequence[Attachment]) -> str | None:
    """Each attachment's fields, without empty ones; None for a message without any."""
    if not attachments:
        return None
    return json.dumps(
        [
            {k: v for k, v in dataclasses.asdict(item).items() if v is not None}
            for item in attachments
        ],
        separators=(",", ":"),
    )


def attachments_from_json(raw: str | None) -> tuple[Attachment, ...]:
    if not raw:
        return ()
    return tuple(
        Attachment(**{**item, "kind": MessageKind(item["kind"])}) for item in json.loads(raw)
    )
