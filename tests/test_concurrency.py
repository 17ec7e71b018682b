"""Many chats at once with a slow model: everyone is answered, each chat in its own order."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from tests.fakes import FakeOpenAI, FakeTelegram, Reply
from tests.fakes.openai import ChatRequest
from tests.harness import RunningBot, eventually

Query = Callable[..., list[tuple[Any, ...]]]
CHATS = 200


async def test_200_chats_at_once_are_all_answered_in_their_own_order(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    def slow_echo(request: ChatRequest) -> Reply:
        return Reply(f"re: {request.last_user_text}", first_token_delay=0.5)

    ai.responder = slow_echo
    chats = range(10_000, 10_000 + CHATS)
    for chat_id in chats:
        tg.send_text(chat_id, f"{chat_id} first", user_id=chat_id)
    for chat_id in chats:
        tg.send_text(chat_id, f"{chat_id} second", user_id=chat_id)
    await tg.wait_for("sendMessage", lambda c: not c.failed, count=2 * CHATS, timeout=120)
    answers: dict[int, list[str]] = defaultdict(list)
    for call in tg.calls_to("sendMessage"):
        if not call.failed:
            answers[call.chat_id].append(tg.visible_text(call))
    assert answers == {c: [f"re: {c} first", f"re: {c} second"] for c in chats}
    # Each second question was asked with the first exchange already in its history.
    for request in ai.requests:
        if request.last_user_text.endswith("second"):
            chat_id = request.last_user_text.split()[0]
            contents = [m["content"] for m in request.messages[1:]]
            assert contents == [f"{chat_id} first", f"re: {chat_id} first", f"{chat_id} second"]
    rows = await eventually(
        lambda: db("SELECT COUNT(*) FROM messages"), lambda rows: rows[0][0] == 4 * CHATS
    )
    assert rows == [(4 * CHATS,)]


async def test_serving_many_chats_leaves_no_per_chat_residue_in_the_application(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    """The bot keeps its state in its database; python-telegram-bot, without persistence,
    would keep every chat and user id it ever saw (see app.BotApplication)."""
    ai.responder = lambda request: Reply("ok")
    chats = range(20_000, 20_050)
    for chat_id in chats:
        tg.send_text(chat_id, "hello", user_id=chat_id)
    await tg.wait_for("sendMessage", lambda c: not c.failed, count=len(chats), timeout=60)
    app = bot.application
    # Every update fully handled (PTB marks them for persistence as its last step).
    await asyncio.wait_for(app.update_queue.join(), timeout=30)
    assert app.persistence is None
    assert not app._chat_ids_to_be_updated_in_persistence
    assert not app._user_ids_to_be_updated_in_persistence
