"""The bot's prompts reuse llama-server's prompt cache, as the server itself reports it.

The real engine (SQLite, AsyncOpenAI, streaming) plays a long chat against the C++
`llama-server` (one slot, `cache_prompt` on by default) serving the tiny generated model. The
server's own `timings` (`cache_n`: prompt tokens reused, `prompt_n`: evaluated) come back in
each streamed answer's last chunk; the bot books `cache_n` as the call's cached tokens, which
is what this test reads, alongside the raw timings seen on the wire by a recording proxy.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.prefix import Recorder, play
from telegram_bot.config import Settings
from telegram_bot.storage import open_store
from tests.real.client import request
from tests.real.probes import SHORT, chat
from tests.real.servers import RunningServer

pytestmark = pytest.mark.real_server


@pytest.mark.parametrize("llama_server", [2048], indirect=True)
async def test_consecutive_turns_are_served_from_the_servers_prompt_cache(
    llama_server: RunningServer, tmp_path: Path
) -> None:
    recorder = Recorder(llama_server.origin)
    database = tmp_path / "bot.sqlite3"
    async with recorder as base_url:
        await play(base_url, turns=40, facts=3, database=database)
    chat = [c for c in recorder.calls if not c.summary]
    assert len(chat) == 43, "every turn answered"
    assert all(c.prompt_n + c.cache_n > 0 for c in chat), "timings came with every answer"
    total = sum(c.prompt_n + c.cache_n for c in chat)
    evaluated = sum(c.prompt_n for c in chat)
    assert evaluated < 0.35 * total, f"only {1 - evaluated / total:.0%} of the prompt reused"
    grown = [c for c in chat[1:] if c.cache_n > 0]
    assert len(grown) >= 0.8 * (len(chat) - 1), "most turns reuse the previous prompt"
    # The bot booked what the server reported (usage.cached_tokens / timings.cache_n).
    store = open_store(
        Settings(telegram_bot_token="1:x", openai_api_key="x", database_path=database)
    )
    await store.open()
    try:
        day = datetime.now(UTC).date()
        totals = await store.usage_totals(day, day)
    finally:
        await store.close()
    reused = sum(c.cache_n for c in recorder.calls)
    assert totals.cached_tokens == reused, "the bot booked the server's cache_n"


async def test_both_servers_ignore_a_prompt_cache_key(real_server: RunningServer) -> None:
    body = chat(SHORT)
    body["prompt_cache_key"] = "chat-0123456789abcdef"
    reply = await request("POST", f"{real_server.base_url}/chat/completions", body)
    assert reply.status == 200, reply.text
