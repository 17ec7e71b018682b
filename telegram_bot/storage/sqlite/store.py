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
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from ...models import (
    Author,
    Backlog,
    Chat,
    ChatKey,
    NewSummary,
    NewTurn,
    Role,
    Status,
    StoredTurn,
    Summary,
    Turn,
    Usage,
    UsageTotals,
)
from .migrations import migrate

T = TypeVar("T")

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


# A summary belongs to the conversation of the messages it covers: once /reset has archived
# them it is history, and the new conversation starts without one.
_CURRENT_SUMMARY = f"""
    SELECT {", ".join("s." + c.strip() for c in _SUMMARY_COLUMNS.split(","))}
    FROM summaries s JOIN messages m ON m.id = s.last_message_id
    WHERE s.chat_id = ? AND s.thread_id = ? AND m.archived = 0
    ORDER BY s.id DESC LIMIT 1
"""
# The newest unsummarised turns whose tokens fit (always the newest), and how many there are
# in all (the last column), so the caller can tell whether it has every one of them.
_BACKLOG = f"""
    SELECT {_TURN_COLUMNS}, total FROM (
        SELECT *, SUM(tokens) OVER (ORDER BY id DESC) AS running,
               ROW_NUMBER() OVER (ORDER BY id DESC) AS newest, COUNT(*) OVER () AS total
        FROM messages WHERE chat_id = ? AND thread_id = ? AND archived = 0
        AND summarised = 0 AND status != 'failed'
    ) WHERE running <= ? OR newest = 1 ORDER BY id
"""
_FIRST_LIVE = "SELECT MIN(id) FROM messages WHERE chat_id = ? AND thread_id = ? AND archived = 0"


