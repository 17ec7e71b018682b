"""`telegram-bot migrate-db`: copies the SQLite database into PostgreSQL, as often as needed.

The copy makes PostgreSQL's tables hold exactly the SQLite file's rows, ids included, in ONE
transaction: either the whole copy lands or nothing does. Per table it COPYs the file's rows
into a temporary table, then inserts the rows PostgreSQL lacks, updates the ones that differ
and deletes the ones the file no longer has (trimmed group chatter, a moved group's old rows).
So running it again copies nothing twice and says so, and a run after the bot wrote more to the
file copies only what changed. The identity sequences then continue after the highest id
SQLite ever gave (its `sqlite_sequence`), and the counts are compared table by table.

Tables and columns are matched by name, values converted by PostgreSQL's column type (SQLite's
epoch seconds to timestamptz, 'YYYY-MM-DD' to date, 0/1 to boolean), so a ported migration's
columns are copied without changing this module. A SQLite table or column PostgreSQL lacks
stops the copy before anything is written: its migration was not ported (`migrations.py`),
and copying the rest would lose it silently. The recall index is not copied but rebuilt: it is
p002's generated column, computed as the rows go in. The file's SQLite migrations and what was
copied are recorded in `sqlite_imports` (p003).

A PostgreSQL database the bot has already written to is refused: its new rows have ids the
file will also give, and copying would mix two histories.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg

from ...errors import DatabaseCopyRefused
from ..sqlite.store import SQLiteStore
from .store import PostgresStore

# The order rows go in (referenced tables first; deletions run the other way round). Tables a
# later migration adds go after these, by name.
ORDER = ("chats", "chat_settings", "messages", "summaries", "usage", "token_factors")
COPY_LOCK = 0x7467_6264_636F_7079  # "tgbdcopy": one migrate-db at a time


@dataclass(frozen=True, slots=True)
class TableCopy:
    """One table's rows in SQLite and, after the copy, in PostgreSQL; what the copy did."""

    table: str
    sqlite: int
    postgres: int
    added: int
    changed: int
    removed: int

    @property
    def matches(self) -> bool:
        return self.sqlite == self.postgres


@dataclass(frozen=True, slots=True)
class CopyReport:
    tables: list[TableCopy]
    indexed: int  # messages in PostgreSQL's recall index
    sqlite_migrations: list[str]

    @property
    def matches(self) -> bool:
        return all(t.matches for t in self.tables)

    @property
    def copied(self) -> int:
        return sum(t.added + t.changed + t.removed for t in self.tables)

    def lines(self) -> list[str]:
        """The counts, table by table, and what they mean, as migrate-db prints them."""
        out = [
            f"{'table':<16}{'SQLite':>10}{'PostgreSQL':>12}{'new':>8}{'changed':>9}{'removed':>9}"
        ]
        out += [
            f"{t.table:<16}{t.sqlite:>10}{t.postgres:>12}{t.added:>8}{t.changed:>9}{t.removed:>9}"
            + ("" if t.matches else "   <- counts differ")
            for t in self.tables
        ]
        out.append(f"{'recall index':<16}{'':>10}{self.indexed:>12}  messages indexed for recall")
        if not self.matches:
            out.append("The counts differ: the copy is not complete.")
        elif self.copied:
            added, changed, removed = (
                sum(getattr(t, what) for t in self.tables)
                for what in ("added", "changed", "removed")
            )
            out.append(
                f"Counts match. Copied {added} new rows, updated {changed}, removed {removed}."
            )
        else:
            out.append("Counts match. Nothing to copy: PostgreSQL already holds every row.")
        return out


def _timestamp(value: Any) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


def _date(value: Any) -> date | None:
    return None if value is None else date.fromisoformat(str(value))


def _text(value: Any) -> str | None:
    # PostgreSQL text cannot hold NUL, which SQLite stores; the bot never writes one.
    return None if value is None else str(value).replace("\x00", "\ufffd")


def _of(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else kind(value)


CONVERT: dict[str, Callable[[Any], Any]] = {
    "timestamptz": _timestamp,
    "date": _date,
    "bool": _of(bool),
    "int2": _of(int),
    "int4": _of(int),
    "int8": _of(int),
    "float4": _of(float),
    "float8": _of(float),
    "text": _text,
    "jsonb": _text,  # SQLite keeps JSON as text; asyncpg takes jsonb as its text
}


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: list[str]  # SQLite's, every one of which PostgreSQL has
    types: list[str]  # PostgreSQL's type of each
    key: list[str]  # PostgreSQL's primary key


def _sqlite_tables(db: sqlite3.Connection) -> dict[str, list[str]]:
    """The file's own tables and their columns; its recall index and bookkeeping aside."""
    virtual = [
        name
        for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL%'"
        )
    ]
    tables: dict[str, list[str]] = {}
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
        if name.startswith("sqlite_") or name == "_migrations":
            continue
        if any(name == v or name.startswith(f"{v}_") for v in virtual):
            continue  # FTS5 and its shadow tables: PostgreSQL's recall index is p002's
        tables[name] = [row[1] for row in db.execute(f'PRAGMA table_info("{name}")')]
    return tables


