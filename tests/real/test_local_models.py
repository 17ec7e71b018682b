"""The bot against real llama.cpp servers: a chat never gets stuck (issue 13).

The real bot (real Application, real AsyncOpenAI, a real SQLite file) over real HTTP to the
fake Bot API and to a real server serving the tiny generated model with a 1,024-token window
(fixtures in `conftest.py`). No MODEL_CONTEXT_WINDOW is set and the model's name ("tiny") is in
no family table, so the bot starts believing 8,192 tokens unless the server says otherwise:
llama-server says 1,024 in `/props`; llama-cpp-python says nothing, streams no usage, counts
more tokens than tiktoken, and answers a streamed prompt past its window with an empty 200.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from telegram_bot.engine.turns import AT_LIMIT
from telegram_bot.errors import BotError
from tests.fakes import FakeTelegram
from tests.harness import TOKEN, RunningBot, make_settings
from tests.real.servers import MODEL_ALIAS, RunningServer
from tests.test_memory import filler

pytestmark = pytest.mark.real_server

ALICE = 1001


def error_lines() -> set[str]:
    """Every line the bot may send instead of an answer."""

    def walk(cls: type[BotError]) -> Iterator[type[BotError]]:
        yield cls
        for sub in cls.__subclasses__():
            yield from walk(sub)

    return {cls.user_message() for cls in walk(BotError)}


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as server:
        yield server


def bot_on(
    server: RunningServer, telegram: FakeTelegram, path: Path, **overrides: Any
) -> RunningBot:
    settings = make_settings(
        telegram.base_url,
        server.base_url,
        path,
        openai_model=MODEL_ALIAS,
        openai_api_key="",
        openai_timeout=60.0,
        openai_max_retries=1,
        max_output_tokens=16,  # gibberish either way; short keeps the test quick
        summary_token_budget=64,
        **overrides,
    )
    return RunningBot(settings)


def query(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return list(conn.execute(sql, args))


def answers(telegram: FakeTelegram) -> list[str]:
    """What the bot sent in answer, without the /continue line that follows an answer cut at
    the output limit (16 tokens here: most answers are), which may come after the next ask."""
    return [t for t in telegram.sent_texts(ALICE) if t != AT_LIMIT]


async def ask(telegram: FakeTelegram, text: str) -> str:
    before = len(answers(telegram))
    telegram.send_text(ALICE, text, user_id=ALICE)
    # Long: a CPU shared with builds, and the fold after a reply runs in the chat's turn.
    await telegram.wait_for(
        "sendMessage",
        lambda c: c.chat_id == ALICE and telegram.visible_text(c) != AT_LIMIT,
        count=before + 1,
        timeout=180.0,
    )
    return answers(telegram)[-1]


def window_line(caplog: pytest.LogCaptureFixture) -> str:
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Context window")]
    return line


async def test_forty_turns_past_a_1024_token_window_are_all_answered(
    real_server: RunningServer,
    telegram: FakeTelegram,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="telegram_bot")
    path = tmp_path / "bot.sqlite3"
    bot = await bot_on(real_server, telegram, path).start()
    errors = error_lines()
    try:
        for i in range(42):
            answer = await ask(telegram, f"{filler(i)} {filler(i + 1)}")
            assert answer not in errors, f"turn {i}: {answer}"
    finally:
        await bot.stop()
    replies = query(path, "SELECT status FROM messages WHERE role = 'assistant'")
    assert len(replies) == 42
    assert query(path, "SELECT COUNT(*) FROM messages WHERE role = 'user'") == [(42,)]
    assert query(path, "SELECT COUNT(*) FROM summaries")[0][0] >= 1, "old turns were folded"
    overflows = [r for r in caplog.records if "context length exceeded" in r.getMessage()]
    assert len(overflows) <= 2, [r.getMessage() for r in overflows]


async def test_llama_server_says_its_window_at_start_up(
    llama_server: RunningServer,
    telegram: FakeTelegram,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="telegram_bot")
    bot = await bot_on(llama_server, telegram, tmp_path / "bot.sqlite3").start()
    try:
        assert window_line(caplog) == "Context window: 1024 tokens (llama-server GET /props n_ctx)"
    finally:
        await bot.stop()


async def test_llama_cpp_python_says_nothing_until_its_first_overflow(
    llama_cpp_python_server: RunningServer,
    telegram: FakeTelegram,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its streamed overflow is an empty 200; asked once unstreamed, its 400 says the window."""
    caplog.set_level(logging.INFO, logger="telegram_bot")
    path = tmp_path / "bot.sqlite3"
    bot = await bot_on(llama_cpp_python_server, telegram, path).start()
    try:
        assert "family table" in window_line(caplog)
        for turn in range(4):  # ~300 tokens each: the third or fourth prompt passes 1,024
            text = " ".join(filler(10 * turn + i) for i in range(9))
            answer = await ask(telegram, text)
            assert answer not in error_lines(), f"turn {turn}: {answer}"
    finally:
        await bot.stop()
    said = [r.getMessage() for r in caplog.records]
    assert any("ended a stream with no answer" in m for m in said), said
    assert any("window is 1024 tokens, not 8192" in m for m in said), said
    assert query(path, "SELECT COUNT(*) FROM messages WHERE role = 'assistant'") == [(4,)]


