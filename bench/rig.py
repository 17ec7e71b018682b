"""The benchmark rig: fake servers and the real bot, each in its own process.

The fakes from the test suite run standalone (`python -m tests.fakes.telegram|openai`) and are
driven over their JSON control API; the bot is the real `python -m telegram_bot` with its
environment pointed at them and a fresh SQLite file. Every process is ours to start and stop,
and /proc tells us what each one costs (CPU ticks, resident memory), so the figures are about
the bot and a fake that runs out of CPU is seen, not mistaken for the bot being slow.

Timing uses the fakes' own arrival stamps (`time.monotonic()`, which on Linux is one clock for
every process), so how often the driver polls never changes a figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "123456789:BENCHbenchBENCHbench"
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """(main thread, all other threads) CPU of a process; in the bot the other busy thread is
    the database's (aiosqlite runs every query there)."""
    main = cpu_seconds_of(f"/proc/{pid}/task/{pid}/stat")
    return main, cpu_seconds(pid) - main


def cpu_seconds_of(path: str) -> float:
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Child:
    """A process we started; `stop()` ends exactly it (SIGTERM, then SIGKILL)."""

    name: str
    proc: subprocess.Popen[str]
    url: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _start_fake(module: str, *args: str) -> Child:
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"{module} did not start: {line!r}")
    return Child(module.rsplit(".", 1)[1], proc, line.split(" ", 1)[1])


class Telegram:
    """Client of the fake Bot API's control endpoints."""

    def __init__(self, child: Child, session: aiohttp.ClientSession) -> None:
        self.child = child
        self.origin = child.url.rsplit("/", 1)[0]
        self.session = session
        self._next_message_id = 1
        self.cursor = 0

    async def _post(self, path: str, body: Any) -> Any:
        async with self.session.post(f"{self.origin}/_control/{path}", json=body) as response:
            payload = await response.json()
        if not payload.get("ok"):
            raise RuntimeError(f"control {path}: {payload}")
        return payload["result"]

    async def reset(self) -> None:
        await self._post("reset", {})
        self.cursor = 0

    async def config(self, **values: Any) -> None:
        await self._post("config", values)

    async def push(self, messages: list[tuple[int, str]]) -> float:
        """Delivers private text messages (chat id = user id); returns when they were queued."""
        updates = [{"message": self._message(chat, text)} for chat, text in messages]
        at = time.monotonic()
        await self._post("updates", updates)
        return at

    def _message(self, chat: int, text: str) -> dict[str, Any]:
        self._next_message_id += 1
        person = {"id": chat, "first_name": f"User{chat}"}
        return {
            "message_id": self._next_message_id,
            "date": int(time.time()),
            "chat": {**person, "type": "private"},
            "from": {**person, "is_bot": False},
            "text": text,
        }

    async def calls(self, method: str = "", since: int | None = None) -> list[dict[str, Any]]:
        """New calls since the last read (or `since`), optionally of one method."""
        start = self.cursor if since is None else since
        params = {"since": str(start), "method": method}
        async with self.session.get(f"{self.origin}/_control/calls", params=params) as response:
            payload = await response.json()
        if since is None:
            self.cursor = payload["next"]
        calls: list[dict[str, Any]] = payload["calls"]
        return calls

    async def wait_calls(
        self, method: str, count: int, within: float, poll: float = 0.05
    ) -> list[dict[str, Any]]:
        """Collects `count` successful calls of `method` (arrival order), polling the fake."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + within
        while len(found) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)}/{count} {method} calls after {within:.0f} s")
            found += [c for c in await self.calls() if c["method"] == method and not c["failed"]]
            if len(found) < count:
                await asyncio.sleep(poll)
        return found


class OpenAI:
    """Client of the fake OpenAI server's control endpoints."""

    def __init__(self, child: Child, session: aiohttp.ClientSession) -> None:
        self.child = child
        self.origin = child.url.rsplit("/", 1)[0]
        self.session = session

    async def config(self, **values: Any) -> None:
        url = f"{self.origin}/_control/config"
        async with self.session.post(url, json=values) as response:
            payload = await response.json()
        if not payload.get("ok"):
            raise RuntimeError(f"control config: {payload}")

    async def requests(self, since: int = 0) -> list[dict[str, Any]]:
        url = f"{self.origin}/_control/requests"
        async with self.session.get(url, params={"since": str(since)}) as response:
            payload = await response.json()
        found: list[dict[str, Any]] = payload["requests"]
        return found