async def _postgres_columns(pg: asyncpg.Connection) -> dict[str, dict[str, str]]:
    found = await pg.fetch(
        "SELECT table_name, column_name, udt_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND is_generated = 'NEVER' "
        "ORDER BY table_name, ordinal_position"
    )
    columns: dict[str, dict[str, str]] = {}
    for table, column, kind in found:
        columns.setdefault(table, {})[column] = kind
    return columns


async def _primary_key(pg: asyncpg.Connection, table: str) -> list[str]:
    found = await pg.fetch(
        "SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY "
        "AS k(attnum, n) JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY k.n",
        table,
    )
    return [row[0] for row in found]


async def _plan(pg: asyncpg.Connection, sqlite_tables: dict[str, list[str]]) -> list[Table]:
    """The tables to copy, in order; refuses what PostgreSQL has no place for."""
    postgres = await _postgres_columns(pg)
    missing: list[str] = []
    for table, columns in sqlite_tables.items():
        if table not in postgres:
            missing.append(table)
        else:
            missing += [f"{table}.{column}" for column in columns if column not in postgres[table]]
    if missing:
        raise DatabaseCopyRefused(
            f"PostgreSQL has no place for {', '.join(missing)} of the SQLite database: the "
            "SQLite migration that added it is not ported to PostgreSQL "
            "(telegram_bot/storage/postgres/migrations.py). Nothing was copied."
        )
    names = [t for t in ORDER if t in sqlite_tables] + sorted(set(sqlite_tables) - set(ORDER))
    plan = []
    for name in names:
        columns = sqlite_tables[name]
        key = await _primary_key(pg, name)
        if not key:
            raise DatabaseCopyRefused(
                f"PostgreSQL table {name} has no primary key to match rows by."
            )
        plan.append(Table(name, columns, [postgres[name][c] for c in columns], key))
    return plan


async def _check_not_written_by_the_bot(pg: asyncpg.Connection, plan: list[Table]) -> None:
    last = await pg.fetchrow(
        "SELECT last_message_id, last_summary_id FROM sqlite_imports ORDER BY id DESC LIMIT 1"
    )
    if last is None:
        for table in plan:
            if await pg.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{table.name}")'):
                raise DatabaseCopyRefused(
                    f"The PostgreSQL database already holds data (table {table.name}) that "
                    "migrate-db did not copy there. Copy into an empty database."
                )
        return
    newer = await pg.fetchval(
        "SELECT (SELECT count(*) FROM messages WHERE id > $1) "
        "+ (SELECT count(*) FROM summaries WHERE id > $2)",
        last[0],
        last[1],
    )
    if newer:
        raise DatabaseCopyRefused(
            f"The bot has written to PostgreSQL since the last copy ({newer} new messages and "
            "summaries there); copying again would mix two histories. Nothing was copied."
        )


def _rows(db: sqlite3.Connection, table: Table) -> Iterator[tuple[Any, ...]]:
    converters = [CONVERT.get(kind, lambda value: value) for kind in table.types]
    columns = ", ".join(f'"{c}"' for c in table.columns)
    for row in db.execute(f'SELECT {columns} FROM "{table.name}"'):
        yield tuple(convert(value) for convert, value in zip(converters, row, strict=True))


