"""The SQLite backend's one connection, and every way the store talks to it.

One aiosqlite connection serves the whole process. aiosqlite runs it on a thread of its own and
runs the jobs it is given one at a time, in order; every await on it is a trip from the event
loop to that thread and back, a future resolved through the loop. Trips are what the store
costs per message (docs/benchmarks.md), so the store makes as few as it can:

- `rows` / `row` / `execute`: one statement, one trip (autocommit);
- `read(fn)`: several statements of a read, one trip;
- `transaction(fn)`: BEGIN IMMEDIATE, `fn`, COMMIT (or ROLLBACK), one trip.

A transaction is always one job on the connection's thread, so no other task's statement can
land inside it and a task cancelled while it waits cannot leave it open: no write lock is
needed. (There was one while transactions spanned several awaits.)

The connection is in autocommit mode. WAL lets a reader (the console, the sqlite3 shell, a
backup) look at the file while the bot writes; `synchronous=NORMAL` is the documented safe
setting for WAL: a power cut may lose the last commits, never corrupt the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .migrations import migrate

T = TypeVar("T")

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)


async def run_on_connection_thread(
    db: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]
) -> T:
    """Runs `fn(conn)` on aiosqlite's thread with its `sqlite3.Connection`, in ONE trip.

    aiosqlite offers no public way to run several statements in one job: each of its methods
    is one statement and one trip, and a message's hot path (store it, read its backlog, store
    the reply) would cost several trips each, queued behind everything else the event loop does
    under a burst (measured: docs/benchmarks.md). `Connection._execute` (queue a callable on the
    connection's thread) and `Connection._conn` (the sqlite3 connection) are the primitives
    every aiosqlite method is built on; this is the only place that uses them.

    aiosqlite is pinned below its next minor version in pyproject.toml, and
    tests/test_sqlite_connection.py fails with a clear message if a release changes them.
    """
    conn: sqlite3.Connection = db._conn
    result: T = await db._execute(fn, conn)
    return result


class Connection:
    """Owns the aiosqlite connection: opens it (pragmas, migrations), runs work on it, closes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    async def open(self) -> None:
        """Connects and brings the schema up to date."""
        if self.path != Path(":memory:"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            for pragma in PRAGMAS:
                await db.execute(pragma)
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A query's rows in one trip (`async with db.execute(...)` and a fetch cost three:
        execute, fetch, close)."""
        return list(await self.db.execute_fetchall(sql, params))

    async def row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of a query, or None, in one trip."""
        rows = await self.rows(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement, committed on its own; returns how many rows it changed."""
        cursor = await self.db.execute(sql, params)
        return cursor.rowcount

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Several statements of a read in one trip (no transaction: each sees the latest
        commit, and nothing else runs on the connection in between)."""
        return await run_on_connection_thread(self.db, fn)

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `fn` as one transaction in one trip: all of its writes, or none."""

        def run(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await run_on_connection_thread(self.db, run)
