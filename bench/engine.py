"""The conversation engine's own CPU per reply, without the two SDKs: a probe, not a figure.

`python -m bench.engine` runs `Conversation.respond` in-process over a real SQLite store (with
memory, recall and compaction as configured by default) for 500 chats x 4 messages, with the
model and the chat replaced at the engine's own seams (`LLM.chat`, `ReplySink`), and prints
process CPU per reply (both threads). The full benchmark's CPU figure is dominated by the
openai SDK and python-telegram-bot and swings with the machine's load; this isolates what
changes to the store, memory and engine cost, so two commits can be compared with a few runs
each (`PYTHONPATH=<checkout> python -m bench.engine`).

`--postgres URL` runs the same probe on the PostgreSQL store too, in the same process, the two
backends taking turns for `--rounds` rounds (a fresh database each time, made and dropped on
the server URL names, so its user must be allowed to CREATE DATABASE); `--postgres auto`
starts a throwaway cluster from the local binaries as the tests do. For PostgreSQL it also
prints the CPU its server processes spent on the bot's connections, when the server runs on
this machine (/proc), since that work is no longer inside the bot's process.

`--inbox` also keeps each message in the store's inbox before it is handled and marks it done
after, as the Telegram adapter does (telegram_adapter/inbox.py): one keep per message, as
webhook calls arrive (concurrent ones share a write; long polling writes one per fetched
batch), plus the batched done marks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import resource
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

from telegram_bot import tokens
from telegram_bot.config import Settings
from telegram_bot.engine.conversation import Conversation
from telegram_bot.engine.turns import Incoming
from telegram_bot.llm.client import Completion
from telegram_bot.models import Author, ChatKey, Status, Usage
from telegram_bot.storage import open_store
from telegram_bot.telegram_adapter.inbox import Inbox

MODEL = "gpt-4o-mini"
ANSWER = "Sure - here is a short answer to that question, with a few words more."
_TICKS = os.sysconf("SC_CLK_TCK")


class InstantModel:
    """Answers at once, with the usage a server would report."""

    async def chat(self, messages: Sequence[dict[str, str]], **_: Any) -> Completion:
        await asyncio.sleep(0)
        prompt = sum(len(m["content"]) for m in messages) // 4
        return Completion(ANSWER, Usage(prompt, 14), MODEL, "stop")


class Delivered:
    count = 0

    def partial(self, text: str) -> None:
        """Streaming is off in this probe."""

    async def final(self, text: str, status: Status) -> int | None:
        Delivered.count += 1
        return Delivered.count

    async def send_notice(self, text: str) -> None:
        """Nothing to deliver in this probe."""

    def thinking(self, thought: str) -> None:
        """Nor a reasoning model's thought."""


@dataclasses.dataclass(frozen=True)
class Result:
    cpu_ms: float  # this process, per reply
    wall_ms: float  # elapsed, per reply (all chats at once)
    server_cpu_ms: float | None = None  # PostgreSQL's backends, per reply, when local


def raw_update(update_id: int, chat_id: int, text: str) -> dict[str, Any]:
    """A private text message as the Bot API sends it."""
    user = {"id": chat_id, "is_bot": False, "first_name": "Ann"}
    chat = {"id": chat_id, "type": "private", "first_name": "Ann"}
    message = {"message_id": update_id, "date": 1, "chat": chat, "from": user, "text": text}
    return {"update_id": update_id, "message": message}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


class ServerCPU:
    """CPU of the PostgreSQL backends serving one database, read from /proc (local servers)."""

    def __init__(self, admin_url: str, database: str) -> None:
        self.admin_url, self.database = admin_url, database
        self.seen: dict[int, float] = {}

    async def sample(self) -> dict[int, float]:
        import asyncpg

        connection = await asyncpg.connect(self.admin_url)
        try:
            pids = await connection.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1", self.database
            )
        finally:
            await connection.close()
        found = {row[0]: _process_cpu(row[0]) for row in pids}
        return {pid: cpu for pid, cpu in found.items() if cpu is not None}

    async def start(self) -> None:
        self.seen = await self.sample()

    async def spent(self) -> float | None:
        now = await self.sample()
        if not now:
            return None
        return sum(cpu - self.seen.get(pid, 0.0) for pid, cpu in now.items())


