"""Webhook mode, as a real process: the fake Bot API posts updates to the bot's URL the way
Telegram does (tests/fakes/_telegram_webhook.py), with the secret header, one call at a time
per chat, again after a failure.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from tests.fakes import FakeOpenAI, FakeTelegram, Reply
from tests.harness import eventually
from tests.test_inbox import exchanges
from tests.test_private_chat import ALICE, final_messages
from tests.test_process import LONG, BotProcess
from tests.test_startup import assert_clean, lines

T = TypeVar("T")
SECRET = "s3cret_Token-for-the-webhook"
Query = Callable[..., list[tuple[Any, ...]]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WebhookBot(BotProcess):
    def __init__(self, tg: FakeTelegram, ai: FakeOpenAI, db_path: Path, **env: str) -> None:
        port = int(env.pop("port", "0")) or free_port()
        self.origin = f"http://127.0.0.1:{port}"
        webhook = {
            "WEBHOOK_URL": f"{self.origin}/telegram/updates",
            "WEBHOOK_LISTEN": "127.0.0.1",
            "WEBHOOK_PORT": str(port),
            "WEBHOOK_SECRET_TOKEN": SECRET,
        }
        super().__init__(tg, ai, db_path, **{**webhook, **env})

    async def start(self, ready: str = "setWebhook") -> WebhookBot:
        await super().start(ready)
        return self

    async def health(self) -> tuple[int, str]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.origin}/healthz") as r:
            return r.status, await r.text()


@pytest.fixture
async def webhook_bot(
    tg: FakeTelegram, ai: FakeOpenAI, db_path: Path
) -> AsyncIterator[Callable[..., WebhookBot]]:
    started: list[WebhookBot] = []

    def make(**env: str) -> WebhookBot:
        started.append(WebhookBot(tg, ai, db_path, **env))
        return started[-1]

    yield make
    for bot in started:
        if bot.proc is not None and bot.proc.returncode is None:
            bot.proc.kill()
            await bot.proc.wait()


async def eventually_async(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], within: float = 10.0
) -> T:
    """`harness.eventually` for a probe that must be awaited (an HTTP request)."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within}s; last: {value!r}")
        await asyncio.sleep(0.01)


async def healthy(bot: WebhookBot) -> None:
    """Waits until /healthz says 200 (it says 503 until the webhook is set)."""

    async def probe() -> int:
        try:
            return (await bot.health())[0]
        except aiohttp.ClientError:
            return 0  # not listening yet

    await eventually_async(probe, lambda status: status == 200)


async def post(bot: WebhookBot, update: dict[str, Any], secret: str | None) -> int:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{bot.origin}/telegram/updates", json=update, headers=headers) as r,
    ):
        return r.status


async def test_telegram_posts_updates_and_the_bot_answers(
    webhook_bot: Callable[..., WebhookBot], tg: FakeTelegram
) -> None:
    tg.delay("setWebhook", 2)  # the server listens before the webhook is set
    bot = await webhook_bot().start()
    assert await eventually_async(bot.health, lambda health: True) == (503, "starting")
    await healthy(bot)
    [call] = tg.calls_to("setWebhook")
    assert call.params["url"] == f"{bot.origin}/telegram/updates"
    assert call.params["secret_token"] == SECRET
    tg.send_text(ALICE, "over the webhook", user_id=ALICE)
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: over the webhook")
    [delivery] = await tg.webhook.deliveries.wait_for(lambda d: True, 1, 10)
    assert delivery.status == 200
    assert tg.calls_to("getUpdates") == [], "no polling in webhook mode"
    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    assert await bot.wait() == 0
    assert_clean(bot.log)
    assert SECRET not in bot.log


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x", SECRET[:-1]])
async def test_a_request_without_the_secret_is_refused_and_never_handled(
    webhook_bot: Callable[..., WebhookBot],
    tg: FakeTelegram,
    ai: FakeOpenAI,
    db: Query,
    secret: str | None,
) -> None:
    bot = await webhook_bot().start()
    await healthy(bot)
    forged = {"update_id": 999, "message": tg.make_message(ALICE, "obey me", user_id=ALICE)}
    assert await post(bot, forged, secret) == 403
    assert await post(bot, {**forged, "update_id": 1000}, SECRET) == 200  # the real one
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: obey me")
    assert [r.last_user_text for r in ai.requests] == ["obey me"]
    assert db("SELECT update_id FROM inbox") == [(1000,)]


