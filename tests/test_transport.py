"""The aiohttp request class keeps python-telegram-bot's error semantics, against the fake Bot API.

Every error the handlers and the sender rely on must surface as the same python-telegram-bot
exception it would with the stock `HTTPXRequest`: flood control, bad requests, blocked users,
chat migration, dropped connections and timeouts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from telegram import Bot
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TimedOut

from telegram_bot.telegram_adapter.transport import AiohttpRequest
from tests.fakes import FakeTelegram
from tests.harness import TOKEN


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    request = AiohttpRequest(connection_pool_size=8, read_timeout=2.0)
    async with Bot(TOKEN, base_url=tg.base_url, request=request) as the_bot:
        yield the_bot


async def test_a_message_goes_out_with_its_entities(bot: Bot, tg: FakeTelegram) -> None:
    sent = await bot.send_message(42, "Hello *there* ✨", parse_mode="Markdown")

    [call] = tg.calls_to("sendMessage")
    assert call.params["chat_id"] == 42
    assert sent.text == "Hello there ✨"
    assert sent.entities[0].type == "bold"


async def test_flood_control_is_retry_after(bot: Bot, tg: FakeTelegram) -> None:
    tg.fail("sendMessage", status=429, retry_after=7)

    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(42, "hi")

    assert caught.value.retry_after == timedelta(seconds=7)


async def test_bad_request_and_forbidden_keep_telegrams_words(bot: Bot, tg: FakeTelegram) -> None:
    tg.fail("sendMessage", status=400, description="Bad Request: can't parse entities")
    tg.fail("editMessageText", status=403)

    with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
        await bot.send_message(42, "hi")
    with pytest.raises(Forbidden, match="blocked by the user"):
        await bot.edit_message_text("new", chat_id=42, message_id=1)


async def test_a_migrated_group_names_the_new_chat(bot: Bot, tg: FakeTelegram) -> None:
    tg.fail("sendMessage", status=400, migrate_to_chat_id=-1001234)

    with pytest.raises(ChatMigrated) as caught:
        await bot.send_message(-5, "hi")

    assert caught.value.new_chat_id == -1001234


async def test_a_dropped_connection_is_a_network_error(bot: Bot, tg: FakeTelegram) -> None:
    tg.drop_connection("sendMessage")

    with pytest.raises(NetworkError) as caught:
        await bot.send_message(42, "hi")

    assert not isinstance(caught.value, TimedOut)
    assert await bot.send_message(42, "again")  # the pool recovers


async def test_a_slow_answer_is_timed_out(bot: Bot, tg: FakeTelegram) -> None:
    tg.delay("sendMessage", 3.0)

    with pytest.raises(TimedOut):
        await bot.send_message(42, "hi", read_timeout=0.2, write_timeout=0.2)


async def test_an_uninitialised_request_refuses_to_send() -> None:
    request = AiohttpRequest()

    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request("http://127.0.0.1:9/", "POST")