async def _copy_in(pg: asyncpg.Connection, db: sqlite3.Connection, table: Table) -> TableCopy:
    """Stages the file's rows, then adds and updates; deletions come later (`_remove`)."""
    staged = f"_incoming_{table.name}"
    columns = ", ".join(f'"{c}"' for c in table.columns)
    await pg.execute(
        f'CREATE TEMP TABLE "{staged}" ON COMMIT DROP AS '
        f'SELECT {columns} FROM "{table.name}" WITH NO DATA'
    )
    await pg.copy_records_to_table(staged, records=_rows(db, table), columns=table.columns)
    same_key = " AND ".join(f't."{c}" = s."{c}"' for c in table.key)
    added = await pg.execute(
        f'INSERT INTO "{table.name}" ({columns}) SELECT {columns} FROM "{staged}" s '
        f'WHERE NOT EXISTS (SELECT 1 FROM "{table.name}" t WHERE {same_key})'
    )
    values = [c for c in table.columns if c not in table.key]
    changed = "UPDATE 0"
    if values:
        target = ", ".join(f'"{c}"' for c in values)
        source = ", ".join(f's."{c}"' for c in values)
        current = ", ".join(f't."{c}"' for c in values)
        changed = await pg.execute(
            f'UPDATE "{table.name}" t SET ({target}) = ROW({source}) FROM "{staged}" s '
            f"WHERE {same_key} AND ROW({current}) IS DISTINCT FROM ROW({source})"
        )
    (count,) = db.execute(f'SELECT count(*) FROM "{table.name}"').fetchone()
    return TableCopy(table.name, count, 0, _affected(added), _affected(changed), 0)


async def _remove(pg: asyncpg.Connection, table: Table, copied: TableCopy) -> TableCopy:
    same_key = " AND ".join(f't."{c}" = s."{c}"' for c in table.key)
    removed = await pg.execute(
        f'DELETE FROM "{table.name}" t WHERE NOT EXISTS '
        f'(SELECT 1 FROM "_incoming_{table.name}" s WHERE {same_key})'
    )
    total = await pg.fetchval(f'SELECT count(*) FROM "{table.name}"')
    return TableCopy(
        table.name, copied.sqlite, total, copied.added, copied.changed, _affected(removed)
    )


def _affected(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


async def _continue_sequences(
    pg: asyncpg.Connection, db: sqlite3.Connection, plan: list[Table]
) -> None:
    """Each copied identity goes on after the highest id the file ever gave, deleted rows too."""
    given = dict(db.execute("SELECT name, seq FROM sqlite_sequence"))
    for table, column in await pg.fetch(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND is_identity = 'YES' "
        "AND table_name = ANY($1::text[])",
        [t.name for t in plan],
    ):
        highest = await pg.fetchval(f'SELECT max("{column}") FROM "{table}"')
        last = max(highest or 0, int(given.get(table) or 0))
        await pg.execute(
            "SELECT setval(pg_get_serial_sequence($1, $2), $3, $4)",
            f'"{table}"',
            column,
            max(last, 1),
            last > 0,
        )


def copy_sqlite_to_postgres(sqlite_path: Path, url: str) -> CopyReport:
    """Copies the SQLite database at `sqlite_path` into the PostgreSQL database at `url`
    (runs its own event loop: a command, not part of the running bot)."""
    if not sqlite_path.is_file():  # connecting would make an empty one
        raise DatabaseCopyRefused(f"There is no SQLite database at {sqlite_path}.")
    return asyncio.run(_copy(sqlite_path.resolve(), url))


async def _copy(sqlite_path: Path, url: str) -> CopyReport:
    # Both schemas brought up to date first, as the bot would on start.
    for store in (SQLiteStore(sqlite_path), PostgresStore(url, pool_size=1)):
        await store.open()
        await store.close()
    with closing(sqlite3.connect(sqlite_path, isolation_level=None)) as db:
        db.execute("BEGIN")  # one snapshot of the file, however long the copy takes
        migrated = [name for (name,) in db.execute("SELECT name FROM _migrations ORDER BY name")]
        pg = await asyncpg.connect(url)
        try:
            async with pg.transaction():
                await pg.execute("SELECT pg_advisory_xact_lock($1)", COPY_LOCK)
                plan = await _plan(pg, _sqlite_tables(db))
                await _check_not_written_by_the_bot(pg, plan)
                staged = [await _copy_in(pg, db, table) for table in plan]
                done = {}
                for table, copied in reversed(list(zip(plan, staged, strict=True))):
                    done[table.name] = await _remove(pg, table, copied)
                await _continue_sequences(pg, db, plan)
                report = CopyReport(
                    [done[t.name] for t in plan],
                    await pg.fetchval("SELECT count(*) FROM messages WHERE tsv IS NOT NULL"),
                    migrated,
                )
                await pg.execute(
                    "INSERT INTO sqlite_imports (source, sqlite_migrations, last_message_id, "
                    "last_summary_id, counts) VALUES ($1, $2, "
                    "(SELECT COALESCE(max(id), 0) FROM messages), "
                    "(SELECT COALESCE(max(id), 0) FROM summaries), $3)",
                    str(sqlite_path),
                    migrated,
                    json.dumps({t.table: t.postgres for t in report.tables}),
                )
        finally:
            await pg.close()
        db.execute("ROLLBACK")
    return report
