"""Local model servers, through the real bot and the fake OpenAI server taught their ways: the
window is read from the server at start-up, every form of overflow is learnt from and answered,
and the token count is calibrated on the server's tokenizer where streams carry no usage."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from telegram_bot.llm.overflow import CONTEXT_MARKERS, overflow
from telegram_bot.llm.server_info import origin
from tests.fakes import FakeOpenAI, FakeTelegram
from tests.fakes.openai import Empty
from tests.harness import API_KEY, RunningBot
from tests.test_memory import chat_requests, filler, summariser
from tests.test_private_chat import ALICE, ask, final_messages

Factory = Callable[..., RunningBot]
Query = Callable[..., list[tuple[Any, ...]]]
MODEL = "qwen-local"  # in no family table: 8192 unless the server says otherwise


def window_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Context window")]


async def start(bot_factory: Factory, ai: FakeOpenAI, **overrides: Any) -> RunningBot:
    ai.models = [MODEL]
    settings = {"openai_model": MODEL, "max_output_tokens": 4096, **overrides}
    return await bot_factory(**settings).start()


@pytest.mark.parametrize(
    ("kind", "setup", "window", "source"),
    [
        ("llama-server", {}, 1024, "GET /props n_ctx"),
        ("vllm", {}, 3000, "max_model_len"),
        ("lmstudio", {}, 6000, "loaded_context_length"),
        ("ollama", {"ollama_num_ctx": 2048}, 2048, "num_ctx"),
        ("ollama", {"ollama_loaded": 16384}, 16384, "/api/ps"),
        ("ollama", {"trained_context": 32768}, 4096, "OLLAMA_CONTEXT_LENGTH"),
        ("ollama", {"trained_context": 2048}, 2048, "Ollama's default"),
    ],
)
async def test_the_window_is_read_from_the_server_at_start_up(
    bot_factory: Factory,
    tg: FakeTelegram,
    ai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    setup: dict[str, int],
    window: int,
    source: str,
) -> None:
    ai.server_kind = kind
    ai.context_window = None if kind == "ollama" else window
    for name, value in setup.items():
        setattr(ai, name, value)
    with caplog.at_level(logging.INFO):
        bot = await start(bot_factory, ai)
    [line] = window_lines(caplog)
    assert line.startswith(f"Context window: {window} tokens (") and source in line, line
    await ask(tg, ALICE, "hello")
    # What a user notices: the answer may use half the window, not the configured 4096.
    assert ai.requests[-1].body["max_tokens"] == min(4096, window // 2)
    await bot.stop()


async def test_model_context_window_overrides_what_the_server_says(
    bot_factory: Factory, ai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    ai.server_kind, ai.context_window = "llama-server", 1024
    with caplog.at_level(logging.INFO):
        bot = await start(bot_factory, ai, model_context_window=2048)
    [line] = window_lines(caplog)
    assert line.startswith("Context window: 2048 tokens (MODEL_CONTEXT_WINDOW;"), line
    assert "the server says 1024" in line
    await bot.stop()


async def test_a_server_that_says_nothing_falls_back_to_the_family_table(
    bot_factory: Factory, ai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        bot = await start(bot_factory, ai)
    assert window_lines(caplog) == [
        f"Context window: 8192 tokens (model family table for {MODEL!r}; "
        "the server does not say it)"
    ]
    # The probes asked only the model server's own origin, with its key and nothing else.
    assert ai.probes and all(
        p.headers.get("Authorization") == f"Bearer {API_KEY}" for p in ai.probes
    )
    await bot.stop()


async def test_llama_server_overflow_teaches_the_window_and_the_chat_goes_on(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """The server does not say its window at start-up; its first 400 does."""
    window = 1024
    bot = await start(bot_factory, ai, max_output_tokens=64, history_token_budget=3000)
    ai.context_window, ai.overflow_style = window, "llama-server"
    ai.token_factor = 1.5
    ai.responder = summariser("Alice talked about gardening.")
    with caplog.at_level(logging.WARNING):
        for i in range(12):
            [reply] = await ask(tg, ALICE, filler(i) + " " + filler(i + 1))
            assert tg.visible_text(reply).startswith("Noted"), tg.visible_text(reply)
    requests = chat_requests(ai)
    overflowed = [r for r in requests if r.prompt_tokens > window]
    assert len(overflowed) == 1, "one overflow taught the window; every later prompt fit"
    assert any("window is 1024 tokens, not 8192" in r.getMessage() for r in caplog.records)
    await bot.stop()


async def test_forty_turns_past_the_window_of_a_server_that_streams_nothing_on_overflow(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    """llama-cpp-python: no window anywhere, no usage in streams, a tokenizer counting 1.5x
    ours, and a prompt past its window streamed back as an empty 200 (issue 13's stuck chat)."""
    window = 1024
    ai.server_kind, ai.overflow_style, ai.stream_usage = "llama-cpp-python", "empty-stream", False
    ai.context_window, ai.token_factor = window, 1.5
    bot = await start(bot_factory, ai, max_output_tokens=64)
    ai.responder = summariser("Alice talked about gardening.")
    for i in range(42):
        [reply] = await ask(tg, ALICE, filler(i) + " " + filler(i + 1))
        assert tg.visible_text(reply).startswith("Noted"), f"turn {i}: {tg.visible_text(reply)}"
    streamed = [r for r in chat_requests(ai) if r.stream]
    assert sum(r.prompt_tokens >= window for r in streamed) <= 2, "it learnt, it did not loop"
    assert len(final_messages(tg, ALICE)) == 42
    assert db("SELECT COUNT(*) FROM summaries")[0][0] >= 1, "older turns folded, not lost"
    count = db("SELECT COUNT(*) FROM messages WHERE chat_id = ?", (ALICE,))
    assert count == [(84,)], "nothing deleted"
    await bot.stop()


async def test_a_server_that_answers_nothing_gets_a_clear_line_not_a_loop(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    ai.responder = lambda _request: Empty()
    [notice] = await ask(tg, ALICE, "hello?")
    assert "The model server returned an empty answer" in tg.visible_text(notice)
    # A stream, the same unstreamed, once more smaller: stream and unstreamed. No more.
    assert [r.stream for r in ai.requests] == [True, False, True, False]
    assert db("SELECT role, text FROM messages") == [("user", "hello?")]
    [(factor,)] = db("SELECT factor FROM token_factors")
    assert factor == pytest.approx(1.25), "one step for the first empty answer, not two"
    ai.responder = summariser("-")
    [reply] = await ask(tg, ALICE, "and now?")
    assert tg.visible_text(reply).startswith("Noted")


@pytest.mark.parametrize("kind", ["llama-cpp-python", "llama-server"])
async def test_streams_without_usage_are_calibrated_on_the_servers_tokenizer(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI, db: Query, kind: str
) -> None:
    ai.server_kind, ai.stream_usage, ai.token_factor = kind, False, 1.5
    ai.context_window = 100_000
    bot = await start(bot_factory, ai, summary_token_budget=0)
    await ask(tg, ALICE, filler(1) + " " + filler(2))
    [(factor,)] = db("SELECT factor FROM token_factors WHERE model = ?", (MODEL,))
    assert 1.35 <= factor <= 1.6, factor
    # The correction survives a restart: the first prompt after it is already sized for it.
    await bot.restart()
    assert db("SELECT factor FROM token_factors WHERE model = ?", (MODEL,)) == [(factor,)]
    await bot.stop()


async def test_probes_are_bounded_and_a_silent_server_changes_nothing(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    ai.server_kind, ai.ollama_num_ctx = "ollama", 2048
    ai.probe_delay = 3600.0  # the probes never get an answer
    with caplog.at_level(logging.INFO):
        bot = await start(bot_factory, ai)
    [line] = window_lines(caplog)
    assert line.startswith("Context window: 8192 tokens (model family table"), line
    ai.probe_delay = 0.0
    [reply] = await ask(tg, ALICE, "hello")
    assert tg.visible_text(reply) == "Echo: hello"
    await bot.stop()


async def test_the_api_key_never_follows_a_redirect_to_another_host(
    bot_factory: Factory, ai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeOpenAI() as elsewhere:
        elsewhere.server_kind, elsewhere.context_window = "llama-server", 1024
        ai.probe_redirect = elsewhere.origin
        with caplog.at_level(logging.INFO):
            bot = await start(bot_factory, ai)
        assert ai.probes, "the model server was asked"
        assert elsewhere.probes == [], "nothing, and no key, went to the other host"
        [line] = window_lines(caplog)
        assert "family table" in line
        await bot.stop()


@pytest.mark.parametrize(
    ("body", "message", "window", "prompt"),
    [
        (  # llama-server, streamed or not (docs/real-servers.md)
            {"code": 400, "n_prompt_tokens": 2412, "n_ctx": 1024},
            "request (2412 tokens) exceeds the available context size (1024 tokens), try "
            "increasing it",
            1024,
            2412,
        ),
        (  # llama-cpp-python unstreamed, and OpenAI
            {"code": "context_length_exceeded"},
            "This model's maximum context length is 1024 tokens. However, you requested 2416 "
            "tokens (2411 in the messages, 5 in the completion). Please reduce the length of "
            "the messages or completion.",
            1024,
            2411,
        ),
        (  # vLLM
            {},
            "'max_tokens' is too large: 1024. This model's maximum context length is 2048 "
            "tokens and your request has 1500 input tokens (1024 > 2048 - 1500).",
            2048,
            1500,
        ),
        ({}, "Requested tokens (2411) exceed context window of 1024", 1024, 2411),
        ({}, "context_length_exceeded", None, None),
    ],
)
def test_an_overflow_error_says_the_window_and_the_prompt(
    body: dict[str, Any], message: str, window: int | None, prompt: int | None
) -> None:
    error = overflow(body, message.lower())
    assert (error.window, error.prompt_tokens) == (window, prompt)
    assert any(marker in message.lower() for marker in CONTEXT_MARKERS)


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080"),
        ("http://localhost:11434/v1/", "http://localhost:11434"),
        ("https://gpu.example/llm/v1", "https://gpu.example/llm"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ],
)
def test_the_origin_is_the_base_url_without_v1(base: str, expected: str) -> None:
    assert origin(base) == expected