@dataclass
class Bot:
    child: Child
    workdir: Path
    started_at: float
    log_path: Path
    cpu_at_start: float = 0.0

    @property
    def pid(self) -> int:
        return self.child.pid

    def cpu(self) -> float:
        return self.child.cpu()

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def peak_rss(self) -> int:
        return peak_rss_bytes(self.pid)

    def alive(self) -> bool:
        return self.child.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Rig:
    """Fakes running for one figure, and the bots started against them."""

    tg: Telegram
    ai: OpenAI
    tmp: Path
    bots: list[Bot] = field(default_factory=list)

    def start_bot(self, db: Path | None = None, **env: str) -> Bot:
        workdir = Path(tempfile.mkdtemp(dir=self.tmp))
        values = {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_BASE_URL": self.tg.child.url,
            "OPENAI_BASE_URL": self.ai.child.url,
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_MODEL": "gpt-4o-mini",
            "DATABASE_PATH": str(db or workdir / "bot.sqlite3"),
            "TIKTOKEN_CACHE_DIR": str(self.tmp / "tiktoken"),
            "LOG_LEVEL": "INFO",
            **env,
        }
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TELE"))}
        environ.update(values)
        environ["PYTHONPATH"] = str(ROOT)
        # An installed bot has its bytecode compiled (pip does it); let the first, uncounted
        # start write it here too, rather than timing the compiler on every start.
        environ.pop("PYTHONDONTWRITEBYTECODE", None)
        log_path = workdir / "bot.log"
        with open(log_path, "w") as log_file:
            started = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "telegram_bot"],
                cwd=workdir,  # no stray .env is read
                env=environ,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                text=True,
            )
        bot = Bot(Child("bot", proc), workdir, started, log_path)
        self.bots.append(bot)
        return bot

    async def wait_polling(self, bot: Bot, within: float = 30.0) -> float:
        """Waits for the bot's first getUpdates; returns seconds from process start."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for call in await self.tg.calls("getUpdates", since=0):
                if call["at"] >= bot.started_at:
                    bot.cpu_at_start = bot.cpu()
                    return float(call["at"]) - bot.started_at
            if not bot.alive():
                raise RuntimeError(f"the bot exited:\n{bot.log_tail()}")
            await asyncio.sleep(0.01)
        raise TimeoutError(f"no getUpdates within {within} s:\n{bot.log_tail()}")

    def stop_bot(self, bot: Bot) -> None:
        bot.child.stop()
        with contextlib.suppress(ValueError):
            self.bots.remove(bot)

    def fake_cpu(self) -> dict[str, float]:
        return {"telegram": self.tg.child.cpu(), "openai": self.ai.child.cpu()}


@contextlib.contextmanager
def profiled(bot: Bot, name: str) -> Iterator[None]:
    """With BENCH_PROFILE=<dir>, samples the bot with py-spy (collapsed stacks) meanwhile."""
    folder = os.environ.get("BENCH_PROFILE")
    if not folder:
        yield
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(bot.pid),
            "--format",
            "raw",
            "--rate",
            "200",
            "--output",
            str(Path(folder) / f"{name}.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


@contextlib.asynccontextmanager
async def rig(**openai_options: Any) -> AsyncIterator[Rig]:
    """Starts both fakes (and a control session); stops every process it started."""
    tg_child = _start_fake("tests.fakes.telegram", "--token", TOKEN)
    ai_child: Child | None = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        ai_child = _start_fake("tests.fakes.openai")
        connector = aiohttp.TCPConnector(limit=16)
        async with aiohttp.ClientSession(connector=connector) as session:
            the_rig = Rig(Telegram(tg_child, session), OpenAI(ai_child, session), tmp)
            if openai_options:
                await the_rig.ai.config(**openai_options)
            try:
                yield the_rig
            finally:
                for bot in list(the_rig.bots):
                    the_rig.stop_bot(bot)
    finally:
        if ai_child is not None:
            ai_child.stop()
        tg_child.stop()
        shutil.rmtree(tmp, ignore_errors=True)
