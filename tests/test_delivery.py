"""Delivering an answer through a Bot API that refuses, fails or stalls: flood control that
lasts an hour, a proxy's 502, a network error, a part Telegram finds empty. The answer is
stored before it is sent, every wait is bounded, and the user is told when it cannot arrive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.fakes import FakeOpenAI, FakeTelegram
from tests.harness import RunningBot, eventually
from tests.test_private_chat import ALICE, ask, final_messages

Query = Callable[..., list[tuple[Any, ...]]]
Factory = Callable[..., RunningBot]


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("tail", ["\x1f", "\x00\x01", "\n\u200b\x1c"])
async def test_a_last_part_made_only_of_control_characters_is_not_sent(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI, db: Query, streaming: bool, tail: str
) -> None:
    running = await bot_factory(streaming=streaming).start()
    try:
        ai.enqueue("x" * 4096 + tail, "Next.")
        [part] = await ask(tg, ALICE, "fill a message")
        assert tg.visible_text(part) == "x" * 4096
        [reply] = await ask(tg, ALICE, "and then?")
        assert tg.visible_text(reply) == "Next.", "no error line came in between"
        assert not [c for c in tg.calls if c.failed], "nothing Telegram would reject as empty"
        assert await eventually(
            lambda: db("SELECT COUNT(*) FROM messages WHERE role = 'assistant'"),
            lambda rows: rows == [(2,)],
        )
        assert len(final_messages(tg, ALICE)) == 2
    finally:
        await running.stop()
