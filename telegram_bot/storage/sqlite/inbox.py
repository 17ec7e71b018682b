"""The inbox's SQL: plain functions over a `sqlite3.Connection`, each run as one job on the
connection's thread by `SQLiteStore` (`Connection.transaction` or `Connection.read`).

A batch of updates is one transaction: each row is an insert that does nothing when the update
is already there (handled or not), and `rowcount` says which went in, so a redelivered update
is reported as not new and handled once. Marking handled updates drops their bodies (only the
id is needed to recognise a late redelivery); forgetting them deletes the rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ...models import ChatKey, InboxUpdate

_ADD = (
    "INSERT INTO inbox (update_id, chat_id, thread_id, body, received_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (update_id) DO NOTHING"
)
_PENDING = (
    "SELECT update_id, chat_id, thread_id, body, received_at FROM inbox "
    "WHERE done = 0 ORDER BY update_id"
)
# SQLite's default limit of host parameters in one statement is 999 on older builds.
_CHUNK = 500


def add(db: sqlite3.Connection, updates: Sequence[InboxUpdate]) -> list[int]:
    """`Store.inbox_add`; the caller holds a transaction."""
    fresh: list[int] = []
    for update in updates:
        chat_id = update.chat.chat_id if update.chat is not None else None
        thread_id = update.chat.thread_id if update.chat is not None else 0
        cursor = db.execute(
            _ADD, (update.update_id, chat_id, thread_id, update.body, update.received_at)
        )
        if cursor.rowcount == 1:
            fresh.append(update.update_id)
    return fresh


def done(db: sqlite3.Connection, update_ids: Sequence[int], forget_before: float | None) -> None:
    """`Store.inbox_done`; the caller holds a transaction."""
    for start in range(0, len(update_ids), _CHUNK):
        chunk = update_ids[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        db.execute(
            f"UPDATE inbox SET done = 1, body = NULL WHERE update_id IN ({marks})",
            chunk,
        )
    if forget_before is not None:
        db.execute("DELETE FROM inbox WHERE done = 1 AND received_at < ?", (forget_before,))


def pending(db: sqlite3.Connection) -> list[InboxUpdate]:
    """`Store.inbox_pending`."""
    return [
        InboxUpdate(
            int(update_id),
            ChatKey(int(chat_id), int(thread_id)) if chat_id is not None else None,
            str(body),
            float(received_at),
        )
        for update_id, chat_id, thread_id, body, received_at in db.execute(_PENDING)
    ]
