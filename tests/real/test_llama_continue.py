"""An answer cut at the output limit by a real llama.cpp server, and /continue, end to end.

The real bot, over real HTTP, against the fake Bot API and a real server (both servers, through
`real_server`) serving the tiny generated model, whose gibberish never ends by itself within a
few tokens: with MAX_OUTPUT_TOKENS at its minimum (16) the server stops every answer with
`finish_reason: "length"`, streamed (llama-cpp-python without any usage in the stream). The
user gets the text and the line; /continue sends the conversation with the text so far and the
instruction, and the stored conversation holds one answer, longer, starting with the first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.databases import SQLiteDatabase
from tests.fakes import FakeTelegram
from tests.harness import TOKEN, RunningBot, eventually, make_settings
from tests.real.servers import MODEL_ALIAS, RunningServer

pytestmark = pytest.mark.real_server

ALICE = 1001
AT_LIMIT = "The answer reached the length limit. Send /continue for the rest."


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as server:
        yield server


def sent(telegram: FakeTelegram) -> list[str]:
    return [
        telegram.visible_text(c)
        for c in telegram.calls_to("sendMessage")
        if c.chat_id == ALICE and not c.failed
    ]


async def test_a_real_servers_length_finish_is_shown_and_continue_goes_on(
    real_server: RunningServer, telegram: FakeTelegram, tmp_path: Path
) -> None:
    settings = make_settings(
        telegram.base_url,
        real_server.base_url,
        tmp_path / "bot.sqlite3",
        openai_model=MODEL_ALIAS,
        openai_api_key="",
        openai_timeout=60.0,
        model_context_window=real_server.n_ctx,
        max_output_tokens=16,
    )
    bot = await RunningBot(settings).start()
    db = SQLiteDatabase(tmp_path / "bot.sqlite3").query
    live = "SELECT text, status FROM messages WHERE role = 'assistant' AND archived = 0"
    try:
        telegram.send_text(ALICE, "List every prime number.", user_id=ALICE)
        await telegram.wait_for("sendMessage", lambda c: c.chat_id == ALICE, count=2)
        assert sent(telegram)[-1] == AT_LIMIT
        [(first, status)] = await eventually(lambda: db(live), bool)
        assert status == "partial" and first

        telegram.send_command(ALICE, "/continue", user_id=ALICE)
        # The rest, and the line again: 16 more tokens cannot end the gibberish either.
        await telegram.wait_for("sendMessage", lambda c: c.chat_id == ALICE, count=4)
        assert sent(telegram)[-1] == AT_LIMIT
        [(whole, status)] = await eventually(
            lambda: db(live), lambda rows: len(rows) == 1 and rows[0][0] != first
        )
        assert whole.startswith(first) and len(whole) > len(first), "one answer, both halves"
        archived = db("SELECT text FROM messages WHERE role = 'assistant' AND archived = 1")
        assert archived == [(first,)]
    finally:
        await bot.stop()
