"""The SQL that stores and moves messages: plain functions over a `sqlite3.Connection`.

`SQLiteStore` runs each of them as one job on the connection's thread (`Connection.transaction`
or `Connection.read`), so a message costs one trip to the database whatever it does there.

A user's message is an insert-or-get on the unique index of m006, (chat_id, tg_message_id) of
user rows: Telegram delivers an update again when the bot died before confirming it, and
replicas may race for the same one; the INSERT that conflicts does nothing, and the row already
there is read back in the same transaction, with whether a reply to it is stored. Messages
without a Telegram id (the console) are not in that index and are always inserted. Every query
is parameterised.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import date

from ...models import ChatKey, NewTurn, StoredTurn, Turn
from ..records import attachments_to_json
from . import rows

_TOUCH_CHAT = (
    "INSERT INTO chats (chat_id, thread_id, kind, created_at, updated_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (chat_id, thread_id) DO UPDATE SET updated_at = excluded.updated_at"
)
_WAKE_CHAT = "UPDATE chats SET active = 1 WHERE chat_id = ? AND active = 0"

_INSERT_MESSAGE = (
    "INSERT INTO messages (chat_id, thread_id, role, author_id, author_name, text, tokens, "
    "status, tg_message_id, reply_to, model, prompt_tokens, completion_tokens, overheard, "
    "created_at, kind, duration, attachments, undelivered) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The conflict target names m006's partial index (its columns and its WHERE). Not RETURNING:
# `cursor.rowcount` (sqlite3_changes) says whether the row went in on any SQLite with upsert,
# and RETURNING would need 3.35, newer than the window functions' 3.25 the store needs anyway.
_INSERT_USER_MESSAGE = (
    _INSERT_MESSAGE + " ON CONFLICT (chat_id, tg_message_id) "
    "WHERE role = 'user' AND tg_message_id IS NOT NULL DO NOTHING"
)
# A reply is stored in its question's chat, so the chat's rows are all the EXISTS reads (there
# is no index on reply_to; docs/benchmarks.md, fix 14).
_STORED_USER_MESSAGE = (
    "SELECT u.id, EXISTS (SELECT 1 FROM messages a WHERE a.chat_id = u.chat_id "
    "AND a.reply_to = u.id) "
    "FROM messages u WHERE u.chat_id = ? AND u.tg_message_id = ? AND u.role = 'user'"
)
# Of the overheard messages since the chat's last addressed one, all but the newest `keep` go.
_TRIM_OVERHEARD = """
    DELETE FROM messages
    WHERE chat_id = ? AND thread_id = ? AND overheard = 1 AND archived = 0
      AND id > COALESCE((SELECT MAX(id) FROM messages WHERE chat_id = ?
                         AND thread_id = ? AND overheard = 0), 0)
      AND id NOT IN (SELECT id FROM messages WHERE chat_id = ? AND thread_id = ?
                     AND overheard = 1 ORDER BY id DESC LIMIT ?)
"""

BOOK_USAGE = (
    "INSERT INTO usage (day, chat_id, user_id, calls, prompt_tokens, completion_tokens, "
    "audio_seconds, reasoning_tokens, cached_tokens) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?) "
    "ON CONFLICT (day, chat_id, user_id) DO UPDATE "
    "SET calls = calls + 1, prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = completion_tokens + excluded.completion_tokens, "
    "audio_seconds = audio_seconds + excluded.audio_seconds, "
    "reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, "
    "cached_tokens = cached_tokens + excluded.cached_tokens"
)


def _touch_chat(db: sqlite3.Connection, chat: ChatKey, kind: str, now: float) -> None:
    """Creates the chat's row on its first message, or notes that it was used."""
    db.execute(_TOUCH_CHAT, (chat.chat_id, chat.thread_id, kind, now, now))


def _values(turn: NewTurn, now: float, *, overheard: bool = False) -> tuple[object, ...]:
    return (
        turn.chat.chat_id,
        turn.chat.thread_id,
        turn.role.value,
        turn.author.user_id if turn.author else None,
        turn.author.name if turn.author else None,
        turn.text,
        turn.tokens,
        turn.status.value,
        turn.tg_message_id,
        turn.reply_to,
        turn.model,
        turn.usage.prompt_tokens or None,
        turn.usage.completion_tokens or None,
        int(overheard),
        now,
        turn.kind.value,
        turn.duration,
        attachments_to_json(turn.attachments),
        int(turn.undelivered),
    )


def _insert_or_get(
    db: sqlite3.Connection, turn: NewTurn, now: float, overheard: bool
) -> StoredTurn:
    cursor = db.execute(_INSERT_USER_MESSAGE, _values(turn, now, overheard=overheard))
    if cursor.rowcount == 1 and cursor.lastrowid is not None:
        return StoredTurn(cursor.lastrowid)
    # Conflicted: only a message with a Telegram id can, so the stored one is there.
    found = db.execute(_STORED_USER_MESSAGE, (turn.chat.chat_id, turn.tg_message_id)).fetchone()
    if found is None:  # pragma: no cover - a conflict means the row is there
        raise RuntimeError("insert conflicted but no stored message was found")
    return StoredTurn(int(found[0]), created=False, answered=bool(found[1]))


