"""The SQL that stores and moves messages, and the few functions that run more than one statement.

Every write on a message's hot path is ONE statement (one round trip, atomic on its own):
data-modifying CTEs store the message, create or touch its chat's row and, for a reply, book
its usage, so nothing needs BEGIN ... COMMIT.

A user's message is an insert-or-get on the partial unique index of p001, (chat_id,
tg_message_id) of user rows. The INSERT that conflicts does nothing; the same statement reads
the row already there, with whether a reply to it is stored. One case needs a second
statement: when the other insert committed after this statement's snapshot was taken (two
replicas racing for one update), the conflict is seen but the row is not, so it is read again
with a new snapshot. Every query is parameterised.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from ...models import NewTurn, StoredTurn
from ..records import attachments_to_json
from . import rows
from .connection import Database, affected

_INSERT_COLUMNS = (
    "chat_id, thread_id, role, author_id, author_name, text, tokens, status, tg_message_id, "
    "reply_to, model, prompt_tokens, completion_tokens, overheard, kind, duration, attachments, "
    "created_at"
)
_VALUES = "$1, $2, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, now()"
# $1 chat_id, $2 thread_id, $3 the chat's kind; then the message ($4 .. $18, `values`); the
# statements' own parameters follow from $19.
_TOUCH_CHAT = """
    INSERT INTO chats (chat_id, thread_id, kind, created_at, updated_at)
    VALUES ($1, $2, $3, now(), now())
    ON CONFLICT (chat_id, thread_id) DO UPDATE SET updated_at = excluded.updated_at
"""
# A user writes: the chat (every topic of it) may be answered again (Store.add_user_turn).
_TOUCH_AND_WAKE_CHAT = _TOUCH_CHAT + ", active = true"
_WAKE_OTHER_TOPICS = (
    "UPDATE chats SET active = true WHERE chat_id = $1 AND thread_id <> $2 AND NOT active"
)
_INSERT_USER_MESSAGE = f"""
    INSERT INTO messages ({_INSERT_COLUMNS}) VALUES ({_VALUES})
    ON CONFLICT (chat_id, tg_message_id) WHERE role = 'user' AND tg_message_id IS NOT NULL
    DO NOTHING RETURNING id
"""
# A reply is stored in its question's chat; `messages_reply_to` finds it.
_STORED = """
    SELECT u.id, false, EXISTS (SELECT 1 FROM messages a WHERE a.reply_to = u.id)
    FROM messages u WHERE u.chat_id = $1 AND u.tg_message_id = $2 AND u.role = 'user'
"""
_STORED_AS_CONFLICT = _STORED.replace("$2", "$10") + " AND NOT EXISTS (SELECT 1 FROM stored)"
ADD_USER_TURN = f"""
    WITH chat AS ({_TOUCH_AND_WAKE_CHAT}),
         topics AS ({_WAKE_OTHER_TOPICS}),
         stored AS ({_INSERT_USER_MESSAGE})
    SELECT id, true, false FROM stored
    UNION ALL {_STORED_AS_CONFLICT}
"""
# Of the overheard messages since the chat's last addressed one, all but the newest `keep`
# go. The statement's snapshot does not see the message it inserts, so the older ones keep
# `keep - 1` ($19); nothing is trimmed when the message was already stored.
ADD_OVERHEARD = f"""
    WITH chat AS ({_TOUCH_CHAT}),
         stored AS ({_INSERT_USER_MESSAGE}),
         trimmed AS (
             DELETE FROM messages
             WHERE chat_id = $1 AND thread_id = $2 AND overheard AND NOT archived
               AND id > COALESCE((SELECT max(id) FROM messages WHERE chat_id = $1
                                  AND thread_id = $2 AND NOT overheard), 0)
               AND id NOT IN (SELECT id FROM messages WHERE chat_id = $1 AND thread_id = $2
                              AND overheard ORDER BY id DESC LIMIT $19)
               AND EXISTS (SELECT 1 FROM stored))
    SELECT id, true, false FROM stored
    UNION ALL {_STORED_AS_CONFLICT}
"""
# A reply, its chat's row and the booking of its usage ($19 day, $20 user, $21 book it or not;
# $22 whether it is stored before it is sent, m010's `undelivered`; $23 its reasoning tokens,
# p009; $24 its cached prompt tokens, p008): one statement, so stored together or not at all.
ADD_REPLY = f"""
    WITH chat AS ({_TOUCH_CHAT}),
         booked AS (
             INSERT INTO usage (day, chat_id, user_id, calls, prompt_tokens, completion_tokens,
                                reasoning_tokens, cached_tokens)
             SELECT $19, $1, $20, 1, COALESCE($13, 0), COALESCE($14, 0), $23, $24 WHERE $21
             ON CONFLICT (day, chat_id, user_id) DO UPDATE SET calls = usage.calls + 1,
                 prompt_tokens = usage.prompt_tokens + excluded.prompt_tokens,
                 completion_tokens = usage.completion_tokens + excluded.completion_tokens,
                 reasoning_tokens = usage.reasoning_tokens + excluded.reasoning_tokens,
                 cached_tokens = usage.cached_tokens + excluded.cached_tokens)
    INSERT INTO messages ({_INSERT_COLUMNS}, undelivered) VALUES ({_VALUES}, $22) RETURNING id
"""
BOOK_USAGE = """
    INSERT INTO usage (day, chat_id, user_id, calls, prompt_tokens, completion_tokens,
                       audio_seconds, reasoning_tokens, cached_tokens)
    VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8) ON CONFLICT (day, chat_id, user_id) DO UPDATE SET
    calls = usage.calls + 1, prompt_tokens = usage.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = usage.completion_tokens + excluded.completion_tokens,
    audio_seconds = usage.audio_seconds + excluded.audio_seconds,
    reasoning_tokens = usage.reasoning_tokens + excluded.reasoning_tokens,
    cached_tokens = usage.cached_tokens + excluded.cached_tokens
