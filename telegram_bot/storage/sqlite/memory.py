"""The SQL of a conversation's memory: rolling summaries, the backlog a prompt is built from, and
full-text recall. Plain functions over a `sqlite3.Connection`, each run by `SQLiteStore` as one
job on the connection's thread.

A summary belongs to the conversation of the messages it covers: once /reset has archived them
it is history, and the new conversation starts without one. Folded messages are only marked
`summarised`, never deleted, so recall can still find what a summary lost. Recall searches the
FTS5 index of m005, scoped to the conversation by its chat token; user text is always quoted
(`rows.fts_query`), never query syntax.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

from ...models import Backlog, ChatKey, NewSummary, Summary, Turn
from . import rows

_CURRENT_SUMMARY = f"""
    SELECT {rows.prefixed(rows.SUMMARY_COLUMNS, "s")}
    FROM summaries s JOIN messages m ON m.id = s.last_message_id
    WHERE s.chat_id = ? AND s.thread_id = ? AND m.archived = 0
    ORDER BY s.id DESC LIMIT 1
"""
_UNSUMMARISED = (
    "FROM messages WHERE chat_id = ? AND thread_id = ? AND archived = 0 "
    "AND summarised = 0 AND status != 'failed'"
)
# The newest unsummarised turns whose tokens fit (always the newest): a running sum from the
# newest backwards, in one indexed pass, without loading a long chat's whole history.
_NEWEST_UNSUMMARISED = f"""
    SELECT {rows.TURN_COLUMNS} FROM (
        SELECT *, SUM(tokens) OVER (ORDER BY id DESC) AS running,
               ROW_NUMBER() OVER (ORDER BY id DESC) AS newest {_UNSUMMARISED}
    ) WHERE running <= ? OR newest = 1 ORDER BY id
"""
# The same, and how many unsummarised turns there are in all (the last column), so the caller
# can tell whether it has every one of them.
_BACKLOG = f"""
    SELECT {rows.TURN_COLUMNS}, total FROM (
        SELECT *, SUM(tokens) OVER (ORDER BY id DESC) AS running,
               ROW_NUMBER() OVER (ORDER BY id DESC) AS newest, COUNT(*) OVER () AS total
        {_UNSUMMARISED}
    ) WHERE running <= ? OR newest = 1 ORDER BY id
"""
_FIRST_LIVE = "SELECT MIN(id) FROM messages WHERE chat_id = ? AND thread_id = ? AND archived = 0"
_OLDER_LIVE = (
    "SELECT 1 FROM messages WHERE chat_id = ? AND thread_id = ? AND archived = 0 AND id < ? LIMIT 1"
)
# Only this conversation's hits are read and ranked (the chat column weighs nothing).
_SEARCH = f"""
    SELECT {rows.prefixed(rows.TURN_COLUMNS, "m")}
    FROM messages_fts f JOIN messages m ON m.id = f.rowid
    WHERE messages_fts MATCH ? AND m.chat_id = ? AND m.thread_id = ?
      AND m.archived = 0 AND m.status != 'failed' AND m.id < ?
    ORDER BY bm25(messages_fts, 1.0, 0.0), m.id DESC LIMIT ?
"""


def current_summary(db: sqlite3.Connection, chat: ChatKey) -> Summary | None:
    row = db.execute(_CURRENT_SUMMARY, (chat.chat_id, chat.thread_id)).fetchone()
    return rows.summary(row) if row else None


def unsummarised_turns(db: sqlite3.Connection, chat: ChatKey, max_tokens: int | None) -> list[Turn]:
    key: tuple[Any, ...] = (chat.chat_id, chat.thread_id)
    if max_tokens is None:
        found = db.execute(f"SELECT {rows.TURN_COLUMNS} {_UNSUMMARISED} ORDER BY id", key)
    else:
        found = db.execute(_NEWEST_UNSUMMARISED, (*key, max_tokens))
    return [rows.turn(row) for row in found]


def backlog(db: sqlite3.Connection, chat: ChatKey, max_tokens: int) -> Backlog:
    """`Store.backlog`: every read a prompt needs, in one job."""
    key = (chat.chat_id, chat.thread_id)
    summary = current_summary(db, chat)
    found = db.execute(_BACKLOG, (*key, max_tokens)).fetchall()
    first_id = db.execute(_FIRST_LIVE, key).fetchone()[0]
    return Backlog(
        summary=summary,
        turns=[rows.turn(row) for row in found],
        complete=not found or len(found) == found[0][-1],
        first_id=first_id,
    )


def save_summary(db: sqlite3.Connection, summary: NewSummary, now: float) -> Summary:
    """`Store.save_summary`; the caller holds a transaction."""
    chat = summary.chat
    previous = current_summary(db, chat)
    marked = db.execute(
        "UPDATE messages SET summarised = 1 WHERE chat_id = ? AND thread_id = ? "
        "AND archived = 0 AND summarised = 0 AND id <= ?",
        (chat.chat_id, chat.thread_id, summary.last_message_id),
    ).rowcount
    covered = (previous.messages_covered if previous else 0) + marked
    first = previous.first_message_id if previous else summary.first_message_id
    cursor = db.execute(
        "INSERT INTO summaries (chat_id, thread_id, text, tokens, first_message_id, "
        "last_message_id, messages_covered, model, prompt_tokens, completion_tokens, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            chat.chat_id,
            chat.thread_id,
            summary.text,
            summary.tokens,
            first,
            summary.last_message_id,
            covered,
            summary.model,
            summary.usage.prompt_tokens or None,
            summary.usage.completion_tokens or None,
            now,
        ),
    )
    return Summary(
        id=cursor.lastrowid or 0,
        chat=chat,
        text=summary.text,
        tokens=summary.tokens,
        first_message_id=first,
        last_message_id=summary.last_message_id,
        messages_covered=covered,
        created_at=datetime.fromtimestamp(now, UTC),
        model=summary.model,
        usage=summary.usage,
    )


def search_turns(
    db: sqlite3.Connection, chat: ChatKey, query: str, before_id: int, limit: int
) -> list[Turn]:
    """`Store.search_turns`, in one job; `query` is `rows.fts_query` of the words."""
    key = (chat.chat_id, chat.thread_id)
    # A conversation still inside its verbatim window (most of them) has nothing older to
    # recall: one index probe answers that without reading the index's doclists.
    if db.execute(_OLDER_LIVE, (*key, before_id)).fetchone() is None:
        return []
    scoped = f'chat : "{rows.chat_token(chat)}" AND ({query})'
    found = db.execute(_SEARCH, (scoped, *key, before_id, limit))
    return [rows.turn(row) for row in found]
