"""Per-call cost of PostgreSQL (asyncpg, pool of 4) next to SQLite (aiosqlite), in one run.

One operation is what a store call does at its smallest: INSERT one row (RETURNING its id), then
SELECT it back. Each configuration runs `--ops` operations after a warm-up, `--rounds` times, the
configurations taking turns within each round so a noisy neighbour hits them all alike. Printed:
the median and p95 of one operation over all rounds; the throughput and this process's CPU time
per operation (median over rounds: the bot's own cost; PostgreSQL's server CPU is not in it,
SQLite's is). "x4" runs the same operations from 4 concurrent tasks.

    python -m tests.real.bench_postgres [--url postgresql://postgres@127.0.0.1:5432/postgres]

PostgreSQL is the throwaway cluster from tests/real/postgres.py (fsync off) and, with --url, that
server too. SQLite uses the bot's settings (WAL, synchronous=NORMAL, autocommit) on a temp file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite
import asyncpg

from tests.real.postgres import PostgresServer, find_bin_dir, fresh_database, throwaway_cluster

Operation = Callable[[int], Awaitable[None]]


@dataclass
class Result:
    name: str
    per_op_us: list[float] = field(default_factory=list)
    ops_per_s: list[float] = field(default_factory=list)
    cpu_us_per_op: list[float] = field(default_factory=list)


@contextlib.asynccontextmanager
async def postgres_op(dsn: str, cache: bool) -> AsyncIterator[Operation]:
    options = {} if cache else {"statement_cache_size": 0}
    async with asyncpg.create_pool(dsn, min_size=4, max_size=4, **options) as pool:
        await pool.execute(
            "CREATE TABLE IF NOT EXISTS turns (id bigserial PRIMARY KEY, chat_id bigint, text text)"
        )

        async def op(n: int) -> None:
            row_id = await pool.fetchval(
                "INSERT INTO turns (chat_id, text) VALUES ($1, $2) RETURNING id", n, "hello"
            )
            assert await pool.fetchval("SELECT text FROM turns WHERE id = $1", row_id) == "hello"

        yield op


@contextlib.asynccontextmanager
async def sqlite_op(path: Path) -> AsyncIterator[Operation]:
    async with aiosqlite.connect(path, isolation_level=None) as db:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            await db.execute(f"PRAGMA {pragma}")
        await db.execute(
            "CREATE TABLE IF NOT EXISTS turns"
            " (id INTEGER PRIMARY KEY AUTOINCREMENT, chat_id INTEGER, text TEXT)"
        )

        async def op(n: int) -> None:
            cursor = await db.execute(
                "INSERT INTO turns (chat_id, text) VALUES (?, ?)", (n, "hello")
            )
            async with db.execute("SELECT text FROM turns WHERE id = ?", (cursor.lastrowid,)) as c:
                assert (await c.fetchone()) == ("hello",)

        yield op


async def measure(op: Operation, ops: int, tasks: int, result: Result) -> None:
    for n in range(100):  # warm-up: connections, caches, the table's first pages
        await op(n)

    async def worker(share: int) -> None:
        for n in range(share):
            started = time.perf_counter()
            await op(n)
            result.per_op_us.append((time.perf_counter() - started) * 1e6)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(ops // tasks) for _ in range(tasks)))
    result.ops_per_s.append(ops / (time.perf_counter() - started))
    result.cpu_us_per_op.append((time.process_time() - cpu) * 1e6 / ops)


async def run(servers: list[PostgresServer], ops: int, rounds: int) -> list[Result]:
    async with contextlib.AsyncExitStack() as stack:
        configs: dict[str, Operation] = {}
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        configs["aiosqlite, 1 connection"] = await stack.enter_async_context(
            sqlite_op(tmp / "bench.sqlite3")
        )
        for server in servers:
            label = "throwaway, fsync off" if server.socket_dir else server.dsn
            dsn = await stack.enter_async_context(fresh_database(server, "bench"))
            for cache in (True, False):
                name = f"asyncpg pool 4, cache {'on' if cache else 'off'} ({label})"
                configs[name] = await stack.enter_async_context(postgres_op(dsn, cache))
        results = {
            (name, tasks): Result(f"{name}{' x4' if tasks > 1 else ''}")
            for name in configs
            for tasks in (1, 4)
        }
        for _ in range(rounds):
            for (name, tasks), result in results.items():
                await measure(configs[name], ops, tasks, result)
        return list(results.values())


def report(results: list[Result], ops: int, rounds: int) -> str:
    lines = [
        f"{ops} operations (INSERT ... RETURNING + SELECT by id) x {rounds} rounds",
        "",
        "| configuration | median µs/op | p95 µs/op | ops/s | our CPU µs/op |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        median, p95 = statistics.median(r.per_op_us), statistics.quantiles(r.per_op_us, n=20)[-1]
        throughput, cpu = statistics.median(r.ops_per_s), statistics.median(r.cpu_us_per_op)
        lines.append(f"| {r.name} | {median:,.0f} | {p95:,.0f} | {throughput:,.0f} | {cpu:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="also measure this PostgreSQL server (admin DSN)")
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL binaries found (initdb, pg_ctl)")
    with throwaway_cluster(bin_dir) as server:
        servers = [server]
        if args.url:
            servers.append(PostgresServer(dsn=args.url, origin="--url"))
        print(server.origin)
        print(report(asyncio.run(run(servers, args.ops, args.rounds)), args.ops, args.rounds))


if __name__ == "__main__":
    main()