"""
# The newest live question addressed to the bot, and the live answers after it, in one row.
LAST_EXCHANGE = f"""
    WITH question AS (
        SELECT {rows.TURN_COLUMNS} FROM messages
        WHERE chat_id = $1 AND thread_id = $2 AND NOT archived AND role = 'user'
          AND NOT overheard
        ORDER BY id DESC LIMIT 1)
    SELECT (SELECT ROW({rows.TURN_COLUMNS}) FROM question),
           ARRAY(SELECT ROW({rows.prefixed(rows.TURN_COLUMNS, "a")})
                 FROM messages a, question q
                 WHERE a.chat_id = $1 AND a.thread_id = $2 AND NOT a.archived
                   AND a.role = 'assistant' AND a.id > q.id ORDER BY a.id)
"""


def values(turn: NewTurn, kind: str, *, overheard: bool = False) -> tuple[object, ...]:
    """$1 .. $18 of the statements above."""
    return (
        turn.chat.chat_id,
        turn.chat.thread_id,
        kind,
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
        overheard,
        turn.kind.value,
        turn.duration,
        attachments_to_json(turn.attachments),
    )


async def insert_or_get(db: Database, sql: str, args: Sequence[object]) -> StoredTurn:
    """Runs ADD_USER_TURN or ADD_OVERHEARD: one round trip, two when racing another writer."""
    row = await db.fetchrow(sql, *args)
    if row is None:  # the other writer's row is newer than this statement's snapshot
        turn_chat, tg_message_id = args[0], args[9]
        row = await db.fetchrow(_STORED, turn_chat, tg_message_id)
        if row is None:  # pragma: no cover - a conflict means the row is there
            raise RuntimeError("insert conflicted but no stored message was found")
    return StoredTurn(row[0], created=row[1], answered=row[2])


async def move_chat(db: asyncpg.Connection, old_chat_id: int, new_chat_id: int) -> int:
    """`Store.move_chat`; the caller holds a transaction.

    Every table with a chat_id column moves, including those later migrations add, so a new
    feature's data follows a migrated group without touching this code. Where the new id
    already has a row under a unique key that includes chat_id, that row wins and the old one
    goes (as SQLite's UPDATE OR IGNORE), except usage, whose totals add up.
    """
    # Telegram message ids are numbered per chat: the old group's ids mean nothing in the
    # supergroup and would collide with its new ones, so moved messages keep their text but
    # not those ids.
    await db.execute(
        "UPDATE messages SET tg_message_id = NULL WHERE chat_id = $1 AND tg_message_id IS NOT NULL",
        old_chat_id,
    )
    await db.execute(
        "INSERT INTO usage (day, chat_id, user_id, calls, prompt_tokens, completion_tokens, "
        "audio_seconds, reasoning_tokens, cached_tokens) SELECT day, $1, user_id, calls, "
        "prompt_tokens, completion_tokens, audio_seconds, reasoning_tokens, cached_tokens "
        "FROM usage WHERE chat_id = $2 "
        "ON CONFLICT (day, chat_id, user_id) "
        "DO UPDATE SET calls = usage.calls + excluded.calls, "
        "prompt_tokens = usage.prompt_tokens + excluded.prompt_tokens, "
        "completion_tokens = usage.completion_tokens + excluded.completion_tokens, "
        "audio_seconds = usage.audio_seconds + excluded.audio_seconds, "
        "reasoning_tokens = usage.reasoning_tokens + excluded.reasoning_tokens, "
        "cached_tokens = usage.cached_tokens + excluded.cached_tokens",
        new_chat_id,
        old_chat_id,
    )
    await db.execute("DELETE FROM usage WHERE chat_id = $1", old_chat_id)
    moved = 0
    for table, keys in await _tables_with_chat_id(db):
        # Names come from the catalogue, never from input; values are parameters.
        for key in keys:  # the old row that would collide with the new id's row goes
            same = " AND ".join(f'n."{column}" = o."{column}"' for column in key) or "true"
            await db.execute(
                f'DELETE FROM "{table}" o WHERE o.chat_id = $1 AND EXISTS '
                f'(SELECT 1 FROM "{table}" n WHERE n.chat_id = $2 AND {same})',
                old_chat_id,
                new_chat_id,
            )
        status = await db.execute(
            f'UPDATE "{table}" SET chat_id = $2 WHERE chat_id = $1', old_chat_id, new_chat_id
        )
        if table == "messages":
            moved = affected(status)
    return moved


async def _tables_with_chat_id(db: asyncpg.Connection) -> list[tuple[str, list[list[str]]]]:
    """Each table of the schema with a chat_id column, and the other columns of each of its
    unique keys that include chat_id (partial unique indexes aside: the only one, on messages,
    is emptied for the old chat first)."""
    found = await db.fetch(
        """
        SELECT c.relname,
               ARRAY(SELECT COALESCE(string_agg(a.attname, ',')
                                     FILTER (WHERE a.attname <> 'chat_id'), '')
                     FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) AS k(attnum)
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                     WHERE i.indrelid = c.oid AND i.indisunique AND i.indpred IS NULL
                       AND ca.attnum = ANY (i.indkey)
                     GROUP BY i.indexrelid)
        FROM pg_class c
        JOIN pg_attribute ca ON ca.attrelid = c.oid AND ca.attname = 'chat_id'
        WHERE c.relkind IN ('r', 'p') AND c.relnamespace = current_schema()::regnamespace
        ORDER BY c.relname
        """
    )
    return [(name, [key.split(",") if key else [] for key in keys]) for name, keys in found]
