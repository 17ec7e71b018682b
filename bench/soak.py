"""Soak test: many chats talk to the real bot for a while, with faults injected on both sides.

    .venv/bin/python -m bench.soak --chats 200 --minutes 2 --fault-rate 0.05

The fake Telegram and OpenAI servers run in this process; the bot runs as a real subprocess
(`python -m telegram_bot`) on a fresh database. Every chat behaves like a person: it sends a
message, waits for the answer (or the bot's one-line notice), then sends the next, until the
time is up. A share of model calls fail (HTTP 500/503/429, a dropped connection, a stream cut
halfway) and a share of Bot API calls are refused with flood control (429 retry_after=1);
polling loses its connection now and then. At the end the bot is stopped with SIGTERM and the
run is checked:

- every user message is stored exactly once, and the database passes `PRAGMA integrity_check`;
- every exchange got an answer or a notice (none lost), and every answered one is stored;
- the bot's log has no ERROR line and no traceback;
- the bot's RSS at the end is within `--rss-slack` MiB of its RSS after warm-up.

Prints the figures and exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telegram_bot import errors
from tests.fakes import Error, FakeOpenAI, FakeTelegram, Hang, Reply
from tests.fakes.openai import ChatRequest

TOKEN = "123456789:SOAK-token-abcdefghijklmnop"
FILLER = "The soak test keeps the bot busy with plausible answers of moderate length. "
NOTICES = tuple(
    cls.user_message()
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.BotError)
)


@dataclass
class Figures:
    sent: int = 0
    answered: int = 0
    notices: int = 0
    lost: int = 0
    model_faults: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    rss_warm: int = 0
    rss_end: int = 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rng = random.Random(args.seed)
        self.tg = FakeTelegram(token=TOKEN)
        self.ai = FakeOpenAI(chunk_chars=24, chunk_delay=0.01)
        self.figures = Figures()
        self.replies: dict[int, asyncio.Queue[str]] = {}
        self.deadline = 0.0

    # -- faults ----------------------------------------------------------------------------

    def respond(self, request: ChatRequest) -> Reply | Error | Hang:
        marker = request.last_user_text
        text = f"Answer to {marker}. " + FILLER * self.rng.randint(1, 4) + "END"
        if self.rng.random() >= self.args.fault_rate:
            return Reply(text, first_token_delay=self.args.latency)
        kind = self.rng.choice(["500", "503", "429", "drop", "cut"])
        self.figures.model_faults[kind] += 1
        quick = {"retry-after-ms": "50"}
        if kind == "drop":
            return Hang(0)
        if kind == "cut":
            return Reply(text, cut_after_chars=len(text) // 2)
        return Error(int(kind), headers=quick)

    def inject_telegram_faults(self) -> None:
        rate = self.args.fault_rate

        def sometimes(_params: dict[str, Any]) -> bool:
            return self.rng.random() < rate

        for method in ("sendMessage", "sendMessageDraft", "sendChatAction", "editMessageText"):
            self.tg.fail(method, status=429, retry_after=1, times=10**9, when=sometimes)

    async def flaky_polling(self) -> None:
        """Drops a long poll now and then, while the chats are busy (so the drop is consumed
        at once); never near the end, where it would hit the shutdown's final getUpdates."""
        while True:
            await asyncio.sleep(self.rng.uniform(5, 15))
            if time.monotonic() > self.deadline - 20:
                return
            self.tg.drop_connection("getUpdates")

    # -- the users ---------------------------------------------------------------------------

    async def route_replies(self) -> None:
        """Hands each successful sendMessage to the queue of its chat."""
        seen = 0
        while True:
            calls = self.tg.calls
            for call in calls[seen:]:
                if call.method == "sendMessage" and call.result is not None:
                    queue = self.replies.get(call.chat_id)
                    if queue is not None:
                        queue.put_nowait(self.tg.visible_text(call))
                    seen += 1
                elif call.method != "sendMessage" or call.failed:
                    seen += 1
                else:
                    break  # still in flight: wait for its answer, keep the order
            await asyncio.sleep(0.02)

    async def user(self, chat_id: int) -> None:
        queue = self.replies[chat_id] = asyncio.Queue()
        for n in range(self.args.messages):
            if time.monotonic() >= self.deadline:
                return
            marker = f"c{chat_id} m{n}"
            started = time.monotonic()
            self.tg.send_text(chat_id, marker, user_id=chat_id, first_name=f"User{chat_id}")
            self.figures.sent += 1
            try:
                async with asyncio.timeout(self.args.reply_timeout):
                    while True:
                        text = await queue.get()
                        if text.endswith("END") and f"Answer to {marker}." in text:
                            self.figures.answered += 1
                            self.figures.latencies.append(time.monotonic() - started)
                            break
                        if text in NOTICES or any(text.startswith(n[:40]) for n in NOTICES):
                            self.figures.notices += 1
                            break
            except TimeoutError:
                self.figures.lost += 1
                print(f"lost: {marker}", file=sys.stderr)
                return

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> int:
        args = self.args
        db_path = self.workdir / "bot.sqlite3"
        log_path = self.workdir / "bot.log"
        async with self.tg, self.ai:
            self.ai.responder = self.respond
            env = {
                **os.environ,
                "TELEGRAM_BOT_TOKEN": TOKEN,
                "OPENAI_API_KEY": "sk-soak",
                "OPENAI_BASE_URL": self.ai.base_url,
                "TELEGRAM_API_BASE_URL": self.tg.base_url,
                "DATABASE_PATH": str(db_path),
                "OPENAI_MAX_RETRIES": "1",
                "STREAM_EDIT_INTERVAL": "0.5",
                "LOG_LEVEL": "INFO",
            }
            with log_path.open("w") as log:
                bot = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "telegram_bot", env=env, cwd=self.workdir,
                    stdout=log, stderr=log,
                )  # fmt: skip
            await self.tg.wait_for("getUpdates", timeout=30)
            self.inject_telegram_faults()
            self.deadline = time.monotonic() + args.minutes * 60
            router = asyncio.create_task(self.route_replies())
            flaky = asyncio.create_task(self.flaky_polling())
            users = [asyncio.create_task(self.user(100_000 + i)) for i in range(args.chats)]
            warm_up = min(30.0, args.minutes * 60 / 4)
            await asyncio.wait(users, timeout=warm_up)
            self.figures.rss_warm = rss_kib(bot.pid)
            await asyncio.gather(*users)
            self.figures.rss_end = rss_kib(bot.pid)
            bot.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(bot.wait(), 60)
            for task in (router, flaky):
                task.cancel()
        return self.report(code, db_path, log_path)

    def report(self, code: int, db_path: Path, log_path: Path) -> int:
        f = self.figures
        with sqlite3.connect(db_path) as db:
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
            dupes = db.execute(
                "SELECT COUNT(*) FROM (SELECT text FROM messages WHERE role = 'user' "
                "GROUP BY chat_id, text HAVING COUNT(*) > 1)"
            ).fetchone()[0]
            users = db.execute("SELECT COUNT(*) FROM messages WHERE role = 'user'").fetchone()[0]
            answers = db.execute(
                "SELECT COUNT(*) FROM messages WHERE role = 'assistant' AND status = 'complete'"
            ).fetchone()[0]
        log = log_path.read_text()
        bad_lines = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
        slack = self.args.rss_slack * 1024
        latencies = sorted(f.latencies) or [0.0]
        checks = {
            "bot exited cleanly on SIGTERM": code == 0,
            "integrity_check ok": integrity == "ok",
            "every user message stored exactly once": users == f.sent and dupes == 0,
            "no exchange lost": f.lost == 0,
            "every answer stored": answers >= f.answered,
            "no ERROR or traceback in the bot log": not bad_lines,
            f"RSS end within {self.args.rss_slack} MiB of warm-up": (
                f.rss_end <= f.rss_warm + slack
            ),
        }
        print(
            f"chats {self.args.chats}, {self.args.minutes} min, fault rate {self.args.fault_rate}"
        )
        print(f"messages sent {f.sent}, answered {f.answered}, notices {f.notices}, lost {f.lost}")
        print(f"stored: user messages {users} (duplicates {dupes}), complete answers {answers}")
        print(f"model faults injected: {dict(f.model_faults)}")
        failed_tg = sum(1 for c in self.tg.calls if c.failed)
        print(f"Bot API calls {len(self.tg.calls)}, refused or dropped {failed_tg}")
        p50, p95 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.95)]
        print(f"answer latency p50 {p50:.2f} s, p95 {p95:.2f} s, max {latencies[-1]:.2f} s")
        print(
            f"bot RSS after warm-up {f.rss_warm / 1024:.1f} MiB, at end {f.rss_end / 1024:.1f} MiB"
        )
        for line in bad_lines[:10]:
            print(f"  log: {line}")
        for name, ok in checks.items():
            print(f"{'PASS' if ok else 'FAIL'}  {name}")
        return 0 if all(checks.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--messages", type=int, default=10**6, help="per chat, at most")
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--latency", type=float, default=0.2, help="model first-token delay, s")
    parser.add_argument("--reply-timeout", type=float, default=120.0)
    parser.add_argument("--rss-slack", type=float, default=30.0, help="MiB")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="keep the database and log here")
    args = parser.parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        return asyncio.run(Soak(args, args.keep).run())
    with tempfile.TemporaryDirectory(prefix="soak-") as workdir:
        return asyncio.run(Soak(args, Path(workdir)).run())


if __name__ == "__main__":
    sys.exit(main())
