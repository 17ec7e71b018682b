"""The engine's stop and interrupt, driven without Telegram (as the console would)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telegram_bot.coordination import StopOutcome
from telegram_bot.engine.conversation import Conversation
from telegram_bot.engine.turns import Incoming
from telegram_bot.errors import ReplyInterrupted
from telegram_bot.llm.client import LLM
from telegram_bot.models import Author, ChatKey, Status
from telegram_bot.storage import open_store
from tests.fakes import FakeOpenAI, Reply
from tests.harness import eventually, make_settings

GROUP = ChatKey(-100555)
LONG = "word " * 2000


class Sink:
    def __init__(self) -> None:
        self.shown = ""
        self.finals: list[tuple[str, Status]] = []

    def partial(self, text: str) -> None:
        self.shown = text

    async def final(self, text: str, status: Status) -> int | None:
        self.finals.append((text, status))
        return None

    async def send_notice(self, text: str) -> None:
        """Notices are the Telegram adapter's business; the engine tests ignore them."""

    def thinking(self, thought: str) -> None:
        """So is showing that the model thinks."""


@pytest.fixture
async def engine(ai: FakeOpenAI, tmp_path: Path) -> AsyncIterator[Conversation]:
    settings = make_settings("http://127.0.0.1:9/bot", ai.base_url, tmp_path / "bot.sqlite3")
    store = open_store(settings)
    await store.open()
    llm = LLM(settings)
    yield Conversation(store, llm, settings)
    await llm.close()
    await store.close()


async def test_in_a_group_only_the_asker_can_stop(engine: Conversation, ai: FakeOpenAI) -> None:
    ai.enqueue(Reply(LONG, chunk_chars=5, delay_per_chunk=0.05))
    sink = Sink()
    asked = Incoming(GROUP, "write", Author(1, "Ann"), 10, "supergroup")
    task = asyncio.create_task(engine.respond(asked, sink))
    await eventually(lambda: sink.shown, bool)
    assert await engine.stop(GROUP, by_user=2) is StopOutcome.NOT_YOURS
    assert await engine.stop(GROUP, by_user=1) is StopOutcome.STOPPED
    reply = await task
    assert reply is not None
    assert reply.status is Status.STOPPED and LONG.startswith(reply.text)
    assert sink.finals == [(reply.text, Status.STOPPED)]
    assert await engine.stop(GROUP) is StopOutcome.NOTHING and engine.busy == 0


async def test_shutdown_interrupts_every_running_reply_as_partial(
    engine: Conversation, ai: FakeOpenAI
) -> None:
    ai.responder = lambda _request: Reply(LONG, chunk_chars=5, delay_per_chunk=0.05)
    sinks = [Sink() for _ in range(3)]
    tasks = [
        asyncio.create_task(
            engine.respond(Incoming(ChatKey(i + 1), "go", Author(i + 1, "U"), 1), sink)
        )
        for i, sink in enumerate(sinks)
    ]
    await eventually(lambda: all(s.shown for s in sinks), bool)
    assert engine.interrupt_all() == 3
    for task in tasks:
        with pytest.raises(ReplyInterrupted):
            await task
    assert all(s.finals and s.finals[0][1] is Status.PARTIAL for s in sinks)