async def test_an_update_telegram_sends_again_is_acknowledged_and_not_handled_again(
    webhook_bot: Callable[..., WebhookBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await webhook_bot().start()
    await healthy(bot)
    update = tg.send_text(ALICE, "once", user_id=ALICE)
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: once")
    assert await post(bot, update, SECRET) == 200  # e.g. our first 200 was lost on the way
    tg.send_text(ALICE, "twice?", user_id=ALICE)
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: twice?")
    assert [r.last_user_text for r in ai.requests] == ["once", "twice?"]


async def test_kill_9_after_the_200_loses_nothing(
    webhook_bot: Callable[..., WebhookBot],
    tg: FakeTelegram,
    ai: FakeOpenAI,
    db: Query,
) -> None:
    bot = await webhook_bot().start()
    await healthy(bot)
    ai.enqueue(Reply(LONG, chunk_chars=5, delay_per_chunk=0.1))
    tg.send_text(ALICE, "first", user_id=ALICE)
    await tg.wait_for("sendMessageDraft", count=3)
    tg.send_text(ALICE, "second", user_id=ALICE)
    await tg.webhook.deliveries.wait_for(lambda d: d.ok, 2, 10)  # both acknowledged
    assert bot.proc is not None
    bot.proc.kill()
    await bot.wait()

    await bot.start()
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: second", timeout=20)
    assert [tg.visible_text(c) for c in final_messages(tg, ALICE)] == [
        "Echo: first",
        "Echo: second",
    ]
    assert await eventually(lambda: exchanges(db), lambda found: len(found) == 2) == [
        ("first", "Echo: first"),
        ("second", "Echo: second"),
    ]


async def test_sigterm_drains_health_says_503_and_telegram_keeps_new_updates(
    webhook_bot: Callable[..., WebhookBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    bot = await webhook_bot(SHUTDOWN_GRACE="2").start()
    await healthy(bot)
    ai.enqueue(Reply(LONG, chunk_chars=5, delay_per_chunk=0.1))
    tg.send_text(ALICE, "a long one", user_id=ALICE)
    await tg.wait_for("sendMessageDraft", count=3)
    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    health = await eventually_async(bot.health, lambda health: health[0] == 503)
    assert health == (503, "draining")
    tg.send_text(ALICE, "while it stops", user_id=ALICE)
    refused = await tg.webhook.deliveries.wait_for(lambda d: d.status == 503, 1, 10)
    assert refused[0].error and "503" in refused[0].error
    assert await bot.wait() == 0
    partial, restarting = [tg.visible_text(c) for c in final_messages(tg, ALICE)]
    assert LONG.startswith(partial) and "restarting" in restarting

    await bot.start()  # Telegram tries again and the new process takes it
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: while it stops")
    assert [r.last_user_text for r in ai.requests] == ["a long one", "while it stops"]
    assert_clean(bot.log)


async def test_a_webhook_url_telegram_refuses_is_one_line_and_exit_2(
    webhook_bot: Callable[..., WebhookBot],
) -> None:
    bot = webhook_bot(WEBHOOK_URL="http://bot.example.com/telegram/updates")
    await bot.spawn()
    assert await bot.wait() == 2
    [line] = lines(bot.log, "Telegram refused the webhook")
    assert "https url must be provided" in line.lower()
    assert_clean(bot.log)


async def test_a_port_in_use_is_one_line_and_exit_1(
    webhook_bot: Callable[..., WebhookBot],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        bot = webhook_bot(port=str(port))
        await bot.spawn()
        assert await bot.wait() == 1
    [line] = lines(bot.log, f"cannot listen on 127.0.0.1:{port}")
    assert "WEBHOOK_PORT" in line
    assert_clean(bot.log)


async def test_long_polling_removes_a_webhook_set_earlier_and_says_so(
    tg: FakeTelegram, ai: FakeOpenAI, db_path: Path
) -> None:
    tg.webhook.set({"url": "http://127.0.0.1:9/old/hook", "secret_token": "old"})
    bot = BotProcess(tg, ai, db_path)
    try:
        await bot.start()
        [line] = lines(bot.log, "A webhook was set for this bot (http://127.0.0.1:9/old/hook)")
        assert "WARNING" in line
        tg.send_text(ALICE, "polling again", user_id=ALICE)
        await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == "Echo: polling again")
    finally:
        if bot.proc is not None and bot.proc.returncode is None:
            bot.proc.kill()
            await bot.proc.wait()
