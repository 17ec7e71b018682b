"""The PostgreSQL backend's connection pool, and every way the store talks to it.

One asyncpg pool serves the process (`DATABASE_POOL_SIZE` connections at most). Every call
takes a connection for one statement or one transaction and gives it back at once, so a reply
that waits for the model holds none. Round trips to the server are what the store costs per
message, so it makes as few as it can:

- `fetch` / `fetchrow` / `fetchval` / `execute`: one statement, one round trip. A statement is
  atomic on its own, so the store's multi-table writes (a reply and its usage, a message and its
  chat) are single statements with data-modifying CTEs, not BEGIN ... COMMIT (two more trips).
- `transaction(fn)`: BEGIN, `fn`, COMMIT, for the rare writes that need several statements
  (moving a chat, the migrations).
- With `DATABASE_PGBOUNCER` (transaction pooling) asyncpg keeps no prepared statements
  (`statement_cache_size=0`), which costs each statement a second trip (Parse/Describe, then
  Bind/Execute; docs/postgres.md).

**No session state.** The store never SETs anything, never LISTENs, takes advisory locks only
with `pg_advisory_xact_lock` (released at commit) and leaves no cursor or temp table behind: a
connection is the same whichever call had it last, through PgBouncer in transaction mode too.
So the pool skips asyncpg's reset query on release (`pg_advisory_unlock_all(); CLOSE ALL;
UNLISTEN *; RESET ALL`), one round trip per call saved; asyncpg still rolls back a transaction
left open. Code that shares this pool (`Database.pool`) must keep to the same rules; LISTEN
needs its own connection (`connect_dedicated`), outside the pool.

A statement PostgreSQL aborts because of a deadlock or a serialization failure had no effect,
so it is run again (up to 3 times), as is one asyncpg refused to send because its pooled
connection had died while idle (the server restarted). A connection lost with a statement in
flight, or one that cannot be made, becomes `DatabaseUnavailable` (one log line here; the chat
gets the error's own line): that statement may or may not have run, so it is never repeated.
The pool replaces dead connections by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from ...config import describe_database_url
from ...errors import DatabaseUnavailable
from .migrations import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT = 15.0
ATTEMPTS = 3
# What means "the database is not there right now" (as opposed to a bug in a query).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,  # class 08: the connection failed or was lost
    asyncpg.exceptions.OperatorInterventionError,  # 57: shut down, starting, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, disk full
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # 28: wrong user or password
    asyncpg.exceptions.InvalidCatalogNameError,  # 3D: no such database
)
RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset: nothing to reset, no round trip (see the module docstring)."""


class Database:
    """Owns the pool: opens it (and migrates), runs statements on it, closes it."""

    def __init__(self, url: str, *, pool_size: int = 10, pgbouncer: bool = False) -> None:
        self.url = url
        self.pool_size = pool_size
        self.pgbouncer = pgbouncer
        self.where = describe_database_url(url)
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        """The asyncpg pool, for code that shares it (coordination across replicas)."""
        if self._pool is None:
            raise RuntimeError("the store is not open")
        return self._pool

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "timeout": CONNECT_TIMEOUT,
            "server_settings": {"application_name": "telegram-bot"},
        }
        if self.pgbouncer:
            options["statement_cache_size"] = 0
        return options

    async def open(self) -> None:
        """Connects and brings the schema up to date (once, whichever replica is first)."""
        try:
            pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                reset=_keep_session,
                **self._options(),
            )
        except UNAVAILABLE as exc:
            raise self._unavailable(exc, "cannot connect") from exc
        try:
            async with pool.acquire() as connection:
                applied = await migrate(connection)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, UNAVAILABLE):
                raise self._unavailable(exc, "cannot migrate") from exc
            raise
        self._pool = pool
        log.info(
            "Storage: PostgreSQL at %s (pool of %d%s)%s",
            self.where,
            self.pool_size,
            ", PgBouncer mode" if self.pgbouncer else "",
            f"; applied {', '.join(applied)}" if applied else "",
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def _unavailable(self, exc: BaseException, doing: str) -> DatabaseUnavailable:
        reason = str(exc).strip() or type(exc).__name__
        log.warning("PostgreSQL at %s: %s: %s", self.where, doing, reason)
        return DatabaseUnavailable(f"PostgreSQL at {self.where}: {doing}: {reason}")

    async def _run(self, call: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Runs `call` on a pooled connection: again after a deadlock or a serialization
        failure, or on a new connection when this one turned out dead before the statement left
        (see `_never_sent`); a lost or refused connection becomes DatabaseUnavailable."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self.pool.acquire() as connection:
                    try:
                        return await call(connection)
                    except (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError) as exc:
                        if not _never_sent(exc, connection):
                            raise
                        connection.terminate()  # the pool makes a new one
                        if attempt == ATTEMPTS:
                            raise self._unavailable(exc, "connection lost") from exc
                        continue
            except RETRYABLE as exc:
                if attempt == ATTEMPTS:
                    raise
                log.info("PostgreSQL: %s; running the statement again", type(exc).__name__)
                await asyncio.sleep(0.01 * attempt)
            except UNAVAILABLE as exc:
                raise self._unavailable(exc, "query failed") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """A query's rows, in one round trip."""
        rows: list[asyncpg.Record] = await self._run(lambda db: db.fetch(sql, *args))
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        """The first row of a query, or None, in one round trip."""
        return await self._run(lambda db: db.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, in one round trip."""
        return await self._run(lambda db: db.fetchval(sql, *args))

    async def execute(self, sql: str, *args: Any) -> int:
        """One write statement; returns how many rows it changed."""
        status: str = await self._run(lambda db: db.execute(sql, *args))
        return affected(status)

    async def transaction(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Runs `fn` on one connection as one transaction: all of its writes, or none."""

        async def run(connection: asyncpg.Connection) -> T:
            async with connection.transaction():
                return await fn(connection)

        return await self._run(run)

    async def connect_dedicated(self, url: str = "") -> asyncpg.Connection:
        """A connection of its own, outside the pool and its rules, with the same settings:
        for LISTEN, or a session advisory lock held for a long time. The caller closes it.
        Through PgBouncer in transaction mode LISTEN does not work: pass a direct `url`
        (DATABASE_LISTEN_URL)."""
        try:
            return await asyncpg.connect(url or self.url, **self._options())
        except UNAVAILABLE as exc:
            raise self._unavailable(exc, "cannot connect") from exc


def _never_sent(exc: BaseException, connection: asyncpg.Connection) -> bool:
    """Whether asyncpg refused to start the statement because its connection had died while
    idle in the pool (the server ended it, and the close was not yet seen): asyncpg then finds
    the protocol in the wrong state, or the connection closed, before anything is written, so
    running the statement on another connection cannot run it twice."""
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        return "cannot switch to state" in str(exc)
    return connection.is_closed()


def affected(status: str) -> int:
    """The row count of a command status ('UPDATE 3', 'INSERT 0 1', 'DELETE 0')."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0
