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

A database another process holds locked must not stall the bot. SQLite's own busy handler
waits by sleeping on the thread that asked, and here that thread is the one every chat's work
runs on: one chat waiting for the lock held up every other chat's reads for up to
`busy_timeout` per message. So once the schema is up to date, `busy_timeout` is 0 and a
statement that meets the lock fails at once; `_run` waits on the event loop instead (a short
back-off, up to DATABASE_BUSY_TIMEOUT in all) and tries again, and in between the thread
serves everyone else (in WAL, reads never need the lock). What still fails becomes a
`StorageError` (errors.py: busy, full, or failing), with one ERROR line naming the cause; the
engine turns it into one line in the chat. Errors of the SQL itself (a constraint) stay
sqlite3's.

Opening is where a bad file shows: corrupt or truncated, locked by another process (waited
for at most DATABASE_BUSY_TIMEOUT: while opening, that is SQLite's busy timeout, set before
anything else), a location that cannot be written. Each becomes one `StorageUnusable` naming
the file and the problem, and the connection's thread is always stopped (aiosqlite's thread
is not a daemon: left running, it would keep the process alive for ever). Conversations are
private: a new data directory is created 0700 and a new database file 0600 before SQLite opens
it (SQLite gives the -wal and -shm files the database file's permissions).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from ...errors import StorageBusy, StorageError, StorageFull, StorageUnusable
from .migrations import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
# SQLite's primary result codes (sqlite3.h) that say the storage, not the SQL, failed.
_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED
_FULL = 13  # SQLITE_FULL: the disk (or the database's size limit) is full
_FAILING = {3, 7, 8, 10, 11, 14, 26}  # PERM, NOMEM, READONLY, IOERR, CORRUPT, CANTOPEN, NOTADB
_FIRST_BACKOFF, _MAX_BACKOFF = 0.005, 0.1  # seconds between two tries on a locked database
# What an SQLite error at opening means to the person running the bot (by its primary code).
_LOCKED = "is locked by another process (waited {wait:g} s for it, DATABASE_BUSY_TIMEOUT)"
_PROBLEMS = {
    "SQLITE_BUSY": _LOCKED,
    "SQLITE_LOCKED": _LOCKED,
    "SQLITE_NOTADB": "is not a SQLite database (a corrupt or truncated file, or another file)",
    "SQLITE_CORRUPT": "is corrupt (database disk image is malformed)",
    "SQLITE_CANTOPEN": "cannot be opened (its location is missing or not writable)",
    "SQLITE_READONLY": "is read-only (the file or its directory is not writable)",
    "SQLITE_PERM": "cannot be opened (permission denied)",
    "SQLITE_FULL": "cannot be written: the disk is full",
    "SQLITE_IOERR": "cannot be read or written (disk I/O error)",
}


def unusable(path: Path, exc: sqlite3.Error, waited: float) -> StorageUnusable:
    """The one line for an SQLite error met while opening the database at `path`."""
    name = str(getattr(exc, "sqlite_errorname", ""))  # e.g. SQLITE_IOERR_SHORT_READ
    problem = _PROBLEMS.get("_".join(name.split("_")[:2]), f"cannot be used ({exc})")
    return StorageUnusable(f"Database {_shown(path)} {problem.format(wait=waited)}")


def _shown(path: Path) -> Path:
    return path if path == Path(":memory:") else path.absolute()


def prepare_directory(database: Path) -> None:
    """Creates the database's directory, private (0700), if it does not exist."""
    folder = database.parent
    if folder.is_dir():
        return
    try:
        folder.mkdir(mode=0o700, parents=True)
    except OSError as exc:
        raise StorageUnusable(
            f"Database {_shown(database)}: its directory cannot be created ({exc.strerror})"
        ) from None


def prepare_file(database: Path) -> None:
    """Creates the database file private (0600) before SQLite opens it."""
    prepare_directory(database)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        os.close(os.open(database, flags, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StorageUnusable(
            f"Database {_shown(database)} cannot be created ({exc.strerror})"
        ) from None


def warn_if_readable(database: Path) -> None:
    """One warning when an existing database (made before files were created private) can be
    read by other users; the bot does not change permissions it did not set."""
    mode = database.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning(
            "Database %s can be read by other users (mode %o): chmod 600 it and its -wal and "
            "-shm files, and chmod 700 its directory",
            _shown(database),
            mode,
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

    def __init__(self, path: Path, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout  # seconds a statement may wait for a lock, in all
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    async def open(self) -> None:
        """Connects and brings the schema up to date; raises StorageUnusable with the one line
        that says what is wrong with the file. Nothing to do when it is open already."""
        if self._db is not None:
            return
        if self.path != Path(":memory:"):
            prepare_file(self.path)
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:  # aiosqlite has stopped its thread
            raise unusable(self.path, exc, self.busy_timeout) from None
        try:
            # First, so every step of opening waits at most this long for another's lock.
            await db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            for pragma in PRAGMAS:
                await db.execute(pragma)
            await migrate(db)
            await db.execute_fetchall("PRAGMA busy_timeout=0")  # a lock is waited for by `_run`
        except sqlite3.Error as exc:
            await db.close()
            raise unusable(self.path, exc, self.busy_timeout) from None
        except BaseException:
            await db.close()
            raise
        self._db = db
        if self.path != Path(":memory:"):
            warn_if_readable(self.path)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def _run(
        self, job: Callable[[], Awaitable[T]], wait: float | None = None, quiet: bool = False
    ) -> T:
        """Runs one trip's job; on a lock, tries again after a back-off on the event loop
        (never on the connection's thread) until `busy_timeout` (or `wait`) has passed; raises
        StorageError for what the storage, not the SQL, failed at (logged, unless `quiet`)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + (self.busy_timeout if wait is None else wait)
        pause = _FIRST_BACKOFF
        while True:
            try:
                return await job()
            except sqlite3.Error as exc:
                code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
                if code in _BUSY and loop.time() + pause <= give_up:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, _MAX_BACKOFF)
                    continue
                error = self._storage_error(code, exc, quiet)
                if error is None:
                    raise
                raise error from exc

    def _storage_error(self, code: int, exc: sqlite3.Error, quiet: bool) -> StorageError | None:
        """The StorageError for a failed job, logged once with its cause (unless `quiet`);
        None when the SQL itself failed (that is a bug, raised as it is)."""
        if quiet:
            busy, full = code in _BUSY, code == _FULL
            if busy or full or code in _FAILING:
                kind = StorageBusy if busy else StorageFull if full else StorageError
                return kind(str(exc))
            return None
        if code in _BUSY:
            log.error(
                "The database %s is locked by another process (waited %.1f s, "
                "DATABASE_BUSY_TIMEOUT): %s",
                self.path,
                self.busy_timeout,
                exc,
            )
            return StorageBusy(str(exc))
        if code == _FULL:
            log.error("The database %s cannot grow: the disk is full (%s)", self.path, exc)
            return StorageFull(str(exc))
        if code in _FAILING:
            log.error("The database %s failed: %s (%s)", self.path, exc, exc.sqlite_errorname)
            return StorageError(str(exc))
        return None

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A query's rows in one trip (`async with db.execute(...)` and a fetch cost three:
        execute, fetch, close)."""
        return list(await self._run(lambda: self.db.execute_fetchall(sql, params)))

    async def row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of a query, or None, in one trip."""
        rows = await self.rows(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement, committed on its own; returns how many rows it changed."""
        cursor = await self._run(lambda: self.db.execute(sql, params))
        return cursor.rowcount

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Several statements of a read in one trip (no transaction: each sees the latest
        commit, and nothing else runs on the connection in between)."""
        return await self._run(lambda: run_on_connection_thread(self.db, fn))

    async def transaction(
        self, fn: Callable[[sqlite3.Connection], T], *, wait: float | None = None
    ) -> T:
        """Runs `fn` as one transaction in one trip: all of its writes, or none. With `wait`,
        it gives way: waits at most that long for another process's lock, and a StorageError
        is raised without a log line (the caller says what it means)."""

        def run(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")  # may fail too: the disk fills as the WAL grows
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                    conn.execute("ROLLBACK")
                raise
            return result

        return await self._run(
            lambda: run_on_connection_thread(self.db, run), wait, quiet=wait is not None
        )
