"""The fake Bot API's webhook delivery, tested on its own with a small receiver, and through
python-telegram-bot's Bot for the methods (so the bot's client is known to understand it)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import telegram
from aiohttp import web
from telegram.error import BadRequest, Conflict

from tests.fakes import FakeTelegram
from tests.harness import eventually

TOKEN = "123:ABC"


@dataclass
class Receiver:
    """A webhook endpoint that records what arrives and answers as told."""

    port: int = 0
    received: list[tuple[dict[str, Any], str | None]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answers to give, then 200
    hold: asyncio.Event = field(default_factory=asyncio.Event)  # set: answer at once
    in_flight: int = 0
    most_in_flight: int = 0
    events: list[tuple[str, str]] = field(default_factory=list)  # ("arrived"/"answered", text)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        update = await request.json()
        self.received.append((update, request.headers.get("X-Telegram-Bot-Api-Secret-Token")))
        text = update["message"]["text"]
        self.events.append(("arrived", text))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.hold.wait()
        finally:
            self.in_flight -= 1
        self.events.append(("answered", text))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    def texts(self) -> list[str]:
        return [update["message"]["text"] for update, _ in self.received]


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as fake:
        fake.webhook.retry_delay = 0.05
        yield fake


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    found.hold.set()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        found.port = sock.getsockname()[1]
    await web.TCPSite(runner, "127.0.0.1", found.port).start()
    yield found
    found.hold.set()
    await runner.cleanup()


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[telegram.Bot]:
    async with telegram.Bot(TOKEN, base_url=tg.base_url) as real_bot:
        yield real_bot


async def delivered(tg: FakeTelegram, count: int) -> None:
    await tg.webhook.deliveries.wait_for(lambda d: d.ok, count, 10)


async def test_updates_are_posted_with_the_secret_and_leave_the_queue(
    tg: FakeTelegram, receiver: Receiver, bot: telegram.Bot
) -> None:
    assert await bot.set_webhook(receiver.url, secret_token="s3cret")
    tg.send_text(42, "hello")
    await delivered(tg, 1)
    [(update, secret)] = receiver.received
    assert update["message"]["text"] == "hello" and secret == "s3cret"
    assert tg.pending_updates == []
    info = await bot.get_webhook_info()
    assert (info.url, info.pending_update_count) == (receiver.url, 0)


async def test_a_chats_next_update_waits_for_the_previous_call_other_chats_do_not(
    tg: FakeTelegram, receiver: Receiver, bot: telegram.Bot
) -> None:
    receiver.hold.clear()
    await bot.set_webhook(receiver.url)
    tg.send_text(42, "a1")
    tg.send_text(42, "a2")
    tg.send_text(43, "b1")
    await eventually(lambda: receiver.texts(), lambda texts: len(texts) >= 2)
    assert sorted(receiver.texts()) == ["a1", "b1"], "two chats at once"
    receiver.hold.set()
    await delivered(tg, 3)
    events = receiver.events
    assert events.index(("answered", "a1")) < events.index(("arrived", "a2")), "one at a time"
    assert receiver.most_in_flight == 2


async def test_a_failed_or_refused_call_is_sent_again_and_says_why(
    tg: FakeTelegram, receiver: Receiver, bot: telegram.Bot
) -> None:
    receiver.statuses = [403, 503]
    await bot.set_webhook(receiver.url)
    tg.send_text(42, "persist")
    tg.send_text(42, "after")
    await delivered(tg, 2)
    assert receiver.texts() == ["persist", "persist", "persist", "after"]
    failures = [d for d in tg.webhook.deliveries.items if not d.ok]
    assert [d.status for d in failures] == [403, 503]
    info = await bot.get_webhook_info()
    assert info.last_error_message == "Wrong response from the webhook: 503"


async def test_a_webhook_nobody_listens_on_is_retried_until_it_answers(
    tg: FakeTelegram, bot: telegram.Bot
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await bot.set_webhook(f"http://127.0.0.1:{port}/hook")
    tg.send_text(42, "anyone?")
    await tg.webhook.deliveries.wait_for(lambda d: d.status is None, 2, 10)
    assert [u["message"]["text"] for u in tg.pending_updates] == ["anyone?"]
    assert "Connection failed" in ((await bot.get_webhook_info()).last_error_message or "")


async def test_get_updates_is_a_conflict_while_a_webhook_is_set(
    tg: FakeTelegram, receiver: Receiver, bot: telegram.Bot
) -> None:
    await bot.set_webhook(receiver.url)
    with pytest.raises(Conflict, match="webhook is active"):
        await bot.get_updates()
    await bot.delete_webhook()
    tg.send_text(42, "polled")
    [update] = await bot.get_updates()
    assert update.message is not None and update.message.text == "polled"
    assert receiver.received == []


async def test_only_https_urls_or_loopback_are_accepted(bot: telegram.Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)https url"):
        await bot.set_webhook("http://bot.example.com/hook")
    assert await bot.set_webhook("https://bot.example.com:8443/hook")
    with pytest.raises(BadRequest, match="unallowed characters"):
        await bot.set_webhook("https://bot.example.com/hook", secret_token="no spaces")


async def test_drop_pending_updates_with_set_webhook(
    tg: FakeTelegram, receiver: Receiver, bot: telegram.Bot
) -> None:
    tg.send_text(42, "old news")
    await bot.set_webhook(receiver.url, drop_pending_updates=True)
    tg.send_text(42, "fresh")
    await delivered(tg, 1)
    assert receiver.texts() == ["fresh"]
