"""What real llama.cpp servers do, asserted, because the bot relies on it.

Each test sends raw HTTP to a real server (fixtures in `conftest.py`) and pins one fact that
docs/real-servers.md explains: where `usage` arrives, what a context overflow looks like
streamed and not, where the context window can be read, how the tokenizers count against
tiktoken, and whether llama-server reuses a prompt prefix. Facts shared by both servers live in
one class parametrised over both (`real_server`); the rest are per server. If a new server
version changes any of these, the failing test names the assumption that broke.
"""

from __future__ import annotations

import json

import openai
import pytest

from tests.real.client import closes_after_stream, request, stream
from tests.real.probes import (
    BOS_ID,
    MID_SYSTEM,
    N_VOCAB,
    NEAR_FULL,
    NO_EOS,
    OVERFLOW,
    SAMPLE_TEXTS,
    SDK_OVERFLOW,
    SHORT,
    TIMINGS_KEYS,
    chat,
    cl100k,
    count_tokens,
    overflowed,
    token_ids,
    truncated_cl100k,
)
from tests.real.servers import MODEL_ALIAS, RunningServer
from tests.real.tinymodel import TinyModelSpec

pytestmark = pytest.mark.real_server


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

    async def test_the_tiny_tokenizer_is_cl100k_cut_to_its_vocabulary(
        self, real_server: RunningServer
    ) -> None:
        """Guards tinymodel.py: llama.cpp splits text exactly as tiktoken would with that vocab."""
        for text in SAMPLE_TEXTS.values():
            assert await token_ids(real_server, text) == truncated_cl100k().encode(text)

    async def test_the_connection_after_a_stream(self, real_server: RunningServer) -> None:
        closed = await closes_after_stream(real_server.origin, chat(SHORT))
        # llama-server hangs up after every stream although it answered `Keep-Alive`;
        # llama-cpp-python keeps the connection (it only drops it after a failed stream).
        assert closed is (real_server.name == "llama-server")


async def test_llama_server_counts_bos_in_prompt_tokens_and_llama_cpp_python_does_not(
    llama_cpp_python_server: RunningServer, llama_server: RunningServer
) -> None:
    counts = []
    for server in (llama_cpp_python_server, llama_server):
        reply = await request("POST", f"{server.base_url}/chat/completions", chat(SHORT))
        counts.append(reply.json["usage"]["prompt_tokens"])
    assert counts[1] == counts[0] + 1


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
                model=MODEL_ALIAS, messages=SDK_OVERFLOW, max_tokens=4, stream=True
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

    async def test_prompt_plus_max_tokens_past_the_window(
        self, llama_cpp_python_server: RunningServer
    ) -> None:
        """Usually stops at the window with "length"; sometimes a bare 500 instead.

        Measured: an 881-token prompt with max_tokens 300 on a freshly started server gave the
        500 three times out of three, and the same request repeated gave 200; other sizes gave
        200 or 500 from run to run. Which one depends on the server's state, so both outcomes
        are accepted here; neither says "context" anywhere.
        """
        url = f"{llama_cpp_python_server.base_url}/chat/completions"
        body = chat(NEAR_FULL, max_tokens=200, **NO_EOS)
        reply = await request("POST", url, body)
        assert not overflowed(reply.text)
        if reply.status == 500:
            assert reply.json["error"]["message"] == "llama_decode returned 1"
        else:
            assert reply.status == 200, reply.text
            assert reply.json["choices"][0]["finish_reason"] == "length"
            assert reply.json["usage"]["total_tokens"] == llama_cpp_python_server.n_ctx
        streamed = await stream(url, body)
        assert streamed.status == 200
        assert streamed.finish_reasons == ["length"]
        assert streamed.done

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
        streamed = await stream(url, chat(MID_SYSTEM))  # like an overflow: an empty 200 stream
        assert (streamed.status, streamed.raw) == (200, b"")

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


