"""The model client's wire format: what the bot sends to an OpenAI-compatible server."""

from __future__ import annotations

from tests.fakes import FakeOpenAI, FakeTelegram
from tests.harness import API_KEY, RunningBot


async def test_the_request_carries_the_key_the_model_and_usage_options(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.api_key = API_KEY  # from now on the fake refuses any other key
    ai.enqueue("Hi there.")
    tg.send_text(42, "hello", user_id=42)

    [reply] = await tg.wait_for("sendMessage", lambda c: c.chat_id == 42 and not c.failed)
    [request] = ai.requests
    assert reply.params["text"] == "Hi there."
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["model"] == "gpt-4o-mini"
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["messages"][-1] == {"role": "user", "content": "hello"}
