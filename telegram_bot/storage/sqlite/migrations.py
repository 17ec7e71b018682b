"""The numbered schema migrations of the SQLite store.

An append-only list: a migration, once released, is never edited; a change is a new function at
the end. Each runs in its own transaction and is recorded by name in `_migrations`, so opening
any older database brings it up to date and opening a current one does nothing. Each function's
docstring says why it exists.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import aiosqlite

Migration = Callable[[aiosqlite.Connection], Awaitable[None]]


async def m001_initial(db: aiosqlite.Connection) -> None:
    """Chats, their settings, and every message ever exchanged.

    Messages are never deleted: /reset sets `archived`, so the history a user built stays on
    their own disk. `tokens` is counted once, when the message is stored, so building a prompt
    never re-tokenises the history. `status` tells a complete reply from one cut short. The
    index serves the hot query: the newest live messages of one chat.
    """
    await db.execute(
        """
        CREATE TABLE chats (
            chat_id    INTEGER NOT NULL,
            thread_id  INTEGER NOT NULL DEFAULT 0,
            kind       TEXT    NOT NULL,
            title      TEXT,
            active     INTEGER NOT NULL DEFAULT 1,
            created_at REAL    NOT NULL,
            updated_at REAL    NOT NULL,
            PRIMARY KEY (chat_id, thread_id)
        ) WITHOUT ROWID
        """
    )
    await db.execute(
        """
        CREATE TABLE chat_settings (
            chat_id    INTEGER PRIMARY KEY,
            persona    TEXT,
            updated_by INTEGER,
            updated_at REAL NOT NULL
        )
        """
    )
    await db.execute(
        """
        CREATE TABLE messages (
            id                INTEGER PRIMARY KEY AUTOINCREMENT,
            chat_id           INTEGER NOT NULL,
            thread_id         INTEGER NOT NULL DEFAULT 0,
            role              TEXT    NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            author_id         INTEGER,
            author_name       TEXT,
            text              TEXT    NOT NULL,
            tokens            INTEGER NOT NULL,
            status            TEXT    NOT NULL DEFAULT 'complete'
                              CHECK (status IN ('complete', 'partial', 'stopped', 'failed')),
            archived          INTEGER NOT NULL DEFAULT 0,
            tg_message_id     INTEGER,
            reply_to          INTEGER REFERENCES messages (id),
            model             TEXT,
            prompt_tokens     INTEGER,
            completion_tokens INTEGER,
            created_at        REAL    NOT NULL
        )
        """
    )
    await db.execute("CREATE INDEX messages_live ON messages (chat_id, thread_id, archived, id)")


async def m002_memory(db: aiosqlite.Connection) -> None:
    """Rolling summaries, the `summarised` mark, and a full-text index for recall.

    Long conversations are folded, oldest turns first, into one rolling summary per
    conversation. Each summary row records the range of messages it covers and the usage of the
    model call that wrote it (so summary costs can be counted per chat and day). The folded
    messages are only marked `summarised`; nothing is deleted. A summary belongs to the
    conversation of the messages it covers: once /reset archives them, it is no longer current.

    `messages_fts` is an external-content FTS5 index over message text (kept in step by
    triggers), so details a summary lost can be recalled from the chat's own archive.

    `token_factors` keeps the learned ratio between a model server's token count and ours,
    so a restart does not have to overflow the window once to learn it again.
    """
    await db.execute("ALTER TABLE messages ADD COLUMN summarised INTEGER NOT NULL DEFAULT 0")
    await db.execute(
        """
        CREATE TABLE summaries (
            id                INTEGER PRIMARY KEY AUTOINCREMENT,
            chat_id           INTEGER NOT NULL,
            thread_id         INTEGER NOT NULL DEFAULT 0,
            text              TEXT    NOT NULL,
            tokens            INTEGER NOT NULL,
            first_message_id  INTEGER NOT NULL REFERENCES messages (id),
            last_message_id   INTEGER NOT NULL REFERENCES messages (id),
            messages_covered  INTEGER NOT NULL,
            model             TEXT,
            prompt_tokens     INTEGER,
            completion_tokens INTEGER,
            created_at        REAL    NOT NULL
        )
        """
    )
    await db.execute("CREATE INDEX summaries_chat ON summaries (chat_id, thread_id, id)")
    await db.execute(
        "CREATE VIRTUAL TABLE messages_fts USING fts5("
        "text, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2')"
    )
    await db.execute(
        "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
        "INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text); END"
    )
    await db.execute(
        "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
        "INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);"
        " END"
    )
    await db.execute(
        "CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN "
        "INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);"
        " INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text); END"
    )
    await db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
    await db.execute(
        "CREATE TABLE token_factors ("
        "model TEXT PRIMARY KEY, factor REAL NOT NULL, updated_at REAL NOT NULL)"
    )


async def m003_overheard_messages(db: aiosqlite.Connection) -> None:
    """Group messages the bot saw but was not addressed with ("overheard").

    In a group the bot keeps the last few messages not meant for it, so "@bot what do you
    think about that?" has something to refer to. They are ordinary user turns (same table,
    same history order, counted once) flagged `overheard = 1`: they never trigger a reply, and
    the store keeps only the newest N of them after the chat's last addressed message, deleting
    older chatter instead of archiving it, because nobody asked the bot to remember it.
    """
    await db.execute("ALTER TABLE messages ADD COLUMN overheard INTEGER NOT NULL DEFAULT 0")


async def m004_usage_and_retry(db: aiosqlite.Connection) -> None:
    """Token usage per day, chat and user; and which reply a /retry replaced.

    Usage is kept as one running total per (day, chat, user) instead of a row per model call:
    the limits check and /usage read a handful of rows, however busy the bot is. `user_id` 0
    is usage no user caused (summaries), still charged to the chat. `day` is the UTC date as
    'YYYY-MM-DD', so a month is a range of text keys. `superseded_by` links an answer that
    /retry replaced to its successor; the old answer is archived, never deleted.
    """
    await db.execute(
        """
        CREATE TABLE usage (
            day               TEXT    NOT NULL,
            chat_id           INTEGER NOT NULL,
            user_id           INTEGER NOT NULL DEFAULT 0,
            calls             INTEGER NOT NULL DEFAULT 0,
            prompt_tokens     INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (day, chat_id, user_id)
        ) WITHOUT ROWID
        """
    )
    await db.execute("CREATE INDEX usage_user ON usage (user_id, day)")
    await db.execute("CREATE INDEX usage_chat ON usage (chat_id, day)")
    await db.execute(
        "ALTER TABLE messages ADD COLUMN superseded_by INTEGER REFERENCES messages (id)"
    )
    await db.execute("CREATE INDEX messages_tg ON messages (chat_id, tg_message_id)")


# The recall index's token for a conversation (`rows.chat_token` makes the same).
_CHAT_TOKEN = (
    "'c' || CASE WHEN {p}chat_id < 0 THEN 'n' ELSE '' END || abs({p}chat_id) || 't' || {p}thread_id"
)


async def m005_recall_by_chat(db: aiosqlite.Connection) -> None:
    """The recall index knows each message's conversation, so a search reads one chat's hits.

    m002 indexed the text alone: every recall query matched its words in every chat of the
    database, ranked all of those rows and only then kept this chat's (8 ms per message at
    50,000 stored messages, growing with the database; docs/benchmarks.md). Now each row also
    carries one token naming its chat and thread, and the query ANDs it in, so SQLite reads
    only this conversation's hits. The index is external-content over a view (no text is
    stored twice); the triggers keep it in step, including when a group's messages move to
    its supergroup's id.
    """
    for trigger in ("messages_fts_insert", "messages_fts_delete", "messages_fts_update"):
        await db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    await db.execute("DROP TABLE IF EXISTS messages_fts")
    await db.execute(
        "CREATE VIEW messages_fts_source AS "
        f"SELECT id, text, {_CHAT_TOKEN.format(p='')} AS chat FROM messages"
    )
    await db.execute(
        "CREATE VIRTUAL TABLE messages_fts USING fts5(text, chat, content='messages_fts_source', "
        "content_rowid='id', tokenize='unicode61 remove_diacritics 2')"
    )
    insert = (
        "INSERT INTO messages_fts (rowid, text, chat) "
        f"VALUES (new.id, new.text, {_CHAT_TOKEN.format(p='new.')});"
    )
    delete = (
        "INSERT INTO messages_fts (messages_fts, rowid, text, chat) "
        f"VALUES ('delete', old.id, old.text, {_CHAT_TOKEN.format(p='old.')});"
    )
    await db.execute(
        f"CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN {insert} END"
    )
    await db.execute(
        f"CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN {delete} END"
    )
    await db.execute(
        "CREATE TRIGGER messages_fts_update AFTER UPDATE OF text, chat_id, thread_id ON messages "
        f"BEGIN {delete} {insert} END"
    )
    await db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")


async def m006_user_messages_unique(db: aiosqlite.Connection) -> None:
    """A user's message is stored once per Telegram id: storing it is an insert-or-get.

    Telegram delivers an update again when the bot died before confirming it, and with several
    replicas two may take the same one at once. The store used to look the message up and then
    insert it, which two racing callers can both pass; a unique index on (chat_id,
    tg_message_id) of user rows lets the database decide, so exactly one caller stores it and
    the others get its id. Only user rows with a Telegram id are in it: the bot's own replies
    and console messages (no id) are not.

    An older database may already hold a redelivered message twice (overheard group messages
    were stored without the check). The oldest row keeps its Telegram id; the later copies keep
    their text but lose the id, as a moved group's messages do. m004's `messages_tg` index
    served only the lookup this one replaces, so it goes.
    """
    await db.execute(
        """
        UPDATE messages SET tg_message_id = NULL
        WHERE role = 'user' AND tg_message_id IS NOT NULL
          AND EXISTS (SELECT 1 FROM messages older
                      WHERE older.chat_id = messages.chat_id
                        AND older.tg_message_id = messages.tg_message_id
                        AND older.role = 'user' AND older.id < messages.id)
        """
    )
    await db.execute(
        "CREATE UNIQUE INDEX messages_user_tg ON messages (chat_id, tg_message_id) "
        "WHERE role = 'user' AND tg_message_id IS NOT NULL"
    )
    await db.execute("DROP INDEX IF EXISTS messages_tg")


async def m008_media(db: aiosqlite.Connection) -> None:
    """Voice notes, photos and files: what kind of message a turn was, and what came with it.

    A voice note is stored as its transcript, a photo as a short placeholder with its caption, a
    file as its framed text, so history, summaries and recall read them like any text. `kind`
    says which it was ('text' for every older row), `duration` the seconds of speech, and
    `attachments` the files as the platform described them (JSON: kind, the platform's file id,
    size, dimensions, name, type; never a download URL, which holds the bot token), so /retry
    of a photo can fetch the image again. `usage.audio_seconds` books transcription, which
    speech-to-text services bill by the second, not by the token.
    """
    await db.execute("ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'text'")
    await db.execute("ALTER TABLE messages ADD COLUMN duration INTEGER")
    await db.execute("ALTER TABLE messages ADD COLUMN attachments TEXT")
    await db.execute("ALTER TABLE usage ADD COLUMN audio_seconds INTEGER NOT NULL DEFAULT 0")


async def m009_inbox(db: aiosqlite.Connection) -> None:
    """The inbox: every update Telegram hands over is kept before the bot acknowledges it.

    Long polling acknowledges a batch with the next getUpdates call, and a webhook with its
    200; until then Telegram delivers an update again, after that never. Messages waiting in
    memory behind a slow reply in their chat, and a reply cut off by a crash, used to be lost
    with the process. Now each raw update is stored here first (its JSON, its chat and forum
    thread, when it arrived) and marked `done` once handled; after a crash the pending ones
    are handled again at start-up, in order. A handled update keeps only its id for a day, so
    a late redelivery of it is recognised and not handled twice; its body is dropped. The
    partial index finds the pending ones without reading the handled ones.
    """
    await db.execute(
        """
        CREATE TABLE inbox (
            update_id   INTEGER PRIMARY KEY,
            chat_id     INTEGER,
            thread_id   INTEGER NOT NULL DEFAULT 0,
            body        TEXT,
            received_at REAL    NOT NULL,
            done        INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    await db.execute("CREATE INDEX inbox_pending ON inbox (update_id) WHERE done = 0")


async def m010_undelivered_replies(db: aiosqlite.Connection) -> None:
    """A reply is stored before it is sent, marked `undelivered` until Telegram confirms it.

    Replies used to be stored after their delivery was attempted, so a delivery that waited
    (flood control for an hour) or a crash in between could lose the model's answer. Now the
    reply is committed first with `undelivered = 1` and no Telegram id, and one UPDATE sets
    its id and clears the mark once Telegram has it. A reply still marked after the attempt
    is an answer the user never saw: /retry sends it rather than asking the model again.
    Replies stored before this migration were all sent (or given up on) already: 0.
    """
    await db.execute("ALTER TABLE messages ADD COLUMN undelivered INTEGER NOT NULL DEFAULT 0")


async def m011_cached_tokens(db: aiosqlite.Connection) -> None:
    """`usage.cached_tokens`: of the prompt tokens booked, those the model server reused.

    Prompts are laid out so consecutive turns share a long prefix that the server's prompt
    cache reuses (OpenAI bills those tokens at a discount and reports them as
    `usage.prompt_tokens_details.cached_tokens`; llama.cpp skips evaluating them and reports
    `timings.cache_n`). Booking them per day, chat and user, next to `prompt_tokens`, lets
    /usage show how much of the prompt was served from the cache. Rows booked before this
    migration were never told: 0.
    """
    await db.execute("ALTER TABLE usage ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0")


async def m012_reasoning_tokens(db: aiosqlite.Connection) -> None:
    """How many of the completion tokens a reasoning model spent thinking, per day and user.

    Reasoning models (DeepSeek-R1, Qwen3, o-series) think before they answer; the thought is
    never stored or shown as the reply, but it is billed as output. `completion_tokens` already
    counts it; this column says how much of it was thought (the server's
    `completion_tokens_details.reasoning_tokens`, or our count of the thought), so /usage can
    show why a short answer cost many tokens. Rows before this migration thought nothing: 0.
    """
    await db.execute("ALTER TABLE usage ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0")


MIGRATIONS: tuple[Migration, ...] = (
    m001_initial,
    m002_memory,
    m003_overheard_messages,
    m004_usage_and_retry,
    m005_recall_by_chat,
    m006_user_messages_unique,
    m008_media,  # there is no m007: it was given to work that never landed
    m009_inbox,
    m010_undelivered_replies,
    m011_cached_tokens,
    m012_reasoning_tokens,
)


async def migrate(db: aiosqlite.Connection) -> list[str]:
    """Applies the migrations this database lacks, in order; returns their names.

    Expects a connection in autocommit mode (isolation_level=None): transactions are explicit.
    """
    await db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    async with db.execute("SELECT name FROM _migrations") as cursor:
        done = {row[0] for row in await cursor.fetchall()}
    applied: list[str] = []
    for migration in MIGRATIONS:
        name = migration.__name__
        if name in done:
            continue
        await db.execute("BEGIN IMMEDIATE")
        try:
            await migration(db)
            await db.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, time.time())
            )
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")
        applied.append(name)
    return applied