class TestLlamaServer:
    """The C++ `llama-server` from the same llama.cpp, one slot (`--parallel 1`)."""

    async def test_streams_carry_usage_only_when_asked_and_timings_always(
        self, llama_server: RunningServer
    ) -> None:
        url = f"{llama_server.base_url}/chat/completions"
        plain = await stream(url, chat(SHORT))
        assert plain.usage_events == []
        assert set(plain.events[-1]["timings"]) >= TIMINGS_KEYS
        assert plain.events[-1]["choices"][0]["finish_reason"] == "length"

        asked = await stream(url, chat(SHORT, stream_options={"include_usage": True}))
        last = asked.events[-1]
        assert asked.usage_events == [last]
        assert last["choices"] == []
        assert set(last["usage"]) == {
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "prompt_tokens_details",
        }
        assert last["usage"]["completion_tokens"] == 4
        assert set(last["timings"]) >= TIMINGS_KEYS
        assert asked.done

    async def test_streamed_overflow_is_a_plain_json_400(self, llama_server: RunningServer) -> None:
        streamed = await stream(f"{llama_server.base_url}/chat/completions", chat(OVERFLOW))
        assert streamed.status == 400
        assert streamed.content_type.startswith("application/json")
        assert streamed.events == []
        error = json.loads(streamed.raw)["error"]
        assert error == {
            "code": 400,
            "message": f"request ({error['n_prompt_tokens']} tokens) exceeds the available "
            f"context size ({llama_server.n_ctx} tokens), try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": error["n_prompt_tokens"],
            "n_ctx": llama_server.n_ctx,
        }
        assert error["n_prompt_tokens"] > llama_server.n_ctx

    async def test_sdk_raises_bad_request_on_a_streamed_overflow(
        self, llama_server: RunningServer
    ) -> None:
        async with openai.AsyncOpenAI(
            base_url=llama_server.base_url, api_key="unused", max_retries=0
        ) as client:
            with pytest.raises(openai.BadRequestError) as raised:
                await client.chat.completions.create(
                    model=MODEL_ALIAS, messages=SDK_OVERFLOW, max_tokens=4, stream=True
                )
        assert raised.value.status_code == 400
        assert overflowed(str(raised.value))

    async def test_mid_conversation_system_message_is_a_400(
        self, llama_server: RunningServer
    ) -> None:
        reply = await request("POST", f"{llama_server.base_url}/chat/completions", chat(MID_SYSTEM))
        assert reply.status == 400
        error = reply.json["error"]
        assert error["type"] == "invalid_request_error"
        assert error["code"] == 400
        assert error["message"].startswith("Unable to generate parser for this template.")
        assert error["message"].endswith(
            "Error: Jinja Exception: System message must be at the beginning."
        )
        streamed = await stream(f"{llama_server.base_url}/chat/completions", chat(MID_SYSTEM))
        assert streamed.status == 400
        assert json.loads(streamed.raw) == reply.json

    async def test_prompt_plus_max_tokens_past_the_window(
        self, llama_server: RunningServer
    ) -> None:
        """Generation simply stops when the window is full: finish_reason "length"."""
        url = f"{llama_server.base_url}/chat/completions"
        body = chat(NEAR_FULL, max_tokens=200, **NO_EOS)
        reply = (await request("POST", url, body)).json
        assert reply["choices"][0]["finish_reason"] == "length"
        assert reply["usage"]["total_tokens"] == llama_server.n_ctx
        assert reply["usage"]["completion_tokens"] < 200
        streamed = await stream(url, body)
        assert streamed.finish_reasons == ["length"]
        assert streamed.done

    async def test_the_context_window_in_props_and_models(
        self, llama_server: RunningServer
    ) -> None:
        props = (await request("GET", f"{llama_server.origin}/props")).json
        assert props["default_generation_settings"]["n_ctx"] == llama_server.n_ctx
        assert props["total_slots"] == 1
        assert props["model_alias"] == MODEL_ALIAS
        models = (await request("GET", f"{llama_server.base_url}/models")).json
        (model,) = models["data"]
        assert model["id"] == MODEL_ALIAS
        assert model["owned_by"] == "llamacpp"
        assert model["meta"]["n_ctx"] == llama_server.n_ctx
        assert model["meta"]["n_ctx_train"] == TinyModelSpec().context_length
        assert model["meta"]["n_vocab"] == N_VOCAB
        # An Ollama-style list rides along, without any context size.
        assert [m["name"] for m in models["models"]] == [MODEL_ALIAS]

    @pytest.mark.parametrize("llama_server", [2048], indirect=True)
    async def test_the_window_follows_the_fixture_parameter(
        self, llama_server: RunningServer
    ) -> None:
        props = (await request("GET", f"{llama_server.origin}/props")).json
        assert llama_server.n_ctx == props["default_generation_settings"]["n_ctx"] == 2048

    async def test_tokenize_shapes(self, llama_server: RunningServer) -> None:
        url = f"{llama_server.origin}/tokenize"
        plain = (await request("POST", url, {"content": "Hello"})).json
        special = (await request("POST", url, {"content": "Hello", "add_special": True})).json
        pieces = (await request("POST", url, {"content": "Hello", "with_pieces": True})).json
        assert plain == {"tokens": [39, 4896]}
        assert special == {"tokens": [BOS_ID, 39, 4896]}
        assert pieces == {"tokens": [{"id": 39, "piece": "H"}, {"id": 4896, "piece": "ello"}]}

    async def test_prompt_tokens_are_the_template_tokenized_with_bos(
        self, llama_server: RunningServer
    ) -> None:
        """/apply-template + /tokenize (add_special) predicts `prompt_tokens` exactly."""
        origin = llama_server.origin
        rendered = (await request("POST", f"{origin}/apply-template", {"messages": SHORT})).json
        tokens = await request(
            "POST", f"{origin}/tokenize", {"content": rendered["prompt"], "add_special": True}
        )
        reply = await request("POST", f"{llama_server.base_url}/chat/completions", chat(SHORT))
        assert reply.json["usage"]["prompt_tokens"] == len(tokens.json["tokens"])

    async def test_timings_account_for_every_prompt_token(
        self, llama_server: RunningServer
    ) -> None:
        body = (
            await request("POST", f"{llama_server.base_url}/chat/completions", chat(SHORT))
        ).json
        timings, usage = body["timings"], body["usage"]
        assert set(timings) == TIMINGS_KEYS
        assert timings["prompt_n"] + timings["cache_n"] == usage["prompt_tokens"]
        assert timings["predicted_n"] == usage["completion_tokens"]
        assert usage["prompt_tokens_details"] == {"cached_tokens": timings["cache_n"]}

    async def test_a_grown_conversation_reuses_the_cached_prefix(
        self, llama_server: RunningServer
    ) -> None:
        url = f"{llama_server.base_url}/chat/completions"
        first = [
            {"role": "system", "content": "You are the prefix-reuse probe."},
            {"role": "user", "content": "Tell me about caching in eleven words."},
        ]
        grown = [
            *first,
            {"role": "assistant", "content": "Caching keeps work around."},
            {"role": "user", "content": "And then?"},
        ]
        before = (await request("POST", url, chat(first))).json
        after = (await request("POST", url, chat(grown))).json
        assert after["timings"]["cache_n"] >= before["usage"]["prompt_tokens"]
        assert after["timings"]["prompt_n"] < after["usage"]["prompt_tokens"] // 2

    async def test_cache_prompt_false_evaluates_the_whole_prompt(
        self, llama_server: RunningServer
    ) -> None:
        url = f"{llama_server.base_url}/chat/completions"
        await request("POST", url, chat(SHORT))
        again = (await request("POST", url, chat(SHORT, cache_prompt=False))).json
        assert again["timings"]["cache_n"] == 0
        assert again["timings"]["prompt_n"] == again["usage"]["prompt_tokens"]
