"""Many chats at once with a slow model: everyone is answered, each chat in its own order."""

from __future__ import annotations

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