def add_user_turn(db: sqlite3.Connection, turn: NewTurn, chat_kind: str, now: float) -> StoredTurn:
    """`Store.add_user_turn`; the caller holds a transaction."""
    _touch_chat(db, turn.chat, chat_kind, now)
    # Whoever writes can be answered again, a redelivered message too (Store.add_user_turn).
    db.execute(_WAKE_CHAT, (turn.chat.chat_id,))
    return _insert_or_get(db, turn, now, overheard=False)


def add_overheard(
    db: sqlite3.Connection, turn: NewTurn, keep: int, chat_kind: str, now: float
) -> StoredTurn:
    """`Store.add_overheard`; the caller holds a transaction."""
    _touch_chat(db, turn.chat, chat_kind, now)
    stored = _insert_or_get(db, turn, now, overheard=True)
    if stored.created:
        chat = (turn.chat.chat_id, turn.chat.thread_id)
        db.execute(_TRIM_OVERHEARD, (*chat, *chat, *chat, max(keep, 1)))
    return stored


def add_reply(
    db: sqlite3.Connection,
    turn: NewTurn,
    user_id: int | None,
    day: date,
    chat_kind: str,
    now: float,
) -> int:
    """`Store.add_reply`: the reply and the booking of its usage; the caller holds a
    transaction."""
    _touch_chat(db, turn.chat, chat_kind, now)
    row_id = db.execute(_INSERT_MESSAGE, _values(turn, now)).lastrowid
    if row_id is None:  # pragma: no cover - sqlite always sets it for INSERT
        raise RuntimeError("insert returned no row id")
    usage = turn.usage
    if usage.total:
        booking = (day.isoformat(), turn.chat.chat_id, user_id or 0)
        costs = (usage.prompt_tokens, usage.completion_tokens, 0, usage.reasoning_tokens)
        db.execute(BOOK_USAGE, (*booking, *costs, usage.cached_tokens))
    return row_id


def last_exchange(db: sqlite3.Connection, chat: ChatKey) -> tuple[Turn, list[Turn]] | None:
    """`Store.last_exchange`, in one read."""
    key = (chat.chat_id, chat.thread_id)
    question = db.execute(
        f"SELECT {rows.TURN_COLUMNS} FROM messages WHERE chat_id = ? AND thread_id = ? "
        "AND archived = 0 AND role = 'user' AND overheard = 0 ORDER BY id DESC LIMIT 1",
        key,
    ).fetchone()
    if question is None:
        return None
    answers = db.execute(
        f"SELECT {rows.TURN_COLUMNS} FROM messages WHERE chat_id = ? AND thread_id = ? "
        "AND archived = 0 AND role = 'assistant' AND id > ? ORDER BY id",
        (*key, question[0]),
    ).fetchall()
    return rows.turn(question), [rows.turn(answer) for answer in answers]


def supersede(db: sqlite3.Connection, turn_ids: Sequence[int], by: int) -> None:
    """`Store.supersede`; the caller holds a transaction."""
    db.executemany(
        "UPDATE messages SET archived = 1, superseded_by = ? WHERE id = ?",
        [(by, turn_id) for turn_id in turn_ids],
    )


def move_chat(db: sqlite3.Connection, old_chat_id: int, new_chat_id: int) -> int:
    """`Store.move_chat`; the caller holds a transaction.

    Every table with a chat_id column moves, including those later migrations add, so a new
    feature's data follows a migrated group without touching this code.
    """
    # Telegram message ids are numbered per chat: the old group's ids mean nothing in the
    # supergroup and would collide with its new ones (m006's unique index), so moved messages
    # keep their text but not those ids. No message is then ignored by UPDATE OR IGNORE below.
    db.execute("UPDATE messages SET tg_message_id = NULL WHERE chat_id = ?", (old_chat_id,))
    # Usage totals add up: both ids may have a row for the same day and user (the supergroup
    # was used before the old group's service message arrived).
    db.execute(
        "INSERT INTO usage (day, chat_id, user_id, calls, prompt_tokens, completion_tokens, "
        "audio_seconds, reasoning_tokens, cached_tokens) SELECT day, ?, user_id, calls, "
        "prompt_tokens, completion_tokens, audio_seconds, reasoning_tokens, cached_tokens "
        "FROM usage WHERE chat_id = ? "
        "ON CONFLICT (day, chat_id, user_id) DO "
        "UPDATE SET calls = calls + excluded.calls, "
        "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
        "completion_tokens = completion_tokens + excluded.completion_tokens, "
        "audio_seconds = audio_seconds + excluded.audio_seconds, "
        "reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, "
        "cached_tokens = cached_tokens + excluded.cached_tokens",
        (new_chat_id, old_chat_id),
    )
    db.execute("DELETE FROM usage WHERE chat_id = ?", (old_chat_id,))
    tables = [
        name
        for (name,) in db.execute(
            "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) c "
            "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name != '_migrations' "
            "AND c.name = 'chat_id' ORDER BY m.name"
        )
    ]
    moved = 0
    for table in tables:
        # Table names come from sqlite_master, never from input; values are parameters.
        cursor = db.execute(
            f'UPDATE OR IGNORE "{table}" SET chat_id = ? WHERE chat_id = ?',
            (new_chat_id, old_chat_id),
        )
        if table == "messages":
            moved = cursor.rowcount
        # Rows the new id already had (a unique key) win; the old duplicates go.
        db.execute(f'DELETE FROM "{table}" WHERE chat_id = ?', (old_chat_id,))
    return moved
