"""The figures, one coroutine each; every one starts its own fakes and its own bot.

A figure returns a `Figure`: the headline value (a median over `repeat` runs), every run's
value, and the details that explain it (CPU of the fakes, so a saturated fake shows; RSS; the
exact workload). Sizes come from `Sizes`, which `--quick` shrinks so the smoke test runs in
seconds; a quick run proves the rig works and says nothing about speed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rig import Bot, Rig, profiled, rig, thread_cpu_seconds

MB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    repeat: int = 3
    concurrency_chats: int = 200
    concurrency_latency: float = 1.0
    throughput_messages: int = 2000
    throughput_chats: int = 500
    startup_runs: int = 5
    memory_chats: int = 10_000
    memory_messages: int = 50_000
    memory_latency: float = 0.0  # model latency in the memory figure (>0: many calls in flight)
    first_text_chats: int = 10
    long_chat_turns: int = 300

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            repeat=1,
            concurrency_chats=20,
            concurrency_latency=0.2,
            throughput_messages=100,
            throughput_chats=25,
            startup_runs=2,
            memory_chats=200,
            memory_messages=1000,
            first_text_chats=3,
            long_chat_turns=12,
        )


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    goal: str
    met: bool | None
    runs: list[float] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _utilisation(
    cpu_before: dict[str, float], cpu_after: dict[str, float], wall: float
) -> dict[str, float]:
    return {name: round((cpu_after[name] - cpu_before[name]) / wall, 3) for name in cpu_after}


async def _serve(
    the_rig: Rig, bot: Bot, messages: list[tuple[int, str]], within: float
) -> dict[str, Any]:
    """Sends the messages at once and waits for one reply each; returns timings and costs."""
    await the_rig.tg.calls()  # move the cursor past everything before this run
    first_call = the_rig.tg.cursor
    fakes_before, bot_before = the_rig.fake_cpu(), bot.cpu()
    pushed = await the_rig.tg.push(messages)
    replies = await the_rig.tg.wait_calls("sendMessage", len(messages), within)
    wall = max(float(c["at"]) for c in replies) - pushed
    done = time.monotonic() - pushed
    return {
        "seconds": wall,
        "bot_cpu": bot.cpu() - bot_before,
        "fake_utilisation": _utilisation(fakes_before, the_rig.fake_cpu(), done),
        "calls": await _call_counts(the_rig, first_call, len(messages)),
    }


async def _call_counts(the_rig: Rig, since: int, replies: int) -> dict[str, float]:
    """Bot API calls per reply, by method, over the last run."""
    calls = await the_rig.tg.calls(since=since)
    counts: dict[str, int] = {}
    for call in calls:
        counts[call["method"]] = counts.get(call["method"], 0) + 1
    counts.pop("getUpdates", None)
    return {method: round(n / replies, 2) for method, n in sorted(counts.items())}


async def _started_bot(the_rig: Rig, **env: str) -> Bot:
    bot = the_rig.start_bot(None, **env)
    await the_rig.wait_polling(bot)
    return bot


async def _warm_up(the_rig: Rig, bot: Bot, base: int) -> None:
    """A few replies first, so lazily imported code is loaded before anything is timed."""
    await _serve(the_rig, bot, [(base + i, "warm up") for i in range(10)], within=60)


async def concurrency(sizes: Sizes, *, streaming: bool = True) -> Figure:
    latency = sizes.concurrency_latency
    runs: list[float] = []
    details: list[dict[str, Any]] = []
    async with rig(latency=latency, chunk_chars=8, chunk_delay=0.0) as the_rig:
        bot = await _started_bot(the_rig, STREAMING=str(streaming).lower())
        await _warm_up(the_rig, bot, 900_000)
        for rep in range(sizes.repeat):
            base = 1_000_000 * (rep + 1)
            chats = [(base + i, f"hello from chat {i}") for i in range(sizes.concurrency_chats)]
            with profiled(bot, f"concurrency-{rep}"):
                result = await _serve(the_rig, bot, chats, within=120)
            runs.append(result["seconds"])
            details.append(result)
    value = median(runs)
    name = "concurrency" if streaming else "concurrency (streaming off)"
    return Figure(
        name,
        value,
        "s",
        f"≤ {latency + 0.3:.1f} s",
        value <= latency + 0.3,
        runs,
        {
            "chats": sizes.concurrency_chats,
            "model_latency_s": latency,
            "streaming": streaming,
            "added_s": round(value - latency, 3),
            "runs": details,
        },
    )


async def throughput(sizes: Sizes) -> list[Figure]:
    """Replies per second with a zero-latency model, streaming off; and CPU per reply."""
    per_second: list[float] = []
    cpu_ms: list[float] = []
    details: list[dict[str, Any]] = []
    async with rig(latency=0.0) as the_rig:
        bot = await _started_bot(the_rig, STREAMING="false")
        await _warm_up(the_rig, bot, 900_000)
        for rep in range(sizes.repeat):
            base = 1_000_000 * (rep + 1)
            messages = [
                (base + i % sizes.throughput_chats, f"message {i}")
                for i in range(sizes.throughput_messages)
            ]
            threads_before = thread_cpu_seconds(bot.pid)
            with profiled(bot, f"throughput-{rep}"):
                result = await _serve(the_rig, bot, messages, within=600)
            threads_after = thread_cpu_seconds(bot.pid)
            # Where the CPU went: the event loop's thread, or the database thread.
            result["cpu_ms_per_reply_by_thread"] = {
                name: round(1000 * (after - before) / len(messages), 2)
                for name, before, after in zip(
                    ("main", "others"), threads_before, threads_after, strict=True
                )
            }
            per_second.append(len(messages) / result["seconds"])
            cpu_ms.append(1000 * result["bot_cpu"] / len(messages))
            details.append(result)
        rss = bot.rss()
    workload = {
        "messages": sizes.throughput_messages,
        "chats": sizes.throughput_chats,
        "bot_rss_mb": round(rss / MB, 1),
        "runs": details,
    }
    rate, cpu = median(per_second), median(cpu_ms)
    # What one core would sustain; on a shared machine the bot may not get a whole one.
    workload["replies_per_bot_cpu_second"] = round(1000 / cpu) if cpu else None
    workload["bot_cpu_share"] = [round(r["bot_cpu"] / r["seconds"], 2) for r in details]
    return [
        Figure("throughput", rate, "replies/s", "≥ 300/s", rate >= 300, per_second, workload),
        Figure("CPU per reply", cpu, "ms", "≤ 3 ms", cpu <= 3, cpu_ms, {}),
    ]


async def startup(sizes: Sizes) -> Figure:
    """Process start to the first getUpdates at the fake, a fresh process and database each."""
    runs: list[float] = []
    rss: list[float] = []
    async with rig() as the_rig:
        warm = the_rig.start_bot()  # the first start also fills the OS file cache: not counted
        await the_rig.wait_polling(warm)
        the_rig.stop_bot(warm)
        for _ in range(sizes.startup_runs):
            bot = the_rig.start_bot()
            runs.append(await the_rig.wait_polling(bot))
            await asyncio.sleep(1.5)  # the background warm-up (SDK import) is done by now
            rss.append(bot.rss() / MB)
            the_rig.stop_bot(bot)
    value = median(runs)
    return Figure(
        "start-up",
        value,
        "s",
        "≤ 1.0 s (peer 0.63 s; beat 0.5 s)",
        value <= 0.5,
        runs,
        {"idle_rss_mb": round(median(rss), 1)},
    )


def prefill(db: Path, chats: int, messages: int) -> None:
    """A database as a long-running bot would have it: `messages` turns over `chats` chats."""
    _migrate(db)
    now = time.time() - 86_400
    per_chat = max(messages // chats, 1)
    text_user = "What is a good name for a cat that likes to sit in boxes all day long?"
    text_bot = "How about *Box Office*, *Parcel* or *Cardigan*? Each suits a box-loving cat."
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO chats (chat_id, thread_id, kind, created_at, updated_at) "
            "VALUES (?, 0, 'private', ?, ?)",
            [(chat, now, now) for chat in range(1, chats + 1)],
        )
        rows = []
        for chat in range(1, chats + 1):
            for turn in range(per_chat):
                user = turn % 2 == 0
                rows.append(
                    (
                        chat,
                        "user" if user else "assistant",
                        chat if user else None,
                        f"User{chat}" if user else None,
                        text_user if user else text_bot,
                        24,
                        "complete",
                        now + turn,
                    )
                )
        conn.executemany(
            "INSERT INTO messages (chat_id, thread_id, role, author_id, author_name, text, tokens,"
            " status, created_at) VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def _migrate(db: Path) -> None:
    """Creates the schema with the bot's own migrations, in a private loop (we are in one)."""
    import threading

    from telegram_bot.storage.sqlite.store import SQLiteStore

    async def migrate() -> None:
        store = SQLiteStore(db)
        await store.open()
        await store.close()

    error: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(migrate())
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if error:
        raise error[0]


