"""SQLite storage over one aiosqlite connection.

One connection in WAL mode serves the whole process: aiosqlite runs it on its own thread, so
queries never block the event loop, and WAL lets a reader (the console, a backup) look at the
file while the bot writes. The connection is in autocommit mode; a write that must be atomic
with another uses an explicit transaction. `synchronous=NORMAL` is the documented safe setting
for WAL: a power cut may lose the last commits, never corrupt the file. Every query is
parameterised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from .migrations import migrate
from .models import (
    Author,
    Chat,
    ChatKey,
    NewSummary,
    NewTurn,
    Role,
    Status,
    Summary,
    Turn,
    Usage,
)

_TURN_COLUMNS = (
    "id, chat_id, thread_id, role, text, tokens, created_at, author_id, author_name, status, "
    "tg_message_id, archived, summarised"
)
_SUMMARY_COLUMNS = (
    "id, chat_id, thread_id, text, tokens, first_message_id, last_message_id, messages_covered, "
    "created_at, model, prompt_tokens, completion_tokens"
)


def _turn(row: aiosqlite.Row | tuple[Any, ...]) -> Turn:
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
    )


def _summary(row: aiosqlite.Row | tuple[Any, ...]) -> Summary:
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


class SQLiteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        # One connection is shared by every task: writes take this lock so that a task's
        # statements can never land inside another task's explicit transaction.
        self._write_lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    async def open(self) -> None:
        if self.path != Path(":memory:"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA busy_timeout=5000")
        await migrate(db)
        self._db = db

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    async def _write(self, sql: str, params: tuple[Any, ...]) -> aiosqlite.Cursor:
        async with self._write_lock:
            return await self.db.execute(sql, params)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def add_turn(self, turn: NewTurn, *, chat_kind: str = "private") -> int:
        now = time.time()
        author_id = turn.author.user_id if turn.author else None
        author_name = turn.author.name if turn.author else None
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO chats (chat_id, thread_id, kind, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (chat_id, thread_id) DO UPDATE SET updated_at = excluded.updated_at",
                (turn.chat.chat_id, turn.chat.thread_id, chat_kind, now, now),
            )
            cursor = await db.execute(
                "INSERT INTO messages (chat_id, thread_id, role, author_id, author_name, text, "
                "tokens, status, tg_message_id, reply_to, model, prompt_tokens, "
                "completion_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    turn.chat.chat_id,
                    turn.chat.thread_id,
                    turn.role.value,
                    author_id,
                    author_name,
                    turn.text,
                    turn.tokens,
                    turn.status.value,
                    turn.tg_message_id,
                    turn.reply_to,
                    turn.model,
                    turn.usage.prompt_tokens or None,
                    turn.usage.completion_tokens or None,
                    now,
                ),
            )
        if cursor.lastrowid is None:  # pragma: no cover - sqlite always sets it for INSERT
            raise RuntimeError("insert returned no row id")
        return cursor.lastrowid

    async def recent_turns(self, chat: ChatKey, max_tokens: int) -> list[Turn]:
        # A running sum from the newest message backwards keeps the newest turns that fit,
        # in one indexed pass, without loading a long chat's whole history.
        sql = f"""
            SELECT {_TURN_COLUMNS} FROM (
                SELECT *, SUM(tokens) OVER (ORDER BY id DESC) AS running
                FROM messages
                WHERE chat_id = ? AND thread_id = ? AND archived = 0 AND status != 'failed'
            ) WHERE running <= ? ORDER BY id
        """
        async with self.db.execute(sql, (chat.chat_id, chat.thread_id, max_tokens)) as cursor:
            return [_turn(row) for row in await cursor.fetchall()]

    async def archive(self, chat: ChatKey) -> int:
        cursor = await self._write(
            "UPDATE messages SET archived = 1 WHERE chat_id = ? AND thread_id = ? AND archived = 0",
            (chat.chat_id, chat.thread_id),
        )
        return cursor.rowcount

    async def get_chat(self, chat: ChatKey) -> Chat | None:
        async with self.db.execute(
            "SELECT kind, title, active FROM chats WHERE chat_id = ? AND thread_id = ?",
            (chat.chat_id, chat.thread_id),
        ) as cursor:
            row = await cursor.fetchone()
        return Chat(chat, row[0], row[1], bool(row[2])) if row else None

    async def set_chat_active(self, chat_id: int, active: bool) -> None:
        await self._write(
            "UPDATE chats SET active = ?, updated_at = ? WHERE chat_id = ?",
            (int(active), time.time(), chat_id),
        )

    async def get_persona(self, chat_id: int) -> str | None:
        async with self.db.execute(
            "SELECT persona FROM chat_settings WHERE chat_id = ?", (chat_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return row[0] if row else None

    async def set_persona(self, chat_id: int, persona: str | None, by_user: int | None) -> None:
        await self._write(
            "INSERT INTO chat_settings (chat_id, persona, updated_by, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (chat_id) DO UPDATE SET persona = excluded.persona, "
            "updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            (chat_id, persona, by_user, time.time()),
        )

    async def count_turns(self, chat: ChatKey, *, include_archived: bool = False) -> int:
        sql = "SELECT COUNT(*) FROM messages WHERE chat_id = ? AND thread_id = ?"
        if not include_archived:
            sql += " AND archived = 0"
        async with self.db.execute(sql, (chat.chat_id, chat.thread_id)) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    # -- memory: summaries and recall (m002) ----------------------------------------------

    async def unsummarised_turns(self, chat: ChatKey, max_tokens: int | None = None) -> list[Turn]:
        live = (
            "FROM messages WHERE chat_id = ? AND thread_id = ? AND archived = 0 "
            "AND summarised = 0 AND status != 'failed'"
        )
        params: tuple[Any, ...] = (chat.chat_id, chat.thread_id)
        if max_tokens is None:
            sql = f"SELECT {_TURN_COLUMNS} {live} ORDER BY id"
        else:
            sql = f"""
                SELECT {_TURN_COLUMNS} FROM (
                    SELECT *, SUM(tokens) OVER (ORDER BY id DESC) AS running,
                           ROW_NUMBER() OVER (ORDER BY id DESC) AS newest {live}
                ) WHERE running <= ? OR newest = 1 ORDER BY id
            """
            params += (max_tokens,)
        async with self.db.execute(sql, params) as cursor:
            return [_turn(row) for row in await cursor.fetchall()]

    async def current_summary(self, chat: ChatKey) -> Summary | None:
        return await self._current_summary(self.db, chat)

    async def _current_summary(self, db: aiosqlite.Connection, chat: ChatKey) -> Summary | None:
        # A summary belongs to the conversation of the messages it covers: once /reset has
        # archived them it is history, and the new conversation starts without one.
        sql = f"""
            SELECT {", ".join("s." + c.strip() for c in _SUMMARY_COLUMNS.split(","))}
            FROM summaries s JOIN messages m ON m.id = s.last_message_id
            WHERE s.chat_id = ? AND s.thread_id = ? AND m.archived = 0
            ORDER BY s.id DESC LIMIT 1
        """
        async with db.execute(sql, (chat.chat_id, chat.thread_id)) as cursor:
            row = await cursor.fetchone()
        return _summary(row) if row else None

    async def save_summary(self, summary: NewSummary) -> Summary:
        chat = summary.chat
        now = time.time()
        async with self._transaction() as db:
            previous = await self._current_summary(db, chat)
            marked = await db.execute(
                "UPDATE messages SET summarised = 1 WHERE chat_id = ? AND thread_id = ? "
                "AND archived = 0 AND summarised = 0 AND id <= ?",
                (chat.chat_id, chat.thread_id, summary.last_message_id),
            )
            covered = (previous.messages_covered if previous else 0) + marked.rowcount
            first = previous.first_message_id if previous else summary.first_message_id
            cursor = await db.execute(
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

    async def search_turns(
        self, chat: ChatKey, words: Sequence[str], *, before_id: int, limit: int = 8
    ) -> list[Turn]:
        query = fts_query(words)
        if not query or limit <= 0:
            return []
        columns = ", ".join("m." + c.strip() for c in _TURN_COLUMNS.split(","))
        sql = f"""
            SELECT {columns} FROM messages_fts f JOIN messages m ON m.id = f.rowid
            WHERE messages_fts MATCH ? AND m.chat_id = ? AND m.thread_id = ?
              AND m.archived = 0 AND m.status != 'failed' AND m.id < ?
            ORDER BY bm25(messages_fts), m.id DESC LIMIT ?
        """
        params = (query, chat.chat_id, chat.thread_id, before_id, limit)
        async with self.db.execute(sql, params) as cursor:
            return [_turn(row) for row in await cursor.fetchall()]

    async def token_factors(self) -> dict[str, float]:
        async with self.db.execute("SELECT model, factor FROM token_factors") as cursor:
            return {row[0]: float(row[1]) for row in await cursor.fetchall()}

    async def set_token_factor(self, model: str, factor: float) -> None:
        await self._write(
            "INSERT INTO token_factors (model, factor, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (model) DO UPDATE SET factor = excluded.factor, "
            "updated_at = excluded.updated_at",
            (model, factor, time.time()),
        )
