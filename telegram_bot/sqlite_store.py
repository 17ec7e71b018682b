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
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .migrations import migrate
from .models import Author, Chat, ChatKey, NewTurn, Role, Status, Turn

T = TypeVar("T")

_TURN_COLUMNS = (
    "id, chat_id, thread_id, role, text, tokens, created_at, author_id, author_name, status, "
    "tg_message_id, archived"
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
    )


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

    async def _atomically(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `work` as one transaction, in a single trip to the database thread.

        Awaiting BEGIN, each write and COMMIT separately costs four trips through the event
        loop while the write lock is held; under a burst of messages those trips queue behind
        everything else the loop does, and every later chat waits for them (measured:
        docs/benchmarks.md). `_execute` is the primitive every aiosqlite method is built on.
        """

        def run() -> T:
            conn: sqlite3.Connection = self.db._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        async with self._write_lock:
            result: T = await self.db._execute(run)
            return result

    async def add_turn(self, turn: NewTurn, *, chat_kind: str = "private") -> int:
        now = time.time()
        author_id = turn.author.user_id if turn.author else None
        author_name = turn.author.name if turn.author else None

        def insert(db: sqlite3.Connection) -> int | None:
            db.execute(
                "INSERT INTO chats (chat_id, thread_id, kind, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (chat_id, thread_id) DO UPDATE SET updated_at = excluded.updated_at",
                (turn.chat.chat_id, turn.chat.thread_id, chat_kind, now, now),
            )
            cursor = db.execute(
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
            return cursor.lastrowid

        row_id = await self._atomically(insert)
        if row_id is None:  # pragma: no cover - sqlite always sets it for INSERT
            raise RuntimeError("insert returned no row id")
        return row_id

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