_BOOK_USAGE = (
    "INSERT INTO usage (day, chat_id, user_id, calls, prompt_tokens, completion_tokens) "
    "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (day, chat_id, user_id) DO UPDATE SET "
    "calls = calls + 1, prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = completion_tokens + excluded.completion_tokens"
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


def _insert_turn(db: sqlite3.Connection, turn: NewTurn, chat_kind: str, now: float) -> int | None:
    """Inserts one message (and its chat's row, if new); the caller holds a transaction."""
    author_id = turn.author.user_id if turn.author else None
    author_name = turn.author.name if turn.author else None
    db.execute(
        "INSERT INTO chats (chat_id, thread_id, kind, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (chat_id, thread_id) DO UPDATE SET updated_at = excluded.updated_at",
        (turn.chat.chat_id, turn.chat.thread_id, chat_kind, now, now),
    )
    if turn.role is Role.USER:  # whoever writes can be answered again (see `Store.add_turn`)
        db.execute(
            "UPDATE chats SET active = 1 WHERE chat_id = ? AND active = 0", (turn.chat.chat_id,)
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

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A query's rows in ONE trip to the database thread.

        `async with db.execute(...) as cursor` plus a fetch costs three trips (execute, fetch,
        close), each a future resolved through the event loop; a message's handling runs about
        a dozen reads, so that was most of the store's cost per reply (docs/benchmarks.md).
        """
        return list(await self.db.execute_fetchall(sql, params))

    async def _row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of a query (or None), in one trip."""
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

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
        """Interim, for tests: stores any turn without the insert-or-get check."""
        now = time.time()
        row_id = await self._atomically(lambda db: _insert_turn(db, turn, chat_kind, now))
        if row_id is None:  # pragma: no cover - sqlite always sets it for INSERT
            raise RuntimeError("insert returned no row id")
        return row_id

    async def add_user_turn(self, turn: NewTurn, *, chat_kind: str = "private") -> StoredTurn:
        # Interim: check then insert. To become one insert-or-get on a unique index.
        if turn.tg_message_id is not None:
            known = await self.find_user_turn(turn.chat, turn.tg_message_id)
            if known is not None:
                await self.set_chat_active(turn.chat.chat_id, True)
                return StoredTurn(known[0], created=False, answered=known[1])
        now = time.time()
        row_id = await self._atomically(lambda db: _insert_turn(db, turn, chat_kind, now))
        if row_id is None:  # pragma: no cover - sqlite always sets it for INSERT
            raise RuntimeError("insert returned no row id")
        return StoredTurn(row_id)

    async def add_reply(
        self, turn: NewTurn, *, user_id: int | None, day: date, chat_kind: str = "private"
    ) -> int:
        now = time.time()
        usage = turn.usage
        booking = (day.isoformat(), turn.chat.chat_id, user_id or 0)

        def insert(db: sqlite3.Connection) -> int | None:
            row_id = _insert_turn(db, turn, chat_kind, now)
            if usage.total:
                db.execute(_BOOK_USAGE, (*booking, usage.prompt_tokens, usage.completion_tokens))
            return row_id

        # One transaction, one trip to the database thread: the reply and its booking.
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
        rows = await self._rows(sql, (chat.chat_id, chat.thread_id, max_tokens))
        return [_turn(row) for row in rows]

    async def archive(self, chat: ChatKey) -> int:
        cursor = await self._write(
            "UPDATE messages SET archived = 1 WHERE chat_id = ? AND thread_id = ? AND archived = 0",
            (chat.chat_id, chat.thread_id),
        )
        return cursor.rowcount

    async def get_chat(self, chat: ChatKey) -> Chat | None:
        row = await self._row(
            "SELECT kind, title, active FROM chats WHERE chat_id = ? AND thread_id = ?",
            (chat.chat_id, chat.thread_id),
        )
        return Chat(chat, row[0], row[1], bool(row[2])) if row else None

    async def set_chat_active(self, chat_id: int, active: bool) -> None:
        await self._write(
            "UPDATE chats SET active = ?, updated_at = ? WHERE chat_id = ?",
            (int(active), time.time(), chat_id),
        )

    async def get_persona(self, chat_id: int) -> str | None:
        row = await self._row("SELECT persona FROM chat_settings WHERE chat_id = ?", (chat_id,))
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
        row = await self._row(sql, (chat.chat_id, chat.thread_id))
        return int(row[0]) if row else 0

    async def add_overheard(
        self, turn: NewTurn, *, keep: int, chat_kind: str = "group"
    ) -> StoredTurn:
        if turn.tg_message_id is not None:
            known = await self.find_user_turn(turn.chat, turn.tg_message_id)
            if known is not None:
                return StoredTurn(known[0], created=False, answered=known[1])
        now = time.time()
        chat = (turn.chat.chat_id, turn.chat.thread_id)
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO chats (chat_id, thread_id, kind, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (chat_id, thread_id) DO UPDATE SET updated_at = excluded.updated_at",
                (*chat, chat_kind, now, now),
            )
            cursor = await db.execute(
                "INSERT INTO messages (chat_id, thread_id, role, author_id, author_name, text, "
                "tokens, tg_message_id, overheard, created_at) "
                "VALUES (?, ?, 'user', ?, ?, ?, ?, ?, 1, ?)",
                (
                    *chat,
                    turn.author.user_id if turn.author else None,
                    turn.author.name if turn.author else None,
                    turn.text,
                    turn.tokens,
                    turn.tg_message_id,
                    now,
                ),
            )
            # Chatter since the last addressed turn beyond the newest `keep` is dropped.
            await db.execute(
                """
                DELETE FROM messages
                WHERE chat_id = ? AND thread_id = ? AND overheard = 1 AND archived = 0
                  AND id > COALESCE((SELECT MAX(id) FROM messages WHERE chat_id = ?
                                     AND thread_id = ? AND overheard = 0), 0)
                  AND id NOT IN (SELECT id FROM messages WHERE chat_id = ? AND thread_id = ?
                                 AND overheard = 1 ORDER BY id DESC LIMIT ?)
                """,
                (*chat, *chat, *chat, max(keep, 1)),
            )
        if cursor.lastrowid is None:  # pragma: no cover - sqlite always sets it for INSERT
            raise RuntimeError("insert returned no row id")
        return StoredTurn(cursor.lastrowid)

    async def move_chat(self, old_chat_id: int, new_chat_id: int) -> int:
        # Every table keyed by chat id moves, including those later migrations add (summaries,
        # usage), so a new feature's data follows a migrated group without touching this code.
        async with self._transaction() as db:
            # Telegram message ids are numbered per chat: the old group's ids mean nothing in
            # the supergroup and would collide with its new ones (the redelivery check looks
            # messages up by them), so moved messages keep their text but not those ids.
            await db.execute(
                "UPDATE messages SET tg_message_id = NULL WHERE chat_id = ?", (old_chat_id,)
            )
            # Usage totals add up: both ids may have a row for the same day and user (the
            # supergroup was used before the old group's service message arrived).
            await db.execute(
                "INSERT INTO usage (day, chat_id, user_id, calls, prompt_tokens, "
                "completion_tokens) SELECT day, ?, user_id, calls, prompt_tokens, "
                "completion_tokens FROM usage WHERE chat_id = ? "
                "ON CONFLICT (day, chat_id, user_id) DO UPDATE SET calls = calls + excluded.calls, "
                "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
                "completion_tokens = completion_tokens + excluded.completion_tokens",
                (new_chat_id, old_chat_id),
            )
            await db.execute("DELETE FROM usage WHERE chat_id = ?", (old_chat_id,))
            tables = await self._tables_with_chat_id(db)
            moved = 0
            for table in tables:
                # Table names come from sqlite_master, never from input; values are parameters.
                cursor = await db.execute(
                    f'UPDATE OR IGNORE "{table}" SET chat_id = ? WHERE chat_id = ?',
                    (new_chat_id, old_chat_id),
                )
                if table == "messages":
                    moved = cursor.rowcount
                # Rows the new id already had (a unique key) win; the old duplicates go.
                await db.execute(f'DELETE FROM "{table}" WHERE chat_id = ?', (old_chat_id,))
        return moved

    @staticmethod
    async def _tables_with_chat_id(db: aiosqlite.Connection) -> list[str]:
        async with db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name != '_migrations' ORDER BY name"
        ) as cursor:
            names = [row[0] for row in await cursor.fetchall()]
        found = []
        for name in names:
            async with db.execute(f'PRAGMA table_info("{name}")') as cursor:
                if any(row[1] == "chat_id" for row in await cursor.fetchall()):
                    found.append(name)
        return found

    # -- reliability: usage accounting, retry, redelivered updates ---------------------------

    async def record_usage(
        self,
        chat: ChatKey | int,
        user_id: int | None,
        day: date,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        chat_id = chat.chat_id if isinstance(chat, ChatKey) else chat
        await self._write(
            _BOOK_USAGE,
            (day.isoformat(), chat_id, user_id or 0, prompt_tokens, completion_tokens),
        )

    async def usage_totals(
        self,
        first_day: date,
        last_day: date,
        *,
        user_id: int | None = None,
        chat_id: int | None = None,
    ) -> UsageTotals:
        sql = (
            "SELECT COALESCE(SUM(calls), 0), COALESCE(SUM(prompt_tokens), 0), "
            "COALESCE(SUM(completion_tokens), 0) FROM usage WHERE day BETWEEN ? AND ?"
        )
        params: list[Any] = [first_day.isoformat(), last_day.isoformat()]
        if user_id is not None:
            sql += " AND user_id = ?"
            params.append(user_id)
        if chat_id is not None:
            sql += " AND chat_id = ?"
            params.append(chat_id)
        row = await self._row(sql, params)
        return UsageTotals(*(int(v) for v in row)) if row else UsageTotals()

    async def top_chats(
        self, first_day: date, last_day: date, limit: int
    ) -> list[tuple[int, UsageTotals]]:
        sql = (
            "SELECT chat_id, SUM(calls), SUM(prompt_tokens), SUM(completion_tokens) FROM usage "
            "WHERE day BETWEEN ? AND ? GROUP BY chat_id "
            "ORDER BY SUM(prompt_tokens) + SUM(completion_tokens) DESC, chat_id LIMIT ?"
        )
        params = (first_day.isoformat(), last_day.isoformat(), limit)
        rows = await self._rows(sql, params)
        return [(int(r[0]), UsageTotals(int(r[1]), int(r[2]), int(r[3]))) for r in rows]

    async def find_user_turn(self, chat: ChatKey, tg_message_id: int) -> tuple[int, bool] | None:
        sql = (
            "SELECT u.id, EXISTS (SELECT 1 FROM messages a WHERE a.chat_id = u.chat_id "
            "AND a.reply_to = u.id) "
            "FROM messages u WHERE u.chat_id = ? AND u.tg_message_id = ? AND u.thread_id = ? "
            "AND u.role = 'user' ORDER BY u.id LIMIT 1"
        )
        row = await self._row(sql, (chat.chat_id, tg_message_id, chat.thread_id))
        return (int(row[0]), bool(row[1])) if row else None

    async def last_exchange(self, chat: ChatKey) -> tuple[Turn, list[Turn]] | None:
        sql = (
            f"SELECT {_TURN_COLUMNS} FROM messages WHERE chat_id = ? AND thread_id = ? "
            "AND archived = 0 AND role = 'user' AND overheard = 0 ORDER BY id DESC LIMIT 1"
        )
        row = await self._row(sql, (chat.chat_id, chat.thread_id))
        if row is None:
            return None
        question = _turn(row)
        sql = (
            f"SELECT {_TURN_COLUMNS} FROM messages WHERE chat_id = ? AND thread_id = ? "
            "AND archived = 0 AND role = 'assistant' AND id > ? ORDER BY id"
        )
        rows = await self._rows(sql, (chat.chat_id, chat.thread_id, question.id))
        answers = [_turn(r) for r in rows]
        return question, answers

    async def supersede(self, turn_ids: Sequence[int], by: int) -> None:
        async with self._transaction() as db:
            await db.executemany(
                "UPDATE messages SET archived = 1, superseded_by = ? WHERE id = ?",
                [(by, turn_id) for turn_id in turn_ids],
            )

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
        return [_turn(row) for row in await self._rows(sql, params)]

    async def current_summary(self, chat: ChatKey) -> Summary | None:
        return await self._current_summary(self.db, chat)

    async def _current_summary(self, db: aiosqlite.Connection, chat: ChatKey) -> Summary | None:
        rows = list(await db.execute_fetchall(_CURRENT_SUMMARY, (chat.chat_id, chat.thread_id)))
        return _summary(rows[0]) if rows else None

    async def backlog(self, chat: ChatKey, max_tokens: int) -> Backlog:
        key = (chat.chat_id, chat.thread_id)

        def read(db: sqlite3.Connection) -> tuple[list[Any], list[Any], Any]:
            summary = db.execute(_CURRENT_SUMMARY, key).fetchall()
            rows = db.execute(_BACKLOG, (*key, max_tokens)).fetchall()
            return summary, rows, db.execute(_FIRST_LIVE, key).fetchone()[0]

        # Every read in one trip to the database thread: this runs before every model call.
        summary, rows, first_id = await self.db._execute(read, self.db._conn)
        return Backlog(
            summary=_summary(summary[0]) if summary else None,
            turns=[_turn(row) for row in rows],
            complete=not rows or len(rows) == rows[0][-1],
            first_id=first_id,
        )

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
            ORDER BY bm25(messages_fts, 1.0, 0.0), m.id DESC LIMIT ?
        """
        # Only this conversation's hits are read and ranked (the chat column weighs nothing).
        scoped = f'chat : "{chat_token(chat)}" AND ({query})'
        params = (scoped, chat.chat_id, chat.thread_id, before_id, limit)
        older = (
            "SELECT 1 FROM messages WHERE chat_id = ? AND thread_id = ? AND archived = 0 "
            "AND id < ? LIMIT 1"
        )

        def search(db: sqlite3.Connection) -> list[Any]:
            # A conversation still inside its verbatim window (most of them) has nothing older
            # to recall: one index probe answers that without reading the index's doclists.
            if db.execute(older, (chat.chat_id, chat.thread_id, before_id)).fetchone() is None:
                return []
            return db.execute(sql, params).fetchall()

        rows: list[Any] = await self.db._execute(search, self.db._conn)
        return [_turn(row) for row in rows]

    async def token_factors(self) -> dict[str, float]:
        rows = await self._rows("SELECT model, factor FROM token_factors")
        return {row[0]: float(row[1]) for row in rows}

    async def set_token_factor(self, model: str, factor: float) -> None:
        await self._write(
            "INSERT INTO token_factors (model, factor, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (model) DO UPDATE SET factor = excluded.factor, "
            "updated_at = excluded.updated_at",
            (model, factor, time.time()),
        )