async def test_a_stream_without_usage_is_calibrated_on_the_servers_tokenizer(
    llama_cpp_python_server: RunningServer, telegram: FakeTelegram, tmp_path: Path
) -> None:
    """llama-cpp-python's streams never carry usage; its `/extras/tokenize` counts ~1.3x
    tiktoken for English (docs/real-servers.md), and the factor is kept across a restart."""
    path = tmp_path / "bot.sqlite3"
    bot = await bot_on(llama_cpp_python_server, telegram, path).start()
    try:
        await ask(telegram, f"{filler(1)} {filler(2)}")
        [(factor,)] = query(path, "SELECT factor FROM token_factors WHERE model = ?", MODEL_ALIAS)
        assert 1.1 < factor < 1.6, factor
        await bot.restart()
        await ask(telegram, "and again")
        assert query(path, "SELECT factor FROM token_factors WHERE model = ?", MODEL_ALIAS)[0][
            0
        ] == pytest.approx(factor, abs=0.2)
    finally:
        await bot.stop()


async def test_llama_servers_template_count_is_its_usage(
    llama_server: RunningServer, tmp_path: Path
) -> None:
    """What the bot calibrates on where no usage comes back is exactly the usage's count."""
    from telegram_bot.llm.server_info import LLAMA_SERVER, count_prompt
    from tests.real.client import request

    settings = make_settings("http://unused", llama_server.base_url, tmp_path / "x.sqlite3")
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": filler(3)},
    ]
    counted = await count_prompt(settings, LLAMA_SERVER, messages)
    body = {"model": MODEL_ALIAS, "messages": messages, "max_tokens": 1}
    reply = await request("POST", f"{llama_server.base_url}/chat/completions", body)
    assert counted is not None and counted.whole
    assert counted.tokens == reply.json["usage"]["prompt_tokens"]


async def test_llama_servers_streamed_overflow_corrects_a_wrong_window_setting(
    llama_server: RunningServer,
    telegram: FakeTelegram,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """MODEL_CONTEXT_WINDOW=8192 against a 1,024-token server: its streamed 400 names the
    real window (`n_ctx`), which wins over the setting from then on."""
    caplog.set_level(logging.INFO, logger="telegram_bot")
    path = tmp_path / "bot.sqlite3"
    bot = await bot_on(llama_server, telegram, path, model_context_window=8192).start()
    try:
        assert "the server says 1024" in window_line(caplog)
        for turn in range(4):
            text = " ".join(filler(10 * turn + i) for i in range(9))
            answer = await ask(telegram, text)
            assert answer not in error_lines(), f"turn {turn}: {answer}"
    finally:
        await bot.stop()
    said = [r.getMessage() for r in caplog.records]
    assert any("window is 1024 tokens, not 8192" in m for m in said), said
    assert query(path, "SELECT COUNT(*) FROM messages WHERE role = 'assistant'") == [(4,)]