async def memory(sizes: Sizes) -> Figure:
    """RSS after one new message in each of `memory_chats` chats whose history is pre-filled."""
    return await _memory(sizes, "memory", "gpt-4o-mini")


async def memory_local_model(sizes: Sizes) -> Figure:
    """The same with a local model's name (Ollama's llama3.2), whose count needs the smaller
    cl100k_base tables: what a Raspberry Pi next to a local model uses."""
    return await _memory(sizes, "memory (local model)", "llama3.2")


async def _memory(sizes: Sizes, name: str, model: str) -> Figure:
    async with rig(latency=sizes.memory_latency) as the_rig:
        db = the_rig.tmp / "prefilled.sqlite3"
        prefill(db, sizes.memory_chats, sizes.memory_messages)
        bot = the_rig.start_bot(db=db, OPENAI_MODEL=model)
        await the_rig.wait_polling(bot)
        rss_start = bot.rss()
        batch = 1000
        started = time.monotonic()
        for first in range(1, sizes.memory_chats + 1, batch):
            last = min(first + batch, sizes.memory_chats + 1)
            await _serve(
                the_rig, bot, [(c, "and a name for a dog?") for c in range(first, last)], 600
            )
        wall = time.monotonic() - started
        await asyncio.sleep(1.0)
        rss, peak = bot.rss(), bot.peak_rss()
    value = rss / MB
    return Figure(
        name,
        value,
        "MB",
        "≤ 100 MB",
        value <= 100,
        [value],
        {
            "model": model,
            "chats": sizes.memory_chats,
            "prefilled_messages": sizes.memory_messages,
            "served_messages": sizes.memory_chats,
            "rss_at_start_mb": round(rss_start / MB, 1),
            "peak_rss_mb": round(peak / MB, 1),
            "serve_seconds": round(wall, 1),
        },
    )


