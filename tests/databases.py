"""The database a test's bot runs on, SQLite or PostgreSQL, and how a test reads it.

`Database` is what a test needs of either: the settings that point the bot at it, a `Store`
over it (to seed history as an earlier run of the bot would), and `query`, which reads it as an
owner would with the database's own shell. The SQL tests write is the portable kind (`?`
placeholders, booleans tested as `WHERE summarised` / `WHERE NOT summarised`); rows come back
as tuples, and PostgreSQL's booleans compare equal to SQLite's 0 and 1.

tests/conftest.py gives every test SQLite (`database`). A module whose tests should hold on
every backend imports `every_backend`, a `database` fixture parametrised over SQLite and a
fresh PostgreSQL database (skipped, with one line at the end of the run, where there is no
PostgreSQL).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import pytest

from telegram_bot.storage import Store
from telegram_bot.storage.postgres.store import PostgresStore
from telegram_bot.storage.sqlite.store import SQLiteStore
from tests.real.postgres import PostgresServer, fresh_database

Row = tuple[Any, ...]


class Database(Protocol):
    name: str

    @property
    def settings(self) -> dict[str, Any]:
        """Settings overrides that point the bot at this database."""

    def store(self) -> Store:
        """A new store over this database, not yet open."""

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        """Rows of a query with `?` placeholders, read as the database's shell would."""


class SQLiteDatabase:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def settings(self) -> dict[str, Any]:
        return {"database_path": self.path}

    def store(self) -> Store:
        return SQLiteStore(self.path)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        with closing(sqlite3.connect(self.path)) as db:
            return list(db.execute(sql, params))


class PostgresDatabase:
    name = "postgres"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    @property
    def settings(self) -> dict[str, Any]:
        return {"database_url": self.dsn, "database_pool_size": 4}

    def store(self) -> Store:
        return PostgresStore(self.dsn, pool_size=2)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        # Tests call this from inside the event loop the bot runs on, so the query runs on a
        # thread with a loop and a connection of its own (it holds no lock the bot waits for).
        numbered = iter(range(1, len(params) + 1))
        pg_sql = re.sub(r"\?", lambda _: f"${next(numbered)}", sql)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self._fetch(pg_sql, params)).result()

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        connection = await asyncpg.connect(self.dsn)
        try:
            return [tuple(row) for row in await connection.fetch(sql, *params)]
        finally:
            await connection.close()


@pytest.fixture(
    name="database",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.real_server)],
)
async def every_backend(request: pytest.FixtureRequest, db_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        yield SQLiteDatabase(db_path)
        return
    server: PostgresServer = request.getfixturevalue("pg_server")  # skips without PostgreSQL
    async with fresh_database(server, request.node.name) as dsn:
        yield PostgresDatabase(dsn)
