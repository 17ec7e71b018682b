"""Replicas: the bot as real processes in webhook mode, one on SQLite, one on PostgreSQL, two
on PostgreSQL behind a load balancer; and how long a replica's death keeps a message waiting.

    python -m bench.replicas --postgres auto --rounds 3
    python -m bench.replicas --postgres postgresql://postgres@127.0.0.1:5432/postgres
    python -m bench.replicas --only sqlite,postgres --bot-tree /tmp/base  # another tree's bot

The fake Bot API and the fake OpenAI server run in this process (as in the tests) and deliver
webhooks as Telegram does (a chat's next update after the previous call's 200), through the
round-robin balancer of `tests/real/replicas.py`; every configuration goes through it, one
replica or two. Each round, the configurations take turns, each on a fresh database:

- **start-up**: from spawning the processes to every /healthz answering 200;
- **replies/s**: after one message per chat to warm up (each process loads its token tables
  and the OpenAI SDK lazily), `chats` chats send `messages` messages each at once; from the
  first send to the last answer delivered;
- **CPU per reply**: the bot processes' CPU (utime + stime, /proc) over that load, divided by
  the replies (PostgreSQL's own CPU is not in it; docs/postgres.md measures that);
- **death to answer** (two replicas): one replica is killed (SIGKILL) while it streams an
  answer; the time until the other has answered that question, with the default
  REPLICA_LEASE_SECONDS unless `--lease` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakes import FakeOpenAI, FakeTelegram, Reply
from tests.harness import TOKEN
from tests.real.replicas import Balancer, ready
from tests.test_webhook import WebhookBot, free_port

from .engine import postgres_server
from .rig import cpu_seconds

LONG = "A reply that takes a while to write, word by word. " * 40


@dataclass
class Run:
    config: str
    startup_s: float
    replies: int
    wall_s: float
    cpu_s: float
    death_to_answer_s: float | None = None

    @property
    def per_second(self) -> float:
        return self.replies / self.wall_s

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_s / self.replies


@dataclass
class Fleet:
    bots: list[WebhookBot]
    balancer: Balancer
    startup_s: float
    logs: list[Path] = field(default_factory=list)


@asynccontextmanager
async def fleet(
    tg: FakeTelegram, ai: FakeOpenAI, root: Path, count: int, **env: str
) -> AsyncIterator[Fleet]:
    ports = [free_port() for _ in range(count)]
    balancer = await Balancer([f"http://127.0.0.1:{port}" for port in ports]).start()
    bots = []
    for i, port in enumerate(ports):
        bot = WebhookBot(
            tg,
            ai,
            root / f"bot{i}" / "data" / "bot.sqlite3",
            port=str(port),
            WEBHOOK_URL=balancer.url,
            **env,
        )
        bot.log_path = root / f"bot{i}.log"
        bots.append(bot)
    started = time.monotonic()
    try:
        for bot in bots:
            await bot.spawn()
        await asyncio.gather(*(ready(bot) for bot in bots))
        yield Fleet(bots, balancer, time.monotonic() - started)
    finally:
        for bot in bots:
            if bot.proc is not None and bot.proc.returncode is None:
                bot.proc.kill()
                await bot.proc.wait()
        await balancer.close()


async def load(tg: FakeTelegram, fleet: Fleet, chats: int, messages: int) -> tuple[float, float]:
    """(wall seconds, bot CPU seconds) for chats × messages answered."""
    pids = [bot.proc.pid for bot in fleet.bots if bot.proc is not None]
    before = sum(cpu_seconds(pid) for pid in pids)
    sent = len(tg.calls_to("sendMessage"))
    started = time.monotonic()
    for m in range(messages):
        for c in range(chats):
            chat = 10_000 + c
            tg.send_text(chat, f"message {m} in chat {c}", user_id=chat)
    await tg.wait_for("sendMessage", count=sent + chats * messages, timeout=600)
    wall = time.monotonic() - started
    return wall, sum(cpu_seconds(pid) for pid in pids) - before


async def death_to_answer(tg: FakeTelegram, ai: FakeOpenAI, fleet: Fleet) -> float:
    """Kills replica 0 while it streams an answer; seconds until replica 1 has answered."""
    ai.enqueue(Reply(LONG, chunk_chars=5, delay_per_chunk=0.1))
    fleet.balancer.choose = lambda update: 0
    chat = 99_999
    drafts = len(tg.calls_to("sendMessageDraft"))
    tg.send_text(chat, "a question for a replica about to die", user_id=chat)
    await tg.wait_for("sendMessageDraft", count=drafts + 2, timeout=60)
    victim = fleet.bots[0].proc
    assert victim is not None
    victim.kill()
    killed = time.monotonic()
    await victim.wait()
    fleet.balancer.choose = None
    await tg.wait_for(
        "sendMessage",
        lambda c: c.chat_id == chat and "about to die" in tg.visible_text(c),
        timeout=120,
    )
    return time.monotonic() - killed


CONFIGS = {
    "sqlite": ("SQLite, 1 process", 1, False),
    "postgres": ("PostgreSQL, 1 process", 1, True),
    "replicas": ("PostgreSQL, 2 replicas", 2, True),
}


async def one_round(
    admin_url: str, chats: int, messages: int, lease: str, root: Path, only: list[str]
) -> list[Run]:
    from tests.real.postgres import PostgresServer, fresh_database

    server = PostgresServer(dsn=admin_url, origin="bench")
    runs: list[Run] = []
    for name, count, postgres in (CONFIGS[key] for key in only):
        async with contextlib.AsyncExitStack() as stack:
            tg = await stack.enter_async_context(FakeTelegram(token=TOKEN))
            ai = await stack.enter_async_context(FakeOpenAI())
            env: dict[str, str] = {}
            if postgres:
                dsn = await stack.enter_async_context(fresh_database(server, "bench_replicas"))
                env = {"DATABASE_URL": dsn, "REPLICA_LEASE_SECONDS": lease}
            where = Path(tempfile.mkdtemp(dir=root))
            async with fleet(tg, ai, where, count, **env) as bots:
                await load(tg, bots, chats, 1)  # warm: the lazy imports, the pools, the caches
                wall, cpu = await load(tg, bots, chats, messages)
                run = Run(name, bots.startup_s, chats * messages, wall, cpu)
                if count == 2:
                    run.death_to_answer_s = await death_to_answer(tg, ai, bots)
            runs.append(run)
            print(
                f"  {name}: start-up {run.startup_s:.2f} s, {run.per_second:.1f} replies/s, "
                f"{run.cpu_ms:.2f} ms CPU per reply"
                + (
                    f", death to answer {run.death_to_answer_s:.1f} s"
                    if run.death_to_answer_s is not None
                    else ""
                ),
                flush=True,
            )
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--postgres", default="auto", help="a server URL, or 'auto'")
    parser.add_argument("--chats", type=int, default=40)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lease", default="10", help="REPLICA_LEASE_SECONDS of the replicas")
    parser.add_argument("--only", default=",".join(CONFIGS), help="of: " + ", ".join(CONFIGS))
    parser.add_argument(
        "--bot-tree",
        type=Path,
        default=None,
        help="run the bot processes from another checkout (e.g. main), to compare",
    )
    args = parser.parse_args(argv)
    only = [key.strip() for key in args.only.split(",") if key.strip()]
    if args.bot_tree is not None:  # the bots import telegram_bot from there, not from here
        os.environ["PYTHONPATH"] = str(args.bot_tree.resolve())
    by_config: dict[str, list[Run]] = {}
    with postgres_server(args.postgres) as admin_url, tempfile.TemporaryDirectory() as tmp:
        for number in range(1, args.rounds + 1):
            print(f"round {number}/{args.rounds}", flush=True)
            runs = asyncio.run(
                one_round(admin_url, args.chats, args.messages, args.lease, Path(tmp), only)
            )
            for run in runs:
                by_config.setdefault(run.config, []).append(run)
    print(f"\nmedians of {args.rounds} rounds, {args.chats} chats x {args.messages} messages:")
    print("| configuration | replies/s | CPU per reply | start-up | death to answer |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, runs in by_config.items():
        deaths = [r.death_to_answer_s for r in runs if r.death_to_answer_s is not None]
        print(
            f"| {name} | {statistics.median(r.per_second for r in runs):.1f} "
            f"({', '.join(f'{r.per_second:.1f}' for r in runs)}) "
            f"| {statistics.median(r.cpu_ms for r in runs):.2f} ms "
            f"({', '.join(f'{r.cpu_ms:.2f}' for r in runs)}) "
            f"| {statistics.median(r.startup_s for r in runs):.2f} s "
            f"| {f'{statistics.median(deaths):.1f} s' if deaths else '—'} "
            f"{'(' + ', '.join(f'{d:.1f}' for d in deaths) + ')' if deaths else ''} |"
        )


if __name__ == "__main__":
    main()