async def first_text(sizes: Sizes) -> Figure:
    """Model's first streamed token to the first Bot API call that carries text, per reply."""
    delays: list[float] = []
    reply = "word " * 60
    async with rig(latency=0.05, chunk_chars=8, chunk_delay=0.02) as the_rig:
        bot = await _started_bot(the_rig)
        await _warm_up(the_rig, bot, 900_000)
        seen = len(await the_rig.ai.requests())
        for rep in range(sizes.repeat):
            base = 1_000_000 * (rep + 1)
            chats = [(base + i, f"chat {base + i}: {reply}") for i in range(sizes.first_text_chats)]
            cursor = the_rig.tg.cursor
            await _serve(the_rig, bot, chats, within=120)
            calls = await the_rig.tg.calls(since=cursor)
            requests = await the_rig.ai.requests(since=seen)
            seen += len(requests)
            delays += _first_text_delays(chats, calls, requests)
    value = 1000 * median(delays)
    ordered = sorted(delays)
    return Figure(
        "first visible text",
        value,
        "ms",
        "≤ 100 ms",
        value <= 100,
        [round(1000 * d, 1) for d in delays],
        {"p90_ms": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 1) if ordered else None},
    )


def _first_text_delays(
    chats: list[tuple[int, str]], calls: list[dict[str, Any]], requests: list[dict[str, Any]]
) -> list[float]:
    token_at: dict[int, float] = {}
    for request in requests:
        text = str(request["body"]["messages"][-1]["content"])
        if text.startswith("chat ") and request.get("first_token_at"):
            token_at[int(text.split(":", 1)[0][5:])] = float(request["first_token_at"])
    shown_at: dict[int, float] = {}
    for call in calls:
        if call["method"] in ("sendMessageDraft", "sendMessage", "editMessageText"):
            chat = call["params"].get("chat_id")
            if call["params"].get("text") and chat in token_at and chat not in shown_at:
                shown_at[chat] = float(call["at"])
    return [
        shown_at[chat] - token_at[chat]
        for chat, _ in chats
        if chat in shown_at and chat in token_at
    ]


async def long_chat(sizes: Sizes) -> Figure:
    """Prompt tokens the model is sent, turn by turn, over one long conversation."""
    question = "Tell me one more thing about the history of the bicycle, please. " * 3
    async with rig(latency=0.0) as the_rig:
        bot = await _started_bot(the_rig, STREAMING="false")
        for turn in range(sizes.long_chat_turns):
            await the_rig.tg.calls()
            await the_rig.tg.push([(4242, f"{turn}: {question}")])
            await the_rig.tg.wait_calls("sendMessage", 1, 60, poll=0.005)
        requests = await the_rig.ai.requests()
        assert bot.alive()
    tokens = [int(r["prompt_tokens"]) for r in requests]
    tail = tokens[len(tokens) // 2 :]
    last = tokens[-1] if tokens else 0
    marks = sorted({1, 10, 50, 100, 200, 300, len(tokens)} & set(range(1, len(tokens) + 1)))
    growth = (tail[-1] - tail[0]) / max(tail[0], 1) if tail else 0.0
    return Figure(
        "long chat",
        last,
        "prompt tokens at the last turn",
        "flat past the budget",
        abs(growth) < 0.25,
        [float(t) for t in tokens],
        {
            "turns": len(tokens),
            "at_turn": {str(m): tokens[m - 1] for m in marks},
            "max": max(tokens, default=0),
            "second_half_growth": round(growth, 3),
        },
    )


FIGURES: dict[str, Callable[[Sizes], Awaitable[Figure | list[Figure]]]] = {
    "concurrency": concurrency,
    "throughput": throughput,
    "startup": startup,
    "memory": memory,
    "memory_local_model": memory_local_model,
    "first_text": first_text,
    "long_chat": long_chat,
}