async def measure(
    chats: int,
    messages: int,
    database_url: str = "",
    server: ServerCPU | None = None,
    inbox: bool = False,
) -> Result:
    """Per reply: this process's CPU, the time, and PostgreSQL's backends' CPU (`server`)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    settings = Settings(
        telegram_bot_token="1:probe",
        openai_api_key="probe",
        openai_model=MODEL,
        database_path=folder / "bot.sqlite3",
        database_url=database_url,
        streaming=False,
    )
    tokens.warm(MODEL)
    store = open_store(settings)
    await store.open()
    engine = Conversation(store, InstantModel(), settings)  # type: ignore[arg-type]
    kept = Inbox(store, settings.recovery_window) if inbox else None
    message_ids = iter(range(1, 10**9))

    async def talk(chat_id: int, count: int) -> None:
        for i in range(count):
            text = f"message {i} from chat {chat_id}: how is the weather today?"
            message_id = next(message_ids)
            if kept is not None:
                await kept.keep([raw_update(message_id, chat_id, text)])
            incoming = Incoming(
                ChatKey(chat_id), text, Author(chat_id, "Ann"), message_id, "private"
            )
            await engine.respond(incoming, Delivered())
            if kept is not None:
                kept.mark_done(message_id)

    await asyncio.gather(*(talk(100_000 + c, 1) for c in range(50)))  # warm-up, uncounted
    if server is not None:
        await server.start()
    started, clock = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(talk(c + 1, messages) for c in range(chats)))
    if kept is not None:
        await kept.close()  # the last done marks are part of the cost
    spent, elapsed = cpu_seconds() - started, time.perf_counter() - clock
    server_spent = await server.spent() if server is not None else None
    await store.close()
    replies = chats * messages
    return Result(
        spent / replies * 1000,
        elapsed / replies * 1000,
        None if server_spent is None else server_spent / replies * 1000,
    )


@contextlib.contextmanager
def postgres_server(url: str) -> Iterator[str]:
    """The admin URL of the server to use: `url`, or a throwaway cluster for 'auto'."""
    if url != "auto":
        yield url
        return
    from tests.real.postgres import find_bin_dir, throwaway_cluster

    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("--postgres auto: no initdb/pg_ctl found (see docs/postgres.md)")
    with throwaway_cluster(bin_dir) as server:
        print(f"PostgreSQL: {server.origin}")
        yield server.dsn


@contextlib.asynccontextmanager
async def fresh_postgres(admin_url: str) -> AsyncIterator[tuple[str, ServerCPU]]:
    from tests.real.postgres import PostgresServer, fresh_database

    server = PostgresServer(dsn=admin_url, origin="bench")
    async with fresh_database(server, "bench_engine") as dsn:
        yield dsn, ServerCPU(admin_url, dsn.rsplit("/", 1)[1])


async def on_postgres(admin_url: str, chats: int, messages: int) -> Result:
    async with fresh_postgres(admin_url) as (dsn, server):
        return await measure(chats, messages, dsn, server)


def run(work: Callable[[], Coroutine[Any, Any, Result]]) -> Result:
    """Runs one measurement on the bot's own event loop (uvloop where installed)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the bot uses uvloop where it is installed
        return asyncio.run(work())
    return uvloop.run(work())


def _median(results: list[Result], field: str) -> str:
    values = [getattr(r, field) for r in results]
    if any(v is None for v in values):
        return "-"
    shown = ", ".join(f"{v:.3f}" for v in values)
    return f"{statistics.median(values):.3f} ({shown})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=500)
    parser.add_argument("--messages", type=int, default=4)
    parser.add_argument(
        "--postgres", metavar="URL", help="also on PostgreSQL: a server URL, or 'auto'"
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds, backends taking turns")
    parser.add_argument("--inbox", action="store_true", help="keep every message in the inbox")
    args = parser.parse_args()
    if not args.postgres:
        results = [
            run(lambda: measure(args.chats, args.messages, inbox=args.inbox))
            for _ in range(args.rounds)
        ]
        what = "engine and inbox" if args.inbox else "engine only"
        print(f"{statistics.median(r.cpu_ms for r in results):.3f} ms CPU per reply ({what})")
        return
    by_backend: dict[str, list[Result]] = {"sqlite": [], "postgres": []}
    with postgres_server(args.postgres) as admin_url:
        for round_ in range(1, args.rounds + 1):
            sqlite = run(lambda: measure(args.chats, args.messages))
            postgres = run(lambda: on_postgres(admin_url, args.chats, args.messages))
            by_backend["sqlite"].append(sqlite)
            by_backend["postgres"].append(postgres)
            print(
                f"round {round_}: CPU per reply {sqlite.cpu_ms:.3f} ms on SQLite, "
                f"{postgres.cpu_ms:.3f} ms on PostgreSQL "
                f"(+ {postgres.server_cpu_ms or 0:.3f} ms in its server)",
                flush=True,
            )
    print(
        f"{args.chats} chats x {args.messages} messages, {args.rounds} rounds; medians (each round)"
    )
    print("| backend | engine CPU per reply, ms | wall per reply, ms | server CPU per reply, ms |")
    print("| --- | --- | --- | --- |")
    for name, results in by_backend.items():
        cpu, wall = _median(results, "cpu_ms"), _median(results, "wall_ms")
        print(f"| {name} | {cpu} | {wall} | {_median(results, 'server_cpu_ms')} |")


if __name__ == "__main__":
    main()
